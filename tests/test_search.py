"""``unreid search``, ``unreid eval --visualize`` and the rank-list pictures (issue 35): rankings against a
hand computation, the gallery-feature cache (reused, recomputed when the gallery or checkpoint changes),
the gallery folder left untouched, and one line + exit 2 for each bad input."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import tiny_overrides, write_checkpoint
from unreid.cli import main
from unreid.config import load_config
from unreid.data.datasets import build_dataset
from unreid.data.datasets.base import Sample
from unreid.engine.checkpoint import save_checkpoint
from unreid.evaluation.metrics import evaluate_rank
from unreid.evaluation.visualize import (
    BLUE,
    GREEN,
    GREY,
    RED,
    average_precision,
    draw_rank_list,
    ranked_gallery,
    select_queries,
)
from unreid.models import build_model


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _save(cfg, path, seed=0):
    return write_checkpoint(cfg, path, seed=seed)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory, synthetic_root):
    return load_config(None, tiny_overrides(synthetic_root, tmp_path_factory.mktemp("run") / "r"))


@pytest.fixture(scope="module")
def checkpoint(cfg, tmp_path_factory):
    """A model_best.pth-like checkpoint of a randomly initialised resnet18 at 64x32, with its config."""
    return _save(cfg, tmp_path_factory.mktemp("ckpt") / "model_best.pth")


def _image(path, seed, size=(48, 24)):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(1, 1, 3))
    arr = np.clip(base + rng.integers(-60, 60, size=(*size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def gallery(tmp_path):
    """A nested folder of 9 small images (what a user's folder looks like)."""
    root = tmp_path / "gallery"
    for i in range(9):
        _image(root / f"cam{i % 2}" / f"img_{i}.png", seed=i)
    return root


def _listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def _features(checkpoint, cfg, paths):
    """Reference features: the checkpoint's model on the test transform, one image at a time (no loader)."""
    from unreid.data.loader import read_image
    from unreid.data.transforms import build_test_transform

    model = build_model(cfg.model, init_weights=False)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    model.eval()
    tf = build_test_transform(cfg.data)
    with torch.no_grad():
        f = torch.cat([model(tf(read_image(str(p)))[None]) for p in paths])
    return torch.nn.functional.normalize(f, dim=1).numpy()


def test_search_folder_matches_a_hand_ranking(checkpoint, cfg, gallery, tmp_path, capsys):
    query = _image(tmp_path / "queries" / "q.png", seed=3)  # same pixels as gallery img_3
    out = tmp_path / "out"
    assert main(["search", "--checkpoint", str(checkpoint), "--gallery", str(gallery), "--query", str(query),
                 "--topk", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    (q,) = res["queries"]
    # the reference: every gallery image embedded on its own, distances 1 - cos, sorted by hand
    paths = sorted(str(p) for p in gallery.rglob("*.png"))
    gf, qf = _features(checkpoint, cfg, paths), _features(checkpoint, cfg, [query])[0]
    dist = [1.0 - float(np.dot(qf, g)) for g in gf]
    expected = sorted(range(len(paths)), key=lambda i: dist[i])[:4]
    assert [m["path"] for m in q["matches"]] == [paths[i] for i in expected]
    assert np.allclose([m["distance"] for m in q["matches"]], [dist[i] for i in expected], atol=1e-5)
    assert q["matches"][0]["path"].endswith("img_3.png") and abs(q["matches"][0]["distance"]) < 1e-5
    assert all(m["pid"] is None and m["same_id"] is None for m in q["matches"])  # identities unknown
    # the printed table names every listed image with its distance
    for m in q["matches"]:
        assert m["path"] in printed and f"{m['distance']:.4f}" in printed
    # the rank list: query + 4 tiles, grey frames (unknown identities), blue query frame
    img = np.asarray(Image.open(q["ranklist"]).convert("RGB"))
    frames = _frame_colours(img, 4)
    assert frames == [BLUE] + [GREY] * 4


def _frame_colours(img, k, h=64, w=32, border=4, gap=6, text_h=14):
    """The frame colour of each tile of a draw_rank_list picture (layout written out independently)."""
    cell_w = w + 2 * border
    top = text_h + gap
    xs = [gap + i * (cell_w + gap) + (8 if i else 0) for i in range(k + 1)]
    return [tuple(int(c) for c in img[top + 1, x + 1]) for x in xs]


def test_cache_is_reused_and_recomputed_when_gallery_or_checkpoint_change(checkpoint, cfg, gallery, tmp_path,
                                                                           monkeypatch):
    import unreid.engine.trainer as trainer

    embedded = []
    real_extract = trainer.extract
    monkeypatch.setattr(trainer, "extract", lambda m, s, *a, **k: embedded.append(len(s)) or real_extract(m, s, *a, **k))
    query = _image(tmp_path / "q.png", seed=100)
    ckpt = tmp_path / "ck" / "model_best.pth"
    ckpt.parent.mkdir()
    shutil.copy(checkpoint, ckpt)
    out = tmp_path / "out"
    args = ["search", "--checkpoint", str(ckpt), "--gallery", str(gallery), "--query", str(query), "--out", str(out)]

    def run():
        embedded.clear()
        assert main(args) == 0
        return json.loads((out / "results.json").read_text())

    first = run()
    assert not first["from_cache"] and embedded == [9, 1]  # gallery, then the query
    assert (out / "gallery_features.npz").is_file()
    again = run()
    assert again["from_cache"] and embedded == [1]  # only the query
    assert again["queries"][0]["matches"] == first["queries"][0]["matches"]
    # a touched but unchanged checkpoint keeps the cache (the key hashes its content)
    os.utime(ckpt, ns=(1, 1))
    assert run()["from_cache"]
    # a gallery image replaced: recomputed, and the new pixels count
    _image(gallery / "cam0" / "img_0.png", seed=100)  # now the query's pixels
    changed = run()
    assert not changed["from_cache"] and embedded == [9, 1]
    assert changed["queries"][0]["matches"][0]["path"].endswith("img_0.png")
    assert abs(changed["queries"][0]["matches"][0]["distance"]) < 1e-5
    assert run()["from_cache"]
    # an image added to the gallery: recomputed
    _image(gallery / "new.png", seed=50)
    assert not run()["from_cache"] and embedded == [10, 1]
    # other weights in the checkpoint file: recomputed, and the distances change
    before = run()
    _save(cfg, ckpt, seed=7)
    after = run()
    assert not after["from_cache"] and embedded == [10, 1]
    assert before["queries"][0]["matches"][1]["distance"] != after["queries"][0]["matches"][1]["distance"]


def test_search_leaves_the_gallery_folder_unchanged(checkpoint, gallery, tmp_path, capsys):
    before = _listing(gallery)
    query = _image(tmp_path / "q.png", seed=5)
    for rerank in ([], ["--rerank"]):
        assert main(["search", "--checkpoint", str(checkpoint), "--gallery", str(gallery), "--query", str(query),
                     "--out", str(tmp_path / "out"), *rerank]) == 0
    assert _listing(gallery) == before
    # an output folder inside the gallery is refused, and nothing is written there
    assert main(["search", "--checkpoint", str(checkpoint), "--gallery", str(gallery), "--query", str(query),
                 "--out", str(gallery / "results")]) == 2
    assert "inside the input folder" in _one_line(capsys.readouterr().err)
    assert _listing(gallery) == before


def test_search_rerank_uses_k_reciprocal_distances(checkpoint, cfg, gallery, tmp_path):
    from unreid.evaluation.rerank import re_ranking

    queries = tmp_path / "queries"
    for i in range(3):
        _image(queries / f"q{i}.png", seed=20 + i)
    out = tmp_path / "out"
    assert main(["search", "--checkpoint", str(checkpoint), "--gallery", str(gallery), "--query", str(queries),
                 "--out", str(out), "--rerank", "--topk", "9"]) == 0
    res = json.loads((out / "results.json").read_text())
    paths = sorted(str(p) for p in gallery.rglob("*.png"))
    gf = _features(checkpoint, cfg, paths)
    qf = _features(checkpoint, cfg, sorted(queries.glob("*.png")))
    ref = re_ranking(2 - 2 * qf @ gf.T, 2 - 2 * qf @ qf.T, 2 - 2 * gf @ gf.T)
    for i, q in enumerate(res["queries"]):
        got = {m["path"]: m["distance"] for m in q["matches"]}
        assert np.allclose([got[p] for p in paths], ref[i], atol=1e-4)


def test_search_dataset_gallery_has_green_and_red_frames(checkpoint, cfg, synthetic_root, tmp_path):
    spec = f"synthetic:{synthetic_root}"
    out = tmp_path / "out"
    assert main(["search", "--checkpoint", str(checkpoint), "--gallery", spec, "--query", spec, "--topk", "5",
                 "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    data = build_dataset("synthetic", str(synthetic_root), **{k: getattr(cfg.data.synthetic, k)
                                                              for k in vars(cfg.data.synthetic)})
    pid_of = {s.path: s.pid for s in data.gallery}
    assert res["known_ids"] and len(res["queries"]) == len(data.query)
    colours = set()
    for q in res["queries"][:6]:
        qpid = {s.path: s.pid for s in data.query}[q["query"]]
        assert q["query_pid"] == qpid
        expect = [GREEN if pid_of[m["path"]] == qpid else RED for m in q["matches"]]
        assert [m["same_id"] for m in q["matches"]] == [c == GREEN for c in expect]
        img = np.asarray(Image.open(q["ranklist"]).convert("RGB"))
        assert _frame_colours(img, 5) == [BLUE] + expect
        colours |= set(expect)
    assert colours == {GREEN, RED}  # both cases were drawn


@pytest.mark.parametrize("case", ["missing_checkpoint", "other_architecture", "empty_gallery", "no_gallery",
                                  "unreadable_gallery", "bad_query", "missing_query", "no_config", "out_is_file"])
def test_bad_inputs_one_line_exit_2(case, checkpoint, gallery, tmp_path, capsys):
    query = _image(tmp_path / "q.png", seed=1)
    out = tmp_path / "out"
    ckpt, gal, qry, extra = str(checkpoint), str(gallery), str(query), []
    expect = ""
    if case == "missing_checkpoint":
        ckpt, expect = str(tmp_path / "nope.pth"), "checkpoint not found"
    elif case == "other_architecture":
        extra, expect = ["model.backbone=resnet34"], "trained with model.backbone=resnet18, this config has resnet34"
    elif case == "empty_gallery":
        (tmp_path / "empty" / "sub").mkdir(parents=True)
        (tmp_path / "empty" / "notes.txt").write_text("no images here")
        gal, expect = str(tmp_path / "empty"), "no image"
    elif case == "no_gallery":
        gal, expect = str(tmp_path / "missing"), "no such folder"
    elif case == "unreadable_gallery":
        bad = tmp_path / "bad"
        bad.mkdir()
        for i in range(3):
            (bad / f"x{i}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
        gal, expect = str(bad), "none of its 3 images can be decoded"
    elif case == "bad_query":
        query.write_bytes(b"\x89PNG broken")
        expect = "cannot decode image"
    elif case == "missing_query":
        qry, expect = str(tmp_path / "nope.jpg"), "no such image file"
    elif case == "no_config":
        raw = tmp_path / "raw.pth"
        save_checkpoint({"model": torch.load(checkpoint, weights_only=True)["model"]}, raw)
        ckpt, expect = str(raw), "holds no config"
    elif case == "out_is_file":
        out.write_text("mine")
        expect = "is a file"
    gal_dir = tmp_path / "bad" if case == "unreadable_gallery" else gallery
    before = _listing(gal_dir)
    assert main(["search", "--checkpoint", ckpt, "--gallery", gal, "--query", qry, "--out", str(out), *extra]) == 2
    line = _one_line(capsys.readouterr().err)
    assert expect in line, line
    assert _listing(gal_dir) == before
    assert not (out / "gallery_features.npz").exists()


def test_unreadable_gallery_images_are_left_out_with_one_warning(checkpoint, gallery, tmp_path, caplog):
    (gallery / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    query = _image(tmp_path / "q.png", seed=2)
    out = tmp_path / "out"
    assert main(["search", "--checkpoint", str(checkpoint), "--gallery", str(gallery), "--query", str(query),
                 "--topk", "20", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["gallery_size"] == 9 and len(res["queries"][0]["matches"]) == 9
    assert not any(m["path"].endswith("broken.jpg") for m in res["queries"][0]["matches"])
    warned = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warned) == 1 and "1 unreadable image(s)" in warned[0] and "broken.jpg" in warned[0]


# --- the drawing and query-selection helpers -------------------------------------------------------------

def test_draw_rank_list_frames(tmp_path):
    imgs = [_image(tmp_path / f"{i}.png", seed=i) for i in range(4)]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"nope")
    png = draw_rank_list(imgs[0], [imgs[1], imgs[2], bad], [0.1, 0.2, 0.3], tmp_path / "o" / "r.png",
                         query_pid=5, gallery_pids=[5, 6, 5], size=(64, 32))
    assert _frame_colours(np.asarray(Image.open(png).convert("RGB")), 3) == [BLUE, GREEN, RED, GREEN]
    png = draw_rank_list(imgs[0], imgs[1:], [0.1, 0.2, 0.3], tmp_path / "u.png", size=(64, 32))
    assert _frame_colours(np.asarray(Image.open(png).convert("RGB")), 3) == [BLUE, GREY, GREY, GREY]
    with pytest.raises(ValueError, match="2 distances for 3"):
        draw_rank_list(imgs[0], imgs[1:], [0.1, 0.2], tmp_path / "x.png")


def test_average_precision_by_hand_and_against_map():
    # one query, gallery pids [1, 2, 1, 1] at cameras [0, 1, 1, 0], distances ranking them 0, 1, 2, 3
    dist = np.array([[0.1, 0.2, 0.3, 0.4]])
    ap = average_precision(dist, [1], [1, 2, 1, 1], [0], [0, 1, 1, 0], "none")
    assert ap[0] == pytest.approx((1 / 1 + 2 / 3 + 3 / 4) / 3)
    # market: entries 0 and 3 (same id, same camera) are junk; the list is [2 (pid 2), 1 (pid 1)]
    ap = average_precision(dist, [1], [1, 2, 1, 1], [0], [0, 1, 1, 0], "market")
    assert ap[0] == pytest.approx(1 / 2)
    assert np.isnan(average_precision(dist, [9], [1, 2, 1, 1], [0], [0, 1, 1, 0])[0])
    rng = np.random.default_rng(0)
    d = rng.random((20, 40))
    qp, gp = rng.integers(0, 5, 20), rng.integers(0, 5, 40)
    qc, gc = rng.integers(0, 3, 20), rng.integers(0, 3, 40)
    ap = average_precision(d, qp, gp, qc, gc, "market")
    assert np.nanmean(ap) == pytest.approx(evaluate_rank(d, qp, gp, qc, gc)["mAP"])
    assert ranked_gallery(d[0], 40, qp[0], qc[0], gp, gc, "market").tolist() == [
        j for j in np.argsort(d[0]) if not (gp[j] == qp[0] and gc[j] == qc[0])]


def test_select_queries_best_worst_random():
    ap = np.array([0.5, np.nan, 0.9, 0.1, 0.7, 0.3, 0.2, 0.95, 0.6])
    chosen = select_queries(ap, 5, seed=0)
    kinds = [k for _, k in chosen]
    assert kinds == ["best", "best", "worst", "worst", "random"]
    assert [i for i, _ in chosen[:4]] == [7, 2, 3, 6]
    assert chosen[4][0] in {0, 4, 5, 8}
    assert select_queries(ap, 5, seed=0) == chosen  # seeded
    everything = select_queries(ap, 20)
    assert sorted(i for i, _ in everything) == [0, 2, 3, 4, 5, 6, 7, 8]  # NaN never, no repeats
    assert select_queries(ap, 0) == []


def test_eval_visualize_draws_best_worst_random(checkpoint, cfg, synthetic_root, tmp_path, capsys):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("name: run\n")
    vis = tmp_path / "vis"
    vis.mkdir()  # exists: a fresh folder is chosen, nothing in it is touched
    args = ["eval", str(cfg_file), "--checkpoint", str(checkpoint), "--json", "--visualize", "4",
            "--vis-out", str(vis), *tiny_overrides(synthetic_root, tmp_path / "r")]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not any(vis.iterdir())
    drawn = res["ranklists"]
    assert [d["kind"] for d in drawn] == ["best", "best", "worst", "random"]
    assert all(str(tmp_path / "vis-2") in d["ranklist"] and os.path.isfile(d["ranklist"]) for d in drawn)
    # the APs drawn agree with the metrics: best >= every AP >= worst, and their mean is consistent
    assert drawn[0]["ap"] >= drawn[1]["ap"] >= drawn[2]["ap"]
    assert drawn[1]["ap"] >= drawn[3]["ap"] >= drawn[2]["ap"]
    assert 100 * drawn[0]["ap"] >= res["mAP"] >= 100 * drawn[2]["ap"]
    # the market protocol's rank lists leave out the query's identity seen by the query's camera
    data = build_dataset("synthetic", str(synthetic_root), **{k: getattr(cfg.data.synthetic, k)
                                                              for k in vars(cfg.data.synthetic)})
    by_path = {s.path: s for s in data.query + data.gallery}
    for d in drawn:
        q = by_path[d["query"]]
        assert len(d["gallery"]) == 10
        assert not any(by_path[p].pid == q.pid and by_path[p].camid == q.camid for p in d["gallery"])
        kept = [s for s in data.gallery if not (s.pid == q.pid and s.camid == q.camid)]
        assert len(kept) < len(data.gallery)  # there was something to leave out
    # without --visualize the same metrics come out
    assert main(args[:5] + args[7:]) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {k: plain[k] for k in ("mAP", "rank1")} == {k: res[k] for k in ("mAP", "rank1")}


def test_sample_of_a_folder_gallery_is_unknown_identity(gallery, cfg):
    from unreid.search import resolve_images

    imgs = resolve_images(str(gallery), cfg, "gallery")
    assert not imgs.known_ids and len(imgs.samples) == 9
    assert all(isinstance(s, Sample) and s.pid == -1 for s in imgs.samples)
    assert [s.path for s in imgs.samples] == sorted(str(p) for p in gallery.rglob("*.png"))
