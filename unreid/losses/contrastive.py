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
* Label smoothing (HHCL ``--smooth > 0``: ``CrossEntropyLabelSmooth(num_classes=C, epsilon=0.1,
  topk_smoothing=True)``, built in ``ClusterMemory.__init__`` of ``hhcl/models/cm.py``, defined in
  ``hhcl/models/losses.py``, ``CrossEntropyLabelSmooth.forward``; bupt-ai-cz/HHCL-ReID @4986b46). With
  ``k = C // 50`` (integer division, ``C`` = the logits' width, i.e. this epoch's cluster count):

  - ``k >= 2`` (``C >= 100``), **top-k smoothing**: targets ``(1 - eps) * onehot(y) + (eps / k) *
    onehot(topk(logits))``, the top-k being the ``k`` largest logits of that row (the reference ranks
    ``log_softmax``, the same order). The true class ``y`` is not excluded: when it is among the top-k
    it receives ``1 - eps + eps / k``. Indices carry no gradient (we take them from detached logits).
  - ``k <= 1`` (``C < 100``), uniform (Szegedy et al., CVPR 2016): ``(1 - eps) * onehot(y) + eps / C``,
    exactly PyTorch's ``F.cross_entropy(..., label_smoothing=eps)``.

  The loss is ``mean_b( -sum_k target[b, k] * log_softmax(logits)[b, k] )``. ``smoothing="uniform"``
  applies the uniform rule at every ``C`` (our option, not the reference's).

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


#: label-smoothing rules of :func:`cluster_nce` (config key ``method.hhcl.smoothing``)
SMOOTHING: tuple[str, ...] = ("topk", "uniform")

#: HHCL's top-k smoothing spreads ``eps`` over ``k = C // TOPK_DIVISOR`` classes (``losses.py``: ``//50``)
TOPK_DIVISOR = 50


def cluster_nce(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0, smoothing: str = "uniform"
                ) -> Tensor:
    """ClusterNCE (Dai et al., ACCV 2022, Sec. 3.2): mean cross-entropy of ``logits`` with ``targets``,
    optionally label-smoothed (rules in the module docstring).

    Args:
        logits: ``(B, C)`` float logits ``q M^T / tau`` (see :func:`memory_logits`).
        targets: ``(B,) int64`` pseudo-labels in ``[0, C)``.
        label_smoothing: ``eps`` in ``[0, 1)``; ``0`` is the plain ClusterNCE (the Cluster Contrast and
            HHCL default); HHCL ``--smooth > 0`` uses ``0.1``.
        smoothing: ``"uniform"`` (default here; ``eps / C`` to every class) or ``"topk"`` (HHCL's
            ``CrossEntropyLabelSmooth(C, eps, True)``: ``eps / k`` to each of the ``k = C // 50`` largest
            logits when ``k >= 2``, uniform otherwise). Irrelevant when ``label_smoothing == 0``.

    Returns:
        A scalar float32 tensor (mean over the batch).

    Raises:
        ValueError: unknown ``smoothing``.
    """
    if smoothing not in SMOOTHING:
        raise ValueError(f"unknown label smoothing {smoothing!r}; choose one of {SMOOTHING} "
                         "(config key method.hhcl.smoothing)")
    logits = logits.float()
    k = logits.shape[1] // TOPK_DIVISOR
    if smoothing == "uniform" or label_smoothing == 0.0 or k < 2:
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    log_probs = F.log_softmax(logits, dim=1)
    top = torch.topk(logits.detach(), k, dim=1).indices  # (B, k); ties may pick other indices than argsort
    nll_true = -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
    nll_top = -log_probs.gather(1, top).mean(dim=1)
    return ((1.0 - label_smoothing) * nll_true + label_smoothing * nll_top).mean()


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
