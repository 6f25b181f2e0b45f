"""How wide is the camera gap of a data set? Epoch-0 pseudo-labels of each camera-aware variant.

Extracts the training features of the config's model once (ImageNet-initialised, or a trained
checkpoint with ``--checkpoint``: how the variants label features a run has learnt), then builds
pseudo-labels five ways and prints the quality report of each:

* ``plain``: the published k-reciprocal Jaccard + DBSCAN;
* ``standardize``: per-camera feature standardisation first (``method.camera.neighbourhood``);
* ``matching``: per-camera clustering + one-to-one cross-camera merging (``method.camera.matching``);
* ``standardize+matching``: both;
* ``ca_jaccard``: the camera-aware Jaccard distance (``method.camera.neighbourhood=ca_jaccard``).

Ground-truth identities, when the data set has them, are used for the report only (NMI, ARI,
pairwise precision / recall), never to make the labels. Usage::

    python benchmarks/camera_gap.py configs/cluster_contrast/cuhk03_detected_cpu.yaml [key=value ...]
    python benchmarks/camera_gap.py CONFIG --checkpoint runs/x/checkpoint_last.pth pseudo_labels.rho=0.0016
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main(argv: list[str] | None = None) -> None:
    from unreid.config import load_config
    from unreid.engine import load_model_from_checkpoint
    from unreid.engine.trainer import extract, load_data, resolve_device
    from unreid.models import build_model
    from unreid.pseudo_labels import NoClustersError, PseudoLabeler
    from unreid.pseudo_labels.ca_jaccard import CameraAwareJaccardLabeler
    from unreid.pseudo_labels.camera import camera_standardize
    from unreid.pseudo_labels.matching import cross_camera_labels
    from unreid.pseudo_labels.quality import cluster_report, nearest_neighbour_hits

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    ap.add_argument("--checkpoint", default=None, help="trained weights (checkpoint_last.pth / model_best.pth of a "
                    "run) instead of the ImageNet initialisation")
    args = ap.parse_intermixed_args(argv)
    cfg = load_config(args.config, args.overrides)
    data = load_data(cfg)
    device = resolve_device(cfg.device)
    t0 = time.time()
    model = load_model_from_checkpoint(args.checkpoint, cfg)[0] if args.checkpoint else build_model(cfg.model)
    model = model.to(device).eval()
    feats = extract(model, list(data.train), cfg, device)
    print(f"{cfg.data.name}: {len(feats)} training images, features {tuple(feats.shape)} in {time.time() - t0:.1f} s")
    cams = np.array([s.camid for s in data.train])
    gt = np.array([s.pid for s in data.train])
    gt = gt if (gt >= 0).all() else None
    if gt is not None:
        for name, f in (("plain", feats), ("standardize", camera_standardize(feats, cams))):
            same, other = nearest_neighbour_hits(f, cams, gt)
            print(f"{name}: nearest same-camera neighbour is the same identity {100 * same:.1f} %, "
                  f"nearest other-camera neighbour {100 * other:.1f} % (ground truth, report only)")
        sizes = np.bincount(np.unique(gt, return_inverse=True)[1])
        print(f"{len(sizes)} identities, images per identity: median {int(np.median(sizes))}, "
              f"min {sizes.min()}, max {sizes.max()}")
    pc, cam = cfg.pseudo_labels, cfg.method.camera
    variants = {
        "plain": lambda: PseudoLabeler(pc).fit(feats, camids=cams),
        "standardize": lambda: PseudoLabeler(pc).fit(camera_standardize(feats, cams), camids=cams),
        "matching": lambda: cross_camera_labels(feats, cams, pc),
        "standardize+matching": lambda: cross_camera_labels(camera_standardize(feats, cams), cams, pc),
        "ca_jaccard": lambda: CameraAwareJaccardLabeler(pc, cam.ca_k1_intra, cam.ca_k1_inter, cam.ca_k2_intra,
                                                        cam.ca_k2_inter).fit(feats, camids=cams),
    }
    keys = ("num_clusters", "outlier_ratio", "cross_camera_ratio", "nmi", "ari", "pairwise_precision",
            "pairwise_recall")
    print("| variant | " + " | ".join(keys) + " | largest clusters |")
    print("|" + "---|" * (len(keys) + 2))
    for name, fn in variants.items():
        if name == "ca_jaccard" and pc.cluster != "dbscan":
            print(f"| {name} | not run: CA-Jaccard feeds DBSCAN, pseudo_labels.cluster is {pc.cluster} |")
            continue
        try:
            pl = fn()
        except NoClustersError as err:
            print(f"| {name} | no clusters: {err} |")
            continue
        rep = cluster_report(pl.labels, cams, gt)
        cells = [f"{rep[k]:.3f}" if isinstance(rep.get(k), float) else str(rep.get(k, "–")) for k in keys]
        largest = sorted(np.bincount(pl.labels[pl.labels >= 0]).tolist())[-3:][::-1]
        print(f"| {name} | " + " | ".join(cells) + f" | {largest} |")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
