"""One labelling step of a config with a hand-crafted prior, in both prior forms, on its real data.

Builds the trainer of ``--config`` (its data set and model, ImageNet weights where the config has
them), extracts the training set's features once, computes the descriptors once, and runs the
config's label pipeline with ``pseudo_labels.prior_mode=append`` and ``=gram`` (3 calls each, the
first includes the once-only work). Prints each form's times, clusters and outliers, and whether
the two forms' labels are identical (ARI too). Nothing is written except the trainer's log folder
(``--output``). Used for docs/BENCHMARKS.md, "The LOMO prior at scale":

    python benchmarks/prior_forms_real.py \\
        --config configs/camera_aware/cuhk03_detected_cpu_cbn_cap_clustering_lomo_online.yaml
"""

from __future__ import annotations

import argparse
import time

from sklearn.metrics import adjusted_rand_score

from unreid.config import load_config
from unreid.engine.trainer import Trainer
from unreid.pseudo_labels.pipeline import build_label_pipeline


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--output", default="outputs/prior_forms_real", help="the trainer's output folder")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = p.parse_args()
    cfg = load_config(args.config, [f"output_dir={args.output}", *args.overrides])
    if cfg.pseudo_labels.colour_weight <= 0:
        raise SystemExit(f"{args.config} has no hand-crafted prior (pseudo_labels.colour_weight = 0)")
    trainer = Trainer(cfg)
    method = trainer.method
    t0 = time.perf_counter()
    feats = trainer.extract(method.train_set)
    print(f"features {tuple(feats.shape)} in {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    desc = method.descriptors()
    print(f"descriptors {tuple(desc.shape)} in {time.perf_counter() - t0:.1f} s", flush=True)
    labels = {}
    for mode in ("append", "gram"):
        c = load_config(args.config, [f"pseudo_labels.prior_mode={mode}", *args.overrides])
        pipe = build_label_pipeline(c, method.camids, descriptors=lambda: desc)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            pl = pipe(feats)
            times.append(time.perf_counter() - t0)
        labels[mode] = pl.labels
        print(f"{mode}: calls {', '.join(f'{t:.2f}' for t in times)} s; {pl.num_clusters} clusters, "
              f"{int((pl.labels < 0).sum())} outliers", flush=True)
    same = bool((labels["append"] == labels["gram"]).all())
    print(f"identical labels: {same}; ARI {adjusted_rand_score(labels['append'], labels['gram']):.6f}")


if __name__ == "__main__":
    main()
