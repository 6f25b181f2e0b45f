"""VehicleID and VERI-Wild on fixture trees in their real layouts, the ``vehicleid`` protocol, multi-trial
evaluation (one extraction, mean / population std per group), RegDB's two directions and
``unreid datasets --check`` (never the real data)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from unreid.cli import main
from unreid.config import Config
from unreid.data.datasets import DATASETS, build_dataset, compare_published
from unreid.data.datasets.base import ReIDData, Sample, Trial
from unreid.evaluation.protocols import PROTOCOLS
from unreid.evaluation.trials import aggregate, format_groups, union_samples

# ----------------------------------------------------------------------------------------------- VehicleID
#: (image name, vehicle id) rows of each list; images are not opened by the loader, so none are written
VID_TRAIN = [("0001", 5), ("0002", 5), ("0003", 9), ("0004", 2), ("0005", 9)]
VID_TEST = {
    800: [("0100", 100), ("0101", 100), ("0102", 101), ("0103", 100), ("0104", 102), ("0105", 101)],
    1600: [("0200", 300), ("0201", 300), ("0202", 300), ("0203", 300), ("0204", 300), ("0205", 301),
           ("0206", 301), ("0207", 301), ("0208", 301), ("0209", 302)],
}


def _vehicleid(root: Path, sizes=(800, 1600)) -> Path:
    (root / "image").mkdir(parents=True)
    split = root / "train_test_split"
    split.mkdir()
    (split / "train_list.txt").write_text("".join(f"{n} {v}\n" for n, v in VID_TRAIN))
    for size in sizes:
        (split / f"test_list_{size}.txt").write_text("".join(f"{n} {v}\n" for n, v in VID_TEST[size]) + "\n")
    return root


def test_vehicleid_parse_relabel_and_trials(tmp_path):
    root = _vehicleid(tmp_path / "VehicleID_V1.0")
    d = build_dataset("vehicleid", str(tmp_path), test_sizes="800,1600", draws=3)  # parent root
    # ids 2 / 5 / 9 -> 0 / 1 / 2 in file order, image/<name>.jpg, no cameras (camid 0)
    assert [(Path(s.path).name, s.pid, s.camid) for s in d.train] == [
        ("0001.jpg", 1, 0), ("0002.jpg", 1, 0), ("0003.jpg", 2, 0), ("0004.jpg", 0, 0), ("0005.jpg", 2, 0)]
    assert d.train[0].path == str(root / "image" / "0001.jpg")
    assert [(t.group, t.index) for t in d.trials] == [("test_800", 0), ("test_800", 1), ("test_800", 2),
                                                      ("test_1600", 0), ("test_1600", 1), ("test_1600", 2)]
    assert d.query == d.trials[0].query and d.gallery == d.trials[0].gallery  # the default split
    assert d.info["protocol"] == "vehicleid" and d.info["draws"] == 3
    for t in d.trials:
        rows = VID_TEST[int(t.group.split("_")[1])]
        # exactly one gallery image per test id, queries = all the others (each image once)
        assert sorted(s.pid for s in t.gallery) == sorted({v for _, v in rows})
        assert Counter(Path(s.path).stem for s in t.query + t.gallery) == Counter(n for n, _ in rows)
        assert {s.camid for s in t.query + t.gallery} == {0}
    # 102 and 302 have one image: it is their gallery image, and they have no query
    assert 102 not in {s.pid for s in d.trials[0].query} and 302 not in {s.pid for s in d.trials[3].query}


def test_vehicleid_draws_follow_the_documented_seeds(tmp_path):
    _vehicleid(tmp_path)
    d = build_dataset("vehicleid", str(tmp_path), test_sizes=[1600], draws=10)
    again = build_dataset("vehicleid", str(tmp_path), test_sizes="1600", draws=10)
    assert [t.gallery for t in d.trials] == [t.gallery for t in again.trials]  # reproducible
    galleries = {tuple(s.path for s in t.gallery) for t in d.trials}
    assert len(galleries) > 3  # seeds differ: 5 x 4 x 1 possible galleries, 10 draws
    rows = VID_TEST[1600]
    for t in d.trials:  # the docstring's recipe, written out: seed = draw index, ids ascending, file order
        rng = np.random.default_rng(t.index)
        expect = []
        for pid in sorted({v for _, v in rows}):
            names = [n for n, v in rows if v == pid]
            expect.append(names[int(rng.integers(len(names)))])
        assert [Path(s.path).stem for s in t.gallery] == expect
        assert [Path(s.path).stem for s in t.query] == [n for n, _ in rows if n not in expect]


def test_vehicleid_options_and_wrong_trees(tmp_path):
    _vehicleid(tmp_path)
    assert {t.group for t in build_dataset("vehicleid", str(tmp_path), test_sizes=800, draws=1).trials} == {
        "test_800"}
    with pytest.raises(ValueError, match="'900' is not a test size; choose from 800, 1600"):
        build_dataset("vehicleid", str(tmp_path), test_sizes="800,900")
    with pytest.raises(ValueError, match="draws must be a positive integer"):
        build_dataset("vehicleid", str(tmp_path), draws=0)
    with pytest.raises(ValueError, match="names 800 twice"):
        build_dataset("vehicleid", str(tmp_path), test_sizes=[800, "800"])
    with pytest.raises(FileNotFoundError) as e:  # default sizes include 2400, absent here
        build_dataset("vehicleid", str(tmp_path))
    first = str(e.value).splitlines()[0]
    assert first.startswith("vehicleid: train_test_split/test_list_2400.txt not found under")
    assert "Expected layout" in str(e.value) and "image/<name>.jpg" in str(e.value)
    (tmp_path / "image").rmdir()
    with pytest.raises(FileNotFoundError, match=r"vehicleid: image not found under"):
        build_dataset("vehicleid", str(tmp_path), test_sizes="800")
    (tmp_path / "image").mkdir()
    (tmp_path / "train_test_split" / "test_list_800.txt").write_text("0100 100\n0101\n")
    with pytest.raises(ValueError, match=r"test_list_800.txt:2: expected '<image name> <vehicle id>'"):
        build_dataset("vehicleid", str(tmp_path), test_sizes="800")


# ---------------------------------------------------------------------------------------------- VERI-Wild
#: vehicle_info rows (vid/imgid, raw camera id); cameras 3 / 7 / 12 -> 0 / 1 / 2
VW_INFO = [("00001/000011", 7), ("00001/000012", 3), ("00004/000041", 12), ("00004/000042", 12),
           ("00050/000501", 3), ("00050/000502", 7), ("00050/000503", 12), ("00060/000601", 7),
           ("00060/000602", 3), ("00070/000701", 12)]
VW_LISTS = {
    "train_list.txt": ["00004/000041", "00001/000011", "00001/000012", "00004/000042"],
    "test_3000.txt": ["00050/000501", "00050/000502", "00050/000503", "00060/000601", "00060/000602"],
    "test_3000_query.txt": ["00050/000501", "00060/000601"],
    "test_5000.txt": ["00050/000501", "00050/000502", "00050/000503", "00060/000601", "00060/000602",
                      "00070/000701"],
    "test_5000_query.txt": ["00050/000502", "00060/000602", "00070/000701"],
}


def _veriwild(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    split = root / "train_test_split"
    split.mkdir()
    (split / "vehicle_info.txt").write_text(
        "id/image;Camera ID;Time;Model;Type;Color\n" + "".join(f"{k};{c};2018-03-20 08:00:00;x;SUV;red\n"
                                                             for k, c in VW_INFO))
    for name, rows in VW_LISTS.items():
        (split / name).write_text("\n".join(rows) + "\n")
    return root


def test_veriwild_parse_cameras_relabel_and_groups(tmp_path):
    root = _veriwild(tmp_path / "VERI-Wild")
    d = build_dataset("veriwild", str(tmp_path))  # default: the small test set only
    cam = {3: 0, 7: 1, 12: 2}
    raw = dict(VW_INFO)
    assert [(s.pid, s.camid) for s in d.train] == [(1, 2), (0, 1), (0, 0), (1, 2)]  # ids 1 / 4 -> 0 / 1
    assert d.train[0].path == str(root / "images" / "00004" / "000041.jpg")
    assert [(t.group, t.index) for t in d.trials] == [("small", 0)]
    # gallery = test_3000.txt as listed, queries included (the Market filter removes each query's own image)
    assert [(s.pid, s.camid) for s in d.gallery] == [(int(k[:5]), cam[raw[k]]) for k in VW_LISTS["test_3000.txt"]]
    assert [(s.pid, s.camid) for s in d.query] == [(50, 0), (60, 1)]
    assert {s.path for s in d.query} <= {s.path for s in d.gallery}
    assert d.info["protocol"] == "market" and d.info["camera_ids"] == [3, 7, 12]
    for sizes in ("small,medium", [3000, 5000], "3000, medium"):
        both = build_dataset("veriwild", str(root), test_sizes=sizes)
        assert [t.group for t in both.trials] == ["small", "medium"]
        assert [len(both.trials[1].query), len(both.trials[1].gallery)] == [3, 6]


def test_veriwild_wrong_trees(tmp_path):
    root = _veriwild(tmp_path)
    with pytest.raises(ValueError, match="test_sizes: 4000 is not a test size; choose from 3000, 5000, 10000, small"):
        build_dataset("veriwild", str(root), test_sizes=4000)
    with pytest.raises(FileNotFoundError) as e:
        build_dataset("veriwild", str(root), test_sizes="large")
    assert str(e.value).splitlines()[0].startswith(
        "veriwild: train_test_split/test_10000_query.txt, train_test_split/test_10000.txt not found under")
    assert "images/<vid>/<imgid>.jpg" in str(e.value)
    (root / "train_test_split" / "vehicle_info.txt").unlink()
    with pytest.raises(FileNotFoundError, match="veriwild: train_test_split/vehicle_info.txt not found"):
        build_dataset("veriwild", str(root))
    _veriwild(tmp_path / "b")
    info = tmp_path / "b" / "train_test_split" / "vehicle_info.txt"
    info.write_text("\n".join(info.read_text().splitlines()[:-2]) + "\n")  # drops 00060/000602, 00070/000701
    with pytest.raises(ValueError, match=r"test_3000.txt:5: 00060/000602 has no row in .*vehicle_info.txt"):
        build_dataset("veriwild", str(tmp_path / "b"))


# ------------------------------------------------------------------------------------ vehicleid protocol
def _unit(deg: float) -> list[float]:
    return [float(np.cos(np.radians(deg))), float(np.sin(np.radians(deg)))]


def test_vehicleid_protocol_hand_computed():
    # q1 (id 1, camera 0) at 0 deg; q2 (id 2, camera 0) at 15 deg.
    # gallery: g2 (id 2, cam 1) 10 deg, g1 (id 1, cam 0) 30 deg, g3 (id 3, cam 1) 90 deg.
    # q1 ranks g2, g1, g3: first match at rank 2 -> AP 1/2, INP 1/2; q2 ranks g2 first -> AP 1, INP 1.
    q = [Sample("q1", 1, 0), Sample("q2", 2, 0)]
    g = [Sample("g2", 2, 1), Sample("g1", 1, 0), Sample("g3", 3, 1)]
    qf, gf = torch.tensor([_unit(0), _unit(15)]), torch.tensor([_unit(10), _unit(30), _unit(90)])
    res = PROTOCOLS["vehicleid"](qf, gf, q, g)
    assert res["mAP"] == pytest.approx(75.0) and res["mINP"] == pytest.approx(75.0)
    assert (res["rank1"], res["rank5"], res["num_valid_queries"]) == (pytest.approx(50.0), 100.0, 2)
    # the Market filter would drop g1 (same id, same camera as q1) and skip q1: a different number
    assert PROTOCOLS["market"](qf, gf, q, g)["mAP"] == pytest.approx(100.0)


# -------------------------------------------------------------------------------------- trials: aggregate
def _res(m, r1):
    return {"mAP": m, "rank1": r1, "rank5": 90.0, "rank10": 95.0, "mINP": m / 2, "num_valid_queries": 4}


def test_aggregate_mean_and_population_std_by_hand():
    out = aggregate([("a", _res(10.0, 40.0)), ("a", _res(30.0, 60.0)), ("a", _res(20.0, 80.0)),
                     ("b", _res(50.0, 70.0))])
    # group a: mAP 10, 30, 20 -> mean 20, population std sqrt((100 + 100 + 0) / 3) = 8.1650
    assert out["a/mAP"] == pytest.approx(20.0) and out["a/mAP_std"] == pytest.approx(np.sqrt(200 / 3))
    assert out["a/rank1"] == pytest.approx(60.0) and out["a/rank1_std"] == pytest.approx(np.sqrt(800 / 3))
    assert out["a/mINP"] == pytest.approx(10.0) and out["a/rank5_std"] == 0.0 and out["a/trials"] == 3
    assert out["b/mAP"] == 50.0 and out["b/mAP_std"] == 0.0 and out["b/trials"] == 1
    # the headline keys are group a's means (the first group)
    assert (out["mAP"], out["rank1"], out["mINP"], out["num_valid_queries"]) == (
        pytest.approx(20.0), pytest.approx(60.0), pytest.approx(10.0), 4.0)
    table = format_groups(out)
    assert "20.00 ± 8.16" in table and table.splitlines()[-1].startswith("b ")
    assert format_groups({"mAP": 1.0}) == ""
    with pytest.raises(ValueError, match="no trial results"):
        aggregate([])


def test_union_samples_dedupes_by_path():
    a, b, c = Sample("a", 1, 0), Sample("b", 1, 0), Sample("c", 2, 0)
    samples, rows = union_samples([Trial("x", 0, [a], [b, c]), Trial("x", 1, [b], [a, c])])
    assert [s.path for s in samples] == ["a", "b", "c"]
    assert rows == [([0], [1, 2]), ([1], [0, 2])]


# ---------------------------------------------------------------------- trials through the evaluate path
def _path_features(samples):
    """A fixed feature per image path (so the reference does not depend on extraction order)."""
    out = []
    for s in samples:
        g = torch.Generator().manual_seed(sum(map(ord, s.path)) * 7 + len(s.path))
        out.append(torch.randn(8, generator=g) + 2.0 * torch.nn.functional.one_hot(
            torch.tensor(s.pid % 8), 8).float())
    return torch.nn.functional.normalize(torch.stack(out), dim=1)


def test_trials_are_extracted_once_and_aggregated_per_group(tmp_path, monkeypatch):
    import unreid.engine.trainer as tr

    _vehicleid(tmp_path)
    data = build_dataset("vehicleid", str(tmp_path), test_sizes="800,1600", draws=4)
    calls = []

    def fake_extract(model, samples, cfg, device, cache=None, amp=False):
        calls.append(list(samples))
        return _path_features(samples)

    monkeypatch.setattr(tr, "extract", fake_extract)
    cfg = Config()
    cfg.eval.protocol = "vehicleid"
    fake_trainer = SimpleNamespace(data=data, model=None, cfg=cfg, device=torch.device("cpu"), cache=None,
                                   use_amp=False)
    res = tr.Trainer.evaluate(fake_trainer)  # the trainer's evaluate path (no arguments: all trials)
    assert len(calls) == 1  # one extraction for all 8 trials
    assert sorted(s.path for s in calls[0]) == sorted(
        str(tmp_path / "image" / f"{n}.jpg") for rows in VID_TEST.values() for n, _ in rows)
    # reference: each trial on its own (features by path), mean and population std by numpy
    for group in ("test_800", "test_1600"):
        vals = [PROTOCOLS["vehicleid"](_path_features(t.query), _path_features(t.gallery), t.query, t.gallery)
                for t in data.trials if t.group == group]
        for k in ("mAP", "rank1", "mINP"):
            assert res[f"{group}/{k}"] == pytest.approx(np.mean([v[k] for v in vals]))
            assert res[f"{group}/{k}_std"] == pytest.approx(np.std([v[k] for v in vals]))
        assert res[f"{group}/trials"] == 4
    assert res["mAP"] == res["test_800/mAP"] and res["rank1"] == res["test_800/rank1"] and "time_s" in res
    # an explicit query / gallery (the validation split) is one split, as before
    calls.clear()
    single = tr.Trainer.evaluate(fake_trainer, data.trials[5].query, data.trials[5].gallery)
    assert len(calls) == 1 and not any("/" in k for k in single)
    assert single["mAP"] == pytest.approx(PROTOCOLS["vehicleid"](
        _path_features(data.trials[5].query), _path_features(data.trials[5].gallery), data.trials[5].query,
        data.trials[5].gallery)["mAP"])


# ------------------------------------------------------------------------------------ RegDB's directions
def test_regdb_reports_both_directions(tmp_path):
    idx = tmp_path / "RegDB" / "idx"
    idx.mkdir(parents=True)
    for m in ("visible", "thermal"):
        for split, pids in (("train", [4, 8]), ("test", [30, 31])):
            (idx / f"{split}_{m}_1.txt").write_text("".join(f"{m}/{p}_{k}.bmp {p}\n" for k, p in enumerate(pids)))
    d = build_dataset("regdb", str(tmp_path))
    assert [t.group for t in d.trials] == ["visible_to_thermal", "thermal_to_visible"]
    assert d.trials[0].query == d.query and d.trials[0].gallery == d.gallery == d.trials[1].query
    assert {s.modality for s in d.trials[1].query} == {1} and {s.modality for s in d.trials[1].gallery} == {0}
    t2v = build_dataset("regdb", str(tmp_path), mode="thermal_to_visible")
    assert [t.group for t in t2v.trials] == ["thermal_to_visible", "visible_to_thermal"]
    assert {s.modality for s in t2v.query} == {1}


# ------------------------------------------------------------------------------ registry and --check
def test_registry_lists_the_vehicle_sets(capsys):
    assert {"vehicleid", "veriwild"} <= set(DATASETS)
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "vehicleid: PKU VehicleID" in out and "train_test_split/test_list_<N>.txt" in out
    assert "veriwild: VERI-Wild" in out and "train_test_split/vehicle_info.txt" in out


def test_check_names_the_differences_from_the_published_counts(tmp_path, capsys):
    _vehicleid(tmp_path)
    assert main(["datasets", "--check", "vehicleid", str(tmp_path), "test_sizes=800", "draws=2"]) == 1
    out = capsys.readouterr().out
    assert "train: 3 ids loaded, 13164 published (-13161)" in out
    assert "train: 5 images loaded, 113346 published (-113341)" in out
    assert "test_800: 3 ids loaded, 800 published (-797)" in out and "test_800: 6 images loaded" in out
    assert "test_1600" in out and "not loaded with these options" in out
    # VeRi-776 on a fixture tree: every split differs and is named
    for sub, names in {"image_train": ["0003_c001_00000001_0.jpg", "0010_c002_00000003_0.jpg"],
                       "image_query": ["0005_c001_00000004_0.jpg"],
                       "image_test": ["0005_c020_00000005_0.jpg"]}.items():
        (tmp_path / "VeRi" / sub).mkdir(parents=True)
        for n in names:
            from PIL import Image
            Image.new("RGB", (4, 8)).save(tmp_path / "VeRi" / sub / n)
    assert main(["datasets", "--check", "veri776", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "train: 2 ids loaded, 576 published (-574)" in out and "gallery: 1 images loaded, 11579 published" in out
    assert "6 difference(s)" in out
    assert main(["datasets", "--check", "vehicleid", str(tmp_path), "test_sizes=900"]) == 2
    assert "test_sizes: 900 is not a test size" in capsys.readouterr().err


def test_compare_published_matches_when_counts_agree():
    t = Trial("small", 0, [Sample("q", 1, 0)], [Sample("q", 1, 0), Sample("g", 1, 1), Sample("h", 2, 0)])
    data = ReIDData("x", [Sample("a", 0, 0), Sample("b", 1, 0)], t.query, t.gallery, trials=[t])
    table, diffs = compare_published(data, {"train": (2, 2), "small": (2, 3)})  # q counted once
    assert diffs == [] and table.count("ok") == 2
    _, diffs = compare_published(data, {"small": (2, 4)})
    assert diffs == ["small: 3 images loaded, 4 published (-1)"]


def test_vehicle_configs_use_their_protocols_and_the_veri_recipe():
    from unreid.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs" / "cluster_contrast"
    for name, protocol, options in (("vehicleid", "vehicleid", {"test_sizes": "800,1600,2400", "draws": 10}),
                                    ("veriwild", "market", {"test_sizes": "3000"})):
        c = load_config(root / f"{name}.yaml")
        assert (c.data.name, c.eval.protocol, dict(c.data.options)) == (name, protocol, options)
        assert (c.data.height, c.data.width, c.optim.iters, c.pseudo_labels.eps, c.optim.amp) == (
            224, 224, 400, 0.6, False)


def test_unreid_eval_prints_a_table_per_group(tmp_path, capsys):
    """`unreid eval` on a VehicleID fixture (real images, untrained resnet18): headline + mean ± std rows."""
    from PIL import Image

    from tests.conftest import eval_cli, tiny_overrides

    root = _vehicleid(tmp_path / "vid")
    rows = VID_TRAIN + VID_TEST[800] + VID_TEST[1600]
    for k, (name, pid) in enumerate(rows):
        Image.fromarray(np.full((64, 32, 3), (pid * 53 + k) % 255, np.uint8)).save(root / "image" / f"{name}.jpg")
    over = tiny_overrides(tmp_path, tmp_path / "run", **{"data.name": "vehicleid", "data.root": str(root),
                                                         "eval.protocol": "vehicleid"})
    over.append("data.options={test_sizes: '800,1600', draws: 2}")
    out, res = eval_cli(tmp_path, over, capsys)
    assert out[0].startswith("vehicleid (vehicleid protocol): mAP ")
    assert [line.split("|")[0].strip() for line in out[-2:]] == ["test_800", "test_1600"]
    assert all(line.split("|")[1].strip() == "2" and "±" in line for line in out[-2:])
    assert res["mAP"] == res["test_800/mAP"] and res["test_1600/trials"] == 2


def test_veriwild_query_own_image_is_not_a_match(tmp_path):
    """The gallery lists the queries too; the data set's protocol (Market filter, as fast-reid) must drop each
    query's own image. Hand case, features at angles (degrees) per image:
    501: 0, 601: 20, 502: 25, 602: 30, 503: 60 (ids 50 / 60; cameras 501 c0, 502 c1, 503 c2, 601 c1, 602 c0).
    q501 -> [501 removed] 601 x, 502 ok, 602 x, 503 ok: AP (1/2 + 2/4) / 2 = 0.5, INP 2/4.
    q601 -> [601 removed] 502 x, 602 ok, ...: AP 1/2, INP 1/2. So mAP 50, rank1 0, rank5 100, mINP 50."""
    from unreid.evaluation.trials import evaluate_trials

    d = build_dataset("veriwild", str(_veriwild(tmp_path)))
    angle = {"000501": 0, "000601": 20, "000502": 25, "000602": 30, "000503": 60}
    samples, rows = union_samples(d.trials)
    feats = torch.tensor([_unit(angle[Path(s.path).stem]) for s in samples])
    res = evaluate_trials(feats, rows, d.trials, PROTOCOLS[d.info["protocol"]])
    assert (res["small/mAP"], res["small/rank1"], res["small/rank5"], res["small/mINP"]) == (
        pytest.approx(50.0), 0.0, 100.0, pytest.approx(50.0))
    assert res["mAP"] == res["small/mAP"] and res["small/trials"] == 1 and res["small/mAP_std"] == 0.0
