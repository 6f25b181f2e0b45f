"""CMC / mAP / mINP against hand values and a per-query loop in torchreid's style; extraction order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from unreid.evaluation.features import extract_features
from unreid.evaluation.metrics import evaluate_rank
from unreid.evaluation.rerank import re_ranking


def loop_eval(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=10, camera_filter="market"):
    """torchreid ``eval_market1501`` written as a plain per-query loop (+ AGW mINP)."""
    cmcs, aps, inps = [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i])
        if camera_filter == "market":
            remove = (g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i])
        elif camera_filter == "sysu":
            remove = (q_camids[i] == 2) & (g_camids[order] == 1)
        else:
            remove = np.zeros(len(order), bool)
        raw = (g_pids[order] == q_pids[i]).astype(int)[~remove]
        if not raw.any():
            continue
        cmc = raw.cumsum()
        cmc[cmc > 1] = 1
        cmcs.append(cmc[:max_rank])
        nrel = raw.sum()
        tmp = raw.cumsum() / (np.arange(len(raw)) + 1.0)
        aps.append((tmp * raw).sum() / nrel)
        inps.append(nrel / (np.where(raw == 1)[0].max() + 1.0))
    return np.mean(cmcs, 0), np.mean(aps), np.mean(inps), len(aps)


def test_hand_example():
    # query 0 (pid 1, cam 0): gallery sorted by distance: g0 (pid1 cam0, removed), g1 (pid2), g2 (pid1 cam1), g3 (pid0)
    # -> kept list: g1 miss, g2 hit: AP = 1/2, first hit rank 2, INP = 1/2
    # query 1 (pid 3): no gallery match -> skipped
    dist = np.array([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]])
    res = evaluate_rank(dist, np.array([1, 3]), np.array([1, 2, 1, 0]), np.array([0, 0]), np.array([0, 0, 1, 1]),
                        max_rank=4)
    assert res["num_valid"] == 1 and res["mAP"] == pytest.approx(0.5) and res["mINP"] == pytest.approx(0.5)
    assert res["cmc"].tolist() == [0.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("flt", ["market", "none", "sysu"])
@pytest.mark.parametrize("seed", [0, 1])
def test_vectorised_equals_loop(flt, seed):
    rng = np.random.default_rng(seed)
    q, g = 40, 120
    q_p, g_p = rng.integers(0, 12, q), rng.integers(0, 12, g)
    q_c, g_c = rng.integers(0, 4, q), rng.integers(0, 4, g)
    dist = rng.integers(0, 20, (q, g)).astype(np.float32)  # many ties
    res = evaluate_rank(dist, q_p, g_p, q_c, g_c, max_rank=10, camera_filter=flt)
    cmc, ap, inp, n = loop_eval(dist, q_p, g_p, q_c, g_c, 10, flt)
    assert res["num_valid"] == n
    assert np.allclose(res["cmc"], cmc) and res["mAP"] == pytest.approx(ap) and res["mINP"] == pytest.approx(inp)


def test_sysu_unique_cmc():
    dist = np.array([[0.1, 0.2, 0.3]])
    # gallery pids in order: 5, 5, 7 (query pid 7): unique-id CMC puts the match at rank 2, plain at rank 3
    res = evaluate_rank(dist, np.array([7]), np.array([5, 5, 7]), np.array([0]), np.array([0, 3, 4]), max_rank=3,
                        camera_filter="sysu", unique_cmc=True)
    assert res["cmc"].tolist() == [0.0, 1.0, 1.0] and res["mAP"] == pytest.approx(1 / 3)


class _DS(Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"img": self.x[i], "index": torch.tensor(i)}


def test_extract_features_order_and_mode():
    x = torch.randn(10, 4)
    model = torch.nn.Linear(4, 3)
    model.train()
    sampler = list(reversed(range(10)))
    loader = DataLoader(_DS(x), batch_size=3, sampler=sampler)
    f = extract_features(model, loader)
    assert model.training
    expected = torch.nn.functional.normalize(model(x), dim=1)
    assert torch.allclose(f, expected, atol=1e-6)


def test_rerank_shape_and_identity():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(30, 8)).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    d = 2 - 2 * f @ f.T
    out = re_ranking(d[:10, 10:], d[:10, :10], d[10:, 10:], k1=5, k2=3)
    assert out.shape == (10, 20) and np.isfinite(out).all()
    # lambda = 1 keeps the (squared, column-max normalised) original distance ordering
    same = re_ranking(d[:10, 10:], d[:10, :10], d[10:, 10:], k1=5, k2=3, lambda_value=1.0)
    assert (np.argsort(same, 1) == np.argsort(d[:10, 10:], 1)).mean() > 0.9
