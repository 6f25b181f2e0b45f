"""k-nearest neighbours by inner product on L2-normalised features, exact (blocked) or approximate.

This is the first step of the shared k-reciprocal Jaccard distance: Cluster Contrast, HHCL and GCL
search the ``k1`` nearest neighbours with faiss ``IndexFlatL2`` on L2-normalised features
(alibaba/cluster-contrast-reid ``clustercontrast/utils/faiss_rerank.py``; ``shared/ANCHORS.md``).
On unit vectors ``||a - b||^2 = 2 - 2 a.b``, so the order by inner product is the same order.

``method="exact"`` (default) multiplies blocks of rows on the features' device. The similarity
matrix is symmetric, so only the block pairs ``(I, J)`` with ``J >= I`` are multiplied; each product
serves the rows of ``I`` (along its rows) and the rows of ``J`` (along its columns), which halves the
matrix-product work of a plain blocked search (and of faiss ``IndexFlatIP``). On CPU, diagonal blocks
go first and give every row a threshold (its ``k``-th best similarity so far); later products only
keep the entries at or above their row's / column's threshold (a comparison and ``flatnonzero``,
much cheaper than a ``topk`` over the block) and merge them into the running lists. On CUDA each
product is reduced with ``topk`` along both axes. Memory is ``O(block^2 + N * k)``, never ``N x N``.

``method="faiss"`` runs faiss ``IndexFlatIP`` (exact, CPU). Two approximate methods for very large
N, whose recall@k against the exact search ``benchmarks/pseudo_labels.py`` measures:
``method="hnsw"`` runs faiss ``IndexHNSWFlat`` with the inner-product metric (Malkov & Yashunin,
TPAMI 2018); ``method="pca"`` searches exactly in a PCA subspace and re-ranks the candidates with
the full features (:func:`_pca_search`), which on 2 CPU cores is the faster of the two at
``d = 2048`` (docs/BENCHMARKS.md).

Rule for ties and self (every method):

* column 0 of row ``i`` is ``i`` itself, always (forced, not searched): with duplicated features
  the reference's faiss search may rank an identical copy before the query itself, or even drop the
  query from its own list when more than ``k`` copies exist; here self is never displaced;
* columns ``1..k-1`` are the ``k - 1`` most similar *other* rows by decreasing similarity, equal
  similarities by increasing index. With the exact CPU search this also decides which of several
  rows tied at the last place enter the list (the smallest indices), so duplicated features give
  deterministic lists. With ``faiss``, ``hnsw`` or CUDA, which of the rows tied at the last place
  enter is unspecified (as in the reference's faiss search).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from unreid.rng import forked_seed

_METHODS = ("exact", "faiss", "hnsw", "pca")


def knn(features: Tensor | np.ndarray, k: int, method: str = "exact", block: int = 4096, *,
        hnsw_m: int = 32, hnsw_ef_construction: int = 64, hnsw_ef_search: int = 128,
        pca_dim: int = 256, pca_oversample: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of every row (inner product = cosine similarity), self first.

    Args:
        features: ``(N, d) float32`` L2-normalised features (tensor on any device, or array).
        k: list length including self, ``1 <= k <= N``.
        method: ``"exact"`` (blocked torch matmul, symmetric), ``"faiss"`` (exact ``IndexFlatIP``),
            ``"hnsw"`` (approximate ``IndexHNSWFlat``) or ``"pca"`` (approximate: exact search in a
            PCA subspace, then exact re-ranking; see :func:`_pca_search`).
        block: rows per block of the exact search (memory ``O(block^2)`` floats per product).
        hnsw_m: HNSW graph degree ``M`` (faiss default 32).
        hnsw_ef_construction: HNSW ``efConstruction`` (faiss default 40; 64 here for recall).
        hnsw_ef_search: HNSW ``efSearch``; raised to ``k + 1`` when smaller.
        pca_dim: dimension of the subspace of ``method="pca"`` (no reduction when ``>= d``).
        pca_oversample: ``method="pca"`` re-ranks ``ceil(pca_oversample * k)`` candidates.

    Returns:
        ``(indices, similarities)``: ``(N, k) int64`` neighbour indices and ``(N, k) float32``
        inner products, sorted by decreasing similarity after column 0 (self, with its own inner
        product). See the module docstring for the tie rule.

    Raises:
        ValueError: ``features`` not 2-D, ``k`` outside ``[1, N]``, or an unknown ``method``.
        ImportError: ``method`` needs faiss and it is not installed.
    """
    f = torch.as_tensor(features)
    if f.ndim != 2:
        raise ValueError(f"k-NN needs an (N, d) feature matrix, got shape {tuple(f.shape)}")
    f = f.float()
    n = f.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-NN: k must be in [1, N={n}], got k={k}")
    if method not in _METHODS:
        raise ValueError(f"unknown k-NN method {method!r}; choose one of {', '.join(_METHODS)}")
    self_sim = (f * f).sum(1).cpu().numpy().astype(np.float32)
    if k == 1:
        return np.arange(n, dtype=np.int64)[:, None], self_sim[:, None]
    if method == "exact" and f.device.type == "cpu":
        idx, sim = _exact_threshold_cpu(f, k - 1, max(1, int(block)))
    elif method == "exact":
        idx, sim = _exact_symmetric(f, k - 1, max(1, int(block)))
    elif method == "pca":
        idx, sim = _pca_search(f, k - 1, pca_dim, pca_oversample, max(1, int(block)))
    else:
        idx, sim = _faiss_search(f, k - 1, method, hnsw_m, hnsw_ef_construction, hnsw_ef_search)
    idx, sim = _order_ties(idx, sim)
    indices = np.concatenate([np.arange(n, dtype=np.int64)[:, None], idx], axis=1)
    sims = np.concatenate([self_sim[:, None], sim], axis=1)
    return indices, sims


def _merge(vals: Tensor, idx: Tensor, rows: slice, cand_v: Tensor, cand_i: Tensor, kk: int) -> None:
    """Merge candidates ``(b, c)`` into the running top-``kk`` of ``rows`` (in place)."""
    v = torch.cat([vals[rows], cand_v], dim=1)
    i = torch.cat([idx[rows], cand_i], dim=1)
    top_v, pos = v.topk(kk, dim=1)
    vals[rows] = top_v
    idx[rows] = i.gather(1, pos)


def _buffer(size: int, device: torch.device) -> Tensor:
    """A reusable flat float32 buffer. On CPU it is numpy-allocated: numpy asks the kernel for huge
    pages (``madvise``), so first-touch page faults, which dominate a fresh torch allocation of a
    ``block x block`` product on some virtual machines, are paid once instead of once per block."""
    if device.type == "cpu":
        return torch.from_numpy(np.empty(size, dtype=np.float32))
    return torch.empty(size, dtype=torch.float32, device=device)


def _exact_symmetric(f: Tensor, kk: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``kk`` other rows of every row by blocked ``f @ f.T``, upper block triangle only (any device).

    Each product updates the rows of ``I`` with ``topk`` along its rows and the rows of ``J`` with
    ``topk`` along its columns (used on CUDA, where ``topk`` is cheap).
    """
    n = f.shape[0]
    dev = f.device
    vals = torch.full((n, kk), float("-inf"), device=dev)
    idx = torch.full((n, kk), -1, dtype=torch.long, device=dev)
    block = min(block, n)
    prod = _buffer(block * block, dev)
    trans = _buffer(block * block, dev)
    starts = list(range(0, n, block))
    for a, s0 in enumerate(starts):
        e0 = min(n, s0 + block)
        fa = f[s0:e0]
        for s1 in starts[a:]:
            e1 = min(n, s1 + block)
            sim = prod[: (e0 - s0) * (e1 - s1)].view(e0 - s0, e1 - s1)
            torch.mm(fa, f[s1:e1].T, out=sim)
            if s1 == s0:
                sim.fill_diagonal_(float("-inf"))  # self is column 0, added by the caller
            v, i = sim.topk(min(kk, e1 - s1), dim=1)
            _merge(vals, idx, slice(s0, e0), v, i + s1, kk)
            if s1 != s0:
                sim_t = trans[: (e0 - s0) * (e1 - s1)].view(e1 - s1, e0 - s0)
                sim_t.copy_(sim.T)
                v, i = sim_t.topk(min(kk, e0 - s0), dim=1)
                _merge(vals, idx, slice(s1, e1), v, i + s0, kk)
    return idx.cpu().numpy(), vals.cpu().numpy()


def _merge_candidates(vals: np.ndarray, idx: np.ndarray, rows: np.ndarray, cand_v: np.ndarray,
                      cand_i: np.ndarray) -> None:
    """Merge candidates ``(rows[m], cand_i[m], cand_v[m])`` into the running lists (in place).

    Per touched row, the running ``kk`` entries and the row's candidates are sorted by decreasing
    similarity, then increasing index, and the first ``kk`` are kept.
    """
    if len(rows) == 0:
        return
    kk = vals.shape[1]
    urows, inv = np.unique(rows, return_inverse=True)
    m = len(urows)
    group = np.concatenate([np.repeat(np.arange(m, dtype=np.int64), kk), inv])
    v = np.concatenate([vals[urows].ravel(), cand_v])
    i = np.concatenate([idx[urows].ravel(), cand_i])
    # one int64 key for (row, decreasing similarity): row in the high 32 bits, then the float32
    # bits of -v mapped to an order-preserving unsigned integer; the index is the second key
    bits = (-v).view(np.int32).astype(np.int64)
    bits = np.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + 2**31
    order = np.lexsort((i, (group << 32) | bits))
    g = group[order]
    counts = np.bincount(g, minlength=m)
    rank = np.arange(len(g)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = rank < kk
    sel = order[keep]
    r, rk = urows[g[keep]], rank[keep]
    vals[r, rk] = v[sel]
    idx[r, rk] = i[sel]


def _coherent_order(x: Tensor, groups: int, iters: int = 5) -> np.ndarray:
    """A permutation that puts similar rows next to each other (sorted by spherical k-means cell).

    A few Lloyd iterations (Lloyd, IEEE Trans. Inf. Theory 1982) of spherical k-means with
    ``groups`` centroids, seeded by a fixed random sample. Used to form blocks whose rows are
    mostly each other's neighbours, so the thresholds of :func:`_exact_threshold_cpu` start high.
    """
    n = x.shape[0]
    groups = max(1, min(groups, n))
    g = torch.Generator().manual_seed(0)
    cent = torch.nn.functional.normalize(x[torch.randperm(n, generator=g)[:groups]], dim=1)
    assign = torch.zeros(n, dtype=torch.long)
    for _ in range(iters):
        for s0 in range(0, n, 65536):
            assign[s0:s0 + 65536] = (x[s0:s0 + 65536] @ cent.T).argmax(1)
        sums = torch.zeros_like(cent).index_add_(0, assign, x)
        empty = sums.norm(dim=1) == 0
        cent = torch.where(empty[:, None], cent, torch.nn.functional.normalize(sums, dim=1))
    return np.argsort(assign.numpy(), kind="stable")


def _exact_threshold_cpu(f: Tensor, kk: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``kk`` other rows of every row on CPU: blocked symmetric products + running thresholds.

    Diagonal blocks first: ``topk`` gives each row a threshold (its ``kk``-th best similarity
    within its own block). Then, for every block pair ``(I, J)``, ``J > I``, only the entries
    ``>=`` the current threshold of their row (for the rows of ``I``) or of their column (for the
    rows of ``J``) are candidates: two comparisons and ``flatnonzero`` instead of a ``topk`` and a
    transposed copy of the whole product. Candidates are merged by (similarity desc, index asc),
    so among equal similarities the smaller index wins, also at the ``kk``-th place.
    """
    n = f.shape[0]
    vals = np.full((n, kk), -np.inf, dtype=np.float32)
    idx = np.full((n, kk), -1, dtype=np.int64)
    block = min(block, n)
    prod = _buffer(block * block, f.device)
    mask = np.empty(block * block, dtype=bool)
    starts = list(range(0, n, block))

    def product(s0: int, e0: int, s1: int, e1: int) -> np.ndarray:
        sim = prod[: (e0 - s0) * (e1 - s1)].view(e0 - s0, e1 - s1)
        torch.mm(f[s0:e0], f[s1:e1].T, out=sim)
        return sim.numpy()

    def take(sim: np.ndarray, theta: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = mask[: sim.size].reshape(sim.shape)
        np.greater_equal(sim, theta[:, None] if axis == 1 else theta[None, :], out=m)
        flat = np.flatnonzero(m)
        r, c = np.divmod(flat, sim.shape[1])
        return r, c, sim.ravel()[flat]

    for s0 in starts:
        e0 = min(n, s0 + block)
        sim = product(s0, e0, s0, e0)
        np.fill_diagonal(sim, -np.inf)  # self is column 0, added by the caller
        c = min(kk, e0 - s0)
        theta = torch.from_numpy(sim).topk(c, dim=1).values[:, -1].numpy()
        if c < kk:
            theta = np.full(e0 - s0, np.finfo(np.float32).min)  # lists cannot fill: take all but self
        r, col, v = take(sim, theta, 1)
        _merge_candidates(vals, idx, r + s0, v, col + s0)
    for a, s0 in enumerate(starts):
        e0 = min(n, s0 + block)
        for s1 in starts[a + 1:]:
            e1 = min(n, s1 + block)
            sim = product(s0, e0, s1, e1)
            r, col, v = take(sim, vals[s0:e0, -1], 1)  # rows of I
            _merge_candidates(vals, idx, r + s0, v, col + s1)
            r, col, v = take(sim, vals[s1:e1, -1], 0)  # rows of J (columns of the product)
            _merge_candidates(vals, idx, col + s1, v, r + s0)
    return idx, vals


def _faiss_search(f: Tensor, kk: int, method: str, m: int, ef_construction: int,
                  ef_search: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``kk`` other rows with faiss (self removed from the results)."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError(f"pseudo_labels.knn={method} needs faiss: pip install faiss-cpu "
                          "(or use pseudo_labels.knn=exact)") from err
    x = np.ascontiguousarray(f.detach().cpu().numpy(), dtype=np.float32)
    n, d = x.shape
    if method == "faiss":
        index = faiss.IndexFlatIP(d)
    else:
        index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = max(ef_search, kk + 2)
    index.add(x)
    kq = min(n, kk + 1)
    sim, idx = index.search(x, kq)
    return _drop_self(idx.astype(np.int64), sim.astype(np.float32), kk)


def _pca_search(f: Tensor, kk: int, dim: int, oversample: float, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-``kk``: exact search in a ``dim``-dimensional PCA subspace, exact re-ranking.

    1. The top-``dim`` right singular vectors ``P`` of (a 10,000-row random sample of) the
       **uncentred** features, by randomized SVD (``torch.svd_lowrank``, Halko et al., SIAM Review
       2011): ``x P P^T`` is the best rank-``dim`` approximation, so ``(x P).(y P)`` approximates
       the inner product ``x.y`` (centring would change the inner products).
    2. Exact symmetric search (:func:`_exact_threshold_cpu`) for ``ceil(oversample * (kk + 1))``
       candidates on the projected ``(N, dim)`` features (``d / dim`` times fewer flops), rows
       ordered by :func:`_coherent_order` so that each block holds mostly mutual neighbours.
    3. Exact full-dimensional inner products of the candidates; the best ``kk`` are kept.

    Deep features concentrate most of their energy in a few hundred directions; the benchmark
    measures the recall. Falls back to the exact search when ``dim >= d``.
    """
    n, d = f.shape
    fc = f.detach().cpu().contiguous()
    if dim >= d:
        return _exact_threshold_cpu(fc, kk, block)
    kc = min(n - 1, max(kk, int(np.ceil(oversample * (kk + 1))) - 1))
    g = torch.Generator().manual_seed(0)
    sample = fc[torch.randperm(n, generator=g)[: min(n, 10000)]]
    threads = torch.get_num_threads()
    try:
        # one thread: on a busy machine the LAPACK QR inside svd_lowrank is 10x slower with 2
        # spinning threads than with 1 (measured: 5.5 s vs 0.38 s for 10,000 x 266)
        torch.set_num_threads(1)
        # svd_lowrank draws its random projection from the global CPU generator (the features are on
        # the CPU): seed it inside a forked state, so the caller's random streams are left alone
        with forked_seed(0):
            _, _, v = torch.svd_lowrank(sample, q=min(dim + 10, *sample.shape), niter=2)
    finally:
        torch.set_num_threads(threads)
    reduced = fc @ v[:, :dim].contiguous()
    # blocks of mutually similar rows: high thresholds from the start, few candidates to merge
    order = _coherent_order(reduced, -(-n // block))
    cand_perm, _ = _exact_threshold_cpu(reduced[torch.from_numpy(order)], kc, block)
    del reduced
    cand = np.empty_like(cand_perm)
    cand[order] = order[cand_perm]
    x = fc.numpy()
    sims = np.empty(cand.shape, dtype=np.float32)
    step = max(1, (16 << 20) // (kc * d * 4))  # about 16 MiB of gathered rows at a time
    for s0 in range(0, n, step):
        sims[s0:s0 + step] = np.einsum("qkd,qd->qk", x[cand[s0:s0 + step]], x[s0:s0 + step])
    order = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
    return np.take_along_axis(cand, order, 1), np.take_along_axis(sims, order, 1)


def _drop_self(idx: np.ndarray, sim: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index (wherever it ranks, if at all) and keep ``kk`` columns."""
    n = idx.shape[0]
    drop = (idx == np.arange(n)[:, None]) | (idx < 0)
    # rows where self was not returned: drop the last column instead (the weakest neighbour)
    missing = ~drop.any(axis=1)
    drop[missing, -1] = True
    order = np.argsort(drop, axis=1, kind="stable")[:, :kk]
    out_i = np.take_along_axis(idx, order, axis=1)
    out_s = np.take_along_axis(sim, order, axis=1)
    if (out_i < 0).any():
        raise RuntimeError("approximate k-NN returned fewer neighbours than requested; "
                           "raise pseudo_labels.hnsw_ef_search")
    return out_i, out_s


def _order_ties(idx: np.ndarray, sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by decreasing similarity, smaller index first among equal similarities."""
    order = np.lexsort((idx, -sim), axis=-1)
    return np.take_along_axis(idx, order, 1), np.take_along_axis(sim, order, 1)


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each row's exact neighbours found by an approximate search.

    Args:
        approx, exact: ``(N, k) int`` neighbour lists (self included in both, so it counts).

    Returns:
        recall@k in [0, 1].
    """
    n, k = exact.shape
    m = int(max(approx.max(), exact.max())) + 1
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    ka = np.sort(rows * m + approx.ravel())
    ke = rows * m + exact.ravel()
    pos = np.searchsorted(ka, ke).clip(max=len(ka) - 1)
    return float((ka[pos] == ke).mean())
