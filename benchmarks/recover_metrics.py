"""Recover ``metrics.jsonl``-shaped records of old runs from the per-epoch tables of the results record.

The run folders behind the record (``docs/results/*.md``) are gone; only the markdown tables that
``benchmarks/results_table.py`` printed from their ``metrics.jsonl`` remain. For every draw of
``docs/results/manifest.yaml`` with a ``recover`` entry, this script reads that table back and writes
``docs/results/<run>/metrics.jsonl``, each record marked::

    "recovered_from": "docs/results/cuhk03-detected.md#lomo-seed-1"

so that ``benchmarks/results_page.py`` can build ``docs/RESULTS.md`` from metrics files like any new
run's. What a recovered record holds is what the table printed, at its precision (mAP / Rank-1 / Rank-5 /
mINP to 0.1 %, ratios to 0.1 %, NMI / ARI / pairwise precision and recall to 0.001, epoch times to 1 s);
from a side-by-side table only mAP, Rank-1 and the cross-camera cluster ratio. A ``metrics.jsonl``
that is not itself recovered (an archived run's own file) is never overwritten.

``recover`` entries (keys)::

    heading:   the text of the markdown heading the table follows (first match after ``section``)
    section:   optional: a heading text to start the search after (for repeated headings, "the same, seed 2")
    file:      optional: the record file holding it (default: the data set's ``record``)
    column:    optional: a side-by-side table's column ("<column> mAP / R1 / x-cam %"), else a per-run table
    max_epoch: optional: keep epochs up to this one (a longer run whose first epochs are the draw)
    supervised: optional: true for the supervised reference (``mode: supervised``)

Usage::

    python benchmarks/recover_metrics.py [--manifest docs/results/manifest.yaml]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "docs" / "results" / "manifest.yaml"

#: per-run table column -> (record section, key, scale applied to the printed number)
COLUMNS: dict[str, tuple[str | None, str, float]] = {
    "mAP": ("test", "mAP", 1.0),
    "R1": ("test", "rank1", 1.0),
    "R5": ("test", "rank5", 1.0),
    "mINP": ("test", "mINP", 1.0),
    "clusters": ("pseudo_labels", "num_clusters", 1.0),
    "outliers %": ("pseudo_labels", "outlier_ratio", 0.01),
    "cross-cam %": ("pseudo_labels", "cross_camera_ratio", 0.01),
    "proxies": ("pseudo_labels", "num_proxies", 1.0),
    "NMI": ("pseudo_labels", "nmi", 1.0),
    "ARI": ("pseudo_labels", "ari", 1.0),
    "pair P": ("pseudo_labels", "pairwise_precision", 1.0),
    "pair R": ("pseudo_labels", "pairwise_recall", 1.0),
    "epoch s": (None, "time_epoch_s", 1.0),
}
SIDE = " mAP / R1 / x-cam %"


def slug(text: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (``-`` and ``_`` kept), spaces -> ``-``."""
    s = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return s.replace(" ", "-")


def headings(lines: list[str]) -> list[tuple[int, str, str]]:
    """``(line index, heading text, anchor)`` of every markdown heading outside code fences; repeated
    anchors get GitHub's ``-1``, ``-2`` suffixes."""
    out, seen, fence = [], {}, False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fence = not fence
            continue
        m = None if fence else re.match(r"(#{1,6}) (.*)", line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.append((i, m.group(2).strip(), base if n == 0 else f"{base}-{n}"))
    return out


def _number(cell: str, scale: float) -> float | int | None:
    cell = cell.strip().strip("*")
    if cell in ("–", "-", ""):
        return None
    v = float(cell) * scale
    return int(v) if scale == 1.0 and re.fullmatch(r"-?\d+", cell) else round(v, 6)


def tables_under(lines: list[str], start: int) -> list[list[list[str]]]:
    """The markdown tables between the heading at line ``start`` and the next heading (code blocks
    skipped); each table is its rows of cells, header row first, separator row dropped."""
    tables: list[list[list[str]]] = []
    fence, current = False, None
    for line in lines[start + 1:]:
        if line.startswith("```"):
            fence = not fence
        if not fence and re.match(r"#{1,6} ", line):
            break
        if not fence and line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if current is None:
                current = []
                tables.append(current)
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        else:
            current = None
    return tables


def recover(record_file: Path, spec: dict[str, Any], rel: str) -> list[dict[str, Any]]:
    """Records (one per table row) for one ``recover`` spec; ``rel`` is the record's path for ``recovered_from``.

    Raises:
        ValueError: the heading, the table or the column is not found (named in the message).
    """
    lines = record_file.read_text().splitlines()
    hs = headings(lines)
    after = -1
    if spec.get("section"):
        found = [i for i, text, _ in hs if text.startswith(spec["section"])]
        if not found:
            raise ValueError(f"{record_file}: no heading starting with {spec['section']!r}")
        after = found[0]
    match = [(i, a) for i, text, a in hs if i > after and text == spec["heading"]]
    if not match:
        raise ValueError(f"{record_file}: no heading {spec['heading']!r} (after {spec.get('section')!r})")
    line, anchor = match[0]
    tables = tables_under(lines, line)
    if spec.get("column"):  # the first table under the heading with that column
        tables = [t for t in tables if spec["column"] + SIDE in t[0]] or tables
    if not tables:
        raise ValueError(f"{record_file}#{anchor}: no table under the heading")
    head, body = tables[0][0], tables[0][1:]
    if head[0] != "epoch":
        raise ValueError(f"{record_file}#{anchor}: the table's first column is {head[0]!r}, not 'epoch'")
    out = []
    for cells in body:
        epoch = -1 if cells[0] == "before" else int(cells[0])
        if spec.get("max_epoch") is not None and epoch > spec["max_epoch"]:
            continue
        rec: dict[str, Any] = {"epoch": epoch, "mode": "supervised" if spec.get("supervised") else "unsupervised"}
        if spec.get("column"):
            name = spec["column"] + SIDE
            if name not in head:
                raise ValueError(f"{record_file}#{anchor}: no column {name!r}; columns: {head[1:]}")
            cell = cells[head.index(name)]
            if cell.strip() == "–":
                continue  # the run has no such epoch
            parts = [p.strip() for p in cell.split("/")]
            m_ap, r1, xcam = (_number(p, s) for p, s in zip(parts, (1.0, 1.0, 0.01)))
            rec["test"] = {"mAP": m_ap, "rank1": r1}
            if xcam is not None:
                rec["pseudo_labels"] = {"cross_camera_ratio": xcam}
        else:
            for name, cell in zip(head[1:], cells[1:]):
                if name not in COLUMNS:
                    raise ValueError(f"{record_file}#{anchor}: unknown column {name!r}")
                section, key, scale = COLUMNS[name]
                v = _number(cell, scale)
                if v is None:
                    continue
                if section is None:
                    rec[key] = v
                else:
                    rec.setdefault(section, {})[key] = v
        rec["recovered_from"] = f"{rel}#{anchor}"
        out.append(rec)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    args = ap.parse_args(argv)
    manifest = yaml.safe_load(args.manifest.read_text())
    base = args.manifest.parent
    for ds in manifest["datasets"]:
        for c in ds["configs"]:
            for draw in c["draws"]:
                spec = draw.get("recover")
                if not spec:
                    continue
                record_file = base / spec.get("file", ds["record"])
                rel = record_file.resolve().relative_to(ROOT).as_posix() if record_file.resolve().is_relative_to(
                    ROOT) else record_file.name
                target = base / draw["run"] / "metrics.jsonl"
                if target.exists():
                    first = target.read_text().splitlines()[:1]
                    if not first or "recovered_from" not in json.loads(first[0]):
                        print(f"error: {target} is an archived run's own metrics.jsonl, not a recovered one; "
                              "it is never overwritten", file=sys.stderr)
                        return 2
                records = recover(record_file, spec, rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("".join(json.dumps(r) + "\n" for r in records))
                print(f"{target.relative_to(base)}: {len(records)} records from {records[0]['recovered_from']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
