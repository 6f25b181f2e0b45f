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
