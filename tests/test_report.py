"""The run report (report.html) and TensorBoard scalars (unreid.engine.report; issue 35)."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import metrics_rows, tiny_overrides
from unreid.config import ConfigError, load_config
from unreid.engine import Trainer
from unreid.engine import report as report_mod
from unreid.engine.report import (
    REPORT,
    ReportHook,
    TensorBoardHook,
    build_report,
    cluster_sizes,
    curves,
    read_records,
    report_hooks,
    scalars,
)

IMG = re.compile(r'<img class="figure" alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


@pytest.fixture(scope="module")
def run(synthetic_root, tmp_path_factory) -> Path:
    """A finished two-epoch run with the default report and TensorBoard (when installed)."""
    out = tmp_path_factory.mktemp("report") / "run"
    extra = {"optim.epochs": 2, "optim.iters": 2, "data.batch_size": 8, "report": True, "tensorboard": "auto"}
    Trainer(load_config(None, tiny_overrides(synthetic_root, out, **extra))).train()
    return out


def _images(text: str) -> list[tuple[str, Image.Image]]:
    out = []
    for alt, data in IMG.findall(text):
        im = Image.open(io.BytesIO(base64.b64decode(data)))
        im.load()
        out.append((alt, im))
    return out


def test_report_is_self_contained_with_figures_config_and_environment(run):
    text = (run / REPORT).read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    images = _images(text)
    alts = [a for a, _ in images]
    # retrieval, losses, clusters, outliers, NMI / ARI (synthetic ids are known), cluster-size histogram
    assert len(images) == 6 + 3, alts  # six figures, three rank lists (report_ranklists)
    assert any("Retrieval" in a for a in alts) and any("Loss" in a for a in alts)
    assert any("true training identities" in a for a in alts)
    figures = _images(text.split('id="ranklists"')[0])  # the rank lists come after the figures
    assert len(figures) == 6 and all(im.size == (640, 320) for _, im in figures)
    # a drawn figure, not a blank canvas
    assert all(len(set(np.asarray(im.convert("L")).ravel().tolist())) > 10 for _, im in images)
    # nothing the page would fetch: no src / href other than inline data
    assert not re.findall(r'(?:src|href)="(?!data:)', text)
    for section in ("curves", "clusters", "ranklists", "epochs", "config", "environment"):
        assert f'id="{section}"' in text
    assert "pseudo_labels:" in text and "output_dir:" in text  # config.yaml shown
    import torch

    assert f"<th>torch</th><td>{torch.__version__}</td>" in text
    assert "Training finished: 2 of 2 epochs." in text
    # the per-epoch table has one row per record (before training, epochs 0 and 1)
    table = text.split('id="epoch-table"')[1].split("</table>")[0]
    assert table.count("<tr>") - 1 == len(metrics_rows(run)) == 3


def test_cluster_size_histogram_draws_the_last_labels(run, tmp_path):
    # the report's histogram title counts the last labelling's clusters, as metrics.jsonl records them
    last = [r for r in metrics_rows(run) if r.get("pseudo_labels")][-1]["pseudo_labels"]
    clustered = last["num_samples"] - last["num_outliers"]
    assert f"{last['num_clusters']} clusters, {clustered} clustered samples" in (run / REPORT).read_text()


def test_cluster_sizes_against_a_loop():
    labels = np.array([3, 3, -1, 0, 7, 7, 7, -1, 0, 5])
    sizes = {}
    for lab in labels.tolist():
        if lab >= 0:
            sizes[lab] = sizes.get(lab, 0) + 1
    assert sorted(cluster_sizes(labels).tolist()) == sorted(sizes.values()) == [1, 2, 2, 3]


def test_read_records_keeps_the_last_of_a_repeated_epoch_and_skips_broken_lines(tmp_path, caplog):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"epoch": -1, "test": {"mAP": 1.0}}\n{"epoch": 0, "losses": {"loss": 5.0}}\n'
                 '{"epoch": 1, "losses": {"loss": 4.0}}\n{"epoch": 1, "losses": {"loss": 3.0}}\n{"epoch": 2, "los\n')
    with caplog.at_level(logging.WARNING, logger="unreid"):
        recs = read_records(p)
    assert [r["epoch"] for r in recs] == [-1, 0, 1]
    assert recs[2]["losses"]["loss"] == 3.0
    assert "line 5 is not JSON" in caplog.text


def test_curves_by_hand():
    recs = [
        {"epoch": -1, "test": {"mAP": 1.5, "rank1": 2.5}},
        {"epoch": 0, "losses": {"loss": 4.0, "intra": 1.0},
         "pseudo_labels": {"num_clusters": 10, "outlier_ratio": 0.25, "nmi": 0.5, "ari": None}},
        {"epoch": 1, "losses": {"loss": 3.0, "intra": 0.5}, "test": {"mAP": 7.0, "rank1": 9.0},
         "val": {"mAP": 6.0, "rank1": 8.0},
         "pseudo_labels": {"num_clusters": 12, "outlier_ratio": 0.125, "nmi": 0.6, "ari": 0.3}},
    ]
    c = curves(recs)
    assert c["retrieval"]["test mAP"] == ([-1, 1], [1.5, 7.0])
    assert c["retrieval"]["test Rank-1"] == ([-1, 1], [2.5, 9.0])
    assert c["retrieval"]["val mAP"] == ([1], [6.0])
    assert c["losses"] == {"loss": ([0, 1], [4.0, 3.0]), "intra": ([0, 1], [1.0, 0.5])}
    assert c["clusters"]["clusters"] == ([0, 1], [10.0, 12.0])
    assert c["outliers"]["outlier ratio"] == ([0, 1], [0.25, 0.125])
    assert c["quality"]["NMI"] == ([0, 1], [0.5, 0.6])
    assert c["quality"]["ARI"] == ([1], [0.3])  # None leaves a gap


def test_ranklist_pngs_are_inlined(run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    (folder / "ranklists").mkdir(exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", (50, 20), (200, 10, 10)).save(buf, format="PNG")
    (folder / "ranklists" / "query_0003.png").write_bytes(buf.getvalue())
    text = build_report(folder)
    assert base64.b64encode(buf.getvalue()).decode() in text
    assert "query_0003.png" in text.split('id="ranklists"')[1]


def test_the_run_draws_rank_lists_of_the_trained_model_into_its_report(run):
    pngs = sorted((run / "ranklists").glob("*.png"))
    assert len(pngs) == 3  # report_ranklists: 3 (best, worst, random)
    kinds = [p.name.split("_")[1] for p in pngs]
    assert kinds == ["best", "worst", "random"]
    section = (run / "report.html").read_text().split('id="ranklists"')[1]
    for p in pngs:
        assert p.name in section
        assert base64.b64encode(p.read_bytes()).decode() in section


def test_supervised_banner(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "mode": "supervised"}) + "\n")
    assert "SUPERVISED REFERENCE" in build_report(tmp_path)
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "mode": "unsupervised"}) + "\n")
    assert "SUPERVISED REFERENCE" not in build_report(tmp_path)


def test_a_failing_report_never_stops_training(synthetic_root, tmp_path, monkeypatch, caplog):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(report_mod, "write_report", boom)
    out = tmp_path / "run"
    extra = {"optim.epochs": 1, "optim.iters": 1, "data.batch_size": 8, "report": True}
    cfg = load_config(None, tiny_overrides(synthetic_root, out, **extra))
    with caplog.at_level(logging.WARNING, logger="unreid"):
        record = Trainer(cfg).train()
    assert record["epoch"] == 0 and not (out / REPORT).exists()
    assert "report.html not written: OSError: disk full" in caplog.text


class _Spy:
    def __init__(self, epochs: int, done: int = 1) -> None:
        self.total_epochs, self.state, self.epoch = epochs, type("S", (), {"epoch": done})(), done - 1
        self.output_dir, self.device, self.method = None, "cpu", None

    @property
    def is_last_epoch(self) -> bool:
        return self.epoch + 1 == self.total_epochs


def test_report_hook_writes_at_most_every_interval_and_at_the_end(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(report_mod, "write_report", lambda *a, **k: calls.append(k["status"]))
    monkeypatch.setattr(report_mod, "environment", lambda device: {})
    hook = ReportHook(min_interval_s=3600)
    spy = _Spy(epochs=4)
    spy.output_dir = tmp_path
    hook.after_epoch(spy, {})  # the first epoch writes
    hook.after_epoch(spy, {})  # within the interval: not again
    spy.epoch = 3  # the last epoch: after_train writes it
    hook.after_epoch(spy, {})
    assert len(calls) == 1
    hook.after_train(spy)
    assert len(calls) == 2 and calls[-1].startswith("Training finished")
    ReportHook(min_interval_s=0).after_epoch(spy, {})  # last epoch: never from after_epoch
    assert len(calls) == 2


def test_config_keys(monkeypatch):
    cfg = load_config(None, ["report=false", "tensorboard=false"])
    assert report_hooks(cfg) == []
    cfg = load_config(None, ["tensorboard=true"])  # YAML true -> "true"
    assert cfg.tensorboard == "true"
    monkeypatch.setattr(report_mod, "tensorboard_available", lambda: False)
    with pytest.raises(ConfigError, match=r"tensorboard=true but the tensorboard package is not installed"):
        report_hooks(cfg)
    assert [type(h) for h in report_hooks(load_config(None, ["tensorboard=auto"]))] == [ReportHook]
    with pytest.raises(ConfigError, match="tensorboard='sometimes' is not one of"):
        load_config(None, ["tensorboard=sometimes"])


def test_scalars_by_hand():
    rec = {"epoch": 3, "lr": 0.1, "losses": {"loss": 2.0}, "test": {"mAP": 5.0, "rank1": 6.0, "time_s": 1.0},
           "pseudo_labels": {"num_clusters": 7, "outlier_ratio": 0.5, "nmi": None}}
    assert scalars(rec) == {"test/mAP": 5.0, "test/rank1": 6.0, "loss/loss": 2.0,
                            "pseudo_labels/num_clusters": 7.0, "pseudo_labels/outlier_ratio": 0.5, "lr": 0.1}


def test_tensorboard_scalars_match_metrics(run):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed (pip install "
                        "'unreid[tensorboard]'); the test extra installs it")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    rows = metrics_rows(run)
    got = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    # step = epochs trained: the evaluation before training is step 0, epoch e is step e + 1
    assert got["test/mAP"] == pytest.approx({r["epoch"] + 1: r["test"]["mAP"] for r in rows if r.get("test")})
    assert got["loss/loss"] == pytest.approx({r["epoch"] + 1: r["losses"]["loss"] for r in rows if r.get("losses")})
    assert got["pseudo_labels/num_clusters"] == {r["epoch"] + 1: r["pseudo_labels"]["num_clusters"]
                                                 for r in rows if r.get("pseudo_labels")}
    assert set(got["pseudo_labels/ari"]) == {1, 2}


def test_tensorboard_hook_failure_turns_it_off(caplog):
    hook = TensorBoardHook()

    class Broken:
        def add_scalar(self, *a):
            raise RuntimeError("no space")

        def close(self):
            pass

    hook.writer = Broken()
    with caplog.at_level(logging.WARNING, logger="unreid"):
        hook.after_epoch(None, {"epoch": 0, "losses": {"loss": 1.0}})
    assert hook.writer is None and "TensorBoard scalars off: RuntimeError: no space" in caplog.text


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_renders_in_headless_chromium(run, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium binary on PATH (Debian: apt-get install chromium; .ci/run installs it): "
                    "report.html is not checked in a real browser here")
    # the report plus a probe script that, once the page has loaded, counts the <img> the browser decoded
    # whole: naturalWidth > 0 and every pixel opaque (the figures have an opaque white background; a cut
    # or broken image leaves transparent pixels or no size), and writes "decoded/total" into the DOM,
    # which --dump-dom prints
    probe = ("<script>window.addEventListener('load', () => { const im = [...document.images]; "
             "const whole = i => { if (!i.complete || !i.naturalWidth) return false; "
             "const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight; "
             "const x = c.getContext('2d'); x.drawImage(i, 0, 0); const d = x.getImageData(0, 0, c.width, "
             "c.height).data; for (let k = 3; k < d.length; k += 4) if (d[k] < 255) return false; return true; }; "
             "document.body.setAttribute('data-decoded', im.filter(whole).length + '/' + im.length); });"
             "</script>")
    page = tmp_path / "probe.html"
    page.write_text((run / REPORT).read_text().replace("</body>", probe + "</body>"))
    res = subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r'data-decoded="(\d+)/(\d+)"', res.stdout)
    assert m, f"the page did not load in {browser}: {res.stdout[:500]} {res.stderr[-1000:]}"
    decoded, total = int(m.group(1)), int(m.group(2))
    assert total == 6 + 3 and decoded == total  # six figures, three rank lists
    assert "unreid run report" in res.stdout


def test_rebuild_from_the_command_line(run, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    (folder / REPORT).unlink()
    assert report_mod.main([str(folder)]) == 0
    text = (folder / REPORT).read_text()
    assert "Rebuilt from the run folder." in text and len(_images(text)) == 6 + 3
    assert "(size buckets of metrics.jsonl)" in text  # no trainer: the histogram of the record's buckets
    assert 'id="environment"' not in text
    assert report_mod.main([str(tmp_path / "nothing")]) == 2
    assert "holds no metrics.jsonl" in capsys.readouterr().err
