"""Seeded random draws that leave the caller's random streams alone."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch


@contextmanager
def forked_seed(seed: int, cuda_devices: Sequence[int] = ()) -> Iterator[None]:
    """Run the block with torch's CPU generator (and the listed CUDA devices' generators) seeded with
    ``seed``, and restore every one of them afterwards (``torch.random.fork_rng``).

    Only the listed CUDA devices are seeded: ``torch.manual_seed`` would reseed every CUDA device,
    while ``fork_rng`` restores only the devices it is given, so the others' streams would change.

    Args:
        seed: the seed (an ``int``, as for ``torch.manual_seed``).
        cuda_devices: indices of the CUDA devices whose draws the block uses (empty: CPU only).
    """
    with torch.random.fork_rng(devices=list(cuda_devices)):
        torch.default_generator.manual_seed(seed)
        for idx in cuda_devices:
            with torch.cuda.device(idx):
                torch.cuda.manual_seed(seed)
        yield


@contextmanager
def preserved_rng(device: torch.device | str | None = None) -> Iterator[None]:
    """Run the block and then put torch's random streams back as they were: the CPU generator and,
    for a CUDA ``device``, that device's generator (``torch.random.fork_rng``).

    For work that must not shift a training run's random draws, such as evaluation: every
    ``DataLoader`` iterator draws its base seed from torch's global generator, even with
    ``shuffle=False`` and no workers, so an evaluation would otherwise change every later
    augmentation draw, and with it the run, depending on how often it evaluates.

    Args:
        device: the device the block computes on (``None`` or a CPU device: the CPU generator only).
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield
