"""The synthetic generator: deterministic, Market layout, identities learnable, cameras dominant."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from unreid.data.datasets import build_dataset
from unreid.data.synthetic import generate

OPTS = dict(num_ids=12, num_test_ids=6, num_cameras=3, images_per_id_cam=3, height=64, width=32, seed=3)


def _digest(root):
    h = hashlib.sha1()
    for p in sorted(root.rglob("*.jpg")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_deterministic_and_never_overwrites(tmp_path):
    a, b = generate(tmp_path / "a", **OPTS), generate(tmp_path / "b", **OPTS)
    assert _digest(a) == _digest(b)
    assert _digest(generate(tmp_path / "c", **{**OPTS, "seed": 4})) != _digest(a)
    with pytest.raises(FileExistsError):
        generate(a, **OPTS)


def test_layout_and_counts(tmp_path):
    d = build_dataset("synthetic", str(tmp_path), **OPTS)
    assert len({s.pid for s in d.train}) == 12 and len({s.pid for s in d.query}) == 6
    assert len(d.train) % 3 == 0 and all(s.camid < 3 for s in d.train)
    # one query per (test id, camera); every query has a gallery image of its id in another camera
    keys = [(s.pid, s.camid) for s in d.query]
    assert len(keys) == len(set(keys))
    for q in d.query:
        assert any(g.pid == q.pid and g.camid != q.camid for g in d.gallery)
    assert build_dataset("synthetic", str(tmp_path), **OPTS).train == d.train  # reused, not regenerated


def test_cameras_dominate_raw_pixels_but_identity_survives(tmp_path):
    d = build_dataset("synthetic", str(tmp_path), **{**OPTS, "num_ids": 20, "images_per_id_cam": 2})
    x = np.stack([np.asarray(Image.open(s.path), np.float32).ravel() / 255 for s in d.train])
    pid = np.array([s.pid for s in d.train])
    cam = np.array([s.camid for s in d.train])
    dist = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    nn = dist.argmin(1)
    assert (cam[nn] == cam).mean() > 0.9  # nearest raw-pixel neighbour: same camera
    # after removing each camera's mean image, same-identity pairs across cameras are closer than others
    xc = x.copy()
    for c in np.unique(cam):
        xc[cam == c] -= xc[cam == c].mean(0)
    dc = ((xc[:, None] - xc[None]) ** 2).sum(-1)
    cross = cam[:, None] != cam[None]
    same = (pid[:, None] == pid[None]) & cross
    diff = (pid[:, None] != pid[None]) & cross
    assert dc[same].mean() < 0.8 * dc[diff].mean()
