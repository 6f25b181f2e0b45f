"""Evaluation: hand-computed CMC / AP / mINP, equivalence to per-query loops written after torchreid's
``eval_market1501`` and AGW's ``eval_sysu`` / ``eval_regdb``, protocols, re-ranking against a
reference written from the paper's definitions, and ordered feature extraction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from unreid.config import _CHOICES
from unreid.data.datasets.base import Sample
from unreid.evaluation.features import extract_features
from unreid.evaluation.metrics import evaluate_rank
from unreid.evaluation.protocols import PROTOCOLS
from unreid.evaluation.rerank import re_ranking

# --------------------------------------------------------------------------- reference loops


def loop_eval(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, camera_filter="market", unique_cmc=False):
    """One query at a time, following torchreid ``eval_market1501`` (CMC, AP) and AGW (mINP, SYSU)."""
    indices = np.argsort(distmat, axis=1)  # torchreid sorts the whole matrix with this call
    max_rank = min(max_rank, distmat.shape[1])
    cmcs, aps, inps = [], [], []
    for i in range(distmat.shape[0]):
        order = indices[i]
        if camera_filter == "market":
            remove = (g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i])
        elif camera_filter == "sysu":
            remove = (q_camids[i] == 2) & (g_camids[order] == 1)
        else:
            remove = np.zeros(len(order), dtype=bool)
        kept_pids = g_pids[order][~remove]
        raw = (kept_pids == q_pids[i]).astype(np.int64)
        if not raw.any():
            continue
        if unique_cmc:
            seen, ids = set(), []
            for p in kept_pids:
                if p not in seen:
                    seen.add(p)
                    ids.append(p)
            cmc = (np.array(ids) == q_pids[i]).cumsum()
        else:
            cmc = raw.cumsum()
        cmc = np.minimum(cmc, 1)[:max_rank]
        cmc = np.concatenate([cmc, np.full(max_rank - len(cmc), cmc[-1])])  # fewer unique ids than max_rank
        cmcs.append(cmc)
        precision = raw.cumsum() / (np.arange(len(raw)) + 1.0)
        aps.append((precision * raw).sum() / raw.sum())
        inps.append(raw.sum() / (np.nonzero(raw)[0].max() + 1.0))
    return np.mean(cmcs, 0), float(np.mean(aps)), float(np.mean(inps)), len(aps)


# --------------------------------------------------------------------------- hand-built examples


def test_hand_example_market_with_distractor_and_skipped_query():
    # gallery: g0 pid1 cam0 | g1 pid2 cam1 | g2 pid1 cam1 | g3 pid0 cam1 (distractor) | g4 pid1 cam2 | g5 pid3 cam0
    g_pids, g_cams = np.array([1, 2, 1, 0, 1, 3]), np.array([0, 1, 1, 1, 2, 0])
    q_pids, q_cams = np.array([1, 4, 3]), np.array([0, 0, 1])
    dist = np.array([
        # q0 (pid 1, cam 0): order g0 g1 g3 g2 g5 g4; g0 removed (same pid & cam) -> kept ranks:
        # g1 miss(1), g3 distractor miss(2), g2 hit(3), g5 miss(4), g4 hit(5)
        # AP = (1/3 + 2/5) / 2 = 11/30, first hit rank 3, mINP = 2/5
        [0.0, 0.1, 0.3, 0.2, 0.5, 0.4],
        # q1 (pid 4): no gallery image of pid 4 -> skipped
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        # q2 (pid 3, cam 1): g5 (pid 3, cam 0) ranked first: AP = 1, rank 1, mINP = 1
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.05],
    ])
    res = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=5)
    assert res["num_valid"] == 2
    assert res["mAP"] == pytest.approx((11 / 30 + 1) / 2)
    assert res["mINP"] == pytest.approx((2 / 5 + 1) / 2)
    assert res["cmc"] == pytest.approx([0.5, 0.5, 1.0, 1.0, 1.0])


def test_hand_example_no_filter_and_junk_dropped():
    # pid -1 gallery entry is junk: dropped before ranking (it would otherwise shift ranks)
    g_pids, g_cams = np.array([-1, 7, 8, 7]), np.array([0, 0, 0, 0])
    dist = np.array([[0.0, 0.2, 0.1, 0.3]])
    # no camera filter: kept order g2 (miss) g1 (hit, rank 2) g3 (hit, rank 3): AP = (1/2 + 2/3) / 2
    res = evaluate_rank(dist, np.array([7]), g_pids, np.array([0]), g_cams, max_rank=3, camera_filter="none")
    assert res["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert res["mINP"] == pytest.approx(2 / 3)
    assert res["cmc"] == pytest.approx([0.0, 1.0, 1.0])
    # with the market filter every pid-7 image shares the query camera: no valid query at all
    with pytest.raises(ValueError, match="no query has a valid match"):
        evaluate_rank(dist, np.array([7]), g_pids, np.array([0]), g_cams)


def test_hand_example_sysu():
    # query cam 2 (SYSU camera 3) ignores gallery camid 1; ranked gallery:
    # g0 pid5 cam0 | g1 pid9 cam1 (ignored) | g2 pid5 cam3 | g3 pid6 cam0 | g4 pid7 cam4 | g5 pid7 cam0
    g_pids, g_cams = np.array([5, 9, 5, 6, 7, 7]), np.array([0, 1, 3, 0, 4, 0])
    dist = np.arange(6, dtype=float)[None]
    res = evaluate_rank(dist, np.array([7]), g_pids, np.array([2]), g_cams, max_rank=4, camera_filter="sysu",
                        unique_cmc=True)
    # kept: 5 5 6 7 7 -> unique ids in rank order 5 6 7: match at unique rank 3
    # AP over the full kept list: hits at 4 and 5 -> (1/4 + 2/5) / 2; mINP = 2/5
    assert res["cmc"] == pytest.approx([0.0, 0.0, 1.0, 1.0])
    assert res["mAP"] == pytest.approx((1 / 4 + 2 / 5) / 2)
    assert res["mINP"] == pytest.approx(2 / 5)
    # a camera-0 query keeps g1 (pid 9): unique ids 5 9 6 7 -> rank 4
    res = evaluate_rank(dist, np.array([7]), g_pids, np.array([0]), g_cams, max_rank=4, camera_filter="sysu",
                        unique_cmc=True)
    assert res["cmc"] == pytest.approx([0.0, 0.0, 0.0, 1.0])


# --------------------------------------------------------------------------- equivalence to the loops


@pytest.mark.parametrize("camera_filter,unique", [("market", False), ("none", False), ("sysu", False),
                                                  ("sysu", True)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_equals_torchreid_loop(camera_filter, unique, seed):
    rng = np.random.default_rng(seed)
    nq, ng = 37, 150
    q_pids, g_pids = rng.integers(0, 18, nq), rng.integers(-1, 15, ng)  # pid -1 junk, pid 0, unmatched 15-17
    q_cams, g_cams = rng.integers(0, 5, nq), rng.integers(0, 5, ng)
    dist = rng.integers(0, 12, (nq, ng)).astype(np.float32)  # many ties
    res = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=20, camera_filter=camera_filter,
                        unique_cmc=unique, max_chunk_elems=600)  # several query chunks
    known = g_pids != -1
    cmc, ap, inp, n = loop_eval(dist[:, known], q_pids, g_pids[known], q_cams, g_cams[known], 20,
                                camera_filter, unique)
    assert res["num_valid"] == n and 0 < n < nq
    np.testing.assert_allclose(res["cmc"], cmc, rtol=0, atol=1e-12)
    assert res["mAP"] == pytest.approx(ap, abs=1e-12)
    assert res["mINP"] == pytest.approx(inp, abs=1e-12)


def test_max_rank_clipped_to_gallery_and_errors():
    dist = np.array([[0.2, 0.1]])
    res = evaluate_rank(dist, [1], [1, 2], [0], [1, 1], max_rank=50)
    assert res["cmc"].shape == (2,) and res["cmc"] == pytest.approx([0.0, 1.0])
    with pytest.raises(ValueError, match="g_pids"):
        evaluate_rank(dist, [1], [1, 2, 3], [0], [1, 1])
    with pytest.raises(ValueError, match="camera_filter"):
        evaluate_rank(dist, [1], [1, 2], [0], [1, 1], camera_filter="cuhk")
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(np.array([[np.nan, 0.1]]), [1], [1, 2], [0], [1, 1])


# --------------------------------------------------------------------------- protocols


def _samples(pids, cams):
    return [Sample(f"img_{i}.jpg", int(p), int(c)) for i, (p, c) in enumerate(zip(pids, cams))]


def test_protocols_percentages_and_cosine_distance():
    assert set(PROTOCOLS) == _CHOICES["eval.protocol"]
    assert PROTOCOLS["veri"] is PROTOCOLS["market"]
    rng = np.random.default_rng(3)
    qf, gf = torch.randn(12, 16), torch.randn(40, 16)
    q_pids, g_pids = rng.integers(0, 6, 12), rng.integers(0, 6, 40)
    q_cams, g_cams = rng.integers(0, 4, 12), rng.integers(0, 4, 40)
    query, gallery = _samples(q_pids, q_cams), _samples(g_pids, g_cams)
    qn, gn = torch.nn.functional.normalize(qf, dim=1), torch.nn.functional.normalize(gf, dim=1)
    euclid = torch.cdist(qn, gn).numpy() ** 2  # torchreid's default metric on normalised features
    for name, flt, unique in [("market", "market", False), ("regdb", "none", False), ("sysu", "sysu", True)]:
        out = PROTOCOLS[name](qf, gf, query, gallery)  # un-normalised input: the protocol normalises
        cmc, ap, inp, n = loop_eval(euclid, q_pids, g_pids, q_cams, g_cams, 50, flt, unique)
        assert out["num_valid_queries"] == n
        assert out["mAP"] == pytest.approx(100 * ap) and out["mINP"] == pytest.approx(100 * inp)
        assert [out["rank1"], out["rank5"], out["rank10"]] == pytest.approx([100 * cmc[0], 100 * cmc[4],
                                                                            100 * cmc[9]])
    with pytest.raises(ValueError, match="query samples"):
        PROTOCOLS["market"](qf[:5], gf, query, gallery)
    with pytest.raises(TypeError, match="unexpected options"):
        PROTOCOLS["market"](qf, gf, query, gallery, k1=5)


def test_protocol_rerank_uses_re_ranking():
    rng = np.random.default_rng(4)
    qf = torch.nn.functional.normalize(torch.randn(8, 6), dim=1)
    gf = torch.nn.functional.normalize(torch.randn(30, 6), dim=1)
    q_pids, g_pids = rng.integers(1, 5, 8), rng.integers(1, 5, 30)
    q_cams, g_cams = np.zeros(8, int), np.ones(30, int)
    out = PROTOCOLS["market"](qf, gf, _samples(q_pids, q_cams), _samples(g_pids, g_cams), rerank=True)
    d = re_ranking((2 - 2 * qf @ gf.T).numpy(), (2 - 2 * qf @ qf.T).numpy(), (2 - 2 * gf @ gf.T).numpy())
    _, ap, _, _ = loop_eval(d, q_pids, g_pids, q_cams, g_cams, 50)
    assert out["mAP"] == pytest.approx(100 * ap)


# --------------------------------------------------------------------------- re-ranking


def reference_rerank(q_g, q_q, g_g, k1, k2, lam):
    """Zhong et al. CVPR 2017, written element by element from the paper's definitions (eqs. 4-12),
    with torchreid's original distance (input squared, rows scaled to max 1) and Jaccard as min / max."""
    nq = q_g.shape[0]
    d = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float64) ** 2
    d = d / d.max(axis=1, keepdims=True)
    n = len(d)
    ranks = [list(np.argsort(d[i], kind="stable")) for i in range(n)]

    def nn_set(i, k):
        return ranks[i][: k + 1]

    def recip(i, k):
        return {j for j in nn_set(i, k) if i in nn_set(j, k)}

    half = int(np.around(k1 / 2))
    v = np.zeros((n, n))
    grown = 0  # rows whose set R*(i) grew by the expansion (the test wants some)
    for i in range(n):
        r = recip(i, k1)
        expanded = set(r)
        for c in r:
            rc = recip(c, half)
            if len(rc & r) > 2 / 3 * len(rc):
                expanded |= rc
        grown += expanded != r
        idx = sorted(expanded)
        w = np.exp(-d[i, idx])
        v[i, idx] = w / w.sum()
    if k2 > 1:
        v = np.array([v[ranks[i][:k2]].mean(0) for i in range(n)])
    out = np.zeros((nq, n - nq))
    for i in range(nq):
        for j in range(n - nq):
            a, b = v[i], v[nq + j]
            jac = 1 - np.minimum(a, b).sum() / np.maximum(a, b).sum()
            out[i, j] = (1 - lam) * jac + lam * d[i, nq + j]
    return out, grown


@pytest.mark.parametrize("seed,k1,k2,lam,grows", [(0, 20, 6, 0.3, True), (1, 5, 3, 0.3, False),
                                                   (2, 6, 1, 0.5, True), (3, 3, 2, 0.0, False),
                                                   (4, 50, 6, 0.3, False)])  # k1 = 50 > N = 45
def test_re_ranking_matches_paper_reference(seed, k1, k2, lam, grows):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, 8))
    f = centres[rng.integers(0, 6, 45)] + 0.6 * rng.normal(size=(45, 8))  # clustered: real expansions
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    d = np.maximum(2 - 2 * f @ f.T, 0).astype(np.float32)
    nq = 12
    args = (d[:nq, nq:], d[:nq, :nq], d[nq:, nq:])
    out = re_ranking(*args, k1=k1, k2=k2, lambda_value=lam)
    ref, grown = reference_rerank(*args, k1, k2, lam)
    if grows:
        assert grown > 0  # the expansion branch (eq. 6) is exercised
    assert out.shape == (nq, 45 - nq) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=2e-5)
    assert (out > 0.05).any() and (out < 0.99 * (1 - lam) + lam).any()  # not all Jaccard distances are 1


def test_re_ranking_lambda_one_is_original_and_errors():
    rng = np.random.default_rng(5)
    q_g, q_q, g_g = rng.random((4, 7)), rng.random((4, 4)), rng.random((7, 7))
    q_q, g_g = (q_q + q_q.T) / 2, (g_g + g_g.T) / 2
    full = np.block([[q_q, q_g], [q_g.T, g_g]]) ** 2
    expected = (full / full.max(axis=1, keepdims=True))[:4, 4:]
    np.testing.assert_allclose(re_ranking(q_g, q_q, g_g, k1=3, k2=2, lambda_value=1.0), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="g_g_dist"):
        re_ranking(q_g, q_q, g_g[:5, :5])
    with pytest.raises(ValueError, match="lambda_value"):
        re_ranking(q_g, q_q, g_g, lambda_value=1.5)


# --------------------------------------------------------------------------- feature extraction


class _ImageSet(Dataset):
    def __init__(self, imgs):
        self.imgs = imgs

    def __len__(self):
        return len(self.imgs)

    def __getitem__(self, i):
        return {"img": self.imgs[i], "index": i, "camid": 0, "modality": 0}


class _Embed(torch.nn.Module):
    """Not flip-invariant (weights differ per column) and mode-dependent (dropout in train mode)."""

    def __init__(self):
        super().__init__()
        self.drop = torch.nn.Dropout(0.9)
        self.lin = torch.nn.Linear(3 * 2 * 4, 5)

    def forward(self, x):
        return self.lin(self.drop(x.flatten(1)))


def test_extract_features_order_normalisation_mode_and_flip():
    torch.manual_seed(0)
    imgs = torch.randn(11, 3, 2, 4)
    model = _Embed()
    gen = torch.Generator().manual_seed(1)
    loader = DataLoader(_ImageSet(imgs), batch_size=4, shuffle=True, generator=gen)
    assert [int(i) for b in loader for i in b["index"]] != list(range(11))  # the sampler does shuffle
    model.train()
    f = extract_features(model, loader, torch.device("cpu"))
    assert model.training  # mode restored
    with torch.no_grad():
        raw = model.lin(imgs.flatten(1))  # eval mode = no dropout
        flipped = model.lin(torch.flip(imgs, dims=[3]).flatten(1))
    assert f.dtype == torch.float32 and f.shape == (11, 5)
    torch.testing.assert_close(f, raw / raw.norm(dim=1, keepdim=True))
    torch.testing.assert_close(f.norm(dim=1), torch.ones(11))
    model.eval()
    ff = extract_features(model, loader, torch.device("cpu"), flip=True)
    assert not model.training
    both = raw + flipped
    torch.testing.assert_close(ff, both / both.norm(dim=1, keepdim=True))
    assert not torch.allclose(ff, f, atol=1e-3)


def test_extract_features_incomplete_loader_raises_and_restores_mode():
    model = _Embed().train()
    loader = DataLoader(_ImageSet(torch.randn(5, 3, 2, 4)), batch_size=2, drop_last=True)
    with pytest.raises(ValueError, match="never produced"):
        extract_features(model, loader, "cpu")
    assert model.training
