"""Build ``docs/RESULTS.md`` and the README's results table from the runs' ``metrics.jsonl``.

Reads ``docs/results/manifest.yaml``: per data set, the recommended configs, each with its command and
the ``metrics.jsonl`` of every draw (``docs/results/<run>/metrics.jsonl``; old runs' files were
recovered from the record by ``benchmarks/recover_metrics.py`` and say so). Per data set it writes one
table: method, config, draws, mAP and Rank-1 of the last epoch as mean ± standard deviation over the
draws (sample standard deviation, n - 1; a single draw shows no ±), the ratio of the mean mAP to the mean
mAP of the data set's supervised reference, the mean wall time of a draw's training epochs, and a link
into the record (``docs/results/*.md``). The same tables go into ``README.md`` between the markers
``<!-- results:begin -->`` and ``<!-- results:end -->``; with a ``demo`` entry in the manifest, the
README's demo sentence between ``<!-- demo:begin -->`` and ``<!-- demo:end -->`` too.

Nothing is typed by hand: change the manifest (or archive a new run's metrics.jsonl under
``docs/results/runs/``) and run::

    python benchmarks/results_page.py            # rewrite docs/RESULTS.md and README.md
    python benchmarks/results_page.py --check    # exit 1 if either is not what the script would write
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "docs" / "results" / "manifest.yaml"
RESULTS_BEGIN, RESULTS_END = "<!-- results:begin -->", "<!-- results:end -->"
DEMO_BEGIN, DEMO_END = "<!-- demo:begin -->", "<!-- demo:end -->"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (the last record of a repeated epoch kept), in epoch order.

    Raises:
        FileNotFoundError: ``path`` is missing (run ``benchmarks/recover_metrics.py`` for recovered draws).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: archive the run's metrics.jsonl there, or run "
                                "benchmarks/recover_metrics.py for a draw recovered from the record")
    by_epoch = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            by_epoch[r["epoch"]] = r
    return [by_epoch[e] for e in sorted(by_epoch)]


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """``(mean, sample standard deviation)``; the deviation is ``None`` for one value."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _pm(values: list[float]) -> str:
    m, s = mean_std(values)
    return f"{m:.1f}" if s is None else f"{m:.1f} ± {s:.1f}"


def summarise(base: Path, config: dict[str, Any]) -> dict[str, Any]:
    """One config's figures from its draws' ``metrics.jsonl``: ``map``, ``rank1`` (lists over draws, the
    last epoch with a test evaluation), ``before`` (``(mAP, Rank-1)`` of the first draw's evaluation
    before training, or ``None``), ``wall_min`` (mean over the draws with epoch times of the sum of their
    ``time_epoch_s``, minutes; ``None`` when no draw has them), ``epochs`` (last epoch + 1 of each draw),
    ``recovered`` (how many draws were recovered from the record)."""
    maps, r1s, walls, epochs, recovered, before = [], [], [], [], 0, None
    for draw in config["draws"]:
        rows = read_metrics(base / draw["run"] / "metrics.jsonl")
        tested = [r for r in rows if r.get("test") and r["epoch"] >= 0]
        if not tested:
            raise ValueError(f"{draw['run']}: no evaluated epoch in its metrics.jsonl")
        last = tested[-1]
        maps.append(float(last["test"]["mAP"]))
        r1s.append(float(last["test"]["rank1"]))
        epochs.append(last["epoch"] + 1)
        times = [r["time_epoch_s"] for r in rows if r["epoch"] >= 0 and r.get("time_epoch_s") is not None]
        if times and len(times) == len([r for r in rows if r["epoch"] >= 0]):
            walls.append(sum(times) / 60)
        recovered += any("recovered_from" in r for r in rows)
        if before is None:
            b = next((r for r in rows if r["epoch"] < 0 and r.get("test")), None)
            before = None if b is None else (b["test"]["mAP"], b["test"]["rank1"])
    return {"map": maps, "rank1": r1s, "before": before, "epochs": epochs, "recovered": recovered,
            "wall_min": sum(walls) / len(walls) if walls else None, "wall_draws": len(walls)}


def dataset_table(ds: dict[str, Any], base: Path, link_prefix: str) -> tuple[str, list[dict[str, Any]]]:
    """The markdown table of one data set and the summaries of its configs (in manifest order).
    ``link_prefix`` is the path from the page to ``docs/results/`` (``"results/"`` or ``"docs/results/"``)."""
    sums = [summarise(base, c) for c in ds["configs"]]
    ref = None
    if ds.get("reference"):
        ids = [c["id"] for c in ds["configs"]]
        if ds["reference"] not in ids:
            raise ValueError(f"{ds['name']}: reference {ds['reference']!r} is not one of its configs {ids}")
        ref = mean_std(sums[ids.index(ds["reference"])]["map"])[0]
    lines = ["| method | config | draws | mAP | Rank-1 | × supervised mAP | wall (min / draw) | record |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for c, s in zip(ds["configs"], sums):
        is_ref = ds.get("reference") == c["id"]
        ratio = "1 (reference)" if is_ref else ("–" if ref is None else f"{mean_std(s['map'])[0] / ref:.2f} ×")
        wall = "–" if s["wall_min"] is None else f"{s['wall_min']:.0f}" + (
            f" ({s['wall_draws']} of {len(s['map'])})" if s["wall_draws"] < len(s["map"]) else "")
        draws = f"{len(s['map'])}" + (" ᴿ" if s["recovered"] else "")
        lines.append(f"| {c['method']} | `{c['config']}` | {draws} | {_pm(s['map'])} | {_pm(s['rank1'])} | "
                     f"{ratio} | {wall} | [record]({link_prefix}{c['record']}) |")
    return "\n".join(lines), sums


def _before(sums: list[dict[str, Any]]) -> str:
    b = next((s["before"] for s in sums if s["before"] is not None), None)
    return "" if b is None else f" ImageNet weights before training: {b[0]:.1f} mAP / {b[1]:.1f} Rank-1."


def results_page(manifest: dict[str, Any], base: Path) -> str:
    """The text of ``docs/RESULTS.md``."""
    out = [
        "# Results",
        "",
        "<!-- generated by benchmarks/results_page.py from docs/results/manifest.yaml: do not edit by hand -->",
        "",
        "What the recommended configs reach on each data set, on the project's 2-core development machine "
        "(no GPU). mAP and Rank-1 are the **last epoch** of each run (the model `eval.select=last` keeps; never "
        "chosen on test results), as **mean ± standard deviation over the draws** (seeds; sample standard "
        "deviation). *× supervised mAP*: mean mAP over the mean mAP of the supervised reference (same budget, "
        "true identities: the upper bound). *Wall*: a draw's training epochs (evaluation included), in minutes; "
        "the runs shared the two cores with other runs, so these are upper bounds, not speed figures "
        "(`docs/BENCHMARKS.md`). Ground-truth identities are used only to report pseudo-label quality.",
        "",
        "ᴿ: the draws' run folders are gone; their `metrics.jsonl` were **recovered from the per-epoch tables "
        "of the record** (`benchmarks/recover_metrics.py`, each record marked `recovered_from`), so the "
        "figures carry the tables' precision (0.1). New runs archive their own `metrics.jsonl` under "
        "`docs/results/runs/`.",
        "",
        "The full lab record, every experiment with its command, per-epoch tables and reasoning: "
        + ", ".join(f"[{d['name']}](results/{d['record']})" for d in manifest["datasets"])
        + " ([index](results/README.md)). Rebuild this page with `python benchmarks/results_page.py`.",
    ]
    for ds in manifest["datasets"]:
        table, sums = dataset_table(ds, base, "results/")
        out += ["", f"## {ds['name']}", "", ds["about"].strip() + "." + _before(sums), "", table, "",
                "Commands (`S` = the seed of each draw):", "", "```"]
        out += [c["command"].strip() for c in ds["configs"]]
        out += ["```"]
        notes = [f"{c['id']}: {d['note']}" for c in ds["configs"] for d in c["draws"] if d.get("note")]
        if notes:
            out += ["", "Draw notes: " + "; ".join(notes) + "."]
    return "\n".join(out) + "\n"


def readme_block(manifest: dict[str, Any], base: Path) -> str:
    """The README's results tables (between :data:`RESULTS_BEGIN` and :data:`RESULTS_END`)."""
    out = ["<!-- generated by benchmarks/results_page.py (docs/results/manifest.yaml): do not edit by hand -->",
           "Last epoch, mean ± standard deviation over the draws (ᴿ: recovered from the record's tables; see "
           "[docs/RESULTS.md](docs/RESULTS.md) for how each figure is made and the commands)."]
    for ds in manifest["datasets"]:
        table, sums = dataset_table(ds, base, "docs/results/")
        out += ["", f"**{ds['name']}**.{_before(sums)}", "", table]
    return "\n".join(out)


def demo_sentence(demo: dict[str, Any], base: Path) -> str:
    """The README's demo figures from the archived ``metrics.jsonl`` of an ``unreid demo`` run (``demo``: the
    manifest's entry: ``run``, ``measured`` (when / where / which commit), ``wall`` (false: leave the time out,
    e.g. for a run on a machine shared with other jobs))."""
    rows = read_metrics(base / demo["run"] / "metrics.jsonl")
    before = next(r for r in rows if r["epoch"] < 0 and r.get("test"))["test"]
    last = [r for r in rows if r["epoch"] >= 0 and r.get("test")][-1]
    pls = [r["pseudo_labels"] for r in rows if r.get("pseudo_labels")]
    wall = sum(r.get("time_epoch_s") or 0 for r in rows) / 60
    ari = f", pseudo-label ARI {pls[0]['ari']:.2f} → {pls[-1]['ari']:.2f}" if pls and pls[0].get("ari") is not None \
        and pls[-1].get("ari") is not None else ""
    xcam = (f", cross-camera clusters {100 * pls[0]['cross_camera_ratio']:.0f} % → "
            f"{100 * pls[-1]['cross_camera_ratio']:.0f} %") if pls and pls[-1].get("cross_camera_ratio") is not None else ""
    timing = f"training epochs {wall:.1f} min, " if demo.get("wall", True) else ""
    return (f"Measured {demo['measured']} (`unreid demo`, archived in `docs/results/{demo['run']}/metrics.jsonl`): "
            f"{timing}mAP {before['mAP']:.1f} → {last['test']['mAP']:.1f}, Rank-1 "
            f"{before['rank1']:.1f} → {last['test']['rank1']:.1f}{ari}{xcam}.")


def replace_between(text: str, begin: str, end: str, body: str, where: str) -> str:
    """``text`` with what lies between the markers ``begin`` and ``end`` replaced by ``body``.

    Raises:
        ValueError: a marker is missing (``where`` names the file).
    """
    if begin not in text or end not in text:
        raise ValueError(f"{where} lacks the markers {begin} ... {end}; put them where the generated text goes")
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    return pattern.sub(lambda _: f"{begin}\n{body}\n{end}", text, count=1)


def build(manifest_path: Path = MANIFEST, readme: Path = ROOT / "README.md",
          results: Path = ROOT / "docs" / "RESULTS.md") -> dict[Path, str]:
    """``{path: new text}`` of the results page and the README."""
    manifest = yaml.safe_load(manifest_path.read_text())
    base = manifest_path.parent
    text = readme.read_text()
    text = replace_between(text, RESULTS_BEGIN, RESULTS_END, readme_block(manifest, base), str(readme))
    if manifest.get("demo"):
        text = replace_between(text, DEMO_BEGIN, DEMO_END, demo_sentence(manifest["demo"], base), str(readme))
    return {results: results_page(manifest, base), readme: text}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--results", type=Path, default=ROOT / "docs" / "RESULTS.md")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file is out of date")
    args = ap.parse_args(argv)
    stale = []
    for path, text in build(args.manifest, args.readme, args.results).items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
            print(f"wrote {path}")
    if args.check and stale:
        print("out of date (run python benchmarks/results_page.py): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
