"""P x K samplers: Cluster Contrast's camera-aware rules, classic P x K batches, determinism, no outliers."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch

from unreid.data.samplers import build_sampler

# label 0: 4 images over cameras 0/1/2 (3 from other cameras than any anchor in cam 0)
# label 1: 3 images, all camera 0 (same-camera fallback)      label 2: a single image
# label 3: 6 images, cameras 0 x2, 1 x4                         -1: outliers
LABELS = np.array([0, 0, 0, 0, 1, 1, 2, -1, 3, 3, 3, 3, 3, 3, -1, 1])
CAMS = np.array([0, 0, 1, 2, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1, 2, 0])
K = 4


def _split_groups(order, labels, k):
    """Cut a camera-aware pass into its per-identity groups: k images, or 1 for a single-image identity."""
    groups, i = [], 0
    while i < len(order):
        n = 1 if (labels == labels[order[i]]).sum() == 1 else k
        groups.append(order[i:i + n])
        i += n
    return groups


def test_camera_aware_follows_cluster_contrast_rules():
    s = build_sampler(LABELS, CAMS, batch_size=8, num_instances=K, kind="camera_aware", seed=1)
    for _ in range(30):  # many passes: every pass obeys the rules
        expected_len = len(s)
        order = list(s)
        assert len(order) == expected_len == 3 * K + 1  # 4 multi-image ids x K + one single-image id
        assert not set(order) & {7, 14}  # outliers never yielded
        groups = _split_groups(order, LABELS, K)
        assert sorted(LABELS[g[0]] for g in groups) == [0, 1, 2, 3]  # each pseudo-id once per pass
        for g in groups:
            lab, anchor = LABELS[g[0]], g[0]
            assert all(LABELS[i] == lab for i in g)
            members = np.flatnonzero(LABELS == lab)
            other_cam = members[CAMS[members] != CAMS[anchor]]
            if len(other_cam):
                assert all(CAMS[i] != CAMS[anchor] for i in g[1:])  # K-1 from other cameras
                if len(other_cam) >= K:
                    assert len(set(g[1:])) == K - 1  # enough of them: without replacement
            elif len(members) > 1:
                # same-camera fallback
                assert anchor not in g[1:] and all(CAMS[i] == CAMS[anchor] for i in g[1:])


def test_camera_aware_replacement_threshold_is_k_like_cc():
    # one id: anchor in camera 0 (a single image there), exactly K-1 = 3 images in other cameras.
    # CC draws WITHOUT replacement only when >= K candidates exist, so duplicates must show up here.
    labels = np.zeros(4, int)
    cams = np.array([0, 1, 2, 3])
    s = build_sampler(labels, cams, 4, K, "camera_aware", seed=0)
    dup = 0
    for _ in range(200):
        g = list(s)
        assert len(g) == K and all(cams[i] != cams[g[0]] for i in g[1:])
        dup += len(set(g[1:])) < K - 1
    assert dup > 50  # P(no duplicate among 3 draws from 3) = 2/9, so about 155 of 200 passes have one
    # at least K other-camera candidates for every anchor: never a duplicate
    cams = np.array([0, 1, 1, 2, 2, 3])
    s = build_sampler(np.zeros(6, int), cams, 4, K, "camera_aware", seed=0)
    for _ in range(50):
        g = list(s)
        assert len(set(g[1:])) == K - 1 and all(cams[i] != cams[g[0]] for i in g[1:])


def test_camera_aware_anchor_uniform_and_k1():
    counts = Counter()
    s = build_sampler(np.zeros(4, int), np.array([0, 0, 1, 1]), 4, 2, "camera_aware", seed=3)
    for _ in range(400):
        counts[list(s)[0]] += 1
    assert set(counts) == {0, 1, 2, 3} and min(counts.values()) > 60  # ~100 each
    s = build_sampler(LABELS, CAMS, 4, 1, "camera_aware", seed=0)  # K = 1: one image per pseudo-id
    order = list(s)
    assert len(order) == len(s) == 4 and sorted(LABELS[order]) == [0, 1, 2, 3]


def test_determinism_fresh_passes_and_global_rng_untouched():
    np.random.seed(123)
    random.seed(123)
    torch.manual_seed(123)
    states = (np.random.get_state()[1].copy(), random.getstate(), torch.get_rng_state().clone())
    for kind in ("camera_aware", "random_identity", "proxy"):
        a = build_sampler(LABELS, CAMS, 8, 2, kind, seed=7)
        b = build_sampler(LABELS, CAMS, 8, 2, kind, seed=7)
        passes_a = [list(a) for _ in range(5)]
        assert passes_a == [list(b) for _ in range(5)]  # same seed: same sequence of passes
        assert len({tuple(p) for p in passes_a}) > 1  # each pass is a new draw (IterLoader restarts)
        c = build_sampler(LABELS, CAMS, 8, 2, kind, seed=8)
        assert [list(c) for _ in range(5)] != passes_a
    assert (np.random.get_state()[1] == states[0]).all() and random.getstate() == states[1]
    assert torch.equal(torch.get_rng_state(), states[2])


def test_random_identity_batches():
    labels = np.array([0] * 5 + [1] * 2 + [2] * 8 + [3] * 4 + [-1] * 3 + [4] * 1)
    cams = np.zeros(len(labels), int)
    bs, k = 6, 2
    s = build_sampler(labels, cams, batch_size=bs, num_instances=k, kind="random_identity", seed=0)
    for _ in range(20):
        expected_len = len(s)
        order = list(s)
        assert len(order) == expected_len and len(order) % bs == 0 and len(order) > 0
        assert not (labels[order] < 0).any()
        for b in range(0, len(order), bs):
            batch = labels[order[b:b + bs]]
            groups = batch.reshape(-1, k)
            assert (groups == groups[:, :1]).all()  # K images of one identity per group
            assert len(set(groups[:, 0])) == bs // k  # P distinct identities per batch
        # each identity gives at most max(1, n // K) groups; a group never repeats an image of an id with >= K
        per_id = Counter(labels[order[i]] for i in range(0, len(order), k))
        for lab, n_groups in per_id.items():
            n = (labels == lab).sum()
            assert n_groups <= max(1, n // k)
        for i in range(0, len(order), k):
            g = order[i:i + k]
            if (labels == labels[g[0]]).sum() >= k:
                assert len(set(g)) == k
    # an identity with a single image is drawn K times (with replacement)
    s1 = build_sampler(np.array([0, 1]), np.zeros(2, int), 4, 2, "random_identity", seed=0)
    assert sorted(list(s1)) == [0, 0, 1, 1]


def test_proxy_sampler_draws_k_images_of_every_camera_proxy():
    # proxies (label, camera) of LABELS / CAMS and their sizes:
    # (0,0) 2  (0,1) 1  (0,2) 1  (1,0) 3  (2,1) 1  (3,0) 2  (3,1) 4   - outliers 7 and 14 never drawn
    proxies = {(0, 0): 2, (0, 1): 1, (0, 2): 1, (1, 0): 3, (2, 1): 1, (3, 0): 2, (3, 1): 4}
    k = 3
    s = build_sampler(LABELS, CAMS, batch_size=6, num_instances=k, kind="proxy", seed=2)
    seen_orders = set()
    for _ in range(30):
        expected_len = len(s)
        order = np.array(list(s))
        assert len(order) == expected_len == k * len(proxies)  # every proxy once per pass, K images
        assert not set(order.tolist()) & {7, 14}
        groups = order.reshape(-1, k)
        keys = [(int(LABELS[g[0]]), int(CAMS[g[0]])) for g in groups]
        assert sorted(keys) == sorted(proxies)  # each proxy exactly once
        for g, key in zip(groups, keys):
            assert all((LABELS[i], CAMS[i]) == key for i in g)  # one proxy per group
            counts = Counter(g.tolist())
            if proxies[key] >= k:
                assert len(counts) == k  # enough images: without replacement
            else:
                assert max(counts.values()) <= k  # at most K copies of an image (reference's value * k)
        seen_orders.add(tuple(keys))
    assert len(seen_orders) > 1  # the proxy order is shuffled per pass
    # a single-image proxy is its one image K times
    s1 = build_sampler(np.array([0, 0]), np.array([0, 1]), 4, 2, "proxy", seed=0)
    assert sorted(list(s1)) == [0, 0, 1, 1]


def test_errors():
    with pytest.raises(ValueError, match="every label is -1"):
        build_sampler(np.full(3, -1), np.zeros(3), 4, 2, "random_identity", 0)
    with pytest.raises(ValueError, match="every label is -1"):
        build_sampler(np.full(3, -1), np.zeros(3), 4, 2, "camera_aware", 0)
    with pytest.raises(ValueError, match="multiple of num_instances"):
        build_sampler(LABELS, CAMS, 6, 4, "random_identity", 0)
    with pytest.raises(ValueError, match="equal length"):
        build_sampler(LABELS, CAMS[:-1], 8, 4, "camera_aware", 0)
    with pytest.raises(ValueError, match="every label is -1"):
        build_sampler(np.full(3, -1), np.zeros(3), 4, 2, "proxy", 0)
    with pytest.raises(ValueError, match="equal length"):
        build_sampler(LABELS, CAMS[:-1], 8, 4, "proxy", 0)
    with pytest.raises(ValueError, match=r"batch_size \(2\) must be >= num_instances"):
        build_sampler(LABELS, CAMS, 2, 4, "proxy", 0)
    with pytest.raises(ValueError, match="unknown sampler"):
        build_sampler(LABELS, CAMS, 8, 4, "pk", 0)
