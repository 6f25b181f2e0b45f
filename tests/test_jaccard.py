"""Sparse k-reciprocal Jaccard distance vs a straightforward DENSE implementation of the same
equations (Zhong et al. CVPR 2017; the shared ``compute_jaccard_distance``, shared/ANCHORS.md),
written here with dense arrays and per-row loops: every pair must agree to 1e-5 (absent = 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unreid.pseudo_labels import jaccard as jaccard_module
from unreid.pseudo_labels.jaccard import (
    jaccard_backend,
    jaccard_distance,
    jaccard_upper_blocks,
    k_reciprocal_encoding,
)
from unreid.pseudo_labels.knn import knn

try:
    import numba  # noqa: F401

    HAVE_NUMBA = True
except ImportError:  # the numpy kernel is still tested
    HAVE_NUMBA = False
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed (pip install numba)")
BACKENDS = [pytest.param("numba", marks=needs_numba), "numpy"]


def dense_jaccard(x: np.ndarray, rank: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """Dense oracle. ``x`` (N, d) float64 unit rows; ``rank`` (N, >= k1) neighbours, self first."""
    n = x.shape[0]
    rank = rank[:, :k1]  # the reference searches exactly k1 neighbours

    def reciprocal(i, k):  # R(i, k): first min(k + 1, k1) columns, both directions
        fwd = rank[i, : k + 1]
        return np.array([j for j in fwd if i in rank[j, : k + 1]], dtype=np.int64)

    half = int(np.around(k1 / 2))
    r1 = [reciprocal(i, k1) for i in range(n)]
    rh = [reciprocal(i, half) for i in range(n)]
    v = np.zeros((n, n))
    for i in range(n):
        expanded = list(r1[i])
        for c in r1[i]:
            cand = rh[c]
            if len(np.intersect1d(cand, r1[i])) > 2.0 / 3.0 * len(cand):
                expanded += list(cand)
        expanded = np.unique(expanded)
        d = 2.0 - 2.0 * x[expanded] @ x[i]
        w = np.exp(-d)
        v[i, expanded] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    out = np.empty((n, n))
    for i in range(n):
        cols = np.flatnonzero(v[i])  # min(V_ik, V_jk) = 0 elsewhere
        s = np.minimum(v[i, cols][None, :], v[:, cols]).sum(1)
        out[i] = 1.0 - s / (2.0 - s)
    out[out < 0] = 0.0
    return out


def clustered(n, d, seed, dup=0):
    """Unit features around n // 8 centres; ``dup`` rows copied exactly from others."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(max(2, n // 8), d, generator=g)
    f = centres[torch.randint(len(centres), (n,), generator=g)] + 0.6 * torch.randn(n, d, generator=g)
    for m in range(dup):
        f[2 * m + 1] = f[2 * m]
    return F.normalize(f, dim=1)


def to_dense(mat) -> np.ndarray:
    out = np.ones(mat.shape)
    c = mat.tocoo()
    out[c.row, c.col] = c.data
    return out


@pytest.mark.parametrize("n,k1,k2,seed,dup", [
    (120, 20, 6, 0, 0), (150, 30, 6, 1, 5), (100, 10, 1, 2, 0), (90, 7, 3, 3, 0), (80, 5, 6, 4, 3),
    (60, 1, 1, 5, 0), (70, 2, 2, 6, 0), (40, 40, 6, 7, 4), (110, 12, 12, 8, 0),
])
@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_equals_dense(n, k1, k2, seed, dup, backend):
    f = clustered(n, 16, seed, dup)
    idx, sim = knn(f, k1)
    sparse = jaccard_distance(f, k1, k2, neighbours=(idx, sim), backend=backend)
    dense = dense_jaccard(f.double().numpy(), idx, k1, k2)
    assert np.abs(to_dense(sparse) - dense).max() < 1e-5
    # stored exactly where the dense matrix is below 1 (pairs sharing a column), diagonal included
    stored = np.zeros((n, n), dtype=bool)
    c = sparse.tocoo()
    stored[c.row, c.col] = True
    assert sparse.nnz == stored.sum() and (stored == (dense < 1)).all()
    assert stored.diagonal().all() and (sparse.diagonal() < 1e-5).all()
    assert (sparse != sparse.T).nnz == 0


def test_sparse_equals_dense_n1500():
    f = clustered(1500, 24, 11, dup=10)
    idx, sim = knn(f, 30)
    dense = dense_jaccard(f.double().numpy(), idx, 30, 6)  # the oracle once, for every kernel
    for backend in ("numba", "numpy") if HAVE_NUMBA else ("numpy",):
        sparse = jaccard_distance(f, 30, 6, neighbours=(idx, sim), backend=backend)
        assert np.abs(to_dense(sparse) - dense).max() < 1e-5, backend
        assert (dense < 1).sum() == sparse.nnz, backend


def test_encoding_rows_sum_to_one_and_similarities_optional():
    f = clustered(200, 16, 12)
    idx, sim = knn(f, 20)
    v = k_reciprocal_encoding(f, idx, sim, 20, 6)
    assert np.allclose(np.asarray(v.sum(1)).ravel(), 1.0, atol=1e-5)
    w = k_reciprocal_encoding(f, idx, None, 20, 6)  # every inner product recomputed
    assert np.abs((v - w).toarray()).max() < 1e-6
    # a wider neighbour table: only the first k1 columns are used
    idx40, sim40 = knn(f, 40)
    assert np.abs((k_reciprocal_encoding(f, idx40, sim40, 20, 6) - v).toarray()).max() < 1e-6


def test_blocks_cover_the_upper_triangle_once():
    f = clustered(150, 16, 13)
    idx, sim = knn(f, 20)
    v = k_reciprocal_encoding(f, idx, sim, 20, 6)
    full = jaccard_distance(f, 20, 6, neighbours=(idx, sim))
    blocks = list(jaccard_upper_blocks(v, max_work=500, max_cells=2000))  # force many tiny blocks
    assert len(blocks) > 10
    rows = np.concatenate([b[0] for b in blocks])
    cols = np.concatenate([b[1] for b in blocks])
    vals = np.concatenate([b[2] for b in blocks])
    assert (rows <= cols).all() and len(np.unique(rows * 150 + cols)) == len(rows)
    upper = full.tocoo()
    keep = upper.row <= upper.col
    assert len(rows) == keep.sum()
    assert np.abs(to_dense(full)[rows, cols] - vals).max() == 0


@pytest.mark.parametrize("max_dist", [0.0, 0.3, 0.6, 0.9, 0.998, 0.999, 1.0])
def test_max_dist_equals_filtering_every_pair(max_dist):
    """The shortcut for max_dist < 0.999 (cells below the smallest useful sum skipped) keeps exactly
    the pairs, and the distance bits, of computing every pair and filtering afterwards."""
    f = clustered(300, 16, 9, dup=6)
    idx, sim = knn(f, 20)
    v = k_reciprocal_encoding(f, idx, sim, 20, 6)
    every = [np.concatenate(p) for p in zip(*jaccard_upper_blocks(v, max_dist=None, max_work=900))]
    kept = [np.concatenate(p) for p in zip(*jaccard_upper_blocks(v, max_dist=max_dist, max_work=900))]
    sel = every[2] <= max_dist
    assert sel.any()
    for a, b in zip(kept, (every[0][sel], every[1][sel], every[2][sel])):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_dist_at_a_float32_distance_keeps_what_filtering_keeps(backend):
    """A limit a fraction of a float32 step below a yielded distance still keeps that distance, as
    filtering the float32 distances afterwards does (a test on the float64 distance could drop it)."""
    f = clustered(300, 16, 9, dup=6)
    idx, sim = knn(f, 20)
    v = k_reciprocal_encoding(f, idx, sim, 20, 6)
    every = [np.concatenate(p) for p in zip(*jaccard_upper_blocks(v, max_dist=None, max_work=900, backend=backend))]
    d = every[2]
    values = np.unique(d[(d > 0.2) & (d < 0.95)])
    for d32 in np.random.default_rng(0).choice(values, 12, replace=False):
        md = float(d32) - 0.45 * float(np.spacing(d32))  # rounds to d32 in float32
        kept = [np.concatenate(p) for p in zip(*jaccard_upper_blocks(v, max_dist=md, max_work=900, backend=backend))]
        sel = d <= md
        assert sel.sum() == len(kept[0]) and (kept[2] == d32).any()
        for a, b in zip(kept, (every[0][sel], every[1][sel], d[sel])):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("threads", [2, 3])
def test_threaded_blocks_equal_the_single_thread_result(threads):
    f = clustered(300, 16, 5)
    idx, sim = knn(f, 20)
    v = k_reciprocal_encoding(f, idx, sim, 20, 6)
    one = list(jaccard_upper_blocks(v, max_dist=0.9, max_work=800, max_cells=3000, threads=1))
    many = list(jaccard_upper_blocks(v, max_dist=0.9, max_work=800, max_cells=3000, threads=threads))
    assert len(one) == len(many) > 2 * threads  # several blocks in flight at once
    for a, b in zip(one, many):  # same blocks, same order, bit-identical values
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="threads"):
        next(jaccard_upper_blocks(v, threads=0))


@needs_numba
@pytest.mark.parametrize("max_dist", [None, 0.0, 0.6, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("threads,max_work", [(1, 250_000), (2, 700), (3, 5_000)])
def test_numba_kernel_gives_the_numpy_blocks_bits(max_dist, threads, max_work):
    """Both kernels sum the same float32 minima in the same order into float64: the same pairs, in
    the same order, with the same distance bits, whatever the blocks and threads."""
    f = clustered(400, 16, 21, dup=8)
    idx, sim = knn(f, 20)
    v = k_reciprocal_encoding(f, idx, sim, 20, 6)
    got = [np.concatenate(p) for p in zip(*jaccard_upper_blocks(v, max_dist, max_work=max_work,
                                                                  threads=threads, backend="numba"))]
    want = [np.concatenate(p) for p in zip(*jaccard_upper_blocks(v, max_dist, backend="numpy"))]
    assert len(want[0]) > 400  # more than the diagonal
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@needs_numba
def test_numba_kernel_on_padded_camera_aware_encoding():
    """Rows of very different lengths and bands (CA-Jaccard's per-camera encoding) give the numpy bits."""
    from unreid.pseudo_labels.ca_jaccard import ca_jaccard_encoding

    f = clustered(240, 16, 4)
    cams = np.repeat(np.arange(3), [150, 70, 20])
    v = ca_jaccard_encoding(f, cams, 5, 20, 3, 3)
    for max_dist in (None, 0.7):
        got = list(jaccard_upper_blocks(v, max_dist, max_work=300, backend="numba"))
        want = list(jaccard_upper_blocks(v, max_dist, max_work=300, backend="numpy"))
        for a, b in zip((np.concatenate(p) for p in zip(*got)), (np.concatenate(p) for p in zip(*want))):
            np.testing.assert_array_equal(a, b)


def test_jaccard_backend_choice(monkeypatch):
    assert jaccard_backend("numpy") == "numpy"
    assert jaccard_backend("auto") == ("numba" if HAVE_NUMBA else "numpy")
    with pytest.raises(ValueError, match="one of auto, numba, numpy"):
        jaccard_backend("cuda")
    # without numba: auto falls back to numpy, numba is refused with the install command
    monkeypatch.setattr(jaccard_module, "_compiled_upper_rows", lambda: ImportError("No module named 'numba'"))
    assert jaccard_backend("auto") == "numpy"
    with pytest.raises(ImportError, match="pip install numba"):
        jaccard_backend("numba")
    f = clustered(60, 8, 3)
    idx, sim = knn(f, 10)
    v = k_reciprocal_encoding(f, idx, sim, 10, 6)
    with pytest.raises(ImportError, match="jaccard_backend=numpy"):
        next(jaccard_upper_blocks(v, backend="numba"))


@needs_numba
def test_numba_kernel_without_a_writable_cache_compiles_in_the_process(monkeypatch):
    """numba refuses cache=True when no cache folder is writable: the kernel is then compiled uncached."""
    import numba

    real = numba.njit
    asked = []

    def njit(*args, cache=False, **kwargs):
        asked.append(cache)
        if cache:
            raise RuntimeError("cannot cache function '_upper_rows': no locator available for file")
        return real(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", njit)
    jaccard_module._compiled_upper_rows.cache_clear()
    try:
        f = clustered(80, 8, 2)
        idx, sim = knn(f, 10)
        v = k_reciprocal_encoding(f, idx, sim, 10, 6)
        got = [np.concatenate(p) for p in zip(*jaccard_upper_blocks(v, 0.8, backend="numba"))]
        assert asked[:2] == [True, False] and asked.count(True) == 1  # (numba calls njit itself too)
    finally:
        jaccard_module._compiled_upper_rows.cache_clear()
    want = [np.concatenate(p) for p in zip(*jaccard_upper_blocks(v, 0.8, backend="numpy"))]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_identical_features_give_zero_distances():
    f = F.normalize(torch.ones(12, 5), dim=1)
    d = jaccard_distance(f, 12, 2)  # everyone in everyone's list: every distance is 0
    assert d.nnz == 144 and np.abs(d.toarray()).max() < 1e-6  # zeros stored explicitly
    idx, sim = knn(f, 4)  # all tied: self first, then the smallest other indices
    assert idx[0].tolist() == [0, 1, 2, 3] and idx[5].tolist() == [5, 0, 1, 2]
    d4 = jaccard_distance(f, 4, 2, neighbours=(idx, sim))
    dense = dense_jaccard(f.double().numpy(), idx, 4, 2)
    assert np.abs(to_dense(d4) - dense).max() < 1e-5
    zero = np.argwhere(dense < 1e-6)
    assert len(zero) > 12 and all(j in d4[i].indices for i, j in zero)


def test_bad_arguments():
    f = clustered(20, 8, 14)
    with pytest.raises(ValueError, match="k1 must be in"):
        jaccard_distance(f, 21, 6)
    idx, sim = knn(f, 5)
    with pytest.raises(ValueError, match="neighbour table"):
        k_reciprocal_encoding(f, idx, sim, 6, 2)
    with pytest.raises(ValueError, match="k2"):
        k_reciprocal_encoding(f, idx, sim, 5, 0)
