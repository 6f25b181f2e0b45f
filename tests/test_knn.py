"""k-NN: the blocked symmetric exact search equals brute force; self is column 0 even with
duplicated features; ties; faiss / HNSW paths; recall@k; errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unreid.pseudo_labels.knn import _drop_self, _exact_symmetric, _exact_threshold_cpu, knn, recall_at_k


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
