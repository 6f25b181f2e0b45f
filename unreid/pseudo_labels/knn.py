"""k-nearest neighbours by inner product on L2-normalised features, exact (blocked) or approximate.

This is the first step of the shared k-reciprocal Jaccard distance: Cluster Contrast, HHCL and GCL
search the ``k1`` nearest neighbours with faiss ``IndexFlatL2`` on L2-normalised features
(alibaba/cluster-contrast-reid ``clustercontrast/utils/faiss_rerank.py``; ``shared/ANCHORS.md``).
On unit vectors ``||a - b||^2 = 2 - 2 a.b``, so the order by inner product is the same order.

``method="exact"`` (default) multiplies blocks of rows on the features' device. The similarity
matrix is symmetric, so only the block pairs ``(I, J)`` with ``J >= I`` are multiplied; each product
serves the rows of ``I`` (along its rows) and the rows of ``J`` (along its columns), which halves the
matrix-product work of a plain blocked search (and of faiss ``IndexFlatIP``). On CPU
(:func:`_exact_threshold_cpu`) the rows are cut into blocks of nearly equal size, at most
``min(block, CPU_BLOCK)`` rows (640: a product's operands and result, 2 x 5 MiB + 1.6 MiB at
``d = 2048``, stay in the last-level cache; at N = 12,936 on the benchmark's 2-core machine the
search took 2.14-2.30 s against 2.22-2.81 s with 1024-row and 2.20-2.38 s with 512-row blocks,
docs/BENCHMARKS.md); diagonal blocks go first and give every row a threshold (a lower bound of
its ``k``-th best similarity); later products only keep the entries at or above their row's /
column's threshold (two comparisons and a ``flatnonzero``, much cheaper than a ``topk`` over the
block) and merge them into the running lists, kept as sorted integer keys. The matrix products are
most of the time (``benchmarks/pseudo_labels.py`` reports the stage's throughput as a fraction of
the machine's own ``torch.mm`` throughput). On CUDA each product is reduced with ``topk`` along both
axes. Memory is ``O(block^2 + N * k)``, never ``N x N``.

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
#: largest block of the exact CPU search (rows); see the module docstring
CPU_BLOCK = 640
PENDING = 8


def knn(features: Tensor | np.ndarray, k: int, method: str = "exact", block: int = 4096, *,
        hnsw_m: int = 32, hnsw_ef_construction: int = 64, hnsw_ef_search: int = 128,
        pca_dim: int = 256, pca_oversample: float = 1.5, gram: Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of every row (inner product = cosine similarity), self first.

    Args:
        features: ``(N, d) float32`` L2-normalised features (tensor on any device, or array).
        k: list length including self, ``1 <= k <= N``.
        method: ``"exact"`` (blocked torch matmul, symmetric), ``"faiss"`` (exact ``IndexFlatIP``),
            ``"hnsw"`` (approximate ``IndexHNSWFlat``) or ``"pca"`` (approximate: exact search in a
            PCA subspace, then exact re-ranking; see :func:`_pca_search`).
        block: at most this many rows per block of the exact search (memory ``O(block^2)`` floats
            per product). On CPU the blocks have at most ``min(block, 640)`` rows, in nearly
            equal sizes (:data:`CPU_BLOCK`).
        hnsw_m: HNSW graph degree ``M`` (faiss default 32).
        hnsw_ef_construction: HNSW ``efConstruction`` (faiss default 40; 64 here for recall).
        hnsw_ef_search: HNSW ``efSearch``; raised to ``k + 1`` when smaller.
        pca_dim: dimension of the subspace of ``method="pca"`` (no reduction when ``>= d``).
        pca_oversample: ``method="pca"`` re-ranks ``ceil(pca_oversample * k)`` candidates.
        gram: ``(N, N) float32`` symmetric, or ``None``: inner products added to ``features @
            features.T`` block by block (the fixed part of ``pseudo_labels.prior_mode=gram``,
            :mod:`unreid.pseudo_labels.prior`); only with ``method="exact"``, searched by the
            symmetric blocked product.

    Returns:
        ``(indices, similarities)``: ``(N, k) int64`` neighbour indices and ``(N, k) float32``
        inner products, sorted by decreasing similarity after column 0 (self, with its own inner
        product). See the module docstring for the tie rule.

    Raises:
        ValueError: ``features`` not 2-D, ``k`` outside ``[1, N]``, an unknown ``method``, or ``gram``
            not ``(N, N)`` or with a ``method`` other than ``"exact"``.
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
    if gram is not None:
        if method != "exact":
            raise ValueError(f"k-NN with a fixed Gram part (pseudo_labels.prior_mode=gram) needs knn=exact, got "
                             f"{method!r}; set pseudo_labels.prior_mode=append for the {method} search")
        if tuple(gram.shape) != (n, n):
            raise ValueError(f"k-NN: the Gram part must be ({n}, {n}), got {tuple(gram.shape)}")
        gram = gram.to(device=f.device, dtype=torch.float32)
    self_sim = _self_similarity(f)
    if gram is not None:
        self_sim = self_sim + gram.diagonal().cpu().numpy()
    if k == 1:
        return np.arange(n, dtype=np.int64)[:, None], self_sim[:, None]
    threshold_cpu = method == "exact" and f.device.type == "cpu"
    if threshold_cpu:
        idx, sim = _exact_threshold_cpu(f, k - 1, max(1, min(int(block), CPU_BLOCK)), gram=gram)
    elif gram is not None:
        idx, sim = _exact_symmetric(f, k - 1, max(1, int(block)), gram=gram)
    elif method == "exact":
        idx, sim = _exact_symmetric(f, k - 1, max(1, int(block)))
    elif method == "pca":
        idx, sim = _pca_search(f, k - 1, pca_dim, pca_oversample, max(1, int(block)))
    else:
        idx, sim = _faiss_search(f, k - 1, method, hnsw_m, hnsw_ef_construction, hnsw_ef_search)
    if not threshold_cpu:  # the threshold search's lists are already in the tie order (sorted keys)
        idx, sim = _order_ties(idx, sim)
    indices = np.concatenate([np.arange(n, dtype=np.int64)[:, None], idx], axis=1)
    sims = np.concatenate([self_sim[:, None], sim], axis=1)
    return indices, sims


def _self_similarity(f: Tensor, chunk: int = 4096) -> np.ndarray:
    """``(N,) float32`` inner product of every row with itself: ``(f * f).sum(1)`` in row chunks of
    nearly equal size, into one reused buffer, instead of an ``N x d`` temporary (0.8 GB at
    N = 100,000, d = 2048). Same element-wise product and row sum, so the same bits."""
    n, d = f.shape
    out = torch.empty(n, dtype=torch.float32, device=f.device)
    bounds = _block_bounds(n, chunk)
    buf = _buffer((bounds[0][1] - bounds[0][0]) * d, f.device)
    for s0, e0 in bounds:
        prod = buf[: (e0 - s0) * d].view(e0 - s0, d)
        torch.mul(f[s0:e0], f[s0:e0], out=prod)
        torch.sum(prod, 1, out=out[s0:e0])
    return out.cpu().numpy()


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


def _exact_symmetric(f: Tensor, kk: int, block: int, gram: Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``kk`` other rows of every row by blocked ``f @ f.T`` (``+ gram`` block by block when
    given), upper block triangle only (any device).

    Each product updates the rows of ``I`` with ``topk`` along its rows and the rows of ``J`` with
    ``topk`` along its columns (used on CUDA, where ``topk`` is cheap, and with a Gram part).
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
            if gram is not None:
                sim.add_(gram[s0:e0, s1:e1])
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


_NO_KEY = np.iinfo(np.int64).max  # an empty list slot: sorts after every real key


def _keys(v: np.ndarray, j: np.ndarray) -> np.ndarray:
    """One ``int64`` sort key per (similarity, index): ascending = decreasing ``v``, then increasing ``j``.

    The high 32 bits are the float32 bits of ``v`` mapped to an order-reversing integer, the low 32
    bits the index ``j < 2**32``. ``-0.0`` is mapped to ``+0.0`` first, so that equal similarities
    always tie (and the smaller index wins), as ``np.lexsort((j, -v))`` would decide.
    """
    b = (v + np.float32(0.0)).view(np.int32).astype(np.int64)
    m = np.where(b < 0, b ^ 0x7FFFFFFF, b)  # increasing with v
    return ((-m - 1) << 32) | j


def _key_values(keys: np.ndarray) -> np.ndarray:
    """The float32 similarities of :func:`_keys` (``-inf`` for an empty slot)."""
    m = -(keys >> 32) - 1
    v = np.where(m < 0, m ^ 0x7FFFFFFF, m).astype(np.int32).view(np.float32)
    return np.where(keys == _NO_KEY, np.float32(-np.inf), v)


def _merge_keys(keys: np.ndarray, theta: np.ndarray, lo: int, hi: int, rows: np.ndarray,
                cand: np.ndarray, rows_sorted: bool) -> None:
    """Merge candidate keys ``cand`` of the local rows ``rows`` (in ``[0, hi - lo)``) into ``keys[lo:hi]``.

    ``keys`` rows are sorted ascending (best first). Per row, the ``kk`` current keys and the row's
    candidates are laid side by side in a padded array, sorted, and the first ``kk`` kept; ``theta``
    (the ``kk``-th similarity, ``-inf`` while a list is not full) is refreshed.
    """
    if len(rows) == 0:
        return
    kk = keys.shape[1]
    counts = np.bincount(rows, minlength=hi - lo)
    if not rows_sorted:  # group the candidates by row (stable radix sort on 16-bit rows when possible)
        order = np.argsort(rows.astype(np.uint16) if hi - lo <= 65536 else rows, kind="stable")
        rows, cand = rows[order], cand[order]
    slot = np.arange(kk, kk + len(rows)) - (np.cumsum(counts) - counts)[rows]
    pad = np.full((hi - lo, kk + int(counts.max())), _NO_KEY, dtype=np.int64)
    pad[:, :kk] = keys[lo:hi]
    pad[rows, slot] = cand
    pad.sort(axis=1)
    keys[lo:hi] = pad[:, :kk]
    theta[lo:hi] = _key_values(pad[:, kk - 1])


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


def _block_bounds(n: int, block: int) -> list[tuple[int, int]]:
    """``ceil(n / block)`` consecutive row ranges of nearly equal size (at most ``block`` rows each)."""
    nb = -(-n // max(1, min(block, n)))
    size = -(-n // nb)
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def _exact_threshold_cpu(f: Tensor, kk: int, block: int, gram: Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``kk`` other rows of every row on CPU: blocked symmetric products + running thresholds.

    With ``gram`` (``(N, N)``, symmetric) each block of products gets its block of ``gram`` added
    before any selection, so everything below applies to ``f @ f.T + gram``.

    The rows are cut into ``ceil(N / block)`` blocks of nearly equal size (no small remainder
    block: an odd-shaped product runs well below the matrix-product peak). Diagonal blocks first:
    each row gets a threshold ``theta`` that is a lower bound of its final ``kk``-th similarity (the
    ``kk``-th largest of the maxima of groups of 4 columns of its own block: ``kk`` distinct entries
    reach it), and the entries at or above it become its list. Then, for every block pair
    ``(I, J)``, ``J > I``, only the entries ``>=`` the current threshold of their row (for the rows
    of ``I``) or of their column (for the rows of ``J``) are candidates: two comparisons and a
    ``flatnonzero`` over the product. Each list is kept as sorted ``int64`` keys
    (:func:`_keys`: similarity descending, then index ascending), so merging is an integer sort of a
    short padded row, and among equal similarities the smaller index wins, also at the ``kk``-th
    place: the lists are exactly those of a full sort of every row by (similarity desc, index asc).
    Candidates of a block wait until they number ``PENDING`` times its rows (or the block can get
    no more) and are merged at once; the filters meanwhile use the last merged thresholds. A
    threshold only ever rises, and every candidate that can still enter a list passes it, so the
    result does not depend on when merges happen.
    """
    n = f.shape[0]
    f = f.contiguous()
    keys = np.full((n, kk), _NO_KEY, dtype=np.int64)
    theta = np.full(n, -np.inf, dtype=np.float32)
    bounds = _block_bounds(n, block)
    size = bounds[0][1] - bounds[0][0]
    prod = _buffer(size * size, f.device)
    above_row = np.empty(size * size, dtype=bool)
    above_col = np.empty(size * size, dtype=bool)
    group = 4

    def product(s0: int, e0: int, s1: int, e1: int) -> np.ndarray:
        sim = prod[: (e0 - s0) * (e1 - s1)].view(e0 - s0, e1 - s1)
        torch.mm(f[s0:e0], f[s1:e1].T, out=sim)
        if gram is not None:
            sim.add_(gram[s0:e0, s1:e1])
        return sim.numpy()

    for s0, e0 in bounds:
        b = e0 - s0
        sim = product(s0, e0, s0, e0)
        np.fill_diagonal(sim, -np.inf)  # self is column 0, added by the caller
        g = b // group
        if g >= kk:  # kk-th largest of the group maxima <= the row's kk-th largest entry
            gmax = sim[:, 0:g * group:group].copy()
            for o in range(1, group):
                np.maximum(gmax, sim[:, o:g * group:group], out=gmax)
            th = np.partition(gmax, g - kk, axis=1)[:, g - kk]
        elif b - 1 >= kk:
            th = np.partition(sim, b - kk, axis=1)[:, b - kk]
        else:
            th = np.full(b, -np.inf, dtype=np.float32)  # lists cannot fill here: take all but self
        m = above_row[: sim.size].reshape(sim.shape)
        np.greater_equal(sim, th[:, None], out=m)
        flat = np.flatnonzero(m)
        r, c = np.divmod(flat, b)
        off = r != c
        r, c = r[off], c[off]
        _merge_keys(keys, theta, s0, e0, r, _keys(sim.ravel()[flat[off]], c + s0), True)
    # candidates wait per block and are merged once they are PENDING x the block's rows (or at the end):
    # fewer, larger merges; the thresholds in the meantime are the last merged ones (still lower bounds)
    pending: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in bounds]
    waiting = [0] * len(bounds)
    none = np.empty(0, dtype=np.int64)

    def add(blk: int, rows: np.ndarray, cand: np.ndarray, flush: bool = False) -> None:
        if len(rows):
            pending[blk].append((rows, cand))
            waiting[blk] += len(rows)
        lo, hi = bounds[blk]
        if waiting[blk] and (flush or waiting[blk] >= PENDING * (hi - lo)):
            parts = pending[blk]
            rows_all = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
            cand_all = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
            _merge_keys(keys, theta, lo, hi, rows_all, cand_all, False)
            pending[blk], waiting[blk] = [], 0

    for a, (s0, e0) in enumerate(bounds):
        for b_, (s1, e1) in enumerate(bounds[a + 1:], start=a + 1):
            sim = product(s0, e0, s1, e1)
            t0, t1 = theta[s0:e0], theta[s1:e1]
            m0 = above_row[: sim.size].reshape(sim.shape)
            m1 = above_col[: sim.size].reshape(sim.shape)
            np.greater_equal(sim, t0[:, None], out=m0)
            np.greater_equal(sim, t1[None, :], out=m1)
            np.logical_or(m0, m1, out=m0)
            flat = np.flatnonzero(m0)
            r, c = np.divmod(flat, e1 - s1)
            v = sim.ravel()[flat]
            for_r = v >= t0[r]  # candidates of the rows of I
            for_c = v >= t1[c]  # candidates of the rows of J
            add(a, r[for_r], _keys(v[for_r], c[for_r] + s1))
            add(b_, c[for_c], _keys(v[for_c], r[for_c] + s0))
        add(a, none, none, flush=True)  # block I is done: its rows get no more candidates
    return keys & 0xFFFFFFFF, _key_values(keys)


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
