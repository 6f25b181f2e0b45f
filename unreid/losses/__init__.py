"""Losses, one module per family, named as in the papers."""

from unreid.losses.contrastive import (
    cluster_nce,
    cmhybrid_loss,
    cmhybrid_v2_loss,
    hard_instance_logits,
    memory_logits,
)

__all__ = ["cluster_nce", "cmhybrid_loss", "cmhybrid_v2_loss", "hard_instance_logits", "memory_logits"]
