"""The losses of MBCCM (Cheng, He, Wang, Zhang, Wang, Gao, "Efficient Bilateral Cross-Modality Cluster Matching
for Unsupervised Visible-Infrared Person ReID", ACM MM 2023), as the public code computes them
(FranklinLingfeng/MBCCM-master-MM-23 @3492a38, ``trainer.py`` ``AssignTrainer.train`` and ``KLDivLoss``;
ANCHORS.md "MBCCM").

A step sees ``B`` visible images in two augmented views (features ``v1``, ``v2``) and ``B`` infrared images
(``r``); in stage 2 the ``i``-th infrared image is the partner of the ``i``-th visible image (the paired
sampler draws them from matched clusters), so ``y_v[i]`` / ``y_r[i]`` are the visible / infrared cluster
labels of pair ``i``. With ``s(f, M) = normalize(f) M^T / tau`` (the memories normalise their inputs):

* **L_MS** (modality-specific): ``CE(s(v1, M_V), y_v) + CE(s(v2, M_V), y_v) + CE(s(r, M_R), y_r)``;
* **L_MA** (modality-agnostic, stage 2), six terms: every feature (``v1``, ``v2``, ``r``) against the
  visible-indexed cross memory ``M_VX`` with the visible labels, and against the infrared-indexed cross memory
  ``M_RX`` with the infrared labels;
* **L_CC** (cross-modality consistency, stage 2), six symmetric KL terms between the logit rows
  (:func:`symmetric_kl`, no detach: both sides get gradient): ``(s(v1, M_V), s(v1, M_VX))``,
  ``(s(v2, M_V), s(v2, M_VX))``, ``(s(v1, M_RX), c(v1, M_R))``, ``(s(v2, M_RX), c(v2, M_R))``,
  ``(s(r, M_VX), c(r, M_V))``, ``(s(r, M_R), s(r, M_RX))`` where ``c(f, M) = f M^T / tau`` is taken on the
  **raw** features in the public code (``torch.mm(feat, memory.features.t()) / temp``, no normalisation: a
  quirk, :func:`mbccm_losses` ``raw_cross``);
* total: ``L_MS`` in stage 1, ``L_MS + alpha (L_MA) + beta L_CC`` in stage 2 (alpha 0.9, beta 0.5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from unreid.losses.contrastive import memory_logits


def symmetric_kl(pred: Tensor, target: Tensor) -> Tensor:
    """MBCCM's ``KLDivLoss``: with ``p = softmax(pred)``, ``t = softmax(target)`` (rows; both clamped at
    ``1e-12``), ``(KL(t || p) + KL(p || t)) / 2``, each KL summed over classes and averaged over rows.

    Args:
        pred, target: ``(B, C)`` float logits; the gradient flows into both (the reference detaches neither).

    Returns:
        Scalar float32 (0 when the rows agree).

    Raises:
        ValueError: the shapes differ.
    """
    if pred.shape != target.shape:
        raise ValueError(f"symmetric_kl: logits of shapes {tuple(pred.shape)} and {tuple(target.shape)}")
    p = F.softmax(pred.float(), dim=1).clamp(min=1e-12)
    t = F.softmax(target.float(), dim=1).clamp(min=1e-12)
    kl_tp = (t * (t.log() - p.log())).sum(1).mean()
    kl_pt = (p * (p.log() - t.log())).sum(1).mean()
    return (kl_tp + kl_pt) / 2


def _raw_logits(f: Tensor, memory: Tensor, temperature: float) -> Tensor:
    with torch.autocast(device_type=f.device.type, enabled=False):
        return f.float() @ memory.float().t() / temperature


def mbccm_losses(v1: Tensor, v2: Tensor, r: Tensor, y_v: Tensor, y_r: Tensor, memories: dict[str, Tensor],
                 temperature: float = 0.05, stage2: bool = False, alpha: float = 0.9, beta: float = 0.5,
                 raw_cross: bool = True) -> dict[str, Tensor]:
    """MBCCM's loss terms of one step (module docstring).

    Args:
        v1, v2: ``(B, d)`` float features of the two visible views (with their graph).
        r: ``(B, d)`` float features of the infrared images.
        y_v: ``(B,) int64`` visible cluster rows (of ``M_V`` / ``M_VX``) of the visible images; in stage 2 also
            the partners of the infrared images.
        y_r: ``(B,) int64`` infrared cluster rows (of ``M_R`` / ``M_RX``) of the infrared images (stage 2: also
            the partners of the visible images).
        memories: ``"visible"`` ``(C_V, d)``, ``"infrared"`` ``(C_R, d)``, and in stage 2 ``"visible_cross"``
            ``(C_V, d)`` and ``"infrared_cross"`` ``(C_R, d)``; rows L2-normalised.
        temperature: tau (0.05).
        stage2: add L_MA and L_CC.
        alpha, beta: weights of L_MA and L_CC (0.9, 0.5).
        raw_cross: the public code's ``c(f, M)`` on un-normalised features (``True``); ``False`` normalises
            them like every other logit.

    Returns:
        ``{"loss", "ms", "ms_visible_1", "ms_visible_2", "ms_infrared"}`` and in stage 2 ``"ma_visible"``,
        ``"ma_infrared"``, ``"cc"``; scalars, ``loss`` with its graph.
    """
    tau = temperature
    m_v, m_r = memories["visible"], memories["infrared"]
    o1, o2, o3 = memory_logits(v1, m_v, tau), memory_logits(v2, m_v, tau), memory_logits(r, m_r, tau)
    l1, l2, l3 = F.cross_entropy(o1, y_v), F.cross_entropy(o2, y_v), F.cross_entropy(o3, y_r)
    out = {"ms_visible_1": l1, "ms_visible_2": l2, "ms_infrared": l3, "ms": l1 + l2 + l3}
    if not stage2:
        out["loss"] = out["ms"]
        return out
    m_vx, m_rx = memories["visible_cross"], memories["infrared_cross"]
    o_vv1, o_vv2, o_rv = (memory_logits(f, m_vx, tau) for f in (v1, v2, r))
    o_vr1, o_vr2, o_rr = (memory_logits(f, m_rx, tau) for f in (v1, v2, r))
    ma_v = F.cross_entropy(o_vv1, y_v) + F.cross_entropy(o_vv2, y_v) + F.cross_entropy(o_rv, y_v)
    ma_r = F.cross_entropy(o_vr1, y_r) + F.cross_entropy(o_vr2, y_r) + F.cross_entropy(o_rr, y_r)
    cross = _raw_logits if raw_cross else memory_logits
    c1, c2, c_r = cross(v1, m_r, tau), cross(v2, m_r, tau), cross(r, m_v, tau)
    cc = (symmetric_kl(o1, o_vv1) + symmetric_kl(o2, o_vv2) + symmetric_kl(o_vr1, c1) + symmetric_kl(o_vr2, c2)
          + symmetric_kl(o_rv, c_r) + symmetric_kl(o3, o_rr))
    out.update({"ma_visible": ma_v, "ma_infrared": ma_r, "cc": cc,
                "loss": out["ms"] + alpha * (ma_v + ma_r) + beta * cc})
    return out


__all__ = ["mbccm_losses", "symmetric_kl"]
