"""How right is the cross-camera cluster matching? Per-camera clusters and their matches, against ground truth.

The matching variant (``method.camera.matching``) clusters each camera on its own, then merges each
cluster with one cluster of the other camera (Hungarian assignment on MBCCM's squared centroid
distance). This script takes the training features of a run (``unreid extract ... --split train``)
and reports, for two cameras:

* the per-camera clusters: count, mean size and size-weighted purity (share of a cluster's images
  that are its majority identity);
* the one-to-one (Hungarian) matches and, for comparison, the mutual nearest centroids: how many,
  and the share whose two clusters have the same majority identity;
* ``shared``: how many majority identities occur in both cameras' clusters, an upper bound on the
  correct matches any matcher could make from these clusters.

Ground-truth identities are used for this report only, never to make a label. Usage::

    unreid extract CONFIG --checkpoint runs/x/checkpoint_last.pth --split train --out train.npz
    python benchmarks/matching_accuracy.py train.npz [--rho 0.0016] [--standardize] [--k1 20 --eps 0.5]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


def cluster_identities(labels: np.ndarray, pids: np.ndarray) -> dict[str, np.ndarray]:
    """Majority identity, size and majority count of each cluster of one camera (ground truth: report only).

    Args:
        labels: ``(n,) int`` cluster ids, ``-1`` outliers.
        pids: ``(n,) int`` true identities of the same images.
    """
    out = {"majority": [], "size": [], "hits": []}
    for k in range(int(labels.max()) + 1):
        ids, counts = np.unique(pids[labels == k], return_counts=True)
        out["majority"].append(ids[counts.argmax()])
        out["size"].append(int(counts.sum()))
        out["hits"].append(int(counts.max()))
    return {k: np.array(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> None:
    from unreid.config import PseudoLabelConfig
    from unreid.pseudo_labels.camera import camera_standardize
    from unreid.pseudo_labels.matching import centroid_cost, cluster_each_camera

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("features", help=".npz written by `unreid extract --split train` (features, pids, camids)")
    ap.add_argument("--rho", type=float, default=None, help="rho-adaptive eps (default: DBSCAN eps 0.6)")
    ap.add_argument("--standardize", action="store_true", help="per-camera standardisation first")
    ap.add_argument("--k1", type=int, default=30, help="Jaccard k1 (Cluster Contrast 30; CAP 20)")
    ap.add_argument("--eps", type=float, default=0.6, help="DBSCAN eps (Cluster Contrast 0.6; CAP 0.5)")
    args = ap.parse_args(argv)
    data = np.load(args.features)
    feats = F.normalize(torch.as_tensor(data["features"], dtype=torch.float32), dim=1)
    cams, pids = np.asarray(data["camids"]), np.asarray(data["pids"])
    if args.standardize:
        feats = camera_standardize(feats, cams)
    cameras = np.unique(cams)
    if len(cameras) != 2:
        raise SystemExit(f"{args.features}: this report is for two cameras, found {len(cameras)}")
    per_camera = cluster_each_camera(feats, cams, PseudoLabelConfig(rho=args.rho, k1=args.k1, eps=args.eps))
    for c in cameras:
        if per_camera.get(int(c), (None, None))[1] is None:
            raise SystemExit(f"{args.features}: camera {c} formed no cluster; nothing to match")
    a, b = ({**cluster_identities(pl.labels, pids[idx]), "centroids": centroids, "eps": pl.eps}
            for idx, pl, centroids in (per_camera[int(c)] for c in cameras))
    rows, cols = linear_sum_assignment(centroid_cost(a["centroids"], b["centroids"]))
    sim = (a["centroids"] @ b["centroids"].T).numpy()
    ab, ba = sim.argmax(1), sim.argmax(0)
    mutual = [(i, int(ab[i])) for i in range(len(ab)) if ba[ab[i]] == i]
    print(f"{args.features}: standardize={args.standardize} rho={args.rho} k1={args.k1} eps={args.eps}")
    for c, g in zip(cameras, (a, b)):
        print(f"camera {c}: {len(g['size'])} clusters, mean size {g['size'].mean():.1f}, "
              f"purity {g['hits'].sum() / g['size'].sum():.3f}, eps {g['eps']:.4f}")
    print(f"one-to-one (Hungarian) matches: {len(rows)}, same majority identity "
          f"{(a['majority'][rows] == b['majority'][cols]).mean():.3f}")
    if mutual:
        print(f"mutual nearest centroids: {len(mutual)}, same majority identity "
              f"{np.mean([a['majority'][i] == b['majority'][j] for i, j in mutual]):.3f}")
    print(f"majority identities in both cameras (upper bound on correct matches): "
          f"{len(set(a['majority']) & set(b['majority']))}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
