"""The ``unreid`` command line: ``train``, ``eval``, ``extract``, ``datasets``, ``demo``.

Every command takes a YAML config (see ``configs/``) and dotted ``key=value`` overrides, e.g.::

    unreid train configs/cluster_contrast/market1501.yaml data.root=/data/Market-1501-v15.09.15
    unreid eval  configs/cluster_contrast/market1501.yaml --checkpoint outputs/cc-market/model_best.pth
    unreid extract configs/cluster_contrast/market1501.yaml --checkpoint ckpt.pth --split query --out q.npz
    unreid datasets
    unreid datasets --check vehicleid /data/VehicleID_V1.0 test_sizes=800 draws=1
    unreid demo
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEMO_HELP = (
    "Train camera-aware Cluster Contrast (per-camera standardised neighbourhoods + camera-aware proxies) "
    "on the built-in synthetic set (procedural identities seen by 4 cameras) with an ImageNet "
    "EfficientNet-Lite0 and print the metrics before and after; about 4 minutes on 2 CPU cores. "
    "--plain runs the published Cluster Contrast recipe instead (on this set it loses cross-camera mAP: "
    "its clusters follow the cameras)."
)


def _add_config_args(p: argparse.ArgumentParser, config_required: bool = True) -> None:
    p.add_argument("config", nargs=None if config_required else "?", help="YAML config file (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted config overrides, e.g. optim.epochs=10 data.root=/data/market1501")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unreid", description="Unsupervised object re-identification.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (unsupervised, or the supervised reference)")
    _add_config_args(p)
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue the run in output_dir (or from CHECKPOINT) exactly where it stopped")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous run in output_dir (otherwise it is never overwritten)")

    p = sub.add_parser("eval", help="evaluate a checkpoint on the config's query / gallery")
    _add_config_args(p)
    p.add_argument("--checkpoint", required=True, help="model_best.pth / checkpoint_last.pth of a run")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (Zhong et al., CVPR 2017)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")

    p = sub.add_parser("extract", help="write L2-normalised features of a split to an .npz file")
    _add_config_args(p)
    p.add_argument("--checkpoint", default=None,
                   help="trained weights; without it the (ImageNet) backbone of the config is used")
    p.add_argument("--split", choices=["train", "query", "gallery"], default="query",
                   help="with model.camera_bn, each camera's BN statistics come from this split's images")
    p.add_argument("--out", required=True, help="output .npz (features, paths, pids, camids); never overwritten")

    p = sub.add_parser("datasets", help="list the known datasets and their expected folder layouts, or check "
                                        "a copy against the published counts (--check)")
    p.add_argument("--check", nargs=2, metavar=("NAME", "ROOT"),
                   help="load data set NAME from ROOT and compare its counts with the published ones "
                        "(exit status 1 when they differ)")
    p.add_argument("options", nargs="*", metavar="key=value", help="data set options for --check, e.g. draws=1")

    p = sub.add_parser("demo", help=DEMO_HELP, description=DEMO_HELP)
    p.add_argument("--output", default="unreid-demo", help="output folder (a fresh one is chosen if it exists)")
    p.add_argument("--plain", action="store_true", help="plain Cluster Contrast, without the camera-aware parts")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for the demo run")
    return parser


def _load(args: argparse.Namespace):
    from unreid.config import load_config

    return load_config(args.config, args.overrides)


def _device(name: str):
    """The torch device of ``device=...``; a device that is not there is a configuration error (exit 2)."""
    import torch

    from unreid.config import ConfigError
    from unreid.engine.trainer import resolve_device

    try:
        dev = resolve_device(name)
    except RuntimeError as err:
        raise ConfigError(str(err).splitlines()[0]) from err
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device={name!r} requested but this machine has {torch.cuda.device_count()} CUDA "
                          "device(s); use device=cuda, cpu or auto")
    return dev


def _load_model(path: str, cfg):
    """The checkpoint's model for ``cfg``, printing what it was trained with where that differs."""
    from unreid.engine.checkpoint import load_trained_model

    model, warnings = load_trained_model(path, cfg)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return model


def _run_state(trainer) -> str:
    """What a stopped or interrupted run left in its folder, and how to go on."""
    done = trainer.state.epoch
    if done == 0:
        return (f"no epoch was completed in {trainer.output_dir}: `unreid train CONFIG --resume` starts this run "
                "again from epoch 0 with the same config; to change the config, start it with --overwrite (this "
                "run is moved aside) or another output_dir=...")
    return (f"the run in {trainer.output_dir} is kept as of epoch {done - 1} (checkpoint_last.pth, metrics.jsonl "
            "and model_best.pth agree): `unreid train CONFIG --resume` continues it")


def cmd_train(args: argparse.Namespace) -> int:
    from unreid.engine import Trainer, TrainingStopped

    cfg = _load(args)
    _device(cfg.device)  # before the run folder is touched
    trainer = Trainer(cfg, resume=args.resume, overwrite=args.overwrite)
    try:
        record = trainer.train()
    except TrainingStopped as err:
        print(f"training stopped: {err}\n{_run_state(trainer)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; {_run_state(trainer)}", file=sys.stderr)
        return 130
    print(f"outputs: {trainer.output_dir}  (metrics.jsonl, train.log, checkpoint_last.pth, model_best.pth)")
    if record.get("test"):
        print(json.dumps({"mode": trainer.mode, "epoch": record["epoch"], **record["test"]}))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from unreid.engine import evaluate_model
    from unreid.engine.hooks import METRIC_KEYS
    from unreid.engine.trainer import load_data

    cfg = _load(args)
    if args.rerank:
        cfg.eval.rerank = True
    device = _device(cfg.device)
    model = _load_model(args.checkpoint, cfg)
    model.to(device)
    data = load_data(cfg)
    if not data.query or not data.gallery:
        print(f"error: dataset {cfg.data.name!r} has no query/gallery to evaluate on", file=sys.stderr)
        return 2
    res = evaluate_model(model, data.query, data.gallery, cfg, device, trials=data.trials)
    if args.json:
        print(json.dumps(res))
    else:
        from unreid.evaluation.trials import format_groups

        print(f"{data.name} ({cfg.eval.protocol} protocol{', re-ranked' if cfg.eval.rerank else ''}): "
              + "  ".join(f"{k} {res[k]:.2f}" for k in METRIC_KEYS if k in res))
        table = format_groups(res)
        if table:  # multi-trial protocols: mean ± population std per group; the line above = first group
            print(f"per group, mean ± std (ddof=0) over trials; the line above is the first group:\n{table}")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    import numpy as np

    from unreid.engine import extract
    from unreid.engine.trainer import load_data
    from unreid.models import build_model

    cfg = _load(args)
    out = Path(args.out)
    if out.suffix != ".npz":
        out = out.with_suffix(out.suffix + ".npz")
    if out.exists():
        print(f"error: {out} exists; choose another --out (files are never overwritten)", file=sys.stderr)
        return 2
    device = _device(cfg.device)
    model = _load_model(args.checkpoint, cfg) if args.checkpoint else build_model(cfg.model)
    model.to(device)
    samples = getattr(load_data(cfg), args.split)
    t0 = time.time()
    feats = extract(model, samples, cfg, device).numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, features=feats, paths=np.asarray([s.path for s in samples]),
             pids=np.asarray([s.pid for s in samples]), camids=np.asarray([s.camid for s in samples]))
    print(f"wrote {out}: {feats.shape[0]} x {feats.shape[1]} features in {time.time() - t0:.1f}s")
    return 0


def _option_value(text: str):
    """A ``key=value`` option value as YAML reads it (``3`` -> 3, ``true`` -> True, ``800,1600`` stays text)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def cmd_datasets(args: argparse.Namespace) -> int:
    from unreid.config import ConfigError
    from unreid.data.datasets import DATASETS, build_dataset, compare_published

    if args.check:
        name, root = args.check
        options = {}
        for item in args.options:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"datasets --check: expected key=value options, got {item!r}")
            options[key] = _option_value(value)
        if name not in DATASETS:
            raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
        info = DATASETS[name]
        try:
            data = build_dataset(name, root, **options)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        print(data.summary())
        if not info.published:
            print(f"{name}: no published counts recorded; nothing to compare")
            return 0
        table, diffs = compare_published(data, info.published)
        print(f"\nloaded vs published counts ({info.published_source}):\n{table}")
        if diffs:
            print(f"\n{len(diffs)} difference(s) from the published counts:\n" + "\n".join(f"  {d}" for d in diffs))
            return 1
        print("\nevery loaded part matches the published counts")
        return 0
    if args.options:
        raise ConfigError(f"datasets: options {args.options} are only used with --check NAME ROOT")
    for name, info in DATASETS.items():
        print(f"{name}: {info.description}")
        for line in info.layout.strip("\n").splitlines():
            print(f"    {line}")
        print()
    return 0


def demo_config(output: str | Path, overrides: list[str] | tuple[str, ...] = (), camera_aware: bool = True):
    """The demo's config: Cluster Contrast on the synthetic set with an ImageNet EfficientNet-Lite0.

    Sized to finish in about 4 minutes on 2 CPU cores; see ``unreid demo --help``. With
    ``camera_aware`` (the default) it adds per-camera standardisation and CAP proxies
    (docs/methods/camera_aware.md), with the inter-camera loss from epoch 1 of 6. eps 0.45 suits the
    synthetic set's ImageNet features (at 0.6 DBSCAN merges it into ~12 clusters).
    """
    from unreid.config import load_config

    output = Path(output)
    base = [
        "name=demo",
        f"output_dir={output / 'run'}",
        "data.name=synthetic",
        f"data.root={output / 'data'}",
        "data.height=128", "data.width=64",
        "data.batch_size=64", "data.num_instances=4",
        "data.workers=0",
        "data.synthetic.num_ids=60", "data.synthetic.num_test_ids=30",
        "data.synthetic.num_cameras=4", "data.synthetic.images_per_id_cam=4",
        "model.backbone=efficientnet_lite0", "model.pretrained=true",
        "pseudo_labels.eps=0.45", "pseudo_labels.min_samples=4",
        "optim.epochs=6", "optim.iters=20", "optim.step_size=20",
        "eval.every=2", "eval.batch_size=128",
    ]
    if camera_aware:
        base += ["method.camera.neighbourhood=standardize", "method.camera.proxies=true",
                 "method.camera.inter_start_epoch=1"]
    return load_config(None, base + list(overrides))


def cmd_demo(args: argparse.Namespace) -> int:
    from unreid.engine import Trainer

    output = Path(args.output)
    if output.exists():  # never write into something the user has
        i = 2
        while Path(f"{output}-{i}").exists():
            i += 1
        output = Path(f"{output}-{i}")
    cfg = demo_config(output, args.overrides, camera_aware=not args.plain)
    t0 = time.time()
    trainer = Trainer(cfg)
    trainer.train()
    rows = [json.loads(line) for line in (trainer.output_dir / "metrics.jsonl").read_text().splitlines()]
    tests = [(r["epoch"], r["test"]) for r in rows if r.get("test")]
    kind = "plain Cluster Contrast" if args.plain else "camera-aware Cluster Contrast"
    print(f"\nunreid demo: {kind}, synthetic data, EfficientNet-Lite0 (ImageNet)")
    print(f"{'epoch':>12} | {'mAP':>6} | {'rank1':>6} | {'rank5':>6} | clusters | ARI (report only)")
    for epoch, m in tests:
        pl = next((r.get("pseudo_labels", {}) for r in rows if r["epoch"] == epoch), {})
        label = "before" if epoch < 0 else str(epoch)
        ari = pl.get("ari")
        print(f"{label:>12} | {m['mAP']:6.1f} | {m['rank1']:6.1f} | {m['rank5']:6.1f} | "
              f"{pl.get('num_clusters', '-')!s:>8} | {'-' if ari is None else f'{ari:.3f}'}")
    print(f"\nfinished in {(time.time() - t0) / 60:.1f} min; outputs in {trainer.output_dir} "
          "(train.log, metrics.jsonl, config.yaml, checkpoint_last.pth, model_best.pth)")
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "extract": cmd_extract, "datasets": cmd_datasets,
            "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``unreid`` script; returns the exit status.

    Configuration and data errors are printed as one actionable line (exit status 2), not a traceback.
    """
    from unreid.config import ConfigError
    from unreid.engine.checkpoint import CheckpointError

    parser = build_parser()
    # key=value overrides may also come after the options (``eval CONFIG --checkpoint X key=value``),
    # which argparse alone does not accept for a positional list behind a sub-command
    args, rest = parser.parse_known_args(argv)
    if rest and hasattr(args, "overrides") and all("=" in t and not t.startswith("-") for t in rest):
        args.overrides = list(args.overrides or []) + rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, CheckpointError, FileNotFoundError, FileExistsError, KeyError, ImportError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except Exception as err:
        from unreid.engine import TrainingStopped

        if isinstance(err, TrainingStopped):
            print(f"training stopped: {err}", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
