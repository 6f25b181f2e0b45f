"""benchmarks/gcl_cuhk03.sh: which runs it skips, resumes or starts (issue 32's runs go on across sessions).

The script is run with stand-ins for ``unreid`` and ``python`` on ``PATH`` that only record their arguments,
over a run folder laid out as an interrupted series would leave it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run_script(tmp_path: Path, seeds: str, **env_extra: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run the script over ``tmp_path/out`` with stand-ins for ``unreid`` and ``python`` on ``PATH``; the finished
    process and every stand-in call as its argument list (the command's name first, argument boundaries kept)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    for name in ("unreid", "python"):  # one line per call, the arguments tab-separated
        (bin_dir / name).write_text(f'#!/bin/sh\nprintf "%s" "$(basename "$0")" >> "{calls}"\n'
                                    f'for a in "$@"; do printf "\\t%s" "$a"; done >> "{calls}"\n'
                                    f'echo >> "{calls}"\n')
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **env_extra)
    proc = subprocess.run(["bash", "benchmarks/gcl_cuhk03.sh", str(tmp_path / "out"), seeds], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    lines = calls.read_text().splitlines() if calls.exists() else []
    return proc, [line.split("\t") for line in lines]


def _train_runs(calls: list[list[str]]) -> dict[str, list[str]]:
    """The ``unreid train`` calls by the name of their ``output_dir``."""
    runs = {}
    for args in calls:
        if args[:2] == ["unreid", "train"]:
            folder = next(a for a in args if a.startswith("output_dir=")).split("=", 1)[1]
            runs[Path(folder).name] = args
    return runs


def test_skips_finished_resumes_started_and_starts_new_runs(tmp_path):
    out = tmp_path / "out"
    (out / "cc_warm").mkdir(parents=True)  # finished: model_best.pth and the log's last line
    (out / "cc_warm" / "model_best.pth").write_bytes(b"")
    (out / "cc_warm" / "train.log").write_text("10:00:00 INFO training [unsupervised] finished in 100.0s\n")
    (out / "cc_stage2").mkdir()  # interrupted after an epoch: has a checkpoint
    (out / "cc_stage2" / "checkpoint_last.pth").write_bytes(b"")
    (out / "cc_s1").mkdir()  # killed before its first epoch was committed: only config.yaml
    (out / "cc_s1" / "config.yaml").write_text("seed: 1\n")
    proc, calls = _run_script(tmp_path, "1 2", ARMS="cc", STAGE3_PARALLEL="0")
    assert proc.returncode == 0, proc.stderr
    assert f"{out}/cc_warm: finished, skipped" in proc.stdout
    runs = _train_runs(calls)
    assert set(runs) == {"cc_stage2", "cc_s1", "cc_s2"}  # the finished warm start is not run again
    assert "--resume" in runs["cc_stage2"]  # has a checkpoint
    assert "--resume" in runs["cc_s1"]  # started, no checkpoint: a fresh start would refuse its folder
    assert "--resume" not in runs["cc_s2"]  # never started
    assert f"method.gcl.init_checkpoint={out}/cc_warm/model_best.pth" in runs["cc_stage2"]
    assert f"method.gcl.stage2_checkpoint={out}/cc_stage2/checkpoint_last.pth" in runs["cc_s2"]
    assert "seed=2" in runs["cc_s2"]
    summary = [args for args in calls if args[0] == "python"]
    assert summary and f"cc_warm={out}/cc_warm" in summary[0] and f"gcl_from_cc={out}/cc_s2" in summary[0]


def test_stage_extras_reach_only_their_stage(tmp_path):
    proc, calls = _run_script(tmp_path, "1", ARMS="cc", STAGE3_PARALLEL="0",
                              STAGE2_EXTRA="method.gcl.generator_epochs=2",
                              STAGE3_EXTRA="method.gcl.joint_epochs=1 eval.every=2")
    assert proc.returncode == 0, proc.stderr
    runs = _train_runs(calls)
    assert set(runs) == {"cc_warm", "cc_stage2", "cc_s1"}
    assert "method.gcl.generator_epochs=2" in runs["cc_stage2"]
    assert "method.gcl.joint_epochs=0" in runs["cc_stage2"]  # the script's own stage-2 override stays
    assert {"method.gcl.joint_epochs=1", "eval.every=2"} <= set(runs["cc_s1"])  # split into two overrides
    assert "method.gcl.generator_epochs=0" in runs["cc_s1"]
    assert not any("joint_epochs=1" in a or "eval.every" in a for a in runs["cc_stage2"] + runs["cc_warm"])
    assert not any("generator_epochs=2" in a for a in runs["cc_s1"] + runs["cc_warm"])
