"""benchmarks/results_table.py --summary: mean ± sample std over the draws of each arm, by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import results_table  # noqa: E402


def _run(path: Path, before: float, maps: list[float], r1: float) -> str:
    path.mkdir(parents=True)
    rows = [{"epoch": -1, "test": {"mAP": before, "rank1": 0.0}}]
    rows += [{"epoch": e, "test": {"mAP": m, "rank1": r1}} for e, m in enumerate(maps)]
    rows.append({"epoch": len(maps), "losses": {"loss": 1.0}})  # an epoch without evaluation: not the last tested
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_summary_groups_draws_by_name_and_takes_the_last_evaluated_epoch(tmp_path, capsys):
    a1 = _run(tmp_path / "a1", 1.0, [5.0, 2.0], 10.0)
    a2 = _run(tmp_path / "a2", 2.0, [3.0, 4.0, 6.0], 20.0)
    b1 = _run(tmp_path / "b1", 0.5, [7.0], 30.0)
    results_table.main(["--summary", f"A={a1}", f"A={a2}", f"B={b1}"])
    out = capsys.readouterr().out.strip().splitlines()
    # A: last evaluated mAP 2 and 6 -> mean 4, sample std sqrt(((2-4)^2 + (6-4)^2) / 1) = 2.83; R1 10, 20 -> 15 ± 7.07;
    # gains 2-1 = 1 and 6-2 = 4 -> 2.5 ± 2.12
    assert out[2] == "| A | 2 | 1, 2 | 4.0 ± 2.8 | 15.0 ± 7.1 | 2.5 ± 2.1 |"
    assert out[3] == "| B | 1 | 0 | 7.0 (one draw) | 30.0 (one draw) | 6.5 (one draw) |"


def test_summary_refuses_a_run_without_an_evaluated_epoch(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.jsonl").write_text(json.dumps({"epoch": -1, "test": {"mAP": 1, "rank1": 1}}) + "\n")
    with pytest.raises(ValueError, match="no evaluated epoch"):
        results_table.main(["--summary", f"A={tmp_path / 'r'}"])
