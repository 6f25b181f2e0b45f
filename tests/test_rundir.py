"""Run folders that never mix (issue 29; docs/RELIABILITY.md): --overwrite moves the old run aside, one
commit per epoch (kills between the writes are repaired on --resume), resume refuses another config,
a failure before the first checkpoint can be resumed, orphan temporary files go away."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import metrics_rows, tiny_overrides
from unreid.cli import main
from unreid.config import load_config
from unreid.engine import Trainer
from unreid.engine.checkpoint import FAULT_ENV, load_checkpoint, save_checkpoint
from unreid.engine.rundir import RESUME_MAY_DIFFER, RunDir, RunMismatch, config_differences

ROOT = Path(__file__).resolve().parents[1]
#: one epoch of one step: the shortest run that commits an epoch (a batch of 8 fits the tiny set's clusters)
ONE = {"optim.epochs": 1, "optim.iters": 1, "data.batch_size": 8}


def _args(root, out, **extra) -> list[str]:
    """``unreid train`` arguments of the tiny run (the defaults + ``tiny_overrides``)."""
    cfg = Path(out).parent / "run.yaml"
    if not cfg.exists():
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text("name: run\n")
    return ["train", str(cfg), *tiny_overrides(root, out, **{**ONE, **extra})]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _one_line_error(err: str) -> bool:
    return "Traceback" not in err and len([ln for ln in err.splitlines() if ln.strip()]) <= 2


@pytest.fixture(scope="module")
def finished(synthetic_root, tmp_path_factory) -> Path:
    """A finished one-epoch run (copy it before changing it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    Trainer(load_config(None, tiny_overrides(synthetic_root, out, **ONE))).train()
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def test_finished_run_agrees_and_counts_unreadable_images(finished):
    ckpt = load_checkpoint(finished / "checkpoint_last.pth")
    assert ckpt["metrics"] == (finished / "metrics.jsonl").read_text()  # the commit holds the records
    assert [r["epoch"] for r in metrics_rows(finished)] == [-1, 0]
    assert all(r["unreadable_images"] == 0 for r in metrics_rows(finished))
    assert load_checkpoint(finished / "model_best.pth")["epoch"] == ckpt["epoch"] == 1
    assert not [p for p in finished.iterdir() if p.name.endswith(".tmp")]


def test_plain_rerun_is_refused_and_touches_nothing(finished, tmp_path, synthetic_root, capsys):
    run = _copy(finished, tmp_path)
    before = _snapshot(run)
    assert main(_args(synthetic_root, run)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--resume" in err and "--overwrite" in err and _one_line_error(err)
    assert _snapshot(run) == before


def test_failed_overwrite_never_mixes_with_the_old_run(finished, tmp_path, synthetic_root, capsys):
    """Issue 29.1: --overwrite moved nothing aside, the new run failed (no clusters), --resume then
    continued the OLD run. Now the old run is moved aside whole, and --resume restarts the new one."""
    run = _copy(finished, tmp_path)
    old = _snapshot(run)
    bad = {"pseudo_labels.min_samples": 1000, "pseudo_labels.on_no_clusters": "keep"}  # no cluster at epoch 0
    assert main(_args(synthetic_root, run, **bad) + ["--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "no cluster" in err and "no epoch was completed" in err and "Traceback" not in err
    # the message no longer suggests on_no_clusters=keep when it is set already
    assert "has no previous labels" in err and "set pseudo_labels.on_no_clusters=keep" not in err
    backups = sorted(tmp_path.glob("run.replaced-*"))
    assert len(backups) == 1 and _snapshot(backups[0]) == old  # the old run, byte for byte
    assert not (run / "checkpoint_last.pth").exists() and not (run / "model_best.pth").exists()
    assert [r["epoch"] for r in metrics_rows(run)] == [-1]
    assert load_config(run / "config.yaml").pseudo_labels.min_samples == 1000
    # --resume restarts the new run (and fails the same way): it never continues the old one
    assert main(_args(synthetic_root, run, **bad) + ["--resume"]) == 1
    assert "no epoch was completed" in capsys.readouterr().err
    assert [r["epoch"] for r in metrics_rows(run)] == [-1]  # one record before training, not two
    assert not (run / "checkpoint_last.pth").exists()
    assert _snapshot(backups[0]) == old


#: replays the last commit of the finished run in a fresh process (the real RunDir.commit, the trainer's
#: own checkpoint and record), so that UNREID_FAULT can kill it between two writes
_REPLAY = """
import json, sys
from unreid.engine.checkpoint import load_checkpoint
from unreid.engine.rundir import RunDir
ckpt = load_checkpoint(sys.argv[1])
lines = ckpt.pop("metrics").splitlines(True)
run = RunDir(sys.argv[2])
run.metrics = "".join(lines[:-1])
run.commit(ckpt, json.loads(lines[-1]), best=True)
"""


@pytest.mark.parametrize("fault, lost", [
    ("after_checkpoint", {"model_best.pth", "record"}),  # committed; best model and record not yet written
    ("after_best", {"record"}),  # committed, best model written, record not yet appended
    ("checkpoint_tmp:2", {"model_best.pth", "record"}),  # killed writing model_best.pth: orphan .tmp left
])
@pytest.mark.slow
def test_kill_between_the_writes_is_repaired_on_resume(fault, lost, finished, tmp_path, synthetic_root, capsys):
    """Issue 29.2 / 29.5: SIGKILL at each point between the epoch's writes (the last epoch of the run);
    --resume repairs the folder from the checkpoint (the commit) instead of calling a run with missing
    outputs finished, and removes the orphan temporary file."""
    out = _copy(finished, tmp_path)
    for name in ("checkpoint_last.pth", "model_best.pth"):  # the folder as it was before the last commit
        (out / name).unlink()
    (out / "metrics.jsonl").write_text((finished / "metrics.jsonl").read_text().splitlines(True)[0])
    env = {**os.environ, FAULT_ENV: fault, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _REPLAY, str(finished / "checkpoint_last.pth"), str(out)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (out / "checkpoint_last.pth").is_file()
    assert ("model_best.pth" in lost) != (out / "model_best.pth").is_file()
    assert [r["epoch"] for r in metrics_rows(out)] == [-1]  # the final record is not there yet
    assert bool([p for p in out.iterdir() if p.name.endswith(".tmp")]) == fault.startswith("checkpoint_tmp")

    assert main(_args(synthetic_root, out) + ["--resume"]) == 0
    capsys.readouterr()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # orphans removed
    # nothing retrained: the folder is now exactly the uninterrupted run's
    assert _snapshot(out).keys() == _snapshot(finished).keys()
    for name in ("checkpoint_last.pth", "metrics.jsonl"):
        assert (out / name).read_bytes() == (finished / name).read_bytes(), name
    best, want = load_checkpoint(out / "model_best.pth"), load_checkpoint(finished / "model_best.pth")
    assert best["epoch"] == want["epoch"] == 1
    for k, v in want["model"].items():
        assert torch.equal(best["model"][k], v), k


def test_resume_with_another_config_is_refused_before_anything_is_touched(finished, tmp_path, synthetic_root,
                                                                          capsys):
    """Issue 29.4: config.yaml was rewritten, then a size-mismatch traceback."""
    run = _copy(finished, tmp_path)
    before = _snapshot(run)
    assert main(_args(synthetic_root, run, **{"model.backbone": "resnet34", "data.height": 32}) + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: refusing to resume") and _one_line_error(err)
    assert "model.backbone (run: 'resnet18', this config: 'resnet34')" in err and "data.height" in err
    assert _snapshot(run) == before
    cfg = load_config(None, tiny_overrides(synthetic_root, run, **ONE))
    with pytest.raises(RunMismatch, match="optim.iters"):
        RunDir(run).prepare(load_config(None, tiny_overrides(synthetic_root, run, **{**ONE, "optim.iters": 2})),
                            resume=True)
    # keys of RESUME_MAY_DIFFER pass the check
    ok = load_config(None, tiny_overrides("/elsewhere", tmp_path / "moved", **{
        **ONE, "optim.epochs": 3, "data.workers": 1, "log_every": 5, "eval.every": 2}))
    assert set(config_differences(cfg, ok)) <= RESUME_MAY_DIFFER
    RunDir(run).prepare(ok, resume=run / "checkpoint_last.pth")
    assert _snapshot(run) == before


def test_resume_from_another_file_into_a_folder_holding_a_run_is_refused(finished, tmp_path, synthetic_root):
    run = _copy(finished, tmp_path)
    other = tmp_path / "other.pth"
    shutil.copy(run / "checkpoint_last.pth", other)
    cfg = load_config(None, tiny_overrides(synthetic_root, run, **ONE))
    with pytest.raises(FileExistsError, match="mix"):
        RunDir(run).prepare(cfg, resume=other)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        RunDir(tmp_path / "empty").prepare(cfg, resume=True)
    with pytest.raises(ValueError, match="choose one"):
        RunDir(run).prepare(cfg, resume=True, overwrite=True)


def test_interrupt_before_the_first_checkpoint_can_be_resumed(synthetic_root, tmp_path, capsys, monkeypatch):
    """Issue 29.3: Ctrl-C in epoch 0 said "resume with --resume", which found no checkpoint; a plain
    rerun appended a second epoch -1 record. Also: an unreadable image is counted in metrics.jsonl."""
    from unreid.engine.trainer import load_data

    # this config's synthetic set (generated once per session; synthetic_root may hold other option sets too)
    name = Path(load_data(load_config(None, tiny_overrides(synthetic_root, tmp_path, **ONE))).info["root"]).name
    data = tmp_path / "data"
    shutil.copytree(synthetic_root / name, data / name)
    broken = sorted((data / name / "query").glob("*.jpg"))[0]
    broken.write_bytes(broken.read_bytes()[:40])  # truncated JPEG: a black image stands in
    run = tmp_path / "run"

    def ctrl_c(self, epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "refresh", ctrl_c)  # Ctrl-C in epoch 0, after the evaluation before training
    assert main(_args(data, run)) == 130
    err = capsys.readouterr().err
    assert "no epoch was completed" in err and "--resume" in err and "Traceback" not in err
    assert not (run / "checkpoint_last.pth").exists()
    rows = metrics_rows(run)
    assert [r["epoch"] for r in rows] == [-1] and rows[0]["unreadable_images"] == 1
    before = _snapshot(run)
    assert main(_args(data, run)) == 2  # a plain rerun: refused, nothing appended
    assert "not completed an epoch yet" in capsys.readouterr().err
    assert _snapshot(run) == before
    # --resume starts the run again from epoch 0 (interrupted again at the same place): still one record
    assert main(_args(data, run) + ["--resume"]) == 130
    capsys.readouterr()
    assert metrics_rows(run) == [{**rows[0], "test": metrics_rows(run)[0]["test"]}]
    assert (run / "config.yaml").read_bytes() == before["config.yaml"]


def test_orphan_temporary_files_are_removed_at_start(tmp_path, synthetic_root):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".checkpoint_last.pth.abc123.tmp").write_bytes(b"partial")
    (run / "notes.tmp").write_text("the user's")  # not ours: kept
    d = RunDir(run)
    d.prepare(load_config(None, tiny_overrides(synthetic_root, run, **ONE)))
    assert sorted(p.name for p in run.iterdir()) == ["notes.tmp"]
    assert any(".checkpoint_last.pth.abc123.tmp" in n for n in d.notes)
    save_checkpoint({"v": 1}, run / "x.pth")  # and a completed save leaves no temporary file
    assert sorted(p.name for p in run.iterdir()) == ["notes.tmp", "x.pth"]


def test_overwrite_of_the_working_directory_moves_its_entries(tmp_path, monkeypatch, synthetic_root):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("{}\n")
    (run / "notes.txt").write_text("the user's")
    monkeypatch.chdir(run)
    d = RunDir(".")
    d.prepare(load_config(None, tiny_overrides(synthetic_root, ".", **ONE)), overwrite=True)
    (backup,) = tmp_path.glob("run.replaced-*")
    assert sorted(p.name for p in backup.iterdir()) == ["metrics.jsonl", "notes.txt"]
    assert Path.cwd() == run.resolve() and not any(run.iterdir())
