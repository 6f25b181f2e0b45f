"""Engine parity: fixed-seed short runs of every method and variant, recorded and compared.

The engine redesign (issue 28) must leave every existing method's numbers unchanged. This script
runs the same short, fixed-seed trainings before and after a change and compares their
``metrics.jsonl`` records key by key (timings excluded: they are the only fields allowed to differ
between two runs of the same code).

Record a baseline, then compare a later commit against it::

    python benchmarks/engine_parity.py run --out /tmp/parity/before
    python benchmarks/engine_parity.py run --out /tmp/parity/after
    python benchmarks/engine_parity.py compare /tmp/parity/before /tmp/parity/after

``--cuhk03 ROOT`` adds the two-epoch run of the best camera-aware recipe
(``configs/camera_aware/cuhk03_detected_cpu_cbn_cap_clustering_lomo_online.yaml``) on real data
(e.g. ``../shared/data/cuhk03-detected``); ``--only NAME`` runs one variant. The runs write only
under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: the synthetic set and budget shared by every variant (seconds per run on 2 cores)
SYNTHETIC = {
    "data.name": "synthetic",
    "data.height": 64,
    "data.width": 32,
    "data.batch_size": 16,
    "data.num_instances": 4,
    "data.workers": 0,
    "data.synthetic.num_ids": 24,
    "data.synthetic.num_test_ids": 12,
    "data.synthetic.num_cameras": 3,
    "data.synthetic.images_per_id_cam": 4,
    "data.synthetic.height": 64,
    "data.synthetic.width": 32,
    "model.backbone": "resnet18",
    "model.pretrained": False,
    "pseudo_labels.eps": 0.6,
    "optim.epochs": 3,
    "optim.iters": 4,
    "eval.every": 1,
    "eval.batch_size": 64,
    "device": "cpu",
    "seed": 1,
}

#: every existing method and variant (issue 28, "Acceptance")
VARIANTS: dict[str, dict[str, Any]] = {
    "cluster_contrast": {"method.name": "cluster_contrast"},
    "hhcl_cmhybrid": {"method.name": "hhcl", "method.hhcl.variant": "cmhybrid"},
    "hhcl_cmhybrid_v2": {"method.name": "hhcl", "method.hhcl.variant": "cmhybrid_v2"},
    # the best camera-aware recipe's parts (configs/camera_aware/cuhk03_detected_cpu_cbn_cap_clustering_lomo_online.yaml)
    "camera_aware_best": {
        "method.name": "cluster_contrast", "model.camera_bn": True, "method.camera.neighbourhood": "standardize",
        "method.camera.matching": True, "method.camera.proxies": True, "method.camera.inter_start_epoch": 1,
        "method.camera.online_weight": 1.0, "pseudo_labels.colour_weight": 1.0,
        "pseudo_labels.colour_descriptor": "lomo", "pseudo_labels.k1": 20, "pseudo_labels.eps": 0.5,
    },
    "camera_aware_ca_jaccard": {"method.name": "cluster_contrast", "method.camera.neighbourhood": "ca_jaccard",
                                "method.camera.proxies": True, "method.camera.inter_start_epoch": 1},
    "singletons_stripes": {"method.name": "cluster_contrast", "pseudo_labels.outliers": "singleton",
                           "pseudo_labels.colour_weight": 1.0},
    "supervised": {"method.name": "cluster_contrast", "method.supervised": True},
}

CUHK03_CONFIG = "configs/camera_aware/cuhk03_detected_cpu_cbn_cap_clustering_lomo_online.yaml"


def run_variant(name: str, out: Path, root: Path) -> Path:
    from unreid.config import load_config
    from unreid.engine import Trainer

    overrides = {**SYNTHETIC, "data.root": str(root), "output_dir": str(out / name), **VARIANTS[name]}
    cfg = load_config(None, [f"{k}={v}" for k, v in overrides.items()])
    trainer = Trainer(cfg)
    trainer.train()
    return trainer.output_dir


def run_cuhk03(out: Path, data_root: str) -> Path:
    from unreid.config import load_config
    from unreid.engine import Trainer

    cfg = load_config(CUHK03_CONFIG, [f"data.root={data_root}", f"output_dir={out / 'cuhk03_best_2ep'}",
                                      "optim.epochs=2", "eval.every=1", "seed=1"])
    trainer = Trainer(cfg)
    trainer.train()
    return trainer.output_dir


def strip_times(obj: Any) -> Any:
    """``obj`` without timing fields (``time*`` keys), which differ between any two runs."""
    if isinstance(obj, dict):
        return {k: strip_times(v) for k, v in obj.items() if not str(k).startswith("time")}
    if isinstance(obj, list):
        return [strip_times(v) for v in obj]
    return obj


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Every place where ``a`` and ``b`` differ, as ``path: a -> b`` lines (keys only in ``b`` listed as added)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            p = f"{path}.{k}" if path else str(k)
            if k not in b:
                out.append(f"{p}: removed ({a[k]!r})")
            elif k not in a:
                out.append(f"{p}: added ({b[k]!r})")
            else:
                out += diff(a[k], b[k], p)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [line for i, (x, y) in enumerate(zip(a, b)) for line in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} -> {b!r}"]


def compare(before: Path, after: Path) -> int:
    """Compare every run folder present in both; returns the number of runs that differ."""
    bad = 0
    for run in sorted(p for p in before.iterdir() if (p / "metrics.jsonl").is_file()):
        other = after / run.name
        if not (other / "metrics.jsonl").is_file():
            print(f"{run.name}: missing in {after}")
            bad += 1
            continue
        rows_a = [strip_times(json.loads(x)) for x in (run / "metrics.jsonl").read_text().splitlines()]
        rows_b = [strip_times(json.loads(x)) for x in (other / "metrics.jsonl").read_text().splitlines()]
        lines = diff(rows_a, rows_b) if len(rows_a) == len(rows_b) else [f"{len(rows_a)} rows -> {len(rows_b)}"]
        changed = [x for x in lines if ": added (" not in x]
        print(f"{run.name}: {'identical' if not lines else 'identical but for added keys' if not changed else 'DIFFERS'}"
              f" ({len(rows_a)} records)")
        for x in lines:
            print(f"    {x}")
        bad += bool(changed)
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True, type=Path)
    r.add_argument("--only", nargs="*", choices=sorted(VARIANTS), help="run only these variants")
    r.add_argument("--cuhk03", default=None, help="cuhk03-detected root: also run the 2-epoch real-data run")
    r.add_argument("--no-synthetic", action="store_true")
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "compare":
        return 1 if compare(args.before, args.after) else 0
    if args.out.exists() and any(args.out.iterdir()):
        print(f"error: {args.out} is not empty; choose a new --out", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.no_synthetic:
        for name in args.only or VARIANTS:
            run_variant(name, args.out, args.out / "_synthetic_data")
    if args.cuhk03:
        run_cuhk03(args.out, args.cuhk03)
    return 0


if __name__ == "__main__":
    sys.exit(main())
