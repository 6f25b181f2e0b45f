"""Pseudo-labelling speed and memory: k-NN, sparse k-reciprocal Jaccard distance, DBSCAN / InfoMap.

Generates ``N`` clustered unit features (identities of about 16 images, each image seen by one of 6
cameras that adds its own offset, plus noise), then runs the three stages of
``unreid.pseudo_labels.PseudoLabeler`` one after the other (its own stage methods, the code path of
``fit``) and prints each stage's wall time and peak RSS. Results and commands: docs/BENCHMARKS.md.
Run from the repository root with ``PYTHONPATH=.`` (the script's own folder comes first on the
path, so without it Python imports whichever ``unreid`` is installed).

    PYTHONPATH=. python benchmarks/pseudo_labels.py --n 12936 --dim 2048
    python benchmarks/pseudo_labels.py --n 12936 --dim 2048 --compare-dense
    python benchmarks/pseudo_labels.py --n 100000 --dim 2048
    python benchmarks/pseudo_labels.py --n 100000 --dim 2048 --knn hnsw --compare-exact

Peak RSS per stage: the kernel's high-water mark (``VmHWM``) is reset before each stage by writing
5 to ``/proc/self/clear_refs`` (Linux >= 4.0), so each stage's figure is its own peak; where that is
not possible, the running peak of ``resource.getrusage(...).ru_maxrss`` is printed instead. Both
include the Python interpreter, the imported libraries (torch alone is about 0.5 GiB here) and the
features; the "baseline" line gives that floor.

Matrix-product throughput: with ``--knn exact`` on CPU the script also times plain float32
``torch.mm`` products ``(b, d) x (d, b)`` for ``b`` = 1024, 2048, 4096 (the shapes of the search's
blocks), best of several, once before and once after the k-NN stage, in the same process and with
the same threads; the larger figure is the machine's GEMM throughput. The k-NN stage is reported
against it two ways:

* ``performed``: the multiply-adds the symmetric search really does, ``2 d sum_{I <= J} b_I b_J``
  over its block pairs (the upper block triangle plus the full diagonal blocks), divided by the
  stage's wall time and by the GEMM throughput: how close the whole stage (products, selection,
  merging, Python) runs to a bare ``torch.mm`` doing the same products;
* ``full-product equivalent``: ``2 N^2 d`` (a plain, non-symmetric search) over the same time and
  throughput; above 1 when the symmetry saves more than the selection costs.

Repeated calls (``--knn-repeats R``, default 3): the peak is a best-of figure, and on a shared virtual
machine the same product's throughput drifts by 10-20 % from one second to the next, so a single
2-second stage call against a best-of peak mixes the search's overhead with that drift. The stage
is therefore called R more times (the neighbours must come out identical), each call right after
a "bare pass": the search's own block products by plain ``torch.mm`` and nothing else. The bare
passes' throughputs count towards the GEMM peak (so the peak can only rise), and the script prints
each call's fraction of the peak, the best call's, and each call's time against its own bare pass
(the overhead of everything the search does besides its products, with the drift largely paired
out). The stage table keeps the first call.

Jaccard kernel (``--jaccard-backend``, default ``auto``: numba's compiled kernel when numba is
installed, else numpy; ``unreid.pseudo_labels.jaccard.jaccard_backend``): the stage table keeps
the first call, which also loads numba's compiled kernel (or compiles it, the first time on a
machine); ``--jaccard-repeats R`` (default 2) calls the stage R more times, as every later epoch
of a training run does, prints their times and checks that they give the same pairs and bits.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch


class Peak:
    """Per-stage peak resident memory (GiB)."""

    def __init__(self) -> None:
        self.resettable = self._reset()

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return True
        except OSError:
            return False

    @staticmethod
    def _status(field: str) -> float | None:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) / 2**20  # kB -> GiB
        except OSError:
            pass
        return None

    def start(self) -> None:
        if self.resettable:
            self._reset()

    def peak(self) -> float:
        hwm = self._status("VmHWM") if self.resettable else None
        return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    def current(self) -> float:
        rss = self._status("VmRSS")
        return rss if rss is not None else float("nan")


def make_features(n: int, dim: int, seed: int = 0, per_id: int = 16, cams: int = 6, latent: int = 128,
                  spread: float = 1.0, noise: float = 0.5, cam_offset: float = 0.7, chunk: int = 8192,
                  views: int | None = None) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Clustered unit features with a low intrinsic dimension, generated in float32 chunks.

    Sample ``i`` of identity ``p`` seen by camera ``c`` is
    ``normalize(centre[p] + spread * h_i / sqrt(latent) + cam_offset * offset[c] + noise * g / sqrt(dim))``
    where the identity centres are random unit vectors of a random ``latent``-dimensional subspace
    and ``h_i`` is a standard Gaussian in that subspace (pose / appearance changes; deep re-ID
    features concentrate most of their variance in a few hundred directions; with isotropic
    2048-d centres every non-identity neighbour would be a near-tie and no approximate search could
    tell them apart), ``offset[c]`` are random unit vectors (the camera gap) and ``g`` is standard
    Gaussian noise. Identities have ``per_id`` images on average (uniform draw). Each image's camera
    is drawn uniformly from all ``cams``, or, with ``views`` set, from ``views`` distinct cameras
    drawn once per identity (a person passes a few of the cameras: ``benchmarks/label_prior.py``).

    Returns:
        ``(features (n, dim) float32 L2-normalised, identities (n,) int64, cameras (n,) int64)``.
    """
    g = torch.Generator().manual_seed(seed)
    n_ids = max(1, n // per_id)
    ids = torch.randint(n_ids, (n,), generator=g)
    cam = torch.randint(cams, (n,), generator=g)
    if views is not None:
        seen = torch.argsort(torch.rand(n_ids, cams, generator=g), dim=1)[:, :min(views, cams)]
        cam = seen[ids, torch.randint(seen.shape[1], (n,), generator=g)]
    basis, _ = torch.linalg.qr(torch.randn(dim, latent, generator=g))  # (dim, latent) orthonormal
    centres = torch.nn.functional.normalize(torch.randn(n_ids, latent, generator=g), dim=1) @ basis.T
    offsets = torch.nn.functional.normalize(torch.randn(cams, dim, generator=g), dim=1) * cam_offset
    out = torch.from_numpy(np.empty((n, dim), dtype=np.float32))
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        block = out[s:e]
        torch.randn(e - s, dim, generator=g, out=block)
        block.mul_(noise / dim**0.5).add_(centres[ids[s:e]]).add_(offsets[cam[s:e]])
        block.add_(torch.randn(e - s, latent, generator=g) @ basis.T, alpha=spread / latent**0.5)
        block.div_(block.norm(dim=1, keepdim=True))
    return out, ids.numpy(), cam.numpy()


def gemm_gflops(dim: int, sizes: tuple[int, ...] = (1024, 2048, 4096), reps: int = 4, seed: int = 0,
                ) -> dict[int, float]:
    """Best-of-``reps`` float32 ``torch.mm`` throughput (GFLOP/s) of ``(b, dim) x (dim, b)`` products.

    Same call as the k-NN search: ``torch.mm(a, b.T, out=...)`` into a preallocated result, on two
    different random operand blocks; one untimed warm-up call per size.
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for b in sizes:
        a = torch.randn(b, dim, generator=g)
        c = torch.randn(b, dim, generator=g)
        res = torch.from_numpy(np.empty((b, b), dtype=np.float32))
        torch.mm(a, c.T, out=res)
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.mm(a, c.T, out=res)
            best = min(best, time.perf_counter() - t0)
        out[b] = 2.0 * b * b * dim / best / 1e9
    return out


def knn_block_sizes(n: int, block: int) -> list[int]:
    """Rows of each block of the exact CPU search as the installed ``unreid`` cuts them."""
    knn_mod = importlib.import_module("unreid.pseudo_labels.knn")
    if hasattr(knn_mod, "_block_bounds"):  # nearly equal blocks of at most min(block, CPU_BLOCK) rows
        bounds = knn_mod._block_bounds(n, min(block, getattr(knn_mod, "CPU_BLOCK", block)))
        return [e - s for s, e in bounds]
    return [min(block, n - s) for s in range(0, n, block)]  # before 2026-12-06: fixed blocks + remainder


def bare_products(f: torch.Tensor, sizes: list[int]) -> float:
    """Wall time (s) of the exact search's own matrix products alone: ``torch.mm`` over the same block
    pairs ``(I, J)``, ``J >= I``, of the same features, into one reused buffer, nothing else."""
    bounds, s = [], 0
    for b in sizes:
        bounds.append((s, s + b))
        s += b
    buf = torch.from_numpy(np.empty(max(sizes) ** 2, dtype=np.float32))
    t0 = time.perf_counter()
    for a, (s0, e0) in enumerate(bounds):
        for s1, e1 in bounds[a:]:
            torch.mm(f[s0:e0], f[s1:e1].T, out=buf[: (e0 - s0) * (e1 - s1)].view(e0 - s0, e1 - s1))
    return time.perf_counter() - t0


def _dense_oracle():
    """The dense reference implementation written in tests/test_jaccard.py."""
    path = Path(__file__).resolve().parents[1] / "tests" / "test_jaccard.py"
    spec = importlib.util.spec_from_file_location("_test_jaccard", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod.dense_jaccard


def main() -> None:
    from unreid.config import JACCARD_BACKENDS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=12936, help="number of features (Market-1501 train: 12,936)")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--knn", default="exact", choices=["exact", "faiss", "hnsw", "pca"])
    p.add_argument("--cluster", default="dbscan", choices=["dbscan", "infomap"])
    p.add_argument("--k1", type=int, default=30)
    p.add_argument("--k2", type=int, default=6)
    p.add_argument("--eps", type=float, default=0.6)
    p.add_argument("--min-samples", type=int, default=4)
    p.add_argument("--rho", type=float, default=None, help="GCL rho-adaptive eps instead of --eps")
    p.add_argument("--knn-block", type=int, default=None, help="default: PseudoLabelConfig's knn_block")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--hnsw-ef-construction", type=int, default=64)
    p.add_argument("--hnsw-ef-search", type=int, default=128)
    p.add_argument("--pca-dim", type=int, default=256)
    p.add_argument("--pca-oversample", type=float, default=1.5)
    p.add_argument("--knn-repeats", type=int, default=3,
                   help="with --knn exact on CPU: call the k-NN stage this many more times, each call right after "
                        "the same products done by bare torch.mm; the fraction of the GEMM peak is then also given "
                        "for the best call (the peak itself is a best-of figure) and per call against its bare pass")
    p.add_argument("--jaccard-backend", default="auto", choices=list(JACCARD_BACKENDS),
                   help="pseudo_labels.jaccard_backend (auto: numba when installed)")
    p.add_argument("--jaccard-repeats", type=int, default=2,
                   help="further Jaccard stage calls after the first (which also loads numba's compiled kernel); "
                        "each must give the same pairs and distance bits")
    p.add_argument("--threads", type=int, default=2, help="torch / faiss threads (the machine has 2 cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare-dense", action="store_true",
                   help="also run the dense in-test reference (tests/test_jaccard.py; needs ~4 N^2 x 8 bytes)")
    p.add_argument("--compare-exact", action="store_true",
                   help="with an approximate --knn: recall@k1 and ARI of the final labels against exact k-NN")
    p.add_argument("--exact-cache", default=None,
                   help="with --compare-exact: .npz file holding the exact neighbours and labels of the same "
                        "features (written when missing), so that several approximate runs share one exact run")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    # import everything first: one-time import costs are not part of any stage
    import sklearn.cluster  # noqa: F401
    from sklearn.metrics import adjusted_rand_score

    from unreid.config import PseudoLabelConfig
    from unreid.pseudo_labels import PseudoLabeler, check_features, cluster_report
    from unreid.pseudo_labels.knn import recall_at_k

    if args.cluster == "infomap":
        import infomap  # noqa: F401

    meter = Peak()
    out: dict = {"argv": sys.argv[1:], "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                 "threads": args.threads, "peak_rss": "VmHWM reset per stage" if meter.resettable else "running ru_maxrss"}
    t = time.perf_counter()
    f, ids, cams = make_features(args.n, args.dim, args.seed)
    print(f"N={args.n:,} d={args.dim} knn={args.knn} cluster={args.cluster} k1={args.k1} k2={args.k2} "
          f"eps={args.eps if args.rho is None else f'rho {args.rho}'} min_samples={args.min_samples} "
          f"threads={args.threads}; features generated in {time.perf_counter() - t:.1f} s")
    print(f"baseline (interpreter + libraries + features): RSS {meter.current():.2f} GiB "
          f"(peak RSS measured as {out['peak_rss']})")
    out["baseline_rss_gib"] = round(meter.current(), 3)
    if args.knn_block is None:
        args.knn_block = PseudoLabelConfig().knn_block
    measure_gemm = args.knn == "exact"
    if measure_gemm:
        gemm_before = gemm_gflops(args.dim)
        print("GEMM float32 torch.mm (b x d) x (d x b), best of 4: "
              + ", ".join(f"b={b}: {g:.1f}" for b, g in gemm_before.items()) + " GFLOP/s")
    cfg = PseudoLabelConfig(cluster=args.cluster, k1=args.k1, k2=args.k2, eps=args.eps,
                            min_samples=args.min_samples, rho=args.rho, knn=args.knn, knn_block=args.knn_block,
                            hnsw_m=args.hnsw_m, hnsw_ef_construction=args.hnsw_ef_construction,
                            hnsw_ef_search=args.hnsw_ef_search, pca_dim=args.pca_dim,
                            pca_oversample=args.pca_oversample, jaccard_backend=args.jaccard_backend)
    labeler = PseudoLabeler(cfg)
    stages: dict = {}

    def stage(name, fn, *a):
        meter.start()
        t0 = time.perf_counter()
        res = fn(*a)
        dt = time.perf_counter() - t0
        stages[name] = {"time_s": round(dt, 2), "time_s_exact": dt, "peak_rss_gib": round(meter.peak(), 3)}
        print(f"  {name:<22s} {dt:8.2f} s   peak RSS {stages[name]['peak_rss_gib']:.2f} GiB")
        return res

    f = stage("check features", check_features, f)
    neighbours = stage(f"k-NN ({args.knn})", labeler.neighbours, f)
    if measure_gemm:
        blocks = knn_block_sizes(args.n, args.knn_block)
        performed = float(args.dim) * (float(args.n) ** 2 + sum(float(b) ** 2 for b in blocks))
        repeats = []  # (bare products s, k-NN stage s) per further call, alternated
        for _ in range(max(0, args.knn_repeats)):
            t_bare = bare_products(f, blocks)
            t0 = time.perf_counter()
            again = labeler.neighbours(f)
            repeats.append((t_bare, time.perf_counter() - t0))
            if not (np.array_equal(again[0], neighbours[0]) and np.array_equal(again[1], neighbours[1])):
                raise RuntimeError("k-NN: a repeated call gave different neighbours")
        gemm_after = gemm_gflops(args.dim)
        gemm_peak = max(*gemm_before.values(), *gemm_after.values(),
                        *(performed / tb / 1e9 for tb, _ in repeats))
        full = 2.0 * float(args.n) ** 2 * args.dim
        t_knn = stages[f"k-NN ({args.knn})"]["time_s_exact"]
        frac_performed = performed / t_knn / 1e9 / gemm_peak
        frac_full = full / t_knn / 1e9 / gemm_peak
        print("GEMM again after the k-NN: " + ", ".join(f"b={b}: {g:.1f}" for b, g in gemm_after.items())
              + f" GFLOP/s; peak (largest, the bare passes below included) {gemm_peak:.1f} GFLOP/s")
        print(f"  k-NN blocks: {len(blocks)} of {max(blocks)} rows or fewer; performed "
              f"{performed / 1e12:.3f} TFLOP = {performed / t_knn / 1e9:.1f} GFLOP/s = {frac_performed:.1%} of "
              f"GEMM peak; full-product equivalent 2 N^2 d = {full / 1e12:.3f} TFLOP -> {frac_full:.1%}")
        out["gemm"] = {"before_knn_gflops": {str(b): round(g, 1) for b, g in gemm_before.items()},
                       "after_knn_gflops": {str(b): round(g, 1) for b, g in gemm_after.items()},
                       "peak_gflops": round(gemm_peak, 1), "knn_blocks": len(blocks),
                       "knn_block_rows": max(blocks), "knn_tflop_performed": round(performed / 1e12, 4),
                       "knn_tflop_full": round(full / 1e12, 4), "fraction_performed": round(frac_performed, 4),
                       "fraction_full_product": round(frac_full, 4)}
        if repeats:
            best = min(t for _, t in repeats + [(None, t_knn)])
            for i, (tb, tk) in enumerate(repeats, 1):
                print(f"  repeat {i}: bare products {tb:.3f} s ({performed / tb / 1e9:.1f} GFLOP/s), k-NN stage "
                      f"{tk:.3f} s = {performed / tk / 1e9 / gemm_peak:.1%} of the peak, {tb / tk:.1%} of its bare pass")
            print(f"  k-NN stage, best of {len(repeats) + 1} calls: {best:.3f} s = "
                  f"{performed / best / 1e9 / gemm_peak:.1%} of the GEMM peak")
            out["gemm"].update(
                repeats=[{"bare_products_s": round(tb, 3), "knn_s": round(tk, 3),
                          "fraction_performed": round(performed / tk / 1e9 / gemm_peak, 4),
                          "fraction_of_bare": round(tb / tk, 4)} for tb, tk in repeats],
                knn_best_s=round(best, 3), fraction_performed_best=round(performed / best / 1e9 / gemm_peak, 4))
    if args.cluster == "dbscan":
        from unreid.pseudo_labels.jaccard import jaccard_backend

        backend = jaccard_backend(args.jaccard_backend)
        graph, eps = stage("Jaccard (sparse)", labeler.jaccard_graph, f, neighbours)
        again = []
        for _ in range(max(0, args.jaccard_repeats)):
            t0 = time.perf_counter()
            g2, e2 = labeler.jaccard_graph(f, neighbours)
            again.append(time.perf_counter() - t0)
            if e2 != eps or not all(np.array_equal(a, b) for a, b in zip(g2, graph)):
                raise RuntimeError("Jaccard: a repeated call gave different pairs or distances")
        print(f"  Jaccard kernel: {backend}; first call {stages['Jaccard (sparse)']['time_s_exact']:.3f} s"
              + (", further calls " + ", ".join(f"{t:.3f}" for t in again) + " s (same pairs and bits)"
                 if again else ""))
        out["jaccard"] = {"backend": backend, "first_s": round(stages["Jaccard (sparse)"]["time_s_exact"], 3),
                          "repeats_s": [round(t, 3) for t in again]}
        labels = stage("DBSCAN", labeler.dbscan, args.n, graph, eps)
        print(f"  pairs within eps={eps:.4f}: {len(graph[0]):,} (upper triangle, diagonal included)")
    else:
        from unreid.pseudo_labels.cluster import infomap_cluster

        eps = None
        labels = stage("InfoMap", infomap_cluster, f, neighbours[0].shape[1], cfg.infomap_min_sim,
                       cfg.infomap_min_size, neighbours)
    total = sum(s["time_s"] for s in stages.values())
    for s_ in stages.values():
        s_.pop("time_s_exact")
    peak = max(s["peak_rss_gib"] for s in stages.values())
    rep = cluster_report(labels, cams, ids)
    print(f"TOTAL {total:.2f} s (k-NN {stages[f'k-NN ({args.knn})']['time_s']:.2f} s), peak RSS {peak:.2f} GiB; "
          f"{rep['num_clusters']} clusters, {rep['outlier_ratio']:.1%} outliers, ARI vs identities "
          f"{rep['ari']:.3f}")
    out.update(n=args.n, dim=args.dim, knn=args.knn, cluster=args.cluster, eps=eps, stages=stages,
               total_s=round(total, 2), peak_rss_gib=round(peak, 3),
               report={k: rep[k] for k in ("num_clusters", "outlier_ratio", "ari", "nmi")})

    if args.compare_exact and args.knn != "exact":
        k = neighbours[0].shape[1]
        key = np.array([args.n, args.dim, args.seed, k, args.k2, args.min_samples], dtype=np.float64)
        key = np.concatenate([key, [eps if eps is not None else -1.0, 0 if args.cluster == "dbscan" else 1]])
        cache = Path(args.exact_cache) if args.exact_cache else None
        if cache is not None and cache.exists() and np.array_equal(np.load(cache)["key"], key):
            z = np.load(cache)
            exact_idx, exact_labels, t_exact = z["indices"], z["labels"], float(z["time"])
            print(f"exact neighbours and labels read from {cache}")
        else:
            exact_cfg = PseudoLabelConfig(**{**cfg.__dict__, "knn": "exact", "rho": None,
                                             "eps": eps if eps is not None else cfg.eps})
            exact_labeler = PseudoLabeler(exact_cfg)
            t0 = time.perf_counter()
            exact_nb = exact_labeler.neighbours(f)
            t_exact = time.perf_counter() - t0
            exact_idx = exact_nb[0]
            if args.cluster == "dbscan":
                g2, e2 = exact_labeler.jaccard_graph(f, exact_nb)
                exact_labels = exact_labeler.dbscan(args.n, g2, e2)
            else:
                from unreid.pseudo_labels.cluster import infomap_cluster

                exact_labels = infomap_cluster(f, k, cfg.infomap_min_sim, cfg.infomap_min_size, exact_nb)
            if cache is not None:
                np.savez(cache, key=key, indices=exact_idx, labels=exact_labels, time=t_exact)
        recall = recall_at_k(neighbours[0], exact_idx[:, :k])
        ari = adjusted_rand_score(exact_labels, labels)
        print(f"vs exact k-NN (exact search {t_exact:.1f} s, same eps): recall@{k} {recall:.4f}; ARI of the "
              f"final pseudo-labels against the exact ones {ari:.4f}")
        out.update(exact_knn_s=round(t_exact, 2), recall_at_k=round(recall, 5), ari_vs_exact=round(ari, 5))

    if args.compare_dense:
        from unreid.pseudo_labels.jaccard import jaccard_distance

        dense_jaccard = _dense_oracle()
        meter.start()
        t0 = time.perf_counter()
        dense = dense_jaccard(f.double().numpy(), neighbours[0], args.k1, args.k2)
        t_dense = time.perf_counter() - t0
        dense_peak = meter.peak()
        sparse_t = stages["Jaccard (sparse)"]["time_s"]
        full = jaccard_distance(f, args.k1, args.k2, neighbours=neighbours).tocoo()
        diff = np.abs(dense[full.row, full.col] - full.data).max()
        dense[full.row, full.col] = 1.0
        diff = max(diff, float(np.abs(dense - 1.0).max()))  # every pair not stored must be exactly 1
        print(f"dense in-test reference (tests/test_jaccard.py): {t_dense:.1f} s, peak RSS {dense_peak:.2f} GiB; "
              f"sparse Jaccard {sparse_t:.2f} s: {t_dense / sparse_t:.0f}x faster; max |difference| over all "
              f"N^2 pairs {diff:.1e}")
        out.update(dense_s=round(t_dense, 2), dense_peak_rss_gib=round(dense_peak, 3), dense_max_diff=diff)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
