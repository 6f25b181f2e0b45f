"""forked_seed: seeded draws inside, the caller's random stream restored outside."""

from __future__ import annotations

import torch

from unreid.rng import forked_seed


def test_forked_seed_repeats_its_draws_and_restores_the_callers_stream():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    with forked_seed(7):
        a = torch.rand(5)
    assert torch.equal(torch.random.get_rng_state(), state)
    with forked_seed(7):
        b = torch.rand(5)
    with forked_seed(8):
        c = torch.rand(5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(7)
    assert torch.equal(torch.rand(5), a)  # the same draws as torch.manual_seed(seed) gives on the CPU


def test_preserved_rng_puts_the_cpu_stream_back():
    from torch.utils.data import DataLoader

    from unreid.rng import preserved_rng

    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with preserved_rng("cpu"):
        list(DataLoader(list(range(4)), batch_size=2))  # draws a base seed from the global generator
        torch.rand(7)
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(5)
    list(DataLoader(list(range(4)), batch_size=2))
    assert not torch.equal(torch.rand(3), expected)  # without it the loader shifts the stream
