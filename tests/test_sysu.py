"""SYSU-MM01 loader (layout, AGW-seeded and official-permutation galleries, multi-shot) and the VI-ReID
protocols on hand-computed cases (camera-3 / camera-2 exclusion, de-duplicated CMC, trial averaging, RegDB's
swapped direction)."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from unreid.data.datasets import build_dataset
from unreid.data.datasets.base import Sample, Trial
from unreid.evaluation.protocols import regdb as regdb_protocol
from unreid.evaluation.protocols import sysu as sysu_protocol
from unreid.evaluation.trials import evaluate_trials, union_samples

TRAIN_IDS, VAL_IDS, TEST_IDS = [1, 4], [2], [7, 3]  # test ids deliberately unsorted in the file
#: (camera, pid) -> number of images; (cam2, 3) and (cam5, 7) have none (folder missing / empty)
COUNTS = {(c, p): 2 + (c + p) % 4 for c in range(1, 7) for p in (1, 2, 3, 4, 7)}
COUNTS[(2, 3)] = 0
COUNTS[(5, 7)] = 0


def _tree(root: Path, counts: dict = COUNTS, empty_folder: tuple[int, int] = (5, 7)) -> Path:
    for (c, p), n in counts.items():
        d = root / f"cam{c}" / f"{p:04d}"
        if n or (c, p) == empty_folder:
            d.mkdir(parents=True, exist_ok=True)
        for k in range(1, n + 1):
            (d / f"{k:04d}.jpg").write_bytes(b"")
    (root / "exp").mkdir(parents=True, exist_ok=True)
    for name, ids in (("train", TRAIN_IDS), ("val", VAL_IDS), ("test", TEST_IDS)):
        (root / "exp" / f"{name}_id.txt").write_text(",".join(str(i) for i in ids) + "\n")
    return root


def _agw_gallery(data_path: str, trial: int, cams: list[str], shots: int = 1) -> list[str]:
    """An independent re-statement of AGW's ``process_gallery_sysu`` (global ``random``, string paths)."""
    random.seed(trial)
    ids = [format(x, "04d") for x in TEST_IDS]
    out = []
    for pid in sorted(ids):
        for cam in cams:
            img_dir = os.path.join(data_path, cam, pid)
            if os.path.isdir(img_dir):
                files = sorted([img_dir + "/" + i for i in os.listdir(img_dir)])
                if not files:
                    continue
                if shots == 1:
                    out.append(random.choice(files))
                else:
                    out.extend(random.sample(files, min(shots, len(files))))
    return out


def test_layout_train_query_and_camera_codes(tmp_path):
    root = _tree(tmp_path / "SYSU-MM01")
    d = build_dataset("sysu_mm01", str(tmp_path))  # the parent folder is accepted
    # training: ids 1, 2, 4 (train + val) relabelled 0, 1, 2; every camera
    assert sorted({s.pid for s in d.train}) == [0, 1, 2]
    assert len(d.train) == sum(COUNTS[(c, p)] for c in range(1, 7) for p in (1, 2, 4))
    first = d.train[0]
    assert first.path == str(root / "cam1/0001/0001.jpg") and (first.pid, first.camid, first.modality) == (0, 0, 0)
    # camera c -> camid c - 1; modality 1 exactly for cameras 3 and 6
    for s in d.train:
        cam = int(Path(s.path).parts[-3][3:])
        assert s.camid == cam - 1 and s.modality == (1 if cam in (3, 6) else 0)
    # queries: all infrared images of the test ids, ids ascending, camera 3 then 6, files sorted
    expected = [str(root / f"cam{c}/{p:04d}/{k:04d}.jpg") for p in (3, 7) for c in (3, 6)
                for k in range(1, COUNTS[(c, p)] + 1)]
    assert [s.path for s in d.query] == expected
    assert {(s.camid, s.modality) for s in d.query} == {(2, 1), (5, 1)}
    assert {s.pid for s in d.query} == {3, 7}
    assert d.info["protocol"] == "sysu"


@pytest.mark.parametrize("search,cams", [("all", ["cam1", "cam2", "cam4", "cam5"]), ("indoor", ["cam1", "cam2"])])
def test_galleries_equal_agw_draws_for_every_trial(tmp_path, search, cams):
    root = _tree(tmp_path / "SYSU-MM01")
    d = build_dataset("sysu_mm01", str(root), search=search)
    groups = d.groups()
    assert list(groups) == [f"{search}_search"] and len(groups[f"{search}_search"]) == 10
    galleries = []
    for t, trial in enumerate(groups[f"{search}_search"]):
        assert trial.index == t and trial.query == d.query
        got = [s.path for s in trial.gallery]
        assert got == _agw_gallery(str(root), t, cams), f"trial {t}"
        galleries.append(tuple(got))
        assert all(s.modality == 0 and s.camid in {int(c[3:]) - 1 for c in cams} for s in trial.gallery)
    assert len(set(galleries)) > 1, "the trials must differ"
    # one image per (id, camera) that has images: (cam2, 3) and (cam5, 7) have none
    n_pairs = sum(1 for p in (3, 7) for c in cams if COUNTS[(int(c[3:]), p)])
    assert len(galleries[0]) == n_pairs
    assert (d.query, d.gallery) == (groups[f"{search}_search"][0].query, groups[f"{search}_search"][0].gallery)


def test_both_search_modes_and_multi_shot(tmp_path):
    counts = dict(COUNTS) | {(1, 3): 13, (4, 7): 12}
    root = _tree(tmp_path / "sysu", counts)
    d = build_dataset("sysu_mm01", str(root), search="indoor,all", shots=10, trials=3)
    assert list(d.groups()) == ["indoor_search", "all_search"]
    assert [len(v) for v in d.groups().values()] == [3, 3]
    for t, trial in enumerate(d.groups()["all_search"]):
        got = [s.path for s in trial.gallery]
        assert got == _agw_gallery(str(root), t, ["cam1", "cam2", "cam4", "cam5"], shots=10)
        per_folder: dict[str, int] = {}
        for p in got:
            per_folder[os.path.dirname(p)] = per_folder.get(os.path.dirname(p), 0) + 1
        assert per_folder[str(root / "cam1/0003")] == 10 and per_folder[str(root / "cam4/0007")] == 10
        assert per_folder[str(root / "cam1/0007")] == counts[(1, 7)]  # fewer than 10: all of them
        assert len(set(got)) == len(got)
    assert d.gallery == d.groups()["indoor_search"][0].gallery


def _perm_mat(path: Path, rows: dict[tuple[int, int], list[list[int]]], n_ids: int = 7) -> None:
    """A rand_perm_cam.mat in the assumed official structure: 6 x 1 cell of (n_ids x 1) cells of
    (trials x images) double matrices (empty where a camera has no image of the id)."""
    from scipy.io import savemat

    cams = np.empty((6, 1), dtype=object)
    for c in range(1, 7):
        cells = np.empty((n_ids, 1), dtype=object)
        for p in range(1, n_ids + 1):
            cells[p - 1, 0] = np.array(rows.get((c, p), np.zeros((0, 0))), dtype=np.float64)
        cams[c - 1, 0] = cells
    savemat(str(path), {"rand_perm_cam": cams})


def test_official_permutation_file(tmp_path):
    counts = dict(COUNTS) | {(1, 3): 4}
    root = _tree(tmp_path / "SYSU-MM01", counts)
    rows = {}
    for c in (1, 2, 4, 5):
        for p in (3, 7):
            n = counts[(c, p)]
            if n:  # trial 0: the last image first; trial 1: the first image first
                rows[(c, p)] = [list(range(n, 0, -1)), list(range(1, n + 1))]
    rows[(1, 3)] = [[2, 1, 3, 4], [3, 4, 1, 2]]
    _perm_mat(tmp_path / "rand_perm_cam.mat", rows)
    d = build_dataset("sysu_mm01", str(root), perm_file=str(tmp_path / "rand_perm_cam.mat"), trials=2)
    g0, g1 = (t.gallery for t in d.groups()["all_search"])
    rel = [os.path.relpath(s.path, root) for s in g0]
    # id 3: cam1 row 0 starts with image 2; cam2 has none; cam4 / cam5 the last image
    assert rel[:3] == ["cam1/0003/0002.jpg", f"cam4/0003/{counts[(4, 3)]:04d}.jpg",
                      f"cam5/0003/{counts[(5, 3)]:04d}.jpg"]
    assert [os.path.relpath(s.path, root) for s in g1][0] == "cam1/0003/0003.jpg"
    assert [os.path.relpath(s.path, root) for s in g1][1] == "cam4/0003/0001.jpg"
    assert len(g0) == len(g1) == 3 + 3  # id 7: cam1, cam2, cam4 (cam5 empty)
    assert d.info["gallery_draw"] == "rand_perm_cam"
    with pytest.raises(ValueError, match="trials >= 3"):
        build_dataset("sysu_mm01", str(root), perm_file=str(tmp_path / "rand_perm_cam.mat"), trials=3)
    rows[(1, 3)] = [[9, 1, 2, 3], [1, 2, 3, 4]]  # image 9 does not exist
    _perm_mat(tmp_path / "bad.mat", rows)
    with pytest.raises(ValueError, match="0009.jpg"):
        build_dataset("sysu_mm01", str(root), perm_file=str(tmp_path / "bad.mat"), trials=1)
    with pytest.raises(FileNotFoundError, match="perm_file"):
        build_dataset("sysu_mm01", str(root), perm_file=str(tmp_path / "missing.mat"))


def test_option_and_layout_errors(tmp_path):
    root = _tree(tmp_path / "SYSU-MM01")
    for kw, msg in (({"shots": 5}, "shots"), ({"search": "outdoor"}, "search"), ({"trials": 0}, "trials")):
        with pytest.raises(ValueError, match=msg):
            build_dataset("sysu_mm01", str(root), **kw)
    (root / "exp" / "val_id.txt").unlink()
    with pytest.raises(FileNotFoundError) as e:
        build_dataset("sysu_mm01", str(root))
    assert "exp/val_id.txt" in str(e.value) and "\n" not in str(e.value)
    (root / "exp" / "val_id.txt").write_text("2,x\n")
    with pytest.raises(ValueError, match="'x'"):
        build_dataset("sysu_mm01", str(root))


# ------------------------------------------------------------------------------------- protocols by hand
def _unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def _sysu_trials() -> tuple[list[Trial], dict[str, list[float]]]:
    """Queries A (pid 5, camera 3 = camid 2) and B (pid 5, camera 6 = camid 5), both at 0 degrees.
    Gallery: g4 (pid 5, camera 2 = camid 1) at 1 degree, five pid-6 images at 2..6 degrees, g6 (pid 5,
    camid 0) at 7 degrees. Trial 1 has every image, trial 2 lacks g4."""
    feats = {"qa": _unit(0), "qb": _unit(0), "g4": _unit(1), "g6": _unit(7)}
    qa, qb = Sample("qa", 5, 2, 1), Sample("qb", 5, 5, 1)
    wrong = []
    for k in range(5):
        feats[f"w{k}"] = _unit(2 + k)
        wrong.append(Sample(f"w{k}", 6, 0, 0))
    g4, g6 = Sample("g4", 5, 1, 0), Sample("g6", 5, 0, 0)
    return [Trial("all_search", 0, [qa, qb], [g4, *wrong, g6]),
            Trial("all_search", 1, [qa, qb], [*wrong, g6])], feats


def test_sysu_protocol_hand_computed_trials():
    trials, feats = _sysu_trials()
    # Trial 1. Query A (camera 3) ignores g4 (camera 2): ranked ids 6,6,6,6,6,5 -> de-duplicated 6,5: the
    # match is at CMC rank 2 (rank1 0, rank5 100; without de-duplication rank 6 -> rank5 0); AP = 1/6,
    # INP = 1/6. Query B (camera 6) keeps g4: ids 5,6,6,6,6,6,5 -> rank1 hit; AP = (1/1 + 2/7)/2 = 9/14,
    # INP = 2/7. Means: rank1 50, rank5 100, mAP 17/42, mINP 19/84.
    # Trial 2 (no g4): both queries as query A: rank1 0, rank5 100, mAP = mINP = 1/6.
    samples, rows = union_samples(trials)
    x = torch.tensor([feats[s.path] for s in samples], dtype=torch.float32)
    res = evaluate_trials(x, rows, trials, sysu_protocol)
    one = sysu_protocol(x[rows[0][0]], x[rows[0][1]], trials[0].query, trials[0].gallery)
    assert one["rank1"] == pytest.approx(50.0) and one["rank5"] == pytest.approx(100.0)
    assert one["mAP"] == pytest.approx(100 * 17 / 42) and one["mINP"] == pytest.approx(100 * 19 / 84)
    assert res["all_search/trials"] == 2
    assert res["all_search/rank1"] == pytest.approx(25.0) and res["all_search/rank1_std"] == pytest.approx(25.0)
    assert res["all_search/rank5"] == pytest.approx(100.0) and res["all_search/rank5_std"] == pytest.approx(0.0)
    # mAP: mean of 17/42 and 7/42 = 2/7; population std = (17/42 - 7/42) / 2 = 5/42
    assert res["all_search/mAP"] == pytest.approx(100 * 2 / 7)
    assert res["all_search/mAP_std"] == pytest.approx(100 * 5 / 42)
    assert res["mAP"] == res["all_search/mAP"]


def test_regdb_swapped_direction_hand_computed(tmp_path):
    rg = tmp_path / "RegDB"
    (rg / "idx").mkdir(parents=True)
    for m, folder in (("visible", "Visible"), ("thermal", "Thermal")):
        (rg / "idx" / f"train_{m}_1.txt").write_text(f"{folder}/1/a.bmp 1\n")
        (rg / "idx" / f"test_{m}_1.txt").write_text(f"{folder}/30/a.bmp 30\n{folder}/31/a.bmp 31\n")
    d = build_dataset("regdb", str(rg))
    # visible 30 at 0 deg, visible 31 at 90 deg, thermal 30 at 60 deg, thermal 31 at 80 deg.
    # visible -> thermal: v30 nearest t30 (60 < 80), v31 nearest t31: rank1 100, mAP 100.
    # thermal -> visible: t30 is nearer v31 (30 deg) than v30 (60 deg): rank 2, AP 1/2; t31 nearest v31:
    # rank1 50, mAP 75.
    angle = {"Visible/30": 0, "Visible/31": 90, "Thermal/30": 60, "Thermal/31": 80}
    samples, rows = union_samples(d.trials)
    x = torch.tensor([_unit(angle["/".join(Path(s.path).parts[-3:-1])]) for s in samples], dtype=torch.float32)
    res = evaluate_trials(x, rows, d.trials, regdb_protocol)
    assert res["visible_to_thermal/rank1"] == pytest.approx(100.0) and res["visible_to_thermal/mAP"] == pytest.approx(100.0)
    assert res["thermal_to_visible/rank1"] == pytest.approx(50.0) and res["thermal_to_visible/mAP"] == pytest.approx(75.0)
    assert res["mAP"] == pytest.approx(100.0)


def test_unreid_eval_runs_every_trial_of_both_search_modes(tmp_path, capsys):
    """`unreid eval` on a SYSU-MM01 fixture (real images) with an untrained two-stream resnet18: one call,
    the headline line and a mean ± std row per search mode, 10 trials each."""
    from PIL import Image

    from tests.conftest import eval_cli, tiny_overrides

    root = _tree(tmp_path / "SYSU-MM01")
    for k, p in enumerate(sorted(root.glob("cam*/*/*.jpg"))):
        pid = int(p.parent.name)
        Image.fromarray(np.full((64, 32, 3), (pid * 53 + k * 7) % 255, np.uint8)).save(p)
    over = tiny_overrides(tmp_path, tmp_path / "run", **{"data.name": "sysu_mm01", "data.root": str(root),
                                                         "eval.protocol": "sysu", "model.arch": "two_stream",
                                                         "model.gem_trainable": "false",
                                                         "data.options.search": "all,indoor"})
    out, res = eval_cli(tmp_path, over, capsys)
    assert out[0].startswith("sysu_mm01 (sysu protocol): mAP ")
    assert [line.split("|")[0].strip() for line in out[-2:]] == ["all_search", "indoor_search"]
    assert all(line.split("|")[1].strip() == "10" and "±" in line for line in out[-2:])
    assert res["mAP"] == res["all_search/mAP"] and res["indoor_search/trials"] == 10
