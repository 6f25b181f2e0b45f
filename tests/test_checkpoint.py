"""Atomic checkpoint writes, weights_only loads and RNG round trips."""

import random

import numpy as np
import pytest
import torch

from unreid.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state, to_tensors


def test_save_load_round_trip(tmp_path):
    state = to_tensors({"epoch": 3, "memory": np.arange(6, dtype=np.float32).reshape(2, 3),
                        "labels": np.array([0, -1, 1]), "nested": {"x": [np.int64(4), "a", None]}})
    path = save_checkpoint(state, tmp_path / "sub" / "ckpt.pth")
    back = load_checkpoint(path)
    assert back["epoch"] == 3
    assert torch.equal(back["memory"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert back["labels"].tolist() == [0, -1, 1]
    assert back["nested"]["x"] == [4, "a", None]
    # no temporary files are left behind
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pth"]


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    path = save_checkpoint({"v": 1}, tmp_path / "c.pth")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint({"v": Unpicklable()}, path)
    assert load_checkpoint(path)["v"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pth"]


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_checkpoint(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="bad.pth"):
        load_checkpoint(bad)


def test_rng_state_round_trip(tmp_path):
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    saved = load_checkpoint(save_checkpoint({"rng": rng_state()}, tmp_path / "r.pth"))["rng"]
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    set_rng_state(saved)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
