"""P x K samplers and the loader (no pid in batches, unreadable images counted, fixed iterations)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from unreid.config import DataConfig
from unreid.data.datasets.base import Sample
from unreid.data.loader import ImageCache, IterLoader, build_test_loader, build_train_loader, should_cache
from unreid.data.samplers import build_sampler

LABELS = np.array([0, 0, 0, 0, 1, 1, 2, -1, 3, 3, 3])
CAMS = np.array([0, 0, 1, 2, 0, 0, 1, 0, 0, 1, 1])


def test_camera_aware_sampler_rules():
    s = build_sampler(LABELS, CAMS, batch_size=8, num_instances=4, kind="camera_aware", seed=1)
    order = list(s)
    assert 7 not in order and len(order) == len(s)
    assert order == list(build_sampler(LABELS, CAMS, 8, 4, "camera_aware", seed=1))
    # walk the groups: anchor then K-1 of the same label, from other cameras when the label has them
    i = 0
    while i < len(order):
        lab = LABELS[order[i]]
        n = 1 if (LABELS == lab).sum() == 1 else 4
        group = order[i:i + n]
        assert all(LABELS[g] == lab for g in group)
        anchor_cam = CAMS[group[0]]
        has_other = ((LABELS == lab) & (CAMS != anchor_cam)).any()
        if has_other:
            assert all(CAMS[g] != anchor_cam for g in group[1:])
        i += n
    assert sorted({LABELS[o] for o in order}) == [0, 1, 2, 3]


def test_random_identity_batches():
    s = build_sampler(LABELS, CAMS, batch_size=4, num_instances=2, kind="random_identity", seed=0)
    order = list(s)
    assert len(order) % 4 == 0 and 7 not in order
    for b in range(0, len(order), 4):
        labs = LABELS[order[b:b + 4]]
        assert labs[0] == labs[1] and labs[2] == labs[3] and labs[0] != labs[2]
    with pytest.raises(ValueError, match="no clustered sample"):
        build_sampler(np.full(3, -1), np.zeros(3), 4, 2, "random_identity", 0)


def _samples(tmp_path, n=6):
    out = []
    for i in range(n):
        p = tmp_path / f"{i}.jpg"
        Image.fromarray(np.full((20, 10, 3), 30 * i, np.uint8)).save(p)
        out.append(Sample(str(p), i, i % 2))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    out.append(Sample(str(bad), 9, 0))
    return out


def test_loader_hides_pids_and_survives_bad_images(tmp_path, caplog):
    samples = _samples(tmp_path)
    cfg = DataConfig(height=16, width=8, batch_size=4, num_instances=2, workers=0)
    cache = ImageCache([s.path for s in samples], (16, 8))
    assert cache.num_failed == 1 and "bad.jpg" in caplog.text
    assert cache[samples[2].path].shape == (3, 16, 8) and cache[samples[2].path].dtype == torch.uint8
    for c in (cache, None):
        batches = list(build_test_loader(samples, cfg, cache=c, batch_size=4))
        assert [len(b["index"]) for b in batches] == [4, 3]
        assert "pid" not in batches[0] and batches[0]["img"].shape == (4, 3, 16, 8)
        assert batches[1]["index"].tolist() == [4, 5, 6]
        assert torch.equal(batches[0]["camid"], torch.tensor([0, 1, 0, 1]))
    labels = np.array([0, 0, 1, 1, 2, 2, -1])
    sampler = build_sampler(labels, np.array([s.camid for s in samples]), 4, 2, "random_identity", 0)
    it = IterLoader(build_train_loader(samples, sampler, cfg, cache), 5)
    got = list(it)
    assert len(got) == 5 == len(it) and all(b["img"].shape[0] == 4 for b in got)
    assert should_cache(10, (256, 128), 1) and not should_cache(100, (256, 128), 1)
