"""Atomic checkpoint writes and safe loads (DESIGN.md, "Checkpoints").

Writes go to a temporary file in the same folder, are flushed and fsync'ed, then renamed over
the target (``os.replace`` is atomic on POSIX and Windows), and the folder is fsync'ed after the
rename (POSIX), so an interrupted save never leaves a truncated checkpoint and a completed one survives
a power cut. A process killed mid-write leaves only a hidden ``.<name>.*.tmp`` file, which the next
start of a run in that folder removes (:mod:`unreid.engine.rundir`). Loads use
``torch.load(..., weights_only=True)``: only tensors and plain Python containers are unpickled, never
arbitrary objects.

:func:`fault_point` is a test-only hook: with the environment variable ``UNREID_FAULT`` set to a point's
name, the process kills itself (SIGKILL) there, so that tests can check what an interruption at that
exact point leaves behind (tests/test_rundir.py). It does nothing otherwise.
"""

from __future__ import annotations

import os
import random
import signal
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: the environment variable naming the :func:`fault_point` at which a test wants this process killed
FAULT_ENV = "UNREID_FAULT"


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read (truncated, empty, not a checkpoint) or does not fit the model."""


_FAULT_HITS: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL at this point when ``UNREID_FAULT=name`` (the first time it is
    reached) or ``UNREID_FAULT=name:n`` (the n-th time). Tests only; a no-op otherwise."""
    want = os.environ.get(FAULT_ENV)
    if not want or not want.startswith(name):
        return
    point, _, nth = want.partition(":")
    if point != name:
        return
    _FAULT_HITS[name] = _FAULT_HITS.get(name, 0) + 1
    if _FAULT_HITS[name] == int(nth or 1):
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def fsync_dir(folder: str | Path) -> None:
    """Make a rename / new file in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, mode: str, write: Any, fault: str | None = None) -> Path:
    """Write ``path`` atomically: ``write(fh)`` into a temporary file of the same folder (``mode`` "w" or
    "wb"), flush, fsync, rename over ``path``, fsync the folder. On any error the temporary file is removed
    and ``path`` is left as it was. ``fault``: the test-only kill point between the write and the rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if fault:
            fault_point(fault)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename, folder fsync)."""
    return _atomic_write(Path(path), "w", lambda fh: fh.write(text))


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically; returns the path.

    ``state`` may hold tensors, numbers, strings, ``None`` and (nested) dicts / lists / tuples
    of those (what ``weights_only=True`` can read back). numpy arrays must be converted first
    (see :func:`to_tensors`). Tests may kill the process with the temporary file written, not yet
    renamed (fault point ``checkpoint_tmp``).
    """
    return _atomic_write(Path(path), "wb", lambda fh: torch.save(state, fh), fault="checkpoint_tmp")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Args:
        mmap: map the tensors instead of reading them (cheap when only the config or epoch is needed).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        CheckpointError: (a ``RuntimeError``) the file is not a readable checkpoint (empty, truncated, or
            holds arbitrary objects); the message is one line naming the file and its size.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"cannot read checkpoint {path} ({path.stat().st_size} bytes; empty, truncated or "
                              f"not an unreid checkpoint): {first}") from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"cannot read checkpoint {path}: it holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def to_tensors(obj: Any) -> Any:
    """Recursively turn numpy arrays / scalars into tensors / Python numbers (for ``weights_only``)."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: to_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_tensors(v) for v in obj)
    return obj


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states, in a ``weights_only``-loadable form."""
    np_state = np.random.get_state()
    state = {
        "python": _tuples_to_lists(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    random.setstate(_lists_to_tuples(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples_to_lists(x: Any) -> Any:
    return [_tuples_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _lists_to_tuples(x: Any) -> Any:
    return tuple(_lists_to_tuples(v) for v in x) if isinstance(x, (tuple, list)) else x


#: ``model.*`` keys that shape the weights or the features; a checkpoint evaluated with other values is refused
#: (when its weights do not fit) or warned about (when they fit, e.g. ``last_stride``)
ARCHITECTURE_KEYS = ("backbone", "last_stride", "pooling", "gem_trainable", "bnneck", "embedding_dim", "camera_bn")


def load_trained_model(path: str | Path, cfg: Any) -> tuple[torch.nn.Module, list[str]]:
    """The model of ``cfg.model`` with the weights of checkpoint ``path``, and warnings for the user.

    The checkpoint's own config (``unreid train`` stores it) names what it was trained with: a model that
    does not fit is refused with the differing ``model.*`` keys; a model that fits but differs in
    :data:`ARCHITECTURE_KEYS`, or an input size (``data.height`` x ``data.width``) other than the training
    one, is loaded with a warning naming both values (features at another size are not comparable).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, holds no model, or the weights do not fit ``cfg.model``.
    """
    from unreid.engine.rundir import config_differences
    from unreid.models import build_model

    ckpt = load_checkpoint(path)
    if not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{path} holds no model weights (keys: {sorted(ckpt)[:8]}); pass a model_best.pth "
                              "or checkpoint_last.pth written by `unreid train`")
    diffs: dict[str, tuple[Any, Any]] = {}
    if isinstance(ckpt.get("config"), dict):
        try:
            diffs = config_differences(ckpt["config"], cfg)
        except ValueError:  # a config this version cannot read: rely on the weights alone
            diffs = {}
    arch = {k: v for k, v in diffs.items() if k.startswith("model.") and k[len("model."):] in ARCHITECTURE_KEYS}
    trained = "; ".join(f"trained with {k}={a}, this config has {b}" for k, (a, b) in arch.items())
    model = build_model(cfg.model, init_weights=False)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        first = (str(err).strip().splitlines() or [""])[0]
        why = trained or f"its weights do not fit ({first})"
        raise CheckpointError(f"{path} does not fit this config's model: {why}. Evaluate with the run's config "
                              "(its config.yaml) or the matching model.* overrides") from err
    warnings = [f"{path}: {trained}"] if trained else []
    size = [diffs.get(k) for k in ("data.height", "data.width")]
    if any(size):
        saved_cfg = ckpt["config"]["data"]
        warnings.append(
            f"{path} was trained at {saved_cfg['height']}x{saved_cfg['width']} (data.height x data.width) and is "
            f"evaluated at {cfg.data.height}x{cfg.data.width}: results are not comparable with the run's; pass "
            f"data.height={saved_cfg['height']} data.width={saved_cfg['width']} to evaluate as trained")
    return model, warnings
