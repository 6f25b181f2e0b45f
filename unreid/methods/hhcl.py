"""HHCL: hard-sample guided hybrid contrastive learning (Hu, Zhu, He, IC-NIDC 2021, arXiv 2109.12333).

Cluster Contrast's pipeline (same pseudo-labels, sampler and schedule) with the hybrid memory of
:mod:`unreid.memory.hybrid`, in both public variants (bupt-ai-cz/HHCL-ReID @4986b46,
``hhcl/models/cm.py``): ``CMhybrid`` (default; behind the published numbers) and ``CMhybrid_v2`` (the
paper's P x C instance memory). docs/methods/hhcl.md says which reproduces what.

Config: ``method.temperature`` (tau), ``method.momentum`` (mu), ``method.hhcl.variant``,
``method.hhcl.hard_weight`` (w), ``method.hhcl.legacy_weighting``, ``method.hhcl.num_slots`` (P, v2),
``method.hhcl.label_smoothing`` (eps), ``method.hhcl.smoothing`` (``"topk"``, HHCL's rule, or ``"uniform"``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor

from unreid.memory.base import LabelMemory, MemoryContext
from unreid.memory.hybrid import HybridMemory
from unreid.methods.base import MemoryMethod, StepOutput, register_method
from unreid.pseudo_labels.base import PseudoLabels

log = logging.getLogger("unreid")


def slot_generator(seed: int, epoch: int) -> torch.Generator:
    """CPU generator for the epoch's CMhybrid_v2 slot draw, a pure function of ``(seed, epoch)`` (numpy
    ``SeedSequence`` mixing), so a resumed run redraws exactly what an uninterrupted one would."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@register_method("hhcl")
class HHCL(MemoryMethod):
    """HHCL on the shared engine (see module docstring and :class:`Method`)."""

    memory_name = "hybrid"
    config_section = "hhcl"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        h = self.settings
        if h.variant == "cmhybrid_v2" and h.num_slots < self.cfg.data.num_instances:
            log.warning("HHCL CMhybrid_v2: method.hhcl.num_slots=%d < data.num_instances=%d; a batch may hold "
                        "more images of a cluster than there are slots and only the first %d are written (the "
                        "public code ties P to --num-instances)", h.num_slots, self.cfg.data.num_instances,
                        h.num_slots)

    def new_memory(self, name: str) -> LabelMemory:
        if name != self.memory_name:
            return super().new_memory(name)
        m, h = self.cfg.method, self.settings
        return HybridBank(lambda d, c: HybridMemory(
            d, c, variant=h.variant, temperature=m.temperature, momentum=m.momentum, hard_weight=h.hard_weight,
            legacy_weighting=h.legacy_weighting, num_slots=h.num_slots, label_smoothing=h.label_smoothing,
            smoothing=h.smoothing, device=self.device), shape_key="centroids")

    def training_step(self, batch: dict[str, Tensor], epoch: int = 0) -> StepOutput:
        """The hybrid loss of the batch.

        Args:
            batch: ``img`` ``(B, 3, H, W)`` float and ``index`` ``(B,) int64`` dataset indices (``camid``
                ``(B,) int64`` passed to the model when present).
            epoch: the epoch being trained (unused by the hybrid loss).

        Returns:
            losses ``{"loss", "centroid_nce", "hard_nce"}``; outputs ``{"features": (B, d)`` (with their
            graph, as :meth:`Method.step` needs for the optional camera-aware losses), ``"targets": (B,)}``.
        """
        memory = self.require_memory("training_step")
        feats = self.forward(batch)
        targets = self.batch_targets(batch)
        return StepOutput(memory.losses(feats, targets), {"features": feats, "targets": targets})


class HybridBank(LabelMemory):
    """HHCL's hybrid memory as an engine memory: its CMhybrid_v2 slots are drawn with
    :func:`slot_generator` ``(seed, epoch)``, so that a resumed run draws what an uninterrupted one would."""

    def init_bank(self, features: Tensor, labels: PseudoLabels, ctx: MemoryContext) -> None:
        self.bank.init_from_features(features, labels.labels, generator=slot_generator(ctx.seed, ctx.epoch))
