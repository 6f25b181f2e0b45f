"""The losses of TCL / TCRL (Shen, Du, Zhang, Shu, Tang, "Triplet Contrastive Representation Learning for
Unsupervised Vehicle Re-identification", arXiv 2301.09498).

No code was released (ANCHORS.md, "TCL"); the paper names three losses and gives no formula we could
check against code, so the forms below are ours, written from the paper's text and framework figure and
documented in docs/methods/tcl.md (with the reason for every choice):

* **HCL**, hybrid contrastive loss (instance level), :func:`hybrid_contrastive_loss`: a batch feature ``q``
  against an *instance* memory ``M`` (one row per training image). Negatives: every row whose pseudo-label
  differs from ``q``'s (outliers, label ``-1``, are negatives of everyone). Positive, in one of two forms
  (``method.tcl.hcl_form``): ``"cluster"`` (arXiv v1: "approaching the positive cluster features and leaving
  all negative instance features") the normalised mean of ``q``'s cluster's rows,
  ``L = -log(exp(q.c/t) / (exp(q.c/t) + sum_neg exp(q.m_j/t)))``; ``"instance"`` (v2: "approaching the
  positive instance features and pushing all negative instance features away") every positive row ``p``
  in turn, ``L = -1/|P| sum_p log(exp(q.m_p/t) / (exp(q.m_p/t) + sum_neg exp(q.m_j/t)))``.
* **PCL**, proxy contrastive loss, between *adjacent* memories only (part <-> cluster, cluster <-> global):
  :func:`cluster_to_instance_loss` (a cluster-level feature, the batch mean of a pseudo-identity's features,
  against an instance memory, positives = that identity's rows) and ClusterNCE of part features against the
  cluster memory (:func:`unreid.losses.contrastive.cluster_nce`). The part branch never meets the global
  memory: the part-global association passes through the clusters (the paper's answer to gradient collapse).
* **WRCCL**, weighted regularisation cluster contrastive loss, :func:`weighted_cluster_nce`: ClusterNCE of
  global features against the cluster memory, each image's term multiplied by a reliability weight in
  ``[0, 1]`` from instance similarity (:func:`knn_label_agreement`: the share of its ``k`` nearest other
  instances in the global memory that carry its pseudo-label), so that probably mislabelled images pull
  less on their cluster.

Every function takes features that need not be normalised (they are L2-normalised here, as
:func:`~unreid.losses.contrastive.memory_logits` does) and memories whose rows are L2-normalised; the
gradient flows into the batch features only. Logits are float32 with autocast off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from unreid.losses.contrastive import memory_logits

#: the HCL forms (config key ``method.tcl.hcl_form``)
HCL_FORMS: tuple[str, ...] = ("cluster", "instance")


def _check(q: Tensor, bank: Tensor, bank_labels: Tensor, targets: Tensor) -> None:
    if bank.dim() != 2 or bank_labels.shape != (bank.shape[0],):
        raise ValueError(f"need a memory (N, d) and its labels (N,), got {tuple(bank.shape)} and "
                         f"{tuple(bank_labels.shape)}")
    if targets.shape != (q.shape[0],):
        raise ValueError(f"need one target per feature: {q.shape[0]} features, targets {tuple(targets.shape)}")
    if bool((targets < 0).any()):
        raise ValueError("targets must be pseudo-labels >= 0 (outliers are not trained on)")


def hybrid_contrastive_loss(q: Tensor, bank: Tensor, bank_labels: Tensor, targets: Tensor, temperature: float,
                            form: str = "cluster") -> Tensor:
    """HCL of a batch against an instance memory (module docstring gives both forms).

    Args:
        q: ``(B, d)`` float batch features (part or global), with their graph.
        bank: ``(N, d)`` instance memory, rows L2-normalised (no gradient).
        bank_labels: ``(N,) int64`` pseudo-label of every row, ``-1`` for outliers.
        targets: ``(B,) int64`` pseudo-labels of the batch, ``>= 0``; each must label at least one row.
        temperature: ``tau > 0``.
        form: ``"cluster"`` or ``"instance"``.

    Returns:
        Scalar float32, the mean over the batch.

    Raises:
        ValueError: an unknown form, mismatched shapes, a negative target, or a target no row carries.
    """
    if form not in HCL_FORMS:
        raise ValueError(f"unknown HCL form {form!r}; choose one of {HCL_FORMS} (method.tcl.hcl_form)")
    _check(q, bank, bank_labels, targets)
    logits = memory_logits(q, bank, temperature)  # (B, N)
    pos = bank_labels.to(logits.device)[None, :] == targets.to(logits.device)[:, None]  # (B, N)
    npos = pos.sum(1)
    if bool((npos == 0).any()):
        raise ValueError("a batch target labels no memory row: the memory and the labels are out of step "
                         "(rebuild the memories after every pseudo-label refresh)")
    neg_lse = torch.logsumexp(logits.masked_fill(pos, float("-inf")), dim=1)  # (B,); -inf without negatives
    if form == "cluster":
        with torch.autocast(device_type=logits.device.type, enabled=False):
            centroid = F.normalize(pos.float() @ bank.float(), dim=1)  # (B, d): the positive cluster's centre
            pos_logit = (F.normalize(q.float(), dim=1) * centroid).sum(1) / temperature
        return (torch.logaddexp(pos_logit, neg_lse) - pos_logit).mean()
    per_pair = torch.logaddexp(logits, neg_lse[:, None]) - logits  # (B, N): -log p(positive j | j or negatives)
    return ((per_pair * pos).sum(1) / npos).mean()


def cluster_to_instance_loss(q: Tensor, targets: Tensor, bank: Tensor, bank_labels: Tensor,
                             temperature: float) -> Tensor:
    """PCL's cluster <-> instance term: each pseudo-identity of the batch, represented by the normalised
    mean of its (normalised) batch features, against an instance memory with the ``"instance"`` form of
    :func:`hybrid_contrastive_loss` (positives: the identity's rows; negatives: all other rows).

    Args:
        q: ``(B, d)`` float batch features with their graph.
        targets: ``(B,) int64`` pseudo-labels ``>= 0``.
        bank, bank_labels, temperature: as in :func:`hybrid_contrastive_loss`.

    Returns:
        Scalar float32, the mean over the batch's distinct pseudo-identities.
    """
    _check(q, bank, bank_labels, targets)
    rows, inv = torch.unique(targets, return_inverse=True)
    with torch.autocast(device_type=q.device.type, enabled=False):
        qn = F.normalize(q.float(), dim=1)
        centres = torch.zeros(len(rows), qn.shape[1], device=qn.device, dtype=qn.dtype).index_add(0, inv, qn)
    return hybrid_contrastive_loss(centres, bank, bank_labels, rows, temperature, form="instance")


@torch.no_grad()
def knn_label_agreement(q: Tensor, index: Tensor, bank: Tensor, bank_labels: Tensor, targets: Tensor,
                        k: int) -> Tensor:
    """WRCCL's reliability weight: for each batch image, the share of its ``k`` nearest rows of the
    instance memory (cosine; its own row, ``bank[index[b]]``, excluded) whose pseudo-label equals its own.

    Args:
        q: ``(B, d)`` float batch features.
        index: ``(B,) int64`` dataset index of each batch image (its own memory row).
        bank: ``(N, d)`` instance memory, rows L2-normalised.
        bank_labels: ``(N,) int64`` pseudo-labels of the rows.
        targets: ``(B,) int64`` pseudo-labels of the batch.
        k: neighbours, ``>= 1`` (capped at ``N - 1``).

    Returns:
        ``(B,) float32`` in ``[0, 1]`` (``1``: every neighbour agrees), without gradient.
    """
    _check(q, bank, bank_labels, targets)
    k = min(int(k), bank.shape[0] - 1)
    if k < 1:
        return torch.ones(q.shape[0], device=bank.device)
    sims = F.normalize(q.detach().float().to(bank.device), dim=1) @ bank.float().t()
    sims[torch.arange(q.shape[0], device=bank.device), index.to(bank.device)] = float("-inf")
    nn_idx = sims.topk(k, dim=1).indices
    return (bank_labels.to(bank.device)[nn_idx] == targets.to(bank.device)[:, None]).float().mean(1)


def weighted_cluster_nce(logits: Tensor, targets: Tensor, weights: Tensor | None = None) -> Tensor:
    """WRCCL: ``mean_b w_b * CE(logits_b, y_b)`` (plain ClusterNCE when ``weights`` is ``None``).

    Args:
        logits: ``(B, C)`` float logits ``q M_C^T / tau`` (:func:`unreid.losses.contrastive.memory_logits`).
        targets: ``(B,) int64`` pseudo-labels in ``[0, C)``.
        weights: ``(B,)`` float in ``[0, 1]`` (detached), or ``None``.

    Returns:
        Scalar float32. Dividing by ``B`` (not by the sum of weights) is what makes a down-weighted image
        count less; a batch of unreliable images has a smaller loss.
    """
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    if weights is None:
        return ce.mean()
    return (weights.detach().to(ce.dtype) * ce).mean()


__all__ = ["HCL_FORMS", "cluster_to_instance_loss", "hybrid_contrastive_loss", "knn_label_agreement",
           "weighted_cluster_nce"]
