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
