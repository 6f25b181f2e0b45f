"""Dataset families on tiny fixture trees written in each data set's real layout (never the real data)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unreid.data.datasets import DATASETS, build_dataset


def _img(path: Path, value: int = 100, ext_format: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 4, 3), value, np.uint8)).save(path, format=ext_format)


def _pc(samples):
    return [(s.pid, s.camid) for s in samples]


# ----------------------------------------------------------------------------------------- Market / Duke
MARKET_TREE = {
    # 3 training ids x 2 cameras, plus a distractor (0) and a junk box (-1) that training must drop
    "bounding_box_train": [(2, 1), (2, 3), (7, 1), (7, 2), (11, 2), (11, 6), (0, 1), (-1, 2)],
    "query": [(20, 1), (21, 2), (0, 4)],
    "bounding_box_test": [(20, 2), (21, 5), (0, 3), (-1, 1)],
}


def _market(root: Path, pattern: str) -> None:
    for sub, names in MARKET_TREE.items():
        for k, (pid, cam) in enumerate(names):
            _img(root / sub / pattern.format(pid=pid, cam=cam, k=k))


def test_market1501_rules_relabel_junk_distractors_and_parent_root(tmp_path):
    root = tmp_path / "Market-1501-v15.09.15"
    _market(root, "{pid:04d}_c{cam}s1_{k:06d}_00.jpg")
    _img(root / "bounding_box_train" / "Thumbs.jpg")  # not named like PPPP_cC: ignored, counted
    for r in (root, tmp_path):  # the folder itself, or its parent holding the usual folder name
        d = build_dataset("market1501", str(r))
        # files sorted by name: -1 and 0 dropped, ids 2/7/11 -> 0/1/2, cameras c1 -> 0
        assert _pc(d.train) == [(0, 0), (0, 2), (1, 0), (1, 1), (2, 1), (2, 5)]
        assert _pc(d.query) == [(0, 3), (20, 0), (21, 1)]  # file ids kept, distractor kept in query
        assert _pc(d.gallery) == [(0, 2), (20, 1), (21, 4)]  # junk dropped, distractor kept
        assert d.info["skipped_files"] == 1 and d.info["protocol"] == "market"
        assert all(Path(s.path).is_file() for s in d.train + d.query + d.gallery)
        assert {s.modality for s in d.train} == {0}


def test_dukemtmc_names(tmp_path):
    _market(tmp_path / "DukeMTMC-reID", "{pid:04d}_c{cam}_f{k:07d}.jpg")
    d = build_dataset("dukemtmc", str(tmp_path))
    assert _pc(d.train) == [(0, 0), (0, 2), (1, 0), (1, 1), (2, 1), (2, 5)]
    assert _pc(d.gallery) == [(0, 2), (20, 1), (21, 4)]


@pytest.mark.parametrize("name,expect", [
    ("market1501", "bounding_box_test"), ("dukemtmc", "bounding_box_test"), ("veri776", "image_query"),
    ("regdb", "idx/train_visible_1.txt"), ("msmt17", "list_train.txt"), ("cuhk03", "cuhk-03.mat"),
])
def test_missing_parts_are_named_with_the_layout(tmp_path, name, expect):
    if name in ("market1501", "dukemtmc"):
        (tmp_path / "bounding_box_train").mkdir()
        (tmp_path / "query").mkdir()
    if name == "veri776":
        (tmp_path / "image_train").mkdir()
    with pytest.raises(FileNotFoundError) as e:
        build_dataset(name, str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg, "one line"
    assert expect in msg and "Expected layout" in msg
    assert " ".join(DATASETS[name].layout.splitlines()[1].split()) in msg


def test_registry_errors_and_descriptions(tmp_path):
    with pytest.raises(KeyError, match="known: market1501, dukemtmc"):
        build_dataset("market", str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown data.options \['variant'\].*accepted: none"):
        build_dataset("market1501", str(tmp_path), variant="labeled")
    with pytest.raises(ValueError, match=r"accepted: \['trial', 'mode'\]"):
        build_dataset("regdb", str(tmp_path), trail=2)
    assert set(DATASETS) == {"market1501", "dukemtmc", "msmt17", "cuhk03", "veri776", "vehicleid", "veriwild",
                             "regdb", "sysu_mm01", "folder", "synthetic"}
    for name, info in DATASETS.items():
        assert info.name == name and info.description and len(info.layout.strip().splitlines()) >= 2


# ------------------------------------------------------------------------------------------------ MSMT17
def _msmt(r: Path, train_dir: str, test_dir: str) -> None:
    lists = {
        "list_train.txt": (train_dir, [("0000/0000_000_01_0303morning_0001_0.jpg", 0),
                                       ("0000/0000_001_07_0303morning_0002_0.jpg", 0),
                                       ("0002/0002_000_15_0303noon_0003_0.jpg", 2)]),
        "list_val.txt": (train_dir, [("0001/0001_000_05_0303morning_0004_0.jpg", 1)]),
        "list_query.txt": (test_dir, [("0000/0000_000_03_0303noon_0001_0.jpg", 0)]),
        "list_gallery.txt": (test_dir, [("0000/0000_001_12_0303noon_0002_0.jpg", 0),
                                        ("0001/0001_000_02_0303noon_0003_0.jpg", 1)]),
    }
    for name, (d, rows) in lists.items():
        for rel, _ in rows:
            _img(r / d / rel)
        (r / name).write_text("".join(f"{rel} {pid}\n" for rel, pid in rows) + "\n")


def test_msmt17_v1_and_v2_official_lists(tmp_path):
    _msmt(tmp_path / "MSMT17_V1", "train", "test")
    d = build_dataset("msmt17", str(tmp_path))  # parent root, version detected
    # train = list_train + list_val, relabelled over {0, 2, 1} -> sorted; camera = 3rd field - 1
    assert _pc(d.train) == [(0, 0), (0, 6), (2, 14), (1, 4)]
    assert _pc(d.query) == [(0, 2)] and _pc(d.gallery) == [(0, 11), (1, 1)]
    assert d.info["version"] == "v1"
    assert d.train[0].path.endswith("MSMT17_V1/train/0000/0000_000_01_0303morning_0001_0.jpg")

    _msmt(tmp_path / "MSMT17_V2", "mask_train_v2", "mask_test_v2")
    d2 = build_dataset("msmt17", str(tmp_path), version="v2")
    assert d2.info["version"] == "v2" and "mask_train_v2" in d2.train[0].path
    assert _pc(d2.train) == _pc(d.train)
    assert build_dataset("msmt17", str(tmp_path / "MSMT17_V2")).info["version"] == "v2"  # detected
    with pytest.raises(ValueError, match="v1 or v2|'v1' or 'v2'"):
        build_dataset("msmt17", str(tmp_path), version="v3")
    (tmp_path / "MSMT17_V2" / "list_val.txt").unlink()
    with pytest.raises(FileNotFoundError, match="list_val.txt"):
        build_dataset("msmt17", str(tmp_path), version="v2")


def test_msmt17_bad_list_line_and_market_style(tmp_path):
    r = tmp_path / "MSMT17_V1"
    _msmt(r, "train", "test")
    (r / "list_query.txt").write_text("0000/0000_000_03_x.jpg\n")
    with pytest.raises(ValueError, match=r"list_query.txt:1"):
        build_dataset("msmt17", str(r))
    conv = tmp_path / "conv"
    _market(conv, "{pid:04d}_c{cam}_{k:06d}.jpg")
    d = build_dataset("msmt17", str(conv))
    assert d.info["version"] == "market-style" and len(d.train) == 6


# ------------------------------------------------------------------------------------------------ CUHK03
def _write_cuhk03(base: Path) -> None:
    """cuhk-03.mat as MATLAB v7.3 stores it (HDF5, arrays transposed) + the new-protocol split files."""
    h5py = pytest.importorskip("h5py")
    from scipy.io import savemat

    rel = base / "cuhk03_release"
    rel.mkdir(parents=True)
    with h5py.File(rel / "cuhk-03.mat", "w") as f:
        for variant, offset in (("detected", 0), ("labeled", 100)):
            pair_refs = []
            for pair in range(2):
                cells = np.empty((10, 3), dtype=h5py.ref_dtype)  # MATLAB (3 ids x 10 images), transposed
                for pid in range(3):
                    for k in range(10):
                        if k in (0, 1, 5):  # images 1, 2 (view 1) and 6 (view 2); the rest are empty cells
                            h, w = 8 + pid, 4 + k  # MATLAB (H, W, 3) stored as (3, W, H)
                            data = np.full((3, w, h), offset + 10 * pid + k + pair, np.uint8)
                        else:
                            data = np.zeros(2, np.uint64)  # how MATLAB stores an empty cell
                        cells[k, pid] = f.create_dataset(f"#refs#/{variant}_{pair}_{pid}_{k}", data=data).ref
                pair_refs.append(f.create_dataset(f"#refs#/{variant}_pair{pair}", data=cells).ref)
            f.create_dataset(variant, data=np.array(pair_refs, dtype=h5py.ref_dtype).reshape(1, 2))
    files = [f"1_{p:03d}_{v}_{k:02d}.png" for p in (1, 2, 3) for v, k in ((1, 1), (1, 2), (2, 6))]
    for variant in ("detected", "labeled"):
        savemat(base / f"cuhk03_new_protocol_config_{variant}.mat", {
            "filelist": np.array(files, dtype=object).reshape(-1, 1),
            "labels": np.array([5, 5, 5, 3, 3, 3, 9, 9, 9]).reshape(-1, 1),
            "camId": np.array([int(n.split("_")[2]) for n in files]).reshape(-1, 1),
            "train_idx": np.array([1, 2, 3, 4, 5, 6]).reshape(-1, 1),
            "query_idx": np.array([9]).reshape(-1, 1),
            "gallery_idx": np.array([7, 8]).reshape(-1, 1)})


def test_cuhk03_official_mat_new_protocol(tmp_path):
    base = tmp_path / "cuhk03"
    _write_cuhk03(base)
    d = build_dataset("cuhk03", str(tmp_path), variant="detected")  # parent root
    # labels 5,5,5,3,3,3 relabelled sorted (3 -> 0, 5 -> 1); camera = view field - 1
    assert _pc(d.train) == [(1, 0), (1, 0), (1, 1), (0, 0), (0, 0), (0, 1)]
    assert _pc(d.query) == [(9, 1)] and _pc(d.gallery) == [(9, 0), (9, 0)]
    img_dir = base / "images_detected"
    assert d.train[0].path == str(img_dir / "1_001_1_01.png")
    # every non-empty cell of both camera pairs extracted: 2 pairs x 3 ids x 3 images
    assert len(list(img_dir.glob("*.png"))) == 18 and (img_dir / "2_003_2_06.png").is_file()
    # pixel content and orientation: pid 2 (0-based 1), image 6 of pair 1 -> value 10 + 5, size (9, 9)
    img = np.asarray(Image.open(img_dir / "1_002_2_06.png"))
    assert img.shape == (9, 9, 3) and (img == 15).all()
    img = np.asarray(Image.open(img_dir / "2_003_1_02.png"))
    assert img.shape == (10, 5, 3) and (img == 22).all()

    # never overwritten, and no re-extraction when everything the split names is there
    target = img_dir / "1_001_1_01.png"
    Image.fromarray(np.full((8, 4, 3), 200, np.uint8)).save(target)
    os.utime(target, (1, 1))
    stamp = {p.name: p.stat().st_mtime_ns for p in img_dir.iterdir()}
    build_dataset("cuhk03", str(base), variant="detected")
    assert {p.name: p.stat().st_mtime_ns for p in img_dir.iterdir()} == stamp
    # a missing file is extracted again, the others are left alone
    (img_dir / "1_003_2_06.png").unlink()
    build_dataset("cuhk03", str(base), variant="detected")
    assert (img_dir / "1_003_2_06.png").is_file() and (np.asarray(Image.open(target)) == 200).all()

    lab = build_dataset("cuhk03", str(base), variant="labeled")
    assert (np.asarray(Image.open(lab.train[0].path)) == 100).all() and "images_labeled" in lab.train[0].path
    with pytest.raises(ValueError, match="detected' or 'labeled"):
        build_dataset("cuhk03", str(base), variant="both")


def test_cuhk03_needs_h5py_and_split_file(tmp_path, monkeypatch):
    base = tmp_path / "cuhk03"
    _write_cuhk03(base)
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(ImportError, match="pip install h5py"):
        build_dataset("cuhk03", str(base))
    (base / "cuhk03_new_protocol_config_detected.mat").unlink()
    with pytest.raises(FileNotFoundError, match="cuhk03_new_protocol_config_detected.mat"):
        build_dataset("cuhk03", str(base))


def test_cuhk03_market_layout(tmp_path):
    root = tmp_path / "cuhk03-detected"
    _market(root, "{pid:04d}_c{cam}s1_{k:06d}_00.jpg")
    for r in (root, tmp_path):
        d = build_dataset("cuhk03", str(r))
        assert _pc(d.train) == [(0, 0), (0, 2), (1, 0), (1, 1), (2, 1), (2, 5)]
        assert d.info["protocol"] == "market"


# ---------------------------------------------------------------------------------- VeRi / RegDB / folder
def test_veri776(tmp_path):
    tree = {"image_train": ["0003_c001_00000001_0.jpg", "0003_c014_00000002_0.jpg",
                            "0010_c002_00000003_0.jpg"],
            "image_query": ["0005_c001_00000004_0.jpg"], "image_test": ["0005_c020_00000005_0.jpg"]}
    for sub, names in tree.items():
        for n in names:
            _img(tmp_path / "VeRi" / sub / n)
    d = build_dataset("veri776", str(tmp_path))
    assert _pc(d.train) == [(0, 0), (0, 13), (1, 1)]
    assert _pc(d.query) == [(5, 0)] and _pc(d.gallery) == [(5, 19)]


def _regdb(rg: Path, trial: int) -> None:
    (rg / "idx").mkdir(parents=True, exist_ok=True)
    for m, folder in (("visible", "Visible"), ("thermal", "Thermal")):
        for split, pids in (("train", [4, 8, 8]), ("test", [30, 31])):
            rows = []
            for k, p in enumerate(pids):
                rel = f"{folder}/{p}/{m}_{k}.bmp"
                _img(rg / rel, ext_format="BMP")
                rows.append(f"{rel} {p}\n")
            (rg / "idx" / f"{split}_{m}_{trial}.txt").write_text("".join(rows))


def test_regdb_trials_and_modes(tmp_path):
    rg = tmp_path / "RegDB"
    _regdb(rg, 2)
    d = build_dataset("regdb", str(tmp_path), trial=2)
    # (pid relabelled, camid, modality): visible = camera 0 / modality 0, thermal = camera 1 / modality 1
    assert [(s.pid, s.camid, s.modality) for s in d.train] == [
        (0, 0, 0), (1, 0, 0), (1, 0, 0), (0, 1, 1), (1, 1, 1), (1, 1, 1)]
    assert [(s.pid, s.modality) for s in d.query] == [(30, 0), (31, 0)]
    assert [(s.pid, s.modality) for s in d.gallery] == [(30, 1), (31, 1)]
    assert d.train[3].path == str(rg / "Thermal/4/thermal_0.bmp") and d.info["protocol"] == "regdb"
    t2v = build_dataset("regdb", str(rg), trial=2, mode="thermal_to_visible")
    assert {s.modality for s in t2v.query} == {1} and {s.modality for s in t2v.gallery} == {0}
    with pytest.raises(FileNotFoundError, match="train_visible_1.txt"):
        build_dataset("regdb", str(rg), trial=1)
    with pytest.raises(ValueError, match="1..10"):
        build_dataset("regdb", str(rg), trial=11)
    with pytest.raises(ValueError, match="mode"):
        build_dataset("regdb", str(rg), trial=2, mode="visible")


def test_folder_recursive_unlabeled_with_camera_pattern(tmp_path):
    for rel in ("b/x_c10_1.jpg", "a/y_c2_1.png", "a/deep/z_c2_2.JPEG", "c/w_c10_3.bmp"):
        _img(tmp_path / "imgs" / rel, ext_format="BMP" if rel.endswith("bmp") else None)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    d = build_dataset("folder", str(tmp_path / "imgs"), camera_pattern=r"_c(\d+)_")
    names = [Path(s.path).name for s in d.train]
    assert names == ["z_c2_2.JPEG", "y_c2_1.png", "x_c10_1.jpg", "w_c10_3.bmp"]  # sorted by full path
    assert [s.camid for s in d.train] == [0, 0, 1, 1]  # camera 2 -> 0, camera 10 -> 1 (numeric order)
    assert {s.pid for s in d.train} == {-1} and d.query == [] and d.gallery == []
    assert {s.camid for s in build_dataset("folder", str(tmp_path / "imgs")).train} == {0}
    with pytest.raises(ValueError, match="does not match"):
        build_dataset("folder", str(tmp_path / "imgs"), camera_pattern=r"_cam(\d+)")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image"):
        build_dataset("folder", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="not a directory"):
        build_dataset("folder", str(tmp_path / "missing"))
