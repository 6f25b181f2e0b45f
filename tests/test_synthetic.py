"""The synthetic generator: deterministic, Market layout, counts, identities learnable, cameras dominant."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from unreid.data.datasets import build_dataset
from unreid.data.synthetic import COMPLETE_MARKER, generate

OPTS = dict(num_ids=12, num_test_ids=6, num_cameras=3, images_per_id_cam=3, height=64, width=32, seed=3)


def _digest(root):
    h = hashlib.sha1()
    for p in sorted(root.rglob("*.jpg")):
        h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_deterministic_bytes_and_never_overwrites(tmp_path):
    a, b = generate(tmp_path / "a", **OPTS), generate(tmp_path / "b", **OPTS)
    assert _digest(a) == _digest(b) and (a / COMPLETE_MARKER).is_file()
    assert _digest(generate(tmp_path / "c", **{**OPTS, "seed": 4})) != _digest(a)
    with pytest.raises(FileExistsError):
        generate(a, **OPTS)
    with pytest.raises(ValueError, match="num_cameras >= 2"):
        generate(tmp_path / "d", **{**OPTS, "num_cameras": 1})
    assert not (tmp_path / "d").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]


def test_market_layout_counts_and_protocol(tmp_path):
    root = generate(tmp_path / "syn", **OPTS)
    jpg = next((root / "query").glob("*.jpg"))
    assert Image.open(jpg).size == (32, 64) and Image.open(jpg).format == "JPEG"
    d = build_dataset("market1501", str(root))  # the Market loader reads it as is
    file_pids = [int(p.name[:4]) for p in (root / "bounding_box_train").glob("*.jpg")]
    assert sorted(set(file_pids)) == list(range(1, 13))  # training pids 1..12, relabelled 0..11 by the loader
    assert sorted({s.pid for s in d.train}) == list(range(12))
    test_pids = {s.pid for s in d.query} | {s.pid for s in d.gallery}
    assert test_pids == set(range(13, 19))  # test ids follow the training ids: disjoint
    for samples in (d.train, d.query + d.gallery):
        per_id_cam = Counter((s.pid, s.camid) for s in samples)
        assert set(per_id_cam.values()) == {3}  # images_per_id_cam in every camera that sees the id
        cams_per_id = Counter(pid for pid, _ in per_id_cam)
        assert min(cams_per_id.values()) >= 2 and all(c < 3 for _, c in per_id_cam)
    # query = the first image of each (test id, camera), gallery = the other two
    assert Counter((s.pid, s.camid) for s in d.query) == Counter({k: 1 for k in Counter((s.pid, s.camid)
                                                                                      for s in d.gallery)})
    assert len(d.gallery) == 2 * len(d.query)
    for q in d.query:  # every query has a cross-camera match (Market protocol)
        assert any(g.pid == q.pid and g.camid != q.camid for g in d.gallery)


def test_registry_generates_once_and_reuses(tmp_path):
    d = build_dataset("synthetic", str(tmp_path), **OPTS)
    folders = list(tmp_path.iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("synthetic-") and d.info["options"]["seed"] == 3
    stamp = folders[0].joinpath(COMPLETE_MARKER).stat().st_mtime_ns
    again = build_dataset("synthetic", str(tmp_path), **OPTS)
    assert again.train == d.train and folders[0].joinpath(COMPLETE_MARKER).stat().st_mtime_ns == stamp
    # defaults are filled in before hashing: the same folder whether a default value is given or omitted
    no_seed = {k: v for k, v in OPTS.items() if k != "seed"}
    d0 = build_dataset("synthetic", str(tmp_path), **no_seed)
    assert build_dataset("synthetic", str(tmp_path), **no_seed, seed=0).info["root"] == d0.info["root"]
    assert d0.info["root"] != d.info["root"] and len(list(tmp_path.iterdir())) == 2
    # a folder without the marker (interrupted / foreign) is never reused nor overwritten
    folders[0].joinpath(COMPLETE_MARKER).unlink()
    with pytest.raises(FileExistsError, match="marker"):
        build_dataset("synthetic", str(tmp_path), **OPTS)
    with pytest.raises(ValueError, match="unknown data.options"):
        build_dataset("synthetic", str(tmp_path), num_people=3)


def _colour_histograms(paths, bins=4):
    """Joint RGB histogram (bins^3, normalised) of each image."""
    out = []
    for p in paths:
        q = (np.asarray(Image.open(p), np.int64) * bins) // 256
        code = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
        out.append(np.bincount(code.ravel(), minlength=bins**3) / code.size)
    return np.stack(out)


def test_cameras_dominate_raw_pixels_but_identity_survives(tmp_path):
    d = build_dataset("synthetic", str(tmp_path), **{**OPTS, "num_ids": 20, "images_per_id_cam": 2})
    pid = np.array([s.pid for s in d.train])
    cam = np.array([s.camid for s in d.train])
    cross = cam[:, None] != cam[None]
    same_id = (pid[:, None] == pid[None]) & cross
    other_id = (pid[:, None] != pid[None]) & cross

    # raw pixels: the nearest neighbour of an image is (almost always) from its own camera
    x = np.stack([np.asarray(Image.open(s.path), np.float32).ravel() / 255 for s in d.train])
    dist = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    assert (cam[dist.argmin(1)] == cam).mean() > 0.9

    # per-identity mean colour histogram in each camera, minus that camera's mean histogram: the same
    # identity in two cameras is closer than two identities across cameras
    h = _colour_histograms([s.path for s in d.train])
    keys = sorted({(p, c) for p, c in zip(pid, cam)})
    m = np.stack([h[(pid == p) & (cam == c)].mean(0) for p, c in keys])
    kp, kc = np.array([k[0] for k in keys]), np.array([k[1] for k in keys])
    for c in np.unique(kc):
        m[kc == c] -= m[kc == c].mean(0)
    dm = np.abs(m[:, None] - m[None]).sum(-1)  # L1 between centred histograms
    xcam = kc[:, None] != kc[None]
    within = dm[(kp[:, None] == kp[None]) & xcam].mean()
    across = dm[(kp[:, None] != kp[None]) & xcam].mean()
    assert within < 0.9 * across, (within, across)
    # and the nearest (identity, camera) histogram in another camera is the same identity far above chance
    nearest = np.where(xcam, dm, np.inf).argmin(1)
    chance = 1 / (len(set(kp)) - 1)
    assert (kp[nearest] == kp).mean() > 5 * chance

    # the same holds for raw pixels after removing each camera's mean image
    xc = x.copy()
    for c in np.unique(cam):
        xc[cam == c] -= xc[cam == c].mean(0)
    dc = ((xc[:, None] - xc[None]) ** 2).sum(-1)
    assert dc[same_id].mean() < 0.8 * dc[other_id].mean()
