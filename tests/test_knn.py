"""k-NN: the blocked symmetric exact search equals brute force; self is column 0 even with
duplicated features; ties; faiss / HNSW paths; recall@k; errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unreid.pseudo_labels.knn import (
    _drop_self,
    _exact_symmetric,
    _exact_threshold_cpu,
    _key_values,
    _keys,
    _self_similarity,
    knn,
    recall_at_k,
)


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1).float()


def _brute(f: torch.Tensor, k: int):
    """Straightforward oracle: full float64 similarity matrix, self first, then argsort."""
    x = f.double().numpy()
    s = x @ x.T
    np.fill_diagonal(s, np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    np.fill_diagonal(s, (x * x).sum(1))
    return order, np.take_along_axis(s, order, 1)


@pytest.mark.parametrize("n,k,block", [(100, 10, 16), (257, 30, 64), (64, 64, 20), (300, 7, 4096), (50, 2, 1)])
def test_exact_equals_brute_force(n, k, block):
    f = _unit(n, 12, n)
    idx, sim = knn(f, k, block=block)
    ref_idx, ref_sim = _brute(f, k)
    assert idx.shape == (n, k) and idx.dtype == np.int64 and sim.dtype == np.float32
    assert (idx[:, 0] == np.arange(n)).all()
    # same neighbour sets (random data: no exact ties) and same similarities
    assert (np.sort(idx, 1) == np.sort(ref_idx, 1)).all()
    assert np.abs(sim - ref_sim).max() < 1e-5
    # decreasing similarity after column 0
    assert (np.diff(sim[:, 1:], axis=1) <= 0).all()


def _dyadic(n, d, seed, copies=0):
    """Features with entries in {-3/4, ..., 3/4}: every product and partial sum is exact in float32,
    so any summation order (any block shape, any BLAS kernel) gives the same bits as the dense
    reference, and the few distinct values make exact ties common. ``copies`` rows duplicate
    others exactly, and rows 1..12 are all copies of row 0 (a tie group longer than the lists)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-3, 4, (n, d), generator=g).float() / 4
    x[1:13] = x[0]
    src = torch.randint(0, n, (copies,), generator=g)
    dst = torch.randint(0, n, (copies,), generator=g)
    x[dst] = x[src]
    return x


def _dense_reference(x: torch.Tensor, k: int):
    """Dense ``x @ x.T`` (exact here), then per row: self first, the others by a stable sort on
    (similarity descending, index ascending) - the documented tie rule."""
    s = (x @ x.T).numpy()
    n = len(s)
    idx = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        others = np.delete(np.arange(n), i)
        order = others[np.lexsort((others, -s[i, others]))][: k - 1]
        idx[i] = np.concatenate([[i], order])
    sim = np.take_along_axis(s, idx, 1)
    sim[:, 0] = (x * x).sum(1).numpy()
    return idx, sim


@pytest.mark.parametrize("n,d,k,block,copies", [
    (203, 6, 31, 64, 40),    # N not a multiple of the block; many ties (6 dims, 7 levels)
    (203, 6, 31, 4096, 40),  # one block
    (150, 4, 9, 17, 30),     # 9 blocks, heavy ties
    (97, 8, 31, 7, 10),      # blocks smaller than the lists: they cannot fill on the diagonal
    (64, 5, 64, 20, 0),      # k = N: everyone
    (40, 3, 5, 1, 5),        # one row per block
    (333, 16, 31, 100, 60),
    (520, 64, 31, 260, 20),  # 64 dims: few ties; blocks wide enough for the group-maxima threshold
    (300, 64, 31, 4096, 0),  # the same in one block: the first threshold alone decides
])
def test_exact_identical_to_dense_sort_with_ties(n, d, k, block, copies):
    """Bit-identical indices and similarities to the dense reference, ties included."""
    x = _dyadic(n, d, n + k, copies)
    idx, sim = knn(x, k, block=block)
    ref_idx, ref_sim = _dense_reference(x, k)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(sim, ref_sim.astype(np.float32))


@pytest.mark.parametrize("layout", ["consecutive", "strided"])
@pytest.mark.parametrize("block", [4096, 310, 150])
def test_exact_identical_with_clustered_rows(layout, block):
    """31 rows per cluster, so a row's 30 best neighbours are its cluster: in a few adjacent columns
    ("consecutive") or one in each group of 4 columns ("strided", every 20th row), the case where a
    first threshold above the 30th best entry of the diagonal block would lose a neighbour (N = 620
    fits one CPU block)."""
    g = torch.Generator().manual_seed(11)
    n, clusters = 620, 20
    cluster = torch.arange(n) // 31 if layout == "consecutive" else torch.arange(n) % clusters
    centres = torch.randint(-2, 3, (clusters, 32), generator=g).float()
    x = (centres[cluster] + torch.randint(-2, 3, (n, 32), generator=g).float() / 4) / 8
    idx, sim = knn(x, 31, block=block)
    ref_idx, ref_sim = _dense_reference(x, 31)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(sim, ref_sim.astype(np.float32))


def test_exact_same_lists_for_every_block_size():
    x = _dyadic(260, 6, 3, copies=50)
    ref = knn(x, 31, block=4096)
    for block in (1, 9, 31, 64, 100, 259):
        out = knn(x, 31, block=block)
        np.testing.assert_array_equal(out[0], ref[0])
        np.testing.assert_array_equal(out[1], ref[1])


@pytest.mark.parametrize("pending", [0, 1, 10**9])
def test_exact_identical_whenever_candidates_are_merged(monkeypatch, pending):
    """Merging after every product (0), in small batches (1) or only when a block is done (10**9)."""
    import unreid.pseudo_labels.knn as knn_module

    monkeypatch.setattr(knn_module, "PENDING", pending)
    x = _dyadic(230, 8, 4, copies=30)
    idx, sim = knn(x, 31, block=40)
    ref_idx, ref_sim = _dense_reference(x, 31)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(sim, ref_sim.astype(np.float32))


@pytest.mark.parametrize("n,d,chunk", [(1000, 64, 96), (257, 300, 4096), (5, 7, 2)])
def test_self_similarity_in_chunks_equals_the_full_product(n, d, chunk):
    f = torch.randn(n, d, generator=torch.Generator().manual_seed(n))
    np.testing.assert_array_equal(_self_similarity(f, chunk), (f * f).sum(1).numpy())


def test_sort_keys_order_and_round_trip():
    v = np.array([np.inf, 2.5, 1.0, 1.0, 0.0, -0.0, -1e-30, -1.0, -np.inf], dtype=np.float32)
    j = np.array([0, 5, 9, 3, 7, 2, 1, 4, 6], dtype=np.int64)
    keys = _keys(v, j)
    order = np.argsort(keys)
    np.testing.assert_array_equal(order, np.lexsort((j, -v)))  # -0.0 ties with +0.0: index decides
    np.testing.assert_array_equal(_key_values(keys), v + np.float32(0.0))
    np.testing.assert_array_equal(keys & 0xFFFFFFFF, j)


@pytest.mark.parametrize("block", [7, 64, 500])
def test_topk_path_for_cuda_equals_threshold_path(block):
    """The per-block ``topk`` search (used when the features are on CUDA), run here on CPU."""
    f = _unit(230, 10, 5)
    a_idx, a_sim = _exact_symmetric(f, 9, block)
    b_idx, b_sim = _exact_threshold_cpu(f, 9, block)
    ref_idx, ref_sim = _brute(f, 10)
    assert (np.sort(a_idx, 1) == np.sort(ref_idx[:, 1:], 1)).all()
    assert (np.sort(b_idx, 1) == np.sort(ref_idx[:, 1:], 1)).all()
    assert np.abs(a_sim - ref_sim[:, 1:]).max() < 1e-5 and np.abs(b_sim - ref_sim[:, 1:]).max() < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_features_search_on_cuda():
    f = _unit(300, 16, 6)
    a, sa = knn(f.cuda(), 12)
    b, sb = knn(f, 12)
    assert (np.sort(a, 1) == np.sort(b, 1)).all() and np.abs(sa - sb).max() < 1e-4


def test_k_equal_one_and_errors():
    f = _unit(20, 4, 0)
    idx, sim = knn(f, 1)
    assert (idx[:, 0] == np.arange(20)).all() and np.allclose(sim[:, 0], 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="k must be in"):
        knn(f, 21)
    with pytest.raises(ValueError, match="k must be in"):
        knn(f, 0)
    with pytest.raises(ValueError, match="unknown k-NN method"):
        knn(f, 3, "annoy")
    with pytest.raises(ValueError, match="feature matrix"):
        knn(f[0], 1)


def test_self_first_with_many_duplicates_and_tie_order():
    base = _unit(30, 6, 1)
    f = base.clone()
    f[10:20] = base[10]  # ten identical rows: more copies than the list length below
    idx, sim = knn(f, 5, block=7)
    for i in range(10, 20):
        assert idx[i, 0] == i  # never displaced by an identical copy
        others = [j for j in range(10, 20) if j != i]
        # the 4 other places hold copies (similarity 1): the smallest indices among the tie
        assert idx[i, 1:].tolist() == others[:4]
        assert np.allclose(sim[i], 1.0, atol=1e-6)


def test_faiss_exact_equals_torch_exact():
    pytest.importorskip("faiss")
    f = _unit(200, 16, 2)
    a, sa = knn(f, 12)
    b, sb = knn(f, 12, "faiss")
    assert (a == b).all() and np.abs(sa - sb).max() < 1e-5
    dup = f.clone()
    dup[1] = dup[0]
    c, _ = knn(dup, 5, "faiss")
    assert c[0, 0] == 0 and c[1, 0] == 1 and c[0, 1] == 1 and c[1, 1] == 0


def test_hnsw_recall_on_clustered_data():
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(3)
    centres = torch.randn(40, 32, generator=g)
    f = F.normalize(centres.repeat_interleave(15, 0) + 0.3 * torch.randn(600, 32, generator=g), dim=1)
    exact, _ = knn(f, 20)
    approx, sim = knn(f, 20, "hnsw", hnsw_m=16, hnsw_ef_construction=64, hnsw_ef_search=64)
    assert (approx[:, 0] == np.arange(600)).all()
    assert recall_at_k(approx, exact) > 0.97
    x = f.double().numpy()
    assert np.abs(sim - np.take_along_axis(x @ x.T, approx, 1)).max() < 1e-5


def test_pca_search_recall_and_exact_fallback():
    g = torch.Generator().manual_seed(4)
    basis, _ = torch.linalg.qr(torch.randn(96, 12, generator=g))  # features of intrinsic dimension ~12
    centres = F.normalize(torch.randn(50, 12, generator=g), dim=1) @ basis.T
    f = F.normalize(centres.repeat_interleave(10, 0) + 0.05 * torch.randn(500, 96, generator=g), dim=1)
    exact, exact_sim = knn(f, 15)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    approx, sim = knn(f, 15, "pca", pca_dim=24, pca_oversample=2.0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is untouched
    again, _ = knn(f, 15, "pca", pca_dim=24, pca_oversample=2.0)
    assert (again == approx).all()  # the projection is seeded: same neighbours every call
    assert (approx[:, 0] == np.arange(500)).all()
    assert recall_at_k(approx, exact) > 0.98
    x = f.double().numpy()
    assert np.abs(sim - np.take_along_axis(x @ x.T, approx, 1)).max() < 1e-5  # exact re-ranked values
    full, full_sim = knn(f, 15, "pca", pca_dim=96)  # no reduction: the exact search
    assert (full == exact).all() and np.abs(full_sim - exact_sim).max() < 1e-6


def test_recall_at_k_by_hand():
    exact = np.array([[0, 1, 2], [1, 0, 2]])
    approx = np.array([[0, 2, 3], [1, 3, 4]])
    assert recall_at_k(approx, exact) == pytest.approx((2 / 3 + 1 / 3) / 2)


def test_drop_self_wherever_it_ranks():
    idx = np.array([[3, 0, 1], [1, 2, 3], [0, 1, 3], [2, 1, 0]])  # row 0: self second; row 2: self missing
    sim = np.array([[0.9, 0.8, 0.7], [1.0, 0.5, 0.4], [0.9, 0.8, 0.1], [0.6, 0.5, 0.4]], np.float32)
    out_i, out_s = _drop_self(idx, sim, 2)
    assert out_i.tolist() == [[3, 1], [2, 3], [0, 1], [2, 1]]
    assert out_s[0].tolist() == pytest.approx([0.9, 0.7])
