"""Memory-based contrastive losses in functional form (used by ``unreid.memory``).

Notation: ``q = f / ||f||`` the L2-normalised batch feature ``(B, d)``, ``M`` a memory whose rows are
L2-normalised ``(C, d)``, ``tau`` the temperature, ``y`` the pseudo-label of ``q``.

* ClusterNCE (Dai et al., "Cluster Contrast for Unsupervised Person Re-Identification", ACCV 2022,
  Sec. 3.2): ``L_q = -log( exp(q . m_y / tau) / sum_{k=1..C} exp(q . m_k / tau) )``, i.e. the
  cross-entropy of the logits ``q M^T / tau`` with ``y``, averaged over the batch
  (alibaba/cluster-contrast-reid @57b62e9, ``clustercontrast/models/cm.py``, ``ClusterMemory.forward``).
* HHCL hard-instance logits (Hu, Zhu, He, "Hard-sample Guided Hybrid Contrast Learning for
  Unsupervised Person Re-Identification", IC-NIDC 2021, arXiv 2109.12333, hard-sample contrast over a
  P x C instance memory; bupt-ai-cz/HHCL-ReID @4986b46 ``hhcl/models/cm.py``, ``CMhybrid_v2`` branch of
  ``ClusterMemory.forward``): with ``s_p[k] = q . slot_p[k]`` for the ``P`` instance slots of class
  ``k``, ``z[y] = min_p s_p[y] / tau`` (the hardest positive) and ``z[k] = max_p s_p[k] / tau`` for every
  ``k != y`` (the hardest negatives); the hard loss is ``CE(z, y)``.
* HHCL weightings (same file): ``CMhybrid`` legacy ``w * (CE_hard + (1 - w) * CE_centroid)`` (the public
  code, literally), clean ``w * CE_hard + (1 - w) * CE_centroid``; ``CMhybrid_v2``
  ``w * CE_centroid + (1 - w) * CE_hard``.
* Label smoothing (HHCL ``--smooth > 0``: ``CrossEntropyLabelSmooth(num_classes, 0.1)`` in
  ``hhcl/models/losses.py``; Szegedy et al., CVPR 2016): targets ``(1 - eps) * onehot(y) + eps / C``.
  This is exactly PyTorch's ``F.cross_entropy(..., label_smoothing=eps)``, which we use.

Logits are always computed in float32, also under ``torch.autocast`` (a float16 ``q M^T / 0.05`` loses
precision and may overflow), by :func:`memory_logits`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def memory_logits(features: Tensor, memory: Tensor, temperature: float) -> Tensor:
    """Cosine logits of a batch against a memory: ``normalize(f) @ M^T / tau``.

    Args:
        features: ``(B, d)`` batch features, any float dtype, not necessarily normalised; the
            gradient flows through them.
        memory: ``(C, d)`` rows (L2-normalised by the memories; no gradient expected).
        temperature: ``tau > 0``.

    Returns:
        ``(B, C) float32`` logits, computed with autocast disabled.

    Raises:
        ValueError: feature dimensions differ.
    """
    if features.shape[-1] != memory.shape[-1]:
        raise ValueError(f"feature dimension {features.shape[-1]} != memory dimension {memory.shape[-1]}; "
                         "the memory must be built from features of the same model")
    with torch.autocast(device_type=features.device.type, enabled=False):
        q = F.normalize(features.float(), dim=1)
        return q @ memory.float().t() / temperature


def cluster_nce(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """ClusterNCE (Dai et al., ACCV 2022, Sec. 3.2): mean cross-entropy of ``logits`` with ``targets``.

    Args:
        logits: ``(B, C)`` float logits ``q M^T / tau`` (see :func:`memory_logits`).
        targets: ``(B,) int64`` pseudo-labels in ``[0, C)``.
        label_smoothing: ``eps`` in ``[0, 1)``; ``0`` is the plain ClusterNCE (the Cluster Contrast and
            HHCL default); HHCL ``--smooth > 0`` uses ``0.1``.

    Returns:
        A scalar float32 tensor (mean over the batch).
    """
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


def hard_instance_logits(similarities: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """HHCL hard-instance logits from per-slot similarities (``CMhybrid_v2``; see module docstring).

    Args:
        similarities: ``(P, B, C)`` cosine similarities ``q_b . slot_p[c]``.
        targets: ``(B,) int64`` pseudo-labels in ``[0, C)``.
        temperature: ``tau > 0``.

    Returns:
        ``(B, C)`` logits: ``min_p`` similarity for the true class, ``max_p`` for every other class,
        divided by ``tau``.

    Raises:
        ValueError: shapes disagree.
    """
    if similarities.dim() != 3 or similarities.shape[1] != targets.shape[0]:
        raise ValueError(f"similarities must be (P, B, C) with B = len(targets) = {targets.shape[0]}, "
                         f"got {tuple(similarities.shape)}")
    positive = similarities.min(dim=0).values
    negative = similarities.max(dim=0).values
    is_true = F.one_hot(targets, similarities.shape[2]).bool()
    return torch.where(is_true, positive, negative) / temperature


def cmhybrid_loss(ce_hard: Tensor, ce_centroid: Tensor, hard_weight: float, legacy: bool = True) -> Tensor:
    """Combine HHCL ``CMhybrid``'s two cross-entropies.

    Args:
        ce_hard: scalar CE against the hard rows.
        ce_centroid: scalar CE against the centroid rows.
        hard_weight: ``w`` in ``[0, 1]`` (the public code always uses 0.5: ``--hard-weight`` is parsed in
            ``examples/train.py`` but never passed to the memory).
        legacy: ``True`` = the public code's literal ``w * (CE_hard + (1 - w) * CE_centroid)``
            (``hhcl/models/cm.py``, ``CMhybrid`` branch; behind the published numbers);
            ``False`` = the clean convex combination ``w * CE_hard + (1 - w) * CE_centroid``.
    """
    if legacy:
        return hard_weight * (ce_hard + (1.0 - hard_weight) * ce_centroid)
    return hard_weight * ce_hard + (1.0 - hard_weight) * ce_centroid


def cmhybrid_v2_loss(ce_centroid: Tensor, ce_hard: Tensor, hard_weight: float) -> Tensor:
    """HHCL ``CMhybrid_v2``: ``w * CE_centroid + (1 - w) * CE_hard`` (``hhcl/models/cm.py``; note the
    weights sit the other way round from :func:`cmhybrid_loss`)."""
    return hard_weight * ce_centroid + (1.0 - hard_weight) * ce_hard
