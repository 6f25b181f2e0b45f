"""docs/RESULTS.md and the README's results table (benchmarks/results_page.py) and the metrics.jsonl
recovered from the record (benchmarks/recover_metrics.py); issue 35."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


page = _load("results_page")
recover = _load("recover_metrics")

RECORD = """# Study

## Data set A

```
# a comment in a code block, not a heading
```

### First study

#### the same, seed 2

| epoch | mAP | R1 | R5 | mINP | clusters | outliers % | cross-cam % | proxies | NMI | ARI | pair P | pair R | epoch s |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| before | 1.7 | 1.5 | 4.5 | 0.5 | – | – | – | – | – | – | – | – | – |
| 0 | 3.7 | 2.8 | 7.3 | 1.7 | 190 | 55.7 | 72.1 | 327 | 0.817 | 0.080 | 0.054 | 0.167 | 561 |

### Second study

#### the same, seed 2

| epoch | mAP | R1 | R5 | mINP | clusters | outliers % | cross-cam % | proxies | NMI | ARI | pair P | pair R | epoch s |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| 0 | 9.0 | 8.0 | 7.0 | 6.0 | 10 | 50.0 | 25.0 | – | 0.500 | 0.250 | 0.100 | 0.200 | 60 |

Side by side:

| epoch | run a mAP / R1 / x-cam % | run b mAP / R1 / x-cam % |
|---|---|---|
| before | 0.8 / 0.2 / – | 0.8 / 0.2 / – |
| 0 | 2.5 / 1.7 / 100.0 | 2.6 / 2.2 / 100.0 |
| 1 | 5.0 / 2.8 / 100.0 | – |
"""


def test_recover_per_run_table_after_a_section(tmp_path):
    f = tmp_path / "a.md"
    f.write_text(RECORD)
    recs = recover.recover(f, {"section": "Second study", "heading": "the same, seed 2"}, "docs/results/a.md")
    # GitHub numbers a repeated anchor: the second "the same, seed 2" is #the-same-seed-2-1
    assert recs == [{
        "epoch": 0, "mode": "unsupervised",
        "test": {"mAP": 9.0, "rank1": 8.0, "rank5": 7.0, "mINP": 6.0},
        "pseudo_labels": {"num_clusters": 10, "outlier_ratio": 0.5, "cross_camera_ratio": 0.25, "nmi": 0.5,
                          "ari": 0.25, "pairwise_precision": 0.1, "pairwise_recall": 0.2},
        "time_epoch_s": 60, "recovered_from": "docs/results/a.md#the-same-seed-2-1"}]
    first = recover.recover(f, {"heading": "the same, seed 2"}, "a.md")
    assert [r["epoch"] for r in first] == [-1, 0] and first[0]["test"] == {"mAP": 1.7, "rank1": 1.5, "rank5": 4.5,
                                                                            "mINP": 0.5}
    assert "pseudo_labels" not in first[0] and first[1]["pseudo_labels"]["num_proxies"] == 327
    assert first[1]["recovered_from"] == "a.md#the-same-seed-2"


def test_recover_side_by_side_column(tmp_path):
    f = tmp_path / "a.md"
    f.write_text(RECORD)
    spec = {"section": "Second study", "heading": "the same, seed 2", "column": "run b", "supervised": True}
    recs = recover.recover(f, spec, "a.md")
    assert [(r["epoch"], r["test"], r.get("pseudo_labels"), r["mode"]) for r in recs] == [
        (-1, {"mAP": 0.8, "rank1": 0.2}, None, "supervised"),
        (0, {"mAP": 2.6, "rank1": 2.2}, {"cross_camera_ratio": 1.0}, "supervised")]  # epoch 1: "–", left out
    spec = {"section": "Second study", "heading": "the same, seed 2", "column": "run a", "max_epoch": 0}
    assert [r["epoch"] for r in recover.recover(f, spec, "a.md")] == [-1, 0]
    with pytest.raises(ValueError, match="no column 'run c mAP / R1 / x-cam %'"):
        recover.recover(f, {**spec, "column": "run c"}, "a.md")
    with pytest.raises(ValueError, match="no heading 'nope'"):
        recover.recover(f, {"heading": "nope"}, "a.md")


def _draw(base: Path, run: str, maps: list[float], r1: list[float], times: list[float] | None) -> dict:
    rows = [{"epoch": -1, "test": {"mAP": 1.0, "rank1": 0.5}}]
    for e, (m, r) in enumerate(zip(maps, r1)):
        row = {"epoch": e, "test": {"mAP": m, "rank1": r}}
        if times:
            row["time_epoch_s"] = times[e]
        rows.append(row)
    (base / run).mkdir(parents=True)
    (base / run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"run": run}


def _manifest(base: Path) -> Path:
    manifest = {"datasets": [{
        "name": "Toy", "record": "toy.md", "about": "A toy set", "reference": "sup",
        "configs": [
            {"id": "u", "method": "unsupervised", "config": "u.yaml", "command": "unreid train u.yaml seed=S",
             "record": "toy.md#u", "draws": [_draw(base, "runs/u1", [5.0, 10.0], [4.0, 8.0], [60, 120]),
                                             _draw(base, "runs/u2", [6.0, 12.0], [5.0, 9.0], [120, 180])]},
            {"id": "sup", "method": "supervised", "config": "s.yaml", "command": "unreid train s.yaml",
             "record": "toy.md#s", "draws": [_draw(base, "runs/s1", [20.0], [18.0], None)]},
        ]}]}
    path = base / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def test_results_page_by_hand(tmp_path):
    manifest = _manifest(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:begin -->\nold table\n<!-- results:end -->\nrest\n")
    results = tmp_path / "RESULTS.md"
    assert page.main(["--manifest", str(manifest), "--readme", str(readme), "--results", str(results)]) == 0
    text = results.read_text()
    # last epochs 10 and 12: mean 11, sample std sqrt(2) = 1.41; Rank-1 8, 9: 8.5 +- 0.71
    # ratio 11 / 20 = 0.55; wall: (60 + 120) / 60 = 3 and (120 + 180) / 60 = 5 -> 4 min
    row = next(ln for ln in text.splitlines() if ln.startswith("| unsupervised"))
    assert row == ("| unsupervised | `u.yaml` | 2 | 11.0 ± 1.4 | 8.5 ± 0.7 | 0.55 × | 4 | "
                   "[record](results/toy.md#u) |")
    sup = next(ln for ln in text.splitlines() if ln.startswith("| supervised"))
    assert "| 1 | 20.0 | 18.0 | 1 (reference) | – |" in sup  # one draw: no ±; no epoch times: no wall
    assert "ImageNet weights before training: 1.0 mAP / 0.5 Rank-1." in text
    new = readme.read_text()
    assert new.startswith("intro\n<!-- results:begin -->\n") and new.endswith("<!-- results:end -->\nrest\n")
    assert "old table" not in new and "[record](docs/results/toy.md#u)" in new
    # --check: up to date now; stale after a draw changes
    assert page.main(["--manifest", str(manifest), "--readme", str(readme), "--results", str(results), "--check"]) == 0
    rows = (tmp_path / "runs/u2/metrics.jsonl").read_text().replace('"mAP": 12.0', '"mAP": 14.0')
    (tmp_path / "runs/u2/metrics.jsonl").write_text(rows)
    assert page.main(["--manifest", str(manifest), "--readme", str(readme), "--results", str(results), "--check"]) == 1


def test_readme_without_markers_is_an_error(tmp_path):
    manifest = _manifest(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="lacks the markers <!-- results:begin -->"):
        page.build(manifest, readme, tmp_path / "RESULTS.md")


def test_an_archived_metrics_file_is_never_overwritten(tmp_path, capsys):
    (tmp_path / "a.md").write_text(RECORD)
    (tmp_path / "runs/x").mkdir(parents=True)
    own = json.dumps({"epoch": 0, "test": {"mAP": 3.0, "rank1": 2.0}}) + "\n"
    (tmp_path / "runs/x/metrics.jsonl").write_text(own)
    manifest = {"datasets": [{"name": "A", "record": "a.md", "configs": [
        {"id": "x", "draws": [{"run": "runs/x", "recover": {"heading": "the same, seed 2"}}]}]}]}
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    assert recover.main(["--manifest", str(tmp_path / "manifest.yaml")]) == 2
    assert (tmp_path / "runs/x/metrics.jsonl").read_text() == own
    assert "never overwritten" in capsys.readouterr().err


def test_the_repository_pages_are_up_to_date():
    """docs/RESULTS.md and the README are what the script writes from the manifest (run it after a change)."""
    assert page.main(["--check"]) == 0


def test_the_recovered_files_are_what_the_record_says():
    """Every recovered metrics.jsonl of the manifest equals a fresh recovery from the record."""
    base = ROOT / "docs" / "results"
    manifest = yaml.safe_load((base / "manifest.yaml").read_text())
    n = 0
    for ds in manifest["datasets"]:
        for c in ds["configs"]:
            for d in c["draws"]:
                if d.get("recover"):
                    f = base / d["recover"].get("file", ds["record"])
                    want = recover.recover(f, d["recover"], f.relative_to(ROOT).as_posix())
                    got = [json.loads(ln) for ln in (base / d["run"] / "metrics.jsonl").read_text().splitlines()]
                    assert got == want, d["run"]
                    n += 1
    assert n >= 20


def test_demo_sentence_by_hand(tmp_path):
    manifest_path = _manifest(tmp_path)
    rows = [{"epoch": -1, "test": {"mAP": 26.3, "rank1": 28.9}},
            {"epoch": 0, "time_epoch_s": 30, "pseudo_labels": {"ari": 0.394, "cross_camera_ratio": 0.47}},
            {"epoch": 1, "time_epoch_s": 60, "test": {"mAP": 59.14, "rank1": 66.0},
             "pseudo_labels": {"ari": 0.651, "cross_camera_ratio": 0.806}}]
    (tmp_path / "runs/demo").mkdir(parents=True)
    (tmp_path / "runs/demo/metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["demo"] = {"run": "runs/demo", "measured": "on 2026-12-06 at commit abc"}
    manifest_path.write_text(yaml.safe_dump(manifest))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- demo:begin -->\nold\n<!-- demo:end -->\n<!-- results:begin -->\n<!-- results:end -->\n")
    text = page.build(manifest_path, readme, tmp_path / "RESULTS.md")[readme]
    # (30 + 60) s = 1.5 min
    assert ("<!-- demo:begin -->\nMeasured on 2026-12-06 at commit abc (`unreid demo`, archived in "
            "`docs/results/runs/demo/metrics.jsonl`): training epochs 1.5 min, mAP 26.3 → 59.1, Rank-1 28.9 → 66.0, "
            "pseudo-label ARI 0.39 → 0.65, cross-camera clusters 47 % → 81 %.\n<!-- demo:end -->") in text
    manifest["demo"]["wall"] = False
    manifest_path.write_text(yaml.safe_dump(manifest))
    assert "training epochs" not in page.build(manifest_path, readme, tmp_path / "RESULTS.md")[readme]
