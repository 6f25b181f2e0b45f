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
  correct matches any matcher could make from these clusters;
* with ``--alternatives``: how right the most confident one-to-one matches are, and the one-to-one
  matches on three other centroid similarities (none of them in the library): hubness-corrected
  CSLS (Conneau et al., "Word Translation Without Parallel Data", ICLR 2018, eq. 6, k = 10), cosine
  after an orthogonal camera-to-camera map fitted by iterative Procrustes on the mutual CSLS matches
  (ibid. Sec. 2.2; 5 rounds), and second-order profiles (the correlation of a cluster's
  similarities to the clusters of the other camera with its counterpart's similarities to the
  clusters of its own camera, summed over both directions).

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
    ap.add_argument("--alternatives", action="store_true",
                    help="also: precision of the most confident matches; CSLS, Procrustes and profile matching")
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
    if args.alternatives:
        alternatives(a, b)


def alternatives(a: dict, b: dict) -> None:
    """The ``--alternatives`` report for the clusters ``a``, ``b`` of two cameras (see the module doc)."""

    def right(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return a["majority"][rows] == b["majority"][cols]

    def one_to_one(sim: np.ndarray) -> float:
        r, c = linear_sum_assignment(-sim)
        return float(right(r, c).mean())

    def csls(sim: np.ndarray, k: int = 10) -> np.ndarray:
        k = min(k, *sim.shape)
        return 2 * sim - np.sort(sim, 1)[:, -k:].mean(1)[:, None] - np.sort(sim, 0)[-k:].mean(0)[None, :]

    ca, cb = a["centroids"].double(), b["centroids"].double()
    sim = (ca @ cb.T).numpy()
    r, c = linear_sum_assignment(-sim)
    order = np.argsort(-sim[r, c])
    hits = right(r, c)[order]
    print("most similar one-to-one matches, share right: " + ", ".join(
        f"top {k} {hits[:k].mean():.3f}" for k in (10, 25, 50, 100) if k <= len(hits)))
    print(f"one-to-one on CSLS (k 10): same majority identity {one_to_one(csls(sim)):.3f}")
    w = torch.eye(ca.shape[1], dtype=torch.float64)
    for _ in range(5):
        s = csls((F.normalize(ca @ w, dim=1) @ cb.T).numpy())
        ab, ba = s.argmax(1), s.argmax(0)
        i = np.flatnonzero(ba[ab] == np.arange(len(ab)))
        u, _, v = torch.linalg.svd(cb[ab[i]].T @ ca[i])
        w = (u @ v).T
    print(f"one-to-one after iterative Procrustes: same majority identity "
          f"{one_to_one((F.normalize(ca @ w, dim=1) @ cb.T).numpy()):.3f}")

    def rows_centered(x: np.ndarray) -> np.ndarray:
        x = x - x.mean(1, keepdims=True)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    saa, sbb = (ca @ ca.T).numpy(), (cb @ cb.T).numpy()
    profile = rows_centered(sim) @ rows_centered(sbb).T + rows_centered(saa) @ rows_centered(sim.T).T
    print(f"one-to-one on second-order profiles: same majority identity {one_to_one(profile):.3f}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
