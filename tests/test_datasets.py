"""Dataset families on tiny fixture trees written in each data set's real layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from unreid.data.datasets import DATASETS, build_dataset


def _img(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 4, 3), 100, np.uint8)).save(path)


def _market(root, pattern):
    for sub, names in {
        "bounding_box_train": [(1, 1), (1, 2), (5, 1), (0, 1), (-1, 2)],
        "query": [(7, 1)],
        "bounding_box_test": [(7, 2), (0, 3), (-1, 1)],
    }.items():
        for k, (pid, cam) in enumerate(names):
            _img(root / sub / pattern.format(pid=pid, cam=cam, k=k))


def test_market1501_rules_and_parent_root(tmp_path):
    root = tmp_path / "Market-1501-v15.09.15"
    _market(root, "{pid:04d}_c{cam}s1_{k:06d}_00.jpg")
    for r in (root, tmp_path):  # the folder itself or its parent
        d = build_dataset("market1501", str(r))
        assert [(s.pid, s.camid) for s in d.train] == [(0, 0), (0, 1), (1, 0)]  # relabelled, junk & 0 dropped
        assert [(s.pid, s.camid) for s in d.query] == [(7, 0)]
        assert sorted((s.pid, s.camid) for s in d.gallery) == [(0, 2), (7, 1)]  # distractor kept, junk dropped


def test_dukemtmc_names(tmp_path):
    _market(tmp_path, "{pid:04d}_c{cam}_f{k:07d}.jpg")
    d = build_dataset("dukemtmc", str(tmp_path))
    assert len(d.train) == 3 and d.gallery[0].camid in (1, 2)


def test_missing_folder_names_it_and_the_layout(tmp_path):
    (tmp_path / "bounding_box_train").mkdir()
    with pytest.raises(FileNotFoundError, match=r"query.*bounding_box_test|bounding_box_test") as e:
        build_dataset("market1501", str(tmp_path))
    assert "Expected layout" in str(e.value)
    with pytest.raises(KeyError, match="known"):
        build_dataset("nope", str(tmp_path))


def test_msmt17_official_lists(tmp_path):
    r = tmp_path / "MSMT17_V1"
    lines = {"list_train.txt": [("train", "0000/0000_000_01_0303morning_0001_0.jpg", 0)],
             "list_val.txt": [("train", "0001/0001_000_05_0303morning_0002_0.jpg", 1)],
             "list_query.txt": [("test", "0000/0000_000_03_0303noon_0001_0.jpg", 0)],
             "list_gallery.txt": [("test", "0000/0000_001_12_0303noon_0002_0.jpg", 0)]}
    for name, rows in lines.items():
        for d, rel, _ in rows:
            _img(r / d / rel)
        (r / name).write_text("".join(f"{rel} {pid}\n" for _, rel, pid in rows))
    d = build_dataset("msmt17", str(tmp_path))
    assert [(s.pid, s.camid) for s in d.train] == [(0, 0), (1, 4)]
    assert d.query[0].camid == 2 and d.gallery[0].camid == 11 and d.info["version"] == "v1"


def test_cuhk03_official_mat(tmp_path):
    h5py = pytest.importorskip("h5py")
    from scipy.io import savemat

    r = tmp_path / "cuhk03_release"
    r.mkdir()
    with h5py.File(r / "cuhk-03.mat", "w") as f:
        refs = []
        for pair in range(1):
            g = []
            for pid in range(3):
                row = []
                for k in range(10):
                    data = np.full((3, 4, 8), pid * 10 + k, np.uint8) if k in (0, 5) else np.zeros((2,), np.uint8)
                    row.append(f.create_dataset(f"img_{pair}_{pid}_{k}", data=data).ref)
                g.append(row)
            refs.append(f.create_dataset(f"camp{pair}", data=np.array(g, dtype=h5py.ref_dtype)).ref)
        f.create_dataset("detected", data=np.array([refs], dtype=h5py.ref_dtype))
    files = [f"1_{p:03d}_{v}_{k:02d}.png" for p in (1, 2, 3) for v, k in ((1, 1), (2, 6))]
    savemat(r / "cuhk03_new_protocol_config_detected.mat", {
        "filelist": np.array(files, dtype=object).reshape(-1, 1), "labels": np.array([1, 1, 2, 2, 3, 3]).reshape(-1, 1),
        "train_idx": np.array([1, 2, 3, 4]).reshape(-1, 1), "query_idx": np.array([5]).reshape(-1, 1),
        "gallery_idx": np.array([6]).reshape(-1, 1)})
    d = build_dataset("cuhk03", str(tmp_path), variant="detected")
    assert [(s.pid, s.camid) for s in d.train] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert (d.query[0].pid, d.query[0].camid, d.gallery[0].camid) == (3, 0, 1)
    img = np.asarray(Image.open(d.train[1].path))
    assert img.shape == (8, 4, 3) and (img == 5).all()  # pid 1 view 2 image 6 -> value 0*10+5


def test_veri_regdb_folder(tmp_path):
    for sub, names in {"image_train": ["0001_c001_00000001_0.jpg", "0001_c002_00000002_0.jpg"],
                       "image_query": ["0005_c001_00000003_0.jpg"], "image_test": ["0005_c002_00000004_0.jpg"]}.items():
        for n in names:
            _img(tmp_path / "VeRi" / sub / n)
    d = build_dataset("veri776", str(tmp_path))
    assert [(s.pid, s.camid) for s in d.train] == [(0, 0), (0, 1)]
    rg = tmp_path / "RegDB"
    for m, mod in (("visible", "Visible"), ("thermal", "Thermal")):
        for split, pids in (("train", [3, 4]), ("test", [9])):
            rows = []
            for p in pids:
                rel = f"{mod}/{p}/a.jpg"
                _img(rg / rel)
                rows.append(f"{rel} {p}\n")
            (rg / "idx").mkdir(exist_ok=True)
            (rg / "idx" / f"{split}_{m}_2.txt").write_text("".join(rows))
    d = build_dataset("regdb", str(tmp_path), trial=2, mode="thermal_to_visible")
    assert {(s.pid, s.modality, s.camid) for s in d.train} == {(0, 0, 0), (1, 0, 0), (0, 1, 1), (1, 1, 1)}
    assert d.query[0].modality == 1 and d.gallery[0].modality == 0
    with pytest.raises(FileNotFoundError, match="train_visible_1"):
        build_dataset("regdb", str(tmp_path), trial=1)
    d = build_dataset("folder", str(tmp_path / "VeRi"), camera_pattern=r"_c(\d+)")
    assert len(d.train) == 4 and {s.pid for s in d.train} == {-1} and {s.camid for s in d.train} == {0, 1}
    assert set(DATASETS) >= {"market1501", "dukemtmc", "msmt17", "cuhk03", "veri776", "regdb", "folder", "synthetic"}
