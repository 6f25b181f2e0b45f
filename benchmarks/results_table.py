"""Markdown tables for the results record (docs/results/*.md) from the ``metrics.jsonl`` of finished runs.

Every number comes from the runs' own ``metrics.jsonl`` (written by ``unreid train``); nothing is
typed by hand. Usage::

    python benchmarks/results_table.py NAME=RUN_DIR [NAME=RUN_DIR ...] [--side-by-side | --summary]

prints, per run, one row per epoch (test mAP / Rank-1 / Rank-5 / mINP and the pseudo-label report),
with ``--side-by-side`` one table with the mAP / Rank-1 / cross-camera ratio of every run per
epoch, and with ``--summary`` one row per arm (the runs given under the same NAME are its draws): mean ±
sample standard deviation of the last evaluated epoch's mAP and Rank-1 and of its gain over the run's own
"before training" evaluation. A run folder written in supervised mode is found under its ``-SUPERVISED`` name as well.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load_rows(run: Path) -> list[dict]:
    """The records of ``run/metrics.jsonl`` (``run-SUPERVISED`` when ``run`` does not exist).

    Raises:
        FileNotFoundError: neither folder holds a ``metrics.jsonl``.
    """
    for cand in (run, run.with_name(run.name + "-SUPERVISED")):
        f = cand / "metrics.jsonl"
        if f.is_file():
            return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    raise FileNotFoundError(f"no metrics.jsonl in {run} (nor {run.name}-SUPERVISED): has the run started?")


def _f(x, nd=1, scale=1.0):
    return "–" if x is None else f"{x * scale:.{nd}f}"


def per_epoch_table(rows: list[dict]) -> str:
    """Markdown table, one row per ``metrics.jsonl`` record: test metrics in % (mAP, Rank-1/5, mINP),
    the pseudo-label report (ratios in %, NMI / ARI / pairwise precision and recall as fractions) and
    the epoch's wall time in seconds; "–" where a record has no such entry."""
    head = ("| epoch | mAP | R1 | R5 | mINP | clusters | outliers % | cross-cam % | proxies | NMI | ARI "
            "| pair P | pair R | epoch s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        t = r.get("test") or {}
        p = r.get("pseudo_labels") or {}
        ep = "before" if r["epoch"] < 0 else str(r["epoch"])
        lines.append("| " + " | ".join([
            ep, _f(t.get("mAP")), _f(t.get("rank1")), _f(t.get("rank5")), _f(t.get("mINP")),
            str(p.get("num_clusters", "–")), _f(p.get("outlier_ratio"), 1, 100),
            _f(p.get("cross_camera_ratio"), 1, 100), str(p.get("num_proxies", "–")),
            _f(p.get("nmi"), 3), _f(p.get("ari"), 3), _f(p.get("pairwise_precision"), 3),
            _f(p.get("pairwise_recall"), 3), _f(r.get("time_epoch_s"), 0),
        ]) + " |")
    return "\n".join(lines)


def side_by_side(runs: dict[str, list[dict]]) -> str:
    """Markdown table with one column per run (``name -> records``): ``mAP / Rank-1 / cross-camera
    cluster ratio`` (all %) for every epoch any run has; "–" where a run lacks that epoch."""
    names = list(runs)
    head = "| epoch | " + " | ".join(f"{n} mAP / R1 / x-cam %" for n in names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 1)]
    epochs = sorted({r["epoch"] for rows in runs.values() for r in rows})
    for e in epochs:
        cells = []
        for n in names:
            r = next((x for x in runs[n] if x["epoch"] == e), None)
            if r is None:
                cells.append("–")
                continue
            t = r.get("test") or {}
            p = r.get("pseudo_labels") or {}
            cells.append(f"{_f(t.get('mAP'))} / {_f(t.get('rank1'))} / {_f(p.get('cross_camera_ratio'), 1, 100)}")
        lines.append(f"| {'before' if e < 0 else e} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _last_test(rows: list[dict]) -> tuple[dict, dict | None]:
    """``(last evaluated epoch's record, the "before training" record or None)`` of one run.

    Raises:
        ValueError: the run has no evaluated epoch.
    """
    tested = [r for r in rows if r.get("test") and r["epoch"] >= 0]
    if not tested:
        raise ValueError("a run has no evaluated epoch yet (no 'test' entry in its metrics.jsonl)")
    before = next((r for r in rows if r["epoch"] < 0 and r.get("test")), None)
    return tested[-1], before


def _mean_std(xs: list[float]) -> str:
    """``mean ± sample std`` (``results_page.mean_std``: ddof 1) with one decimal; "(one draw)" for one."""
    from results_page import mean_std

    m, sd = mean_std(xs)
    return f"{m:.1f} (one draw)" if sd is None else f"{m:.1f} ± {sd:.1f}"


def summary(arms: dict[str, list[list[dict]]]) -> str:
    """Markdown table, one row per arm (``name -> [records of each draw]``): the draws' last evaluated epochs,
    then mean ± sample std (ddof 1, in %) over the draws of that epoch's mAP and Rank-1 and of its mAP gain over
    the draw's own evaluation before training ("–" where a draw has none)."""
    head = "| arm | draws | last epoch | mAP | R1 | mAP gain over its start |"
    lines = [head, "|---|---|---|---|---|---|"]
    for name, draws in arms.items():
        last = [_last_test(rows) for rows in draws]
        maps = [r["test"]["mAP"] for r, _ in last]
        r1s = [r["test"]["rank1"] for r, _ in last]
        gains = [r["test"]["mAP"] - b["test"]["mAP"] for r, b in last if b is not None]
        lines.append(f"| {name} | {len(draws)} | {', '.join(str(r['epoch']) for r, _ in last)} | {_mean_std(maps)} "
                     f"| {_mean_std(r1s)} | {_mean_std(gains) if len(gains) == len(last) else '–'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--side-by-side", action="store_true")
    mode.add_argument("--summary", action="store_true", help="one row per NAME (its runs are the draws): mean ± std")
    args = ap.parse_args(argv)
    runs: dict[str, list[dict]] = {}
    arms: dict[str, list[list[dict]]] = {}
    for spec in args.runs:
        if "=" not in spec:
            ap.error(f"expected NAME=RUN_DIR, got {spec!r}")
        name, path = spec.split("=", 1)
        runs[name] = load_rows(Path(path))
        arms.setdefault(name, []).append(runs[name])
    if args.summary:
        print(summary(arms))
        return
    if args.side_by_side:
        print(side_by_side(runs))
        return
    for name, rows in runs.items():
        print(f"\n#### {name}\n")
        print(per_epoch_table(rows))


if __name__ == "__main__":
    main()
