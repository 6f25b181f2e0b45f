"""GCL's view-invariant memory loss (Chen et al., CVPR 2021, Sec. 3.3, Eqs. 7-9; chenhao2345/GCL @88aed52
``gcl/models/memory.py`` ``Memory.forward``; ANCHORS.md "GCL").

For each image ``i`` of the batch, with ``f`` its original-image feature, ``f'`` the feature of its generated
novel view and ``M`` the instance memory (one L2-normalised row per training image, labelled by the
pseudo-labels):

* ``L_self``    = InfoNCE(``f'``, positive ``M[i]``,                    negatives)
* ``L_cluster'`` = InfoNCE(``f'``, positive ``M[j]``, ``j`` a random image of ``i``'s cluster (``i`` itself allowed))
* ``L_cluster`` = InfoNCE(``f``,  positive ``M[j']``, ``j'`` drawn independently,          negatives)

``InfoNCE(q, p, N) = -log( exp(q.p / tau) / (exp(q.p / tau) + sum_n exp(q.n / tau)) )``. The negatives are ``K``
memory rows drawn at random among the images **not** in ``i``'s cluster (outliers included), the same rows for
the three terms. The public code also uses the same negative *logits* for the three terms, those of the novel
view ``f'`` (``mat_sim``), even in ``L_cluster`` whose query is ``f``: ``negative_logits="novel_view"`` reproduces
it, ``"own"`` gives each term its own query's similarities.

Deviation (named): when an image has fewer than ``K`` negatives, all of them are used (the missing slots are
masked out); the public code stacks rows of unequal length and crashes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

NEGATIVE_LOGITS = ("novel_view", "own")


def sample_per_row(mask: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Up to ``k`` column indices per row drawn uniformly without replacement among the ``True`` entries.

    Args:
        mask: ``(B, N) bool``, the columns each row may draw.
        k: how many to draw per row (>= 0).

    Returns:
        ``(idx, valid)``, both ``(B, k')`` with ``k' = min(k, max_b mask[b].sum())``: ``idx`` int64 column
        indices, ``valid`` bool, ``False`` where row ``b`` had fewer than ``k'`` allowed columns (those slots
        hold arbitrary indices). Uses the global torch RNG (so a resumed run draws the same).
    """
    available = int(mask.sum(1).max()) if mask.numel() else 0
    kk = min(int(k), available)
    if kk == 0:
        empty = torch.zeros(mask.shape[0], 0, dtype=torch.long, device=mask.device)
        return empty, empty.bool()
    scores = torch.rand(mask.shape, device=mask.device).masked_fill(~mask, -1.0)
    top = scores.topk(kk, dim=1)
    return top.indices, top.values >= 0


def view_invariant_memory_loss(f: Tensor, f_nv: Tensor, memory: Tensor, labels: Tensor, index: Tensor,
                               temperature: float = 0.04, negatives: int = 8192,
                               negative_logits: str = "novel_view") -> dict[str, Tensor]:
    """GCL's memory loss ``L_self + L_cluster' + L_cluster`` (module docstring).

    Args:
        f: ``(B, d)`` float, L2-normalised features of the original images (with their graph).
        f_nv: ``(B, d)`` float, L2-normalised features of the generated novel views (with their graph).
        memory: ``(N, d)`` float, L2-normalised instance memory (read only: no gradient reaches it).
        labels: ``(N,) int64`` pseudo-labels of the memory rows, ``-1`` outliers.
        index: ``(B,) int64`` memory rows of the batch images (dataset indices).
        temperature: tau (GCL ``configs/latest.yaml`` ``temperature: 0.04``).
        negatives: K (``K: 8192``), capped by the negatives that exist.
        negative_logits: ``"novel_view"`` (the public code) or ``"own"`` (module docstring).

    Returns:
        ``{"memory": L_self + L_cluster' + L_cluster, "memory_self", "memory_cluster_novel",
        "memory_cluster_original"}`` scalars (batch means) and ``"negatives"``: the number of negative slots used.

    Raises:
        ValueError: mismatched shapes, an unknown ``negative_logits``, or a batch image that is an outlier
            (label ``-1``: GCL trains on the clustered images only).
    """
    if negative_logits not in NEGATIVE_LOGITS:
        raise ValueError(f"negative_logits must be one of {NEGATIVE_LOGITS}, got {negative_logits!r}")
    if f.shape != f_nv.shape or f.dim() != 2 or memory.dim() != 2 or f.shape[1] != memory.shape[1]:
        raise ValueError(f"GCL memory loss: f {tuple(f.shape)} and f_nv {tuple(f_nv.shape)} must be (B, d) with the "
                         f"memory's d; memory is {tuple(memory.shape)}")
    if labels.shape != (memory.shape[0],) or index.shape != (f.shape[0],):
        raise ValueError(f"GCL memory loss: labels {tuple(labels.shape)} must be (N,) = ({memory.shape[0]},) and index "
                         f"{tuple(index.shape)} (B,) = ({f.shape[0]},)")
    mem = memory.detach()
    own = labels[index]
    if bool((own < 0).any()):
        raise ValueError("GCL memory loss: a batch image is an outlier (label -1); GCL trains on clustered images only "
                         "(sampler 'shuffle' over the labels)")
    same = labels.unsqueeze(0) == own.unsqueeze(1)  # (B, N)
    sim_o, sim_n = f @ mem.t(), f_nv @ mem.t()
    rows = torch.arange(f.shape[0], device=f.device)
    pos_self = sim_n[rows, index]
    pick_n, _ = sample_per_row(same, 1)  # a random member of the cluster (the image itself allowed)
    pick_o, _ = sample_per_row(same, 1)  # drawn again, independently, as the public code does
    pos_n, pos_o = sim_n.gather(1, pick_n).squeeze(1), sim_o.gather(1, pick_o).squeeze(1)
    neg_idx, valid = sample_per_row(~same, negatives)
    neg_n = sim_n.gather(1, neg_idx).masked_fill(~valid, float("-inf"))
    neg_o = neg_n if negative_logits == "novel_view" else sim_o.gather(1, neg_idx).masked_fill(~valid, float("-inf"))
    target = torch.zeros(f.shape[0], dtype=torch.long, device=f.device)

    def nce(pos: Tensor, neg: Tensor) -> Tensor:
        return F.cross_entropy(torch.cat([pos.unsqueeze(1), neg], dim=1) / temperature, target)

    terms = {"memory_self": nce(pos_self, neg_n), "memory_cluster_novel": nce(pos_n, neg_n),
             "memory_cluster_original": nce(pos_o, neg_o)}
    out = {"memory": sum(terms.values()), **terms}
    out["negatives"] = torch.tensor(float(neg_idx.shape[1]))
    return out


def l1(x: Tensor, target: Tensor) -> Tensor:
    """Mean absolute difference with the target detached (GCL ``DGNet_Trainer.recon_criterion``)."""
    return (x - target.detach()).abs().mean()


__all__ = ["NEGATIVE_LOGITS", "l1", "sample_per_row", "view_invariant_memory_loss"]
