"""Sparse k-reciprocal encoding and Jaccard distance, identical to the shared dense reference.

Zhong et al., "Re-ranking Person Re-identification with k-reciprocal Encoding", CVPR 2017
(Sec. 3.3-3.5, eqs. 4-12), exactly as the ``compute_jaccard_distance`` copied by Cluster Contrast,
HHCL and GCL computes it (alibaba/cluster-contrast-reid ``clustercontrast/utils/faiss_rerank.py``;
``shared/ANCHORS.md``, "The shared k-reciprocal Jaccard distance"):

1. ``initial_rank``: the ``k1`` nearest neighbours of every sample **including itself**
   (:func:`unreid.pseudo_labels.knn.knn`, self forced to column 0).
2. ``R(i, k)`` = the ``j`` among the first ``c`` columns of row ``i`` that have ``i`` among their own
   first ``c`` columns, with ``c = min(k + 1, k1)``: ``R(i, k1)`` uses ``k1`` columns and
   ``R(i, k1/2)`` uses ``round(k1/2) + 1`` columns (``np.around``: half to even).
3. Expansion (eq. 12): ``R*(i) = R(i, k1) U R(c, k1/2)`` for every ``c`` in ``R(i, k1)`` with
   ``|R(c, k1/2) & R(i, k1)| > 2/3 |R(c, k1/2)|`` (strict, against the un-expanded ``R(i, k1)``).
4. Encoding (eq. 10): ``V[i, j] = softmax_j(-d_ij)`` over ``j`` in ``R*(i)`` with ``d = 2 - 2 cos``
   (squared Euclidean distance of unit vectors); every row sums to 1.
5. Query expansion (Sec. 3.5): ``V_i <- mean of V_j over j in initial_rank[i, :k2]`` (the plain
   top-``k2``, self included); skipped when ``k2 = 1``.
6. Jaccard distance (eq. 11 with min/max sums, as the reference): ``S_ij = sum_k min(V_ik, V_jk)``,
   ``d_J(i, j) = 1 - S_ij / (2 - S_ij)`` (valid because rows sum to 1), negatives clipped to 0.
   Pairs that share no non-zero column have ``S = 0``, i.e. ``d_J = 1`` exactly.

The reference keeps two dense ``N x N`` float32 arrays and loops in Python over ``N * k1^2`` items.
Here ``V`` is a ``scipy.sparse`` CSR matrix built with vectorised numpy / sparse-matrix operations
(reciprocity by sorted pair keys, the 2/3 rule by a sparse product), and ``S`` is computed only for
pairs that share a column: column by column (every pair of rows holding column ``k``), in blocks of
rows, upper triangle only (``S`` is symmetric), accumulated with ``np.bincount``, or, with numba
installed, by a compiled row kernel that sums the same terms in the same order
(:func:`jaccard_backend`); the blocks run on ``torch.get_num_threads()`` threads. Memory is
``O(nnz(V) + block work)`` plus the output.

Numerics: the softmax weights use the inner products of the k-NN search where the pair is in the
search's list (the reference recomputes them with ``torch.mm``; both are float32 products of the
same vectors, equal to ~1e-7) and a direct float32 product otherwise. ``V`` is float32 like the
reference's; ``S`` is accumulated in float64. Distances match the reference to 1e-5 (tested).
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from unreid.config import JACCARD_BACKENDS


def _sorted_pair_keys(rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keys ``i * N + j`` of the pairs of a neighbour table ``(N, c)``, globally sorted.

    Sorting each short row (``argsort(axis=1)``) sorts the keys globally, since the row part of
    the key already is. Returns ``(keys (N * c,) int64, order (N, c))`` with
    ``keys.reshape(N, c) == i * N + take_along_axis(rank, order, 1)``.
    """
    n = rank.shape[0]
    order = np.argsort(rank, axis=1)
    keys = (np.arange(n, dtype=np.int64)[:, None] * n + np.take_along_axis(rank, order, 1)).ravel()
    return keys, order


def _lookup(sorted_keys: np.ndarray, want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``want`` in ``sorted_keys`` and whether each was found."""
    pos = np.searchsorted(sorted_keys, want).clip(max=len(sorted_keys) - 1)
    return pos, sorted_keys[pos] == want


def _reciprocal(rank: np.ndarray, cols: int) -> sp.csr_matrix:
    """``R(i, .)`` as a boolean CSR: ``j`` in the first ``cols`` columns of row ``i`` and vice versa.

    ``A`` = the neighbour table as a sparse 0/1 matrix; ``R = A * A^T`` elementwise. Entries ``-1``
    (padding of shorter lists, e.g. CA-Jaccard's small cameras) are left out.
    """
    n = rank.shape[0]
    r = np.sort(rank[:, :cols], axis=1)  # sorted rows: a canonical CSR without a sort pass
    if (r < 0).any():
        rows = np.repeat(np.arange(n, dtype=np.int64), r.shape[1])[r.ravel() >= 0]
        a = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, r[r >= 0])), shape=(n, n))
    else:
        a = sp.csr_matrix((np.ones(r.size, dtype=np.float32), r.ravel(), np.arange(0, r.size + 1, cols)),
                          shape=(n, n))
    out = a.multiply(a.T.tocsr()).tocsr()
    out.sort_indices()
    return out


def _pair_dots(features: Tensor, rows: np.ndarray, cols: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """``(P,) float32`` inner products ``features[rows[p]] . features[cols[p]]``.

    Chunked ``index_select`` gathers and a row-wise product on the features' device (multi-threaded
    on the CPU). Chunks of ~1,000 pairs keep both gathered blocks in cache: for 600,000 random pairs
    of N = 12,936, d = 2048 features on 2 cores, 1.2 s against 4.4 s for numpy fancy-index gathers
    and 7.5 s for chunks of 8,192 (measured once while writing this). On the CPU the gathers, the
    product and the sum write into buffers allocated once (numpy-allocated, see
    :func:`unreid.pseudo_labels.knn._buffer`): a fresh 8 MiB tensor per chunk paid its first-touch
    page faults every time, which made the first call of a process several times slower (1.5 s
    against 0.27 s for 142,520 pairs at N = 12,936). Same kernels, so the same bits.
    """
    from unreid.pseudo_labels.knn import _buffer

    out = np.empty(len(rows), dtype=np.float32)
    if len(rows) == 0:
        return out
    r_all = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))
    c_all = torch.from_numpy(np.ascontiguousarray(cols, dtype=np.int64))
    d = features.shape[1]
    dev = features.device
    m = min(chunk, len(rows))
    a_buf, b_buf, s_buf = _buffer(m * d, dev), _buffer(m * d, dev), _buffer(m, dev)
    for s in range(0, len(rows), chunk):
        r = r_all[s:s + chunk].to(dev)
        c = c_all[s:s + chunk].to(dev)
        k = len(r)
        a = a_buf[: k * d].view(k, d)
        b = b_buf[: k * d].view(k, d)
        torch.index_select(features, 0, r, out=a)
        torch.index_select(features, 0, c, out=b)
        torch.mul(a, b, out=a)
        prod = torch.sum(a, 1, out=s_buf[:k])
        out[s:s + chunk] = prod.cpu().numpy()
    return out


def k_reciprocal_encoding(features: Tensor, indices: np.ndarray, similarities: np.ndarray | None,
                          k1: int, k2: int, gram: Tensor | None = None) -> sp.csr_matrix:
    """The sparse k-reciprocal encoding ``V`` after query expansion (steps 2-5 of the module doc).

    Args:
        features: ``(N, d) float32`` L2-normalised features (for inner products not in the k-NN list).
        indices: ``(N, >= k1) int64`` neighbour table, self in column 0
            (:func:`unreid.pseudo_labels.knn.knn`); only the first ``k1`` columns are used.
        similarities: ``(N, >= k1) float32`` inner products matching ``indices``, or ``None`` to
            recompute every needed product from ``features``.
        k1: k-reciprocal neighbourhood size (CC: 30), ``1 <= k1 <= indices.shape[1]``.
        k2: query-expansion size (CC: 6), ``>= 1``; ``1`` disables it.
        gram: ``(N, N) float32`` or ``None``: a fixed part added to every inner product computed from
            ``features`` (``pseudo_labels.prior_mode=gram``, :mod:`unreid.pseudo_labels.prior`).

    Returns:
        ``(N, N) csr_matrix float32`` with sorted indices; every row sums to 1 (float32 rounding).

    Raises:
        ValueError: ``k1`` / ``k2`` out of range or ``indices`` of the wrong shape.
    """
    n = indices.shape[0]
    if indices.ndim != 2 or not 1 <= k1 <= indices.shape[1]:
        raise ValueError(f"k-reciprocal encoding needs an (N, >= k1={k1}) neighbour table, got {indices.shape}")
    if k2 < 1:
        raise ValueError(f"k2 must be >= 1, got {k2}")
    rank = np.ascontiguousarray(indices[:, :k1], dtype=np.int64)
    r1 = _reciprocal(rank, k1)
    rh = _reciprocal(rank, min(int(np.around(k1 / 2)) + 1, k1))
    # overlap[i, c] = |R(i, k1) & R(c, k1/2)| for c in R(i, k1)
    overlap = (r1 @ rh.T).multiply(r1).tocoo()
    size_h = np.diff(rh.indptr)
    acc = overlap.data > (2.0 / 3.0) * size_h[overlap.col]
    accepted = sp.csr_matrix((np.ones(int(acc.sum()), np.float32), (overlap.row[acc], overlap.col[acc])),
                             shape=(n, n))
    expanded = (r1 + accepted @ rh).tocsr()
    expanded.sort_indices()
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(expanded.indptr))
    cols = expanded.indices.astype(np.int64)
    # inner products: from the k-NN list where available, computed otherwise
    dots = np.empty(len(rows), dtype=np.float32)
    found = np.zeros(len(rows), dtype=bool)
    if similarities is not None:
        keys, order = _sorted_pair_keys(rank)
        sims = np.take_along_axis(np.asarray(similarities[:, :k1], dtype=np.float32), order, 1).ravel()
        pos, found = _lookup(keys, rows * n + cols)
        dots[found] = sims[pos[found]]
    missing = ~found
    if missing.any():
        dots[missing] = _pair_dots(torch.as_tensor(features).float(), rows[missing], cols[missing])
        if gram is not None:
            r, c = torch.from_numpy(rows[missing]), torch.from_numpy(cols[missing])
            dots[missing] += gram.cpu()[r, c].numpy()
    w = np.exp(2.0 * dots.astype(np.float64) - 2.0)  # exp(-d), d = 2 - 2 cos in [0, 4]: no overflow
    w /= np.bincount(rows, weights=w, minlength=n)[rows]
    v = sp.csr_matrix((w.astype(np.float32), expanded.indices, expanded.indptr), shape=(n, n))
    kq = min(k2, k1)
    if k2 != 1 and kq > 1:
        q = sp.csr_matrix((np.full(n * kq, 1.0 / kq, dtype=np.float32),
                           rank[:, :kq].ravel(), np.arange(0, n * kq + 1, kq)), shape=(n, n))
        v = (q @ v).tocsr()
    v.sort_indices()
    return v


def _upper_rows(indptr, data, pos, col_end, col_rows, col_vals, row_max, r0, r1, s_min, keep_all,
                acc, touched, out_rows, out_cols, out_s):  # pragma: no cover - compiled by numba
    """Row-by-row form of :func:`jaccard_upper_blocks`' block, compiled by numba (``backend="numba"``).

    For every row ``i`` in ``[r0, r1)``: every non-zero ``V_ik`` (CSR order: ``k`` ascending) adds
    ``min(V_ik, V_jk)`` to ``acc[j]`` for the partners ``j >= i`` of its column (CSC positions
    ``pos[e] .. col_end[e]``), i.e. the very terms, in the very order, that the numpy block sums
    with ``np.bincount`` (float32 ``min``, float64 sum): the same bits. ``acc`` ``(N,) float64`` is
    a dense accumulator, read back over ``[i, row_max[i]]`` in column order and zeroed again, so
    each row costs its terms plus its band width, with no per-block ``rows x width`` array. Pairs
    are kept when ``acc >= s_min``, or, with ``keep_all``, when any term was added (``touched``
    ``(N,) uint8``, all zero on entry and exit). ``out_*`` must hold every kept pair of the rows
    plus one; returns how many were written, in row, then column, order.
    """
    c = 0
    for i in range(r0, r1):
        for e in range(indptr[i], indptr[i + 1]):
            a = data[e]
            for q in range(pos[e], col_end[e]):
                j = col_rows[q]
                acc[j] += min(a, col_vals[q])
                if keep_all:
                    touched[j] = 1
        hi = row_max[i] + 1
        if keep_all:  # branch-free compaction: about half the band is hit at N = 12,936
            for j in range(i, hi):
                out_rows[c] = i
                out_cols[c] = j
                out_s[c] = acc[j]
                c += touched[j]
            touched[i:hi] = 0
        else:
            for j in range(i, hi):
                if acc[j] >= s_min:
                    out_rows[c] = i
                    out_cols[c] = j
                    out_s[c] = acc[j]
                    c += 1
        acc[i:hi] = 0.0
    return c


@functools.cache
def _compiled_upper_rows():
    """:func:`_upper_rows` compiled by numba (``nogil``, cached on disk by numba), or the import error.

    Without a writable cache location (numba raises ``RuntimeError``: "no locator available", e.g. a
    read-only install and home), the kernel is compiled in each process instead (~1 s).
    """
    try:
        import numba
    except ImportError as err:
        return err
    try:
        return numba.njit(nogil=True, cache=True)(_upper_rows)
    except RuntimeError:
        return numba.njit(nogil=True)(_upper_rows)


def jaccard_backend(backend: str = "auto") -> str:
    """The Jaccard kernel that :func:`jaccard_upper_blocks` runs for ``backend``.

    ``"numba"``: the row kernel :func:`_upper_rows` compiled by numba (``pip install numba``, or
    ``unreid[numba]``); ``"numpy"``: vectorised numpy blocks; ``"auto"``: numba when it imports,
    else numpy. Both give the same pairs and the same distance bits (tested). With numba the
    blocks took 0.2-0.4 s against 0.6-0.9 s at N = 12,936 (2 threads), and the whole Jaccard
    stage, encoding included, about half the time at N = 12,936 and 100,000 (docs/BENCHMARKS.md
    "A compiled Jaccard kernel"). Compilation happens once per machine (numba's
    on-disk cache); each process then loads the compiled kernel at its first call.

    Raises:
        ValueError: an unknown ``backend``.
        ImportError: ``backend="numba"`` without numba installed.
    """
    if backend not in JACCARD_BACKENDS:
        raise ValueError(f"Jaccard backend must be one of {', '.join(JACCARD_BACKENDS)}, got {backend!r}")
    if backend == "numpy":
        return "numpy"
    kernel = _compiled_upper_rows()
    if isinstance(kernel, ImportError):
        if backend == "numba":
            raise ImportError(f"pseudo_labels.jaccard_backend=numba needs numba ({kernel}): pip install numba "
                              "(or unreid[numba]), or choose jaccard_backend=numpy / auto")
        return "numpy"
    return "numba"


def jaccard_upper_blocks(v: sp.csr_matrix, max_dist: float | None = None, max_work: int = 250_000,
                         max_cells: int = 4_000_000, threads: int | None = None, backend: str = "auto",
                         bound: Callable[[], float] | None = None,
                         ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Jaccard distances of the pairs ``i <= j`` that share a non-zero column of ``v``, block by block.

    For a block of rows, every non-zero ``V_ik`` is paired with the entries ``V_jk, j >= i`` of its
    column (a CSC slice), the terms ``min(V_ik, V_jk)`` are summed per pair with ``np.bincount``
    into a dense ``rows x width`` accumulator (``width`` = from the block's first row to its last
    partner), and the cells that were hit are read back; with ``max_dist < 0.999`` only the cells
    whose sum reaches ``2 (1 - max_dist) / (2 - max_dist)`` (minus 1e-9), below which no distance
    can be ``<= max_dist``, and the exact test on their distance decides as without the shortcut.
    The test is on the float32 distances yielded (``dist <= float32(max_dist)``), so the pairs kept
    are exactly those that filtering all pairs afterwards would keep.
    The cost is the number of terms, ``sum_k n_k (n_k + 1) / 2`` for column counts ``n_k`` - the
    same terms the reference sums. Blocks of 250,000 terms keep their temporaries in cache (0.57 s
    against 0.69 s for 500,000 at N = 12,936 on 2 cores, docs/BENCHMARKS.md).

    The blocks are independent: with ``threads > 1`` they are computed on a thread pool (numpy's
    gathers, ``np.minimum`` and ``np.bincount`` release the GIL), at most ``threads`` blocks in
    flight, and still yielded in row order, so the output does not depend on ``threads``.

    Args:
        v: ``(N, N)`` encoding from :func:`k_reciprocal_encoding` (rows sum to 1).
        max_dist: keep only distances ``<= max_dist`` (e.g. DBSCAN's eps); ``None`` keeps all.
        max_work: at most this many ``min(V_ik, V_jk)`` terms per block (about 30 bytes each of
            temporary memory, per thread), unless a single row has more; with numba, which keeps no
            per-term temporaries, ``4 * max_work``.
        max_cells: at most this many accumulator cells (9 bytes each, per thread) per block, unless a
            single row needs more.
        threads: blocks computed at once; ``None`` = ``torch.get_num_threads()`` (which follows
            ``OMP_NUM_THREADS``), ``1`` = in the calling thread.
        backend: ``"auto"`` | ``"numba"`` | ``"numpy"`` (:func:`jaccard_backend`). With numba each
            block runs :func:`_upper_rows` (a dense ``(N,)`` accumulator per thread, 9 bytes per
            sample; ``max_cells`` does not apply); the output is the same.
        bound: called before each block is computed: a running limit on the distances the caller
            still needs (e.g. :meth:`unreid.pseudo_labels.cluster.SmallestPairs.bound`); that
            block then keeps only distances ``<= min(max_dist, bound())``. The caller must need no
            pair above any value it returns; which pairs are yielded then depends on timing (with
            threads), what the caller keeps does not.

    Yields:
        ``(rows, cols, dist)``: ``int64``, ``int64``, ``float32`` arrays with ``rows <= cols``, the
        diagonal included (its distance is 0 up to float rounding); every pair exactly once over
        all blocks, blocks in row order.

    Raises:
        ValueError: ``threads < 1`` or an unknown ``backend``.
        ImportError: ``backend="numba"`` without numba.
    """
    use_numba = jaccard_backend(backend) == "numba"
    threads = torch.get_num_threads() if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    n = v.shape[0]
    v = v.tocsr()
    v.sort_indices()
    nnz = v.nnz
    idt = np.int32 if max(nnz, n) < 2**31 - 1 else np.int64
    row_len = np.diff(v.indptr)
    # position of every CSR entry in the CSC layout (rows sorted within a column)
    perm = sp.csr_matrix((np.arange(1, nnz + 1, dtype=np.int64), v.indices, v.indptr), shape=v.shape).tocsc()
    src = perm.data - 1
    pos = np.empty(nnz, dtype=np.int64)
    pos[src] = np.arange(nnz, dtype=np.int64)
    col_rows = perm.indices.astype(idt)  # row of each CSC position
    data = np.asarray(v.data, dtype=np.float32)
    col_vals = data[src]
    col_end = perm.indptr[1:].astype(np.int64)[v.indices]
    length = col_end - pos  # partners j >= i in the same column, i itself included
    # the last partner row of every row (every row holds at least its own column: R*(i) has i)
    last = col_rows[col_end - 1].astype(np.int64)
    row_max = np.arange(n, dtype=np.int64)
    nonempty = row_len > 0
    if nonempty.any():
        row_max[nonempty] = np.maximum(row_max[nonempty], np.maximum.reduceat(last, v.indptr[:-1][nonempty]))
    cum_len = np.concatenate([[0], np.cumsum(length)])
    row_work = cum_len[v.indptr[1:]] - cum_len[v.indptr[:-1]]  # terms of each row
    cum_work = np.concatenate([[0], np.cumsum(row_work)])
    del cum_len
    del perm, src, col_end, last

    def plan() -> Iterator[tuple[int, int, int]]:
        """``(r0, r1, width)`` of every block, in row order (cheap: cumulative sums only)."""
        r0 = 0
        work = 4 * max_work if use_numba else max_work  # numba's blocks hold no per-term temporaries
        while r0 < n:
            r1 = int(np.searchsorted(cum_work, cum_work[r0] + work, side="right")) - 1
            r1 = max(min(r1, n), r0 + 1)
            if use_numba:  # no rows x width accumulator
                yield r0, r1, 0
            else:
                hi = np.maximum.accumulate(row_max[r0:r1])  # band end if the block stopped at each row
                cells = np.arange(1, r1 - r0 + 1) * (hi - r0 + 1)
                r1 = r0 + max(1, int(np.searchsorted(cells, max_cells, side="right")))
                yield r0, r1, int(hi[r1 - r0 - 1] - r0 + 1)
            r0 = r1

    local = threading.local()

    def limit() -> float | None:
        """This block's largest distance to keep: ``max_dist``, lowered by ``bound()``."""
        if bound is None:
            return max_dist
        b = float(bound())
        return b if max_dist is None else min(max_dist, b)

    def sum_floor(md: float | None) -> float | None:
        # with md < 1 only pairs with S >= s_min can be kept (d = 1 - S / (2 - S) decreases with S):
        # the cells below a slightly lower bound are skipped before any distance is computed, and the
        # exact test in distances() decides as before. Cells never hit hold S = 0 < s_min. The bound
        # is taken one float32 step above md: a float64 distance below that step can still round to
        # a float32 value <= md.
        if md is None or md >= 0.999:
            return None
        hi = float(np.nextafter(np.float32(md), np.float32(2.0)))
        return 2.0 * (1.0 - hi) / (2.0 - hi) - 1e-9

    def distances(rows: np.ndarray, cols: np.ndarray, sv: np.ndarray, md: float | None,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dist = 1.0 - sv / (2.0 - sv)
        np.maximum(dist, 0.0, out=dist)
        dist = dist.astype(np.float32)
        if md is not None:  # on the float32 values yielded, as filtering them afterwards would
            keep = dist <= np.float32(md)
            rows, cols, dist = rows[keep], cols[keep], dist[keep]
        return rows, cols, dist

    if use_numba:
        kernel = _compiled_upper_rows()
        indptr = v.indptr.astype(np.int64)
        pos_end = pos + length
        band = np.minimum(row_work, row_max - np.arange(n, dtype=np.int64) + 1)  # kept pairs per row, at most

    def numba_block(bounds: tuple[int, int, int], md: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r0, r1, _ = bounds
        s_min = sum_floor(md)
        acc = getattr(local, "acc", None)
        if acc is None:  # per thread, left all zero by the kernel
            acc = local.acc = np.zeros(n, dtype=np.float64)
            local.touched = np.zeros(n, dtype=np.uint8)
        cap = int(band[r0:r1].sum()) + 1  # + 1: the branch-free compaction writes one past the last pair
        out_rows, out_cols = np.empty(cap, dtype=np.int64), np.empty(cap, dtype=np.int64)
        out_s = np.empty(cap, dtype=np.float64)
        c = kernel(indptr, data, pos, pos_end, col_rows, col_vals, row_max, r0, r1,
                   -1.0 if s_min is None else s_min, s_min is None, acc, local.touched, out_rows, out_cols, out_s)
        return distances(out_rows[:c], out_cols[:c], out_s[:c], md)

    def block(bounds: tuple[int, int, int], md: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if use_numba:
            return numba_block(bounds, md)
        r0, r1, width = bounds
        s_min = sum_floor(md)
        e0, e1 = v.indptr[r0], v.indptr[r1]
        lens = length[e0:e1]
        first = np.cumsum(lens) - lens
        # CSC position of each partner (int64 positions: np.take is several times faster than with int32)
        q = np.arange(int(cum_work[r1] - cum_work[r0]), dtype=np.int64)
        q += np.repeat(pos[e0:e1] - first, lens)
        terms = np.repeat(data[e0:e1], lens)
        np.minimum(terms, np.take(col_vals, q, mode="clip"), out=terms)
        keys = np.repeat((np.repeat(np.arange(r1 - r0, dtype=np.int64), row_len[r0:r1])) * width - r0, lens)
        keys += np.take(col_rows, q, mode="clip")
        del q
        size = (r1 - r0) * width
        s = np.bincount(keys, weights=terms, minlength=size)
        if s_min is not None:
            del keys, terms
            hit = np.flatnonzero(s >= s_min)
        else:
            mark = getattr(local, "mark", None)
            if mark is None:
                mark = local.mark = np.zeros(max_cells + n, dtype=bool)  # per thread, reused: cells hit
            hit_mask = mark[:size] if size <= len(mark) else np.zeros(size, dtype=bool)  # one huge row
            hit_mask[keys] = True
            del keys, terms
            hit = np.flatnonzero(hit_mask)
            hit_mask[hit] = False
        sv = s[hit]
        del s
        return distances(hit // width + r0, hit % width + r0, sv, md)

    if threads == 1:
        for bounds in plan():
            yield block(bounds, limit())
        return
    with ThreadPoolExecutor(threads) as pool:
        pending: deque = deque()
        for bounds in plan():
            if len(pending) >= threads:
                yield pending.popleft().result()
            pending.append(pool.submit(block, bounds, limit()))
        while pending:
            yield pending.popleft().result()


def symmetric_csr(n: int, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> sp.csr_matrix:
    """``(n, n) csr_matrix`` from upper-triangle entries ``rows <= cols``, mirrored; zeros kept explicit.

    Each row's entries are sorted by column.
    """
    off = rows != cols
    idx_dtype = np.int32 if max(n, len(rows) + int(off.sum())) < 2**31 - 1 else np.int64
    r = np.concatenate([rows, cols[off]]).astype(idx_dtype, copy=False)
    c = np.concatenate([cols, rows[off]]).astype(idx_dtype, copy=False)
    d = np.concatenate([vals, vals[off]])
    # scipy's C++ COO -> CSR (each pair is present once, so nothing is summed; explicit zeros stay),
    # then an in-place per-row column sort: ~10x faster than a global lexsort at 80M entries
    m = sp.coo_matrix((d, (r, c)), shape=(n, n)).tocsr()
    m.sort_indices()
    return m


def jaccard_distance(features: Tensor | np.ndarray, k1: int = 30, k2: int = 6, knn_method: str = "exact",
                     knn_block: int = 4096, neighbours: tuple[np.ndarray, np.ndarray | None] | None = None,
                     backend: str = "auto") -> sp.csr_matrix:
    """k-reciprocal Jaccard distance of L2-normalised ``features`` as a sparse symmetric matrix.

    Args:
        features: ``(N, d) float32`` L2-normalised features.
        k1, k2: CC defaults 30 and 6 (``examples/cluster_contrast_train_usl.py``); ``k1 <= N``.
        knn_method, knn_block: see :func:`unreid.pseudo_labels.knn.knn` (ignored with ``neighbours``).
        neighbours: precomputed ``(indices, similarities)`` from
            :func:`unreid.pseudo_labels.knn.knn` with ``>= k1`` columns (similarities may be ``None``).
        backend: the Jaccard kernel, see :func:`jaccard_backend`.

    Returns:
        ``(N, N) csr_matrix float32`` of distances in [0, 1] for every pair sharing a non-zero column
        of ``V`` (the diagonal included, stored explicitly even where it is 0); entries not stored
        are exactly 1. Symmetric, indices sorted.

    Raises:
        ValueError: ``k1`` outside ``[1, N]`` or an unknown ``backend``.
        ImportError: ``backend="numba"`` without numba.
    """
    from unreid.pseudo_labels.knn import knn

    f = torch.as_tensor(features).float()
    n = f.shape[0]
    if not 1 <= k1 <= n:
        raise ValueError(f"k1 must be in [1, N={n}], got {k1}")
    if neighbours is None:
        neighbours = knn(f, k1, knn_method, knn_block)
    v = k_reciprocal_encoding(f, neighbours[0], neighbours[1], k1, k2)
    parts = list(jaccard_upper_blocks(v, backend=backend))
    rows = np.concatenate([p[0] for p in parts])
    cols = np.concatenate([p[1] for p in parts])
    vals = np.concatenate([p[2] for p in parts])
    return symmetric_csr(n, rows, cols, vals)
