"""TCL / TCRL: triplet contrastive representation learning for unsupervised vehicle re-ID (Shen, Du, Zhang,
Shu, Tang, arXiv 2301.09498). No code was released; what is known (the paper, its framework figure, the
authors' README: parts are the features of masked images) is in ANCHORS.md "TCL", and every choice where the
paper is silent is in docs/methods/tcl.md.

Each epoch (engine: :class:`~unreid.engine.hooks.LabelHook`): global features and part features of every
training image are extracted (:meth:`TCL.extract`; parts = masked copies, or stripes), the pseudo-labels come
from the **global** features only (the shared label pipeline, so the camera-aware options apply), and three
memories are built, in this update order:

* ``"cluster"`` ``M^C``: one row per cluster, the normalised mean of its global features
  (:class:`~unreid.memory.cluster.ClusterMemory`; updated with the batch mean of each cluster by default,
  ``method.tcl.cluster_update``);
* ``"global"`` ``M^G``: one row per image, its global feature (:class:`~unreid.memory.instance.InstanceMemory`);
* ``"part"`` ``M^P``: one row per image and part view, its part features (same class, ``(V, N, d)``).

Each step (:meth:`TCL.training_step`), with global features ``g`` and part features ``p_v`` of the batch::

    L = w_pcl   * ( mean_v ClusterNCE(p_v, M^C) + ClusterToInstance(g, M^G) )     PCL: adjacent memories only
      + w_hcl   * ( mean_v HCL(p_v, M^P_v) + HCL(g, M^G) ) / 2                      HCL: instance level
      + w_wrccl * WRCCL(g, M^C, weights = kNN label agreement in M^G)               WRCCL: cluster level

(:mod:`unreid.losses.tcl`). The part branch meets the part and cluster memories only, never the global one.
The camera-aware proxies (``method.camera.proxies``) join as an auxiliary memory on the global features,
as for every method.

Config: ``method.temperature`` (tau of the cluster-memory losses), ``method.momentum`` (cluster memory),
``method.tcl.*`` (:class:`unreid.config.TCLConfig`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from unreid.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from unreid.losses.contrastive import cluster_nce
from unreid.losses.tcl import (
    cluster_to_instance_loss,
    hybrid_contrastive_loss,
    knn_label_agreement,
    weighted_cluster_nce,
)
from unreid.memory.base import LabelMemory, Memory
from unreid.memory.cluster import ClusterMemory
from unreid.memory.instance import InstanceMemory
from unreid.methods.base import Extractor, Method, StepOutput, register_method
from unreid.models.parts import PartViews

#: seed offset of the masks drawn when the part memory is built (fixed per run: the same masked copies every
#: epoch, so that a resumed run builds the same memory; training masks come from the run's RNG)
EXTRACT_MASK_STREAM = 0x7C1


def black_fill() -> Tensor:
    """``(3,)`` value of a black pixel after the input normalisation: ``-mean / std`` (ImageNet)."""
    return -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)


@register_method("tcl")
class TCL(Method):
    """TCL on the shared engine (module docstring; :class:`Method` for the contract)."""

    config_section = "tcl"
    own_memories = ("cluster", "global", "part")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        t = self.settings
        self.parts = PartViews(self.model, t.part, t.num_views, t.mask_ratio, t.patch_size, t.num_stripes,
                               fill=black_fill())

    def part_extractor(self) -> PartViews:
        """The model as a part-feature extractor: ``(B, V * d)`` rows, masks from a generator seeded with the
        run's seed (the same masked copies at every labelling)."""
        t = self.settings
        gen = torch.Generator().manual_seed(int(self.cfg.seed) * 4099 + EXTRACT_MASK_STREAM)
        return PartViews(self.model, t.part, t.num_views, t.mask_ratio, t.patch_size, t.num_stripes,
                         fill=black_fill(), flat=True, generator=gen)

    def extract(self, samples: list, extractor: Extractor) -> dict[str, Tensor]:
        """``{"global": (N, d), "part": (N, V, d)}`` float32, every row / view L2-normalised."""
        feats = super().extract(samples, extractor)
        flat = extractor(self.part_extractor(), samples)
        parts = flat.view(flat.shape[0], self.parts.views, -1)
        feats["part"] = torch.nn.functional.normalize(parts, dim=2)
        return feats

    # ------------------------------------------------------------------ memories
    def memory_names(self) -> list[str]:
        return list(self.own_memories) + super().memory_names()

    def new_memory(self, name: str) -> Memory:
        m, t = self.cfg.method, self.settings
        if name == "cluster":
            return LabelMemory(lambda d, c: ClusterMemory(d, c, m.temperature, m.momentum, t.cluster_update,
                                                          self.device))
        if name == "global":
            return InstanceMemory("global", "features", t.instance_momentum, self.device)
        if name == "part":
            return InstanceMemory("part", "part_features", t.instance_momentum, self.device)
        return super().new_memory(name)

    def _memory(self, name: str) -> Any:
        mem = self.memories.get(name)
        if mem is None:
            raise RuntimeError(f"TCL.training_step before refresh()/build_memories(): no {name!r} memory yet")
        return mem

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Tensor], epoch: int = 0) -> StepOutput:
        """The TCL loss of a batch (module docstring).

        Args:
            batch: ``img`` ``(B, 3, H, W)`` float, ``index`` ``(B,) int64`` dataset indices (``camid`` /
                ``modality`` passed to the model when present).
            epoch: unused.

        Returns:
            losses ``{"loss", "pcl", "pcl_part_cluster", "pcl_cluster_global", "hcl", "hcl_part", "hcl_global",
            "wrccl", "wrccl_weight"}`` (the last: the batch's mean reliability weight); outputs
            ``{"features": (B, d), "part_features": (B, V, d), "targets": (B,)}``.
        """
        t = self.settings
        cluster, glob, part = (self._memory(n) for n in self.own_memories)
        cams, mods = batch.get("camid"), batch.get("modality")
        g, p = self.parts.with_global(batch["img"].to(self.device),
                                      camids=None if cams is None else cams.to(self.device),
                                      modalities=None if mods is None else mods.to(self.device))
        y = self.batch_targets(batch)
        index = batch["index"].to(self.device)
        views = range(p.shape[1])
        pcl_pc = torch.stack([cluster_nce(cluster.bank.logits(p[:, v]), y) for v in views]).mean()
        pcl_cg = cluster_to_instance_loss(g, y, glob.view(0), glob.labels, t.instance_temperature)
        hcl_p = torch.stack([hybrid_contrastive_loss(p[:, v], part.view(v), part.labels, y, t.instance_temperature,
                                                     t.hcl_form) for v in views]).mean()
        hcl_g = hybrid_contrastive_loss(g, glob.view(0), glob.labels, y, t.instance_temperature, t.hcl_form)
        weights = None
        if t.wrccl_weighting == "knn":
            weights = knn_label_agreement(g, index, glob.view(0), glob.labels, y, t.wrccl_k)
        wrccl = weighted_cluster_nce(cluster.bank.logits(g), y, weights)
        pcl, hcl = pcl_pc + pcl_cg, (hcl_p + hcl_g) / 2
        loss = t.pcl_weight * pcl + t.hcl_weight * hcl + t.wrccl_weight * wrccl
        losses = {"loss": loss, "pcl": pcl, "pcl_part_cluster": pcl_pc, "pcl_cluster_global": pcl_cg, "hcl": hcl,
                  "hcl_part": hcl_p, "hcl_global": hcl_g, "wrccl": wrccl,
                  "wrccl_weight": torch.ones(()) if weights is None else weights.mean()}
        losses = {k: v if k == "loss" else v.detach() for k, v in losses.items()}
        return StepOutput(losses, {"features": g, "part_features": p, "targets": y})


__all__ = ["TCL"]
