"""Reading local checkpoints and loading them into a backbone by parameter name.

Every checkpoint is read with ``torch.load(path, map_location="cpu", weights_only=True)`` (no pickled
code runs). Common wrappers are removed: a dict holding the weights under ``state_dict`` / ``model`` /
``model_state_dict`` (unreid's own checkpoints use ``model``), and the ``module.`` prefix that
``nn.DataParallel`` / DDP add to every name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger("unreid")

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``path`` (``weights_only=True``) and unwrap it.

    Unwrapping: ``{"state_dict": sd}`` / ``{"model": sd}`` / ``{"model_state_dict": sd}`` (nested
    any number of times) become ``sd``; a ``module.`` prefix is removed from every name that has it.
    Non-tensor entries (e.g. an epoch counter beside the weights) are dropped.

    Args:
        path: a ``.pth`` / ``.pt`` file written by ``torch.save``.

    Returns:
        ``{name: tensor}`` on the CPU.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it and ``model.weights``).
        RuntimeError: the file cannot be read by ``torch.load(weights_only=True)`` or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"model.weights: file not found: {path}. Pass an existing checkpoint path, or drop model.weights")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip / weights_only errors come in many types
        raise RuntimeError(
            f"model.weights: cannot read {path} as a PyTorch state dict with weights_only=True ({err}). "
            "Pass a file written by torch.save(model.state_dict(), ...)") from err
    unwrapped = True
    while unwrapped and isinstance(obj, dict):
        unwrapped = False
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj, unwrapped = obj[key], True
                break
    if not isinstance(obj, dict):
        raise RuntimeError(f"model.weights: {path} holds a {type(obj).__name__}, not a state dict")
    out: dict[str, Tensor] = {}
    for name, value in obj.items():
        if not isinstance(value, Tensor):
            continue
        name = str(name)
        while name.startswith("module."):
            name = name[len("module."):]
        out[name] = value
    if not out:
        raise RuntimeError(f"model.weights: {path} holds no tensors (keys: {list(obj)[:8]})")
    return out


def load_matching(module: nn.Module, state: dict[str, Tensor], *, what: str, source: str,
                  rename: Callable[[str], str] | None = None, ignore: Iterable[str] = (),
                  strict: bool = False) -> tuple[list[str], list[str]]:
    """Copy the tensors of ``state`` whose names exist in ``module`` into it.

    Names are compared after ``rename`` (e.g. stripping a wrapper prefix). Entries whose (renamed)
    name starts with one of ``ignore`` (e.g. the ImageNet classifier ``fc.``) are dropped silently.
    ``num_batches_tracked`` buffers are never reported as missing (old torchvision checkpoints lack
    them and BatchNorm does not need them with a fixed momentum).

    Args:
        module: the target network.
        state: ``{name: tensor}``, e.g. from :func:`load_state_dict_file`.
        what: the network's name for messages (``"resnet50_ibn_a"``).
        source: where ``state`` came from, for messages (a path or ``"torchvision IMAGENET1K_V1"``).
        rename: maps a checkpoint name to the module's naming; identity when ``None``.
        ignore: name prefixes to drop before matching.
        strict: raise instead of logging a warning when names are missing or unexpected.

    Returns:
        ``(missing, unexpected)``: module names left at their initial values, checkpoint names not used.

    Raises:
        RuntimeError: no name matched (wrong architecture or file); a matched tensor has another shape;
            ``strict`` and something is missing or unexpected.
    """
    ignore = tuple(ignore)
    own = module.state_dict()
    renamed: dict[str, Tensor] = {}
    for name, value in state.items():
        new = rename(name) if rename else name
        if ignore and new.startswith(ignore):
            continue
        renamed[new] = value
    matched = {k: v for k, v in renamed.items() if k in own}
    if not matched:
        raise RuntimeError(
            f"{what}: no parameter of {source} matches this architecture (the file has names like "
            f"{list(renamed)[:3]}, the model expects names like {list(own)[:3]}). "
            "Check model.backbone and model.weights")
    bad = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in matched.items()
           if v.shape != own[k].shape]
    if bad:
        raise RuntimeError(f"{what}: {len(bad)} tensors of {source} have the wrong shape, e.g. {bad[:3]}. "
                           "Check that model.backbone names the architecture the file was saved from")
    module.load_state_dict(matched, strict=False)
    missing = [k for k in own if k not in matched and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in renamed if k not in own]
    if missing or unexpected:
        msg = (f"{what} weights from {source}: {len(missing)} missing keys {missing[:5]}, "
               f"{len(unexpected)} unexpected keys {unexpected[:5]}")
        if strict:
            raise RuntimeError(msg)
        log.warning(msg)
    else:
        log.info("%s: loaded %d tensors from %s", what, len(matched), source)
    return missing, unexpected
