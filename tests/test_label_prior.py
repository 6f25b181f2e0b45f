"""The hand-crafted prior computed once (pseudo_labels.prior_mode=gram, unreid/pseudo_labels/prior.py).

Every check compares against the ``append`` form written out densely here (the concatenated features
``[f, w c]`` of ``append_colour``, their full product sorted, the camera standardisation by a plain
per-camera loop), never against the code under test.
"""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unreid.config import PseudoLabelConfig, load_config
from unreid.pseudo_labels import PseudoLabeler
from unreid.pseudo_labels.jaccard import k_reciprocal_encoding
from unreid.pseudo_labels.knn import knn
from unreid.pseudo_labels.matching import cluster_centroids
from unreid.pseudo_labels.pipeline import (
    CameraStandardize,
    HandCraftedPrior,
    LabelPipeline,
    MatchesAcrossGroups,
    MergeAcrossGroups,
    build_label_pipeline,
)
from unreid.pseudo_labels.prior import DescriptorStore, GramFeatures, PriorFeatures


def standardise_loop(d: torch.Tensor, cams: np.ndarray) -> torch.Tensor:
    """Per-camera standardisation by hand: mean, unbiased std + 1e-6, a one-image camera kept; rows
    L2-normalised."""
    out = torch.empty_like(d, dtype=torch.float64)
    x64 = d.double()
    for c in np.unique(cams):
        rows = np.flatnonzero(cams == c)
        x = x64[rows]
        if len(rows) > 1:
            mu = x.sum(0) / len(rows)
            sd = (((x - mu) ** 2).sum(0) / (len(rows) - 1)).sqrt()
            x = (x - mu) / (sd + 1e-6)
        out[rows] = x
    return (out / out.norm(dim=1, keepdim=True)).float()


def problem(n: int = 420, ids: int = 70, cams: int = 3, d: int = 96, D: int = 300, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pid = np.repeat(np.arange(ids), n // ids)
    cam = np.tile(np.arange(cams), n // cams)
    lat = torch.randn(ids, 32, generator=g)
    f = lat[pid] @ torch.randn(32, d, generator=g) + 0.9 * torch.randn(n, d, generator=g)
    f = F.normalize(f + torch.randn(cams, d, generator=g)[cam], dim=1)
    desc = (lat[pid] @ torch.randn(32, D, generator=g)).abs() + 0.6 * torch.rand(n, D, generator=g)
    return f, desc, cam


@pytest.mark.parametrize("store", ["memory", "disk"])
def test_store_rows_are_the_per_camera_standardised_descriptors(store, tmp_path):
    _, desc, cam = problem()
    cam = cam.copy()
    cam[5] = 7  # a camera with a single image: kept, only normalised
    s = DescriptorStore(list(desc.split(61)), cam, scale=0.6, store=store, directory=tmp_path)
    assert s.on_disk == (store == "disk")
    ref = standardise_loop(desc, cam) * 0.6
    torch.testing.assert_close(s.rows(np.arange(len(cam))), ref, atol=2e-6, rtol=0)
    torch.testing.assert_close(s.rows(np.array([5])), F.normalize(desc[5:6], dim=1) * 0.6, atol=1e-7, rtol=0)
    # the disk file is anonymous: nothing is left in the folder
    assert list(tmp_path.iterdir()) == []


def test_store_gram_blocks_and_cluster_sums(monkeypatch):
    from unreid.pseudo_labels import prior

    monkeypatch.setattr(prior, "CHUNK_ROWS", 50)  # several blocks, mirrored
    _, desc, cam = problem()
    s = DescriptorStore(desc, cam, scale=0.5, store="disk")
    ref = standardise_loop(desc, cam) * 0.5
    idx = np.flatnonzero(cam == 1)
    torch.testing.assert_close(s.gram(idx), ref[idx] @ ref[idx].T, atol=2e-6, rtol=0)
    assert s.gram(idx) is s.gram(idx.copy())  # computed once per group
    assert s.gram_bytes() == len(idx) ** 2 * 4
    labels = np.random.default_rng(0).integers(-1, 6, len(idx))
    sums = torch.stack([ref[idx[labels == k]].sum(0) for k in range(6)])
    torch.testing.assert_close(s.cluster_sums(idx, labels, 6), sums, atol=2e-5, rtol=0)
    scattered = np.sort(np.random.default_rng(2).choice(len(cam), 150, replace=False))  # rows of every camera
    labels = np.random.default_rng(3).integers(-1, 4, 150)
    sums = torch.stack([ref[scattered[labels == k]].sum(0) for k in range(4)])
    torch.testing.assert_close(s.cluster_sums(scattered, labels, 4), sums, atol=2e-5, rtol=0)


@pytest.mark.parametrize("store", ["memory", "disk"])
def test_full_gram_is_the_product_of_all_rows(store, tmp_path, monkeypatch):
    """Bands of 100 rows (the last one of 20), the part left of each band copied from the rows above."""
    from unreid.pseudo_labels import prior

    monkeypatch.setattr(prior, "CHUNK_ROWS", 50)
    monkeypatch.setattr(prior, "AUTO_MEMORY_BYTES", 1 << 30 if store == "memory" else 0)
    _, desc, cam = problem()
    s = DescriptorStore(desc, cam, scale=0.5, store=store, directory=tmp_path)
    ref = standardise_loop(desc, cam) * 0.5
    ref = ref[torch.from_numpy(np.argsort(s.pos))]  # the store's (camera-sorted) row order
    full = s.full_gram()
    assert (full.mem is None) == (store == "disk")
    n = len(cam)
    got = torch.from_numpy(full.read_range(0, n, np.empty((n, n), dtype=np.float32)).copy())
    torch.testing.assert_close(got, ref @ ref.T, atol=2e-6, rtol=0)
    # outside the bands' own 100 x 100 squares G is exactly symmetric (one side is the other's copy)
    band = np.arange(n) // 100
    off = torch.from_numpy(band[:, None] != band[None, :])
    assert torch.equal(got[off], got.T[off])
    # a camera's Gram block is then read from it (its rows are consecutive in the store), not recomputed

    def no_descriptor_reads(*a, **k):
        raise AssertionError("descriptors read: the Gram block was recomputed")

    monkeypatch.setattr(s._rows, "read", no_descriptor_reads)
    monkeypatch.setattr(s._rows, "read_range", no_descriptor_reads)
    for c in range(3):
        idx = np.flatnonzero(cam == c)
        p0 = int(s.pos[idx[0]])
        assert torch.equal(s.gram(idx), got[p0:p0 + len(idx), p0:p0 + len(idx)])
    s.close()


def test_store_rejects_wrong_chunks():
    _, desc, cam = problem()
    with pytest.raises(ValueError, match="does not fit"):
        DescriptorStore([desc[:100], desc[100:, :50]], cam)
    with pytest.raises(ValueError, match="descriptor rows for"):
        DescriptorStore([desc[:100]], cam)
    with pytest.raises(ValueError, match="unknown prior store"):
        DescriptorStore(desc, cam, store="ram")


def appended(f, desc, cam, w):
    """The append form by hand: ``normalize([f, w c])``."""
    return F.normalize(torch.cat([f, w * standardise_loop(desc, cam)], 1), dim=1)


def both_forms(w: float, store: str = "memory", **problem_args):
    """One problem in both forms: ``(f, cam, x, pf)`` with ``x`` the append form by hand and ``pf`` the
    :class:`PriorFeatures` over a store scaled by ``w / sqrt(1 + w^2)``."""
    f, desc, cam = problem(**problem_args)
    store = DescriptorStore(desc, cam, scale=w / math.sqrt(1 + w * w), store=store)
    return f, cam, appended(f, desc, cam, w), PriorFeatures(f, store, w)


def test_knn_with_gram_equals_the_search_on_the_appended_features():
    f, cam, x, pf = both_forms(1.0)
    gf = pf.select()
    idx, sim = knn(gf.features, 12, gram=gf.gram, block=100)
    full = x @ x.T
    full.fill_diagonal_(-np.inf)
    ref_sim, ref_idx = full.topk(11, dim=1)
    np.testing.assert_array_equal(idx[:, 0], np.arange(len(x)))
    np.testing.assert_allclose(sim[:, 0], 1.0, atol=1e-5)
    np.testing.assert_allclose(sim[:, 1:], ref_sim.numpy(), atol=2e-6)
    # identical lists wherever the reference has no near-tie at the list's end
    clear = (ref_sim[:, -1] - full.topk(12, dim=1).values[:, -1]).numpy() > 1e-5
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(np.sort(idx[clear, 1:], 1), np.sort(ref_idx.numpy()[clear], 1))


def test_knn_with_gram_rejects_other_searches_and_shapes():
    f, _, _ = problem()
    with pytest.raises(ValueError, match="needs knn=exact"):
        knn(f, 5, method="hnsw", gram=torch.zeros(len(f), len(f)))
    with pytest.raises(ValueError, match="must be"):
        knn(f, 5, gram=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="Gram matrix"):
        GramFeatures(f, torch.zeros(3, 3))


def test_encoding_takes_the_missing_inner_products_from_the_gram_part():
    f, cam, x, pf = both_forms(0.8)
    gf = pf.select()
    full = x @ x.T
    order = torch.argsort(-full, dim=1, stable=True)[:, :20].numpy()
    order[:, 0] = np.arange(len(x))  # self first, as the k-NN tables have it
    ref = k_reciprocal_encoding(x, order, None, 20, 6)
    got = k_reciprocal_encoding(gf.features, order, None, 20, 6, gram=gf.gram)
    np.testing.assert_array_equal(ref.indices, got.indices)
    np.testing.assert_allclose(ref.data, got.data, atol=1e-5)


def test_prior_centroids_equal_the_appended_features_centroids():
    f, cam, x, pf = both_forms(1.0)
    idx = np.flatnonzero(cam == 2)
    labels = np.random.default_rng(1).integers(-1, 9, len(idx))
    torch.testing.assert_close(pf.centroids(idx, labels, 9), cluster_centroids(x[idx], labels, 9),
                               atol=2e-6, rtol=0)


@pytest.mark.parametrize("grouped,cams,association", [(False, 3, None), (True, 2, "merge"), (True, 3, "merge"),
                                                      (True, 3, "matches")])
def test_pipeline_gram_and_append_give_the_same_labels(grouped, cams, association, monkeypatch):
    """Two groups: centroids with a streamed descriptor part; three: costs from the full prior Gram
    (its minimum descriptor size lowered to these 300-d test descriptors)."""
    from unreid.pseudo_labels import prior as prior_mod

    monkeypatch.setattr(prior_mod, "CROSS_GRAM_MIN_DIM", 0)
    f, desc, cam = problem(n=600, ids=100, cams=cams)
    cfg = PseudoLabelConfig(k1=20, k2=6, eps=0.5, min_samples=2)
    out = {}
    for mode in ("append", "gram"):
        prior = HandCraftedPrior(lambda: desc, cam, 1.0, "lomo", mode=mode)
        assoc = {"merge": MergeAcrossGroups(), "matches": MatchesAcrossGroups(), None: None}[association]
        pipe = LabelPipeline(PseudoLabeler(cfg), cam, [CameraStandardize(cam), prior],
                             groups=cam if grouped else None, group_name="camera", association=assoc, cfg=cfg)
        out[mode] = pipe(f)
        if mode == "gram" and grouped:
            assert prior.store.uses_full_gram == (cams > 2)
    assert out["gram"].num_clusters == out["append"].num_clusters > 10
    np.testing.assert_array_equal(out["gram"].labels, out["append"].labels)
    if association == "matches":
        assert len(out["gram"].matches) > 0
        np.testing.assert_array_equal(out["gram"].matches, out["append"].matches)


def test_pair_costs_equal_the_centroid_cost_of_the_appended_centroids(monkeypatch):
    from unreid.pseudo_labels import prior as prior_mod
    from unreid.pseudo_labels.matching import centroid_cost

    monkeypatch.setattr(prior_mod, "CHUNK_ROWS", 64)  # several bands of the full Gram and of the streaming
    f, cam, x, pf = both_forms(1.0, store="disk")
    assert not pf.uses_cross_products(3)  # 300-d descriptors: the centroids are cheaper
    monkeypatch.setattr(prior_mod, "CROSS_GRAM_MIN_DIM", 300)
    assert pf.uses_cross_products(3) and not pf.uses_cross_products(2)
    rng = np.random.default_rng(4)
    parts, offset = [], 0
    for c in range(3):
        idx = np.flatnonzero(cam == c)
        labels = rng.integers(-1, 7 + c, len(idx))
        parts.append((idx, labels, offset, 7 + c))
        offset += 7 + c
    cost = pf.pair_costs(parts)
    for i in range(3):
        for j in range(i + 1, 3):
            ref = centroid_cost(cluster_centroids(x[parts[i][0]], parts[i][1], parts[i][3]),
                                cluster_centroids(x[parts[j][0]], parts[j][1], parts[j][3]))
            np.testing.assert_allclose(cost(i, j), ref, atol=2e-6)


def test_build_label_pipeline_uses_gram_by_default_and_append_where_it_must(tmp_path):
    _, desc, cam = problem()
    base = ["pseudo_labels.colour_weight=1", "pseudo_labels.colour_descriptor=lomo"]
    pipe = build_label_pipeline(load_config(None, base), cam, descriptors=lambda: desc, store_dir=tmp_path)
    assert pipe.transforms[-1].mode == "gram" and "Gram blocks computed once" in pipe.describe()
    for extra in (["pseudo_labels.knn=hnsw"], ["method.camera.neighbourhood=ca_jaccard"],
                  ["pseudo_labels.prior_mode=append"]):
        pipe = build_label_pipeline(load_config(None, base + extra), cam, descriptors=lambda: desc)
        assert pipe.transforms[-1].mode == "append", extra


def test_gram_store_reads_chunked_descriptors_once():
    _, desc, cam = problem()
    calls = []

    def chunks():
        calls.append(1)
        return iter(desc.split(100))

    prior = HandCraftedPrior(chunks, cam, 1.0, mode="gram", store="disk", store_dir=tempfile.gettempdir())
    f = F.normalize(torch.randn(len(cam), 8), dim=1)
    prior(f).select()
    prior(f).select()
    assert calls == [1]
    assert prior.store.on_disk and not any(n.startswith("unreid-prior-") for n in os.listdir(tempfile.gettempdir()))
