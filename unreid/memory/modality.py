"""MBCCM's four cluster memories (FranklinLingfeng/MBCCM-master-MM-23 @3492a38, ``train_mbccm.py`` and
``memory.py``; ANCHORS.md "MBCCM"), as one engine memory.

The pseudo-labels come from the modality-grouped label pipeline with ``association=matches``
(:class:`unreid.pseudo_labels.pipeline.MatchesAcrossGroups`): one label space over the clusters of both
modalities, ``labels.group_of_cluster`` saying which modality formed each cluster. The memories are indexed by
each modality's own cluster rows (:attr:`CrossModalityMemory.local`: global cluster id -> row within its
modality, in increasing global id):

* ``visible`` ``M_V`` ``(C_V, d)`` and ``infrared`` ``M_R`` ``(C_R, d)``: the normalised centroids of each
  modality's clusters (of the ``"global"`` features), updated by that modality's features;
* ``visible_cross`` ``M_VX`` ``(C_V, d)`` and ``infrared_cross`` ``M_RX`` ``(C_R, d)``: initialised as copies of
  ``M_V`` / ``M_R``; in stage 2 ``M_VX`` is updated by the visible features *and* by the infrared features
  with their partner's visible label, ``M_RX`` by the infrared features and the visible features with their
  partner's infrared label (the public code calls both cross memories with all three feature sets).

Updates are Cluster Contrast's per-sample momentum rule in batch order
(:func:`unreid.memory.cluster.sequential_momentum_update`; momentum 0.1 for all four: ``--momentum`` and
``--momentum-cross`` default 0.1), made by the engine after the optimiser step. Order within a step: view 1,
view 2, then the infrared features. (The public code updates inside each memory call's autograd backward,
whose order among independent calls PyTorch chooses; the rule and the features are the same.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from unreid.data.datasets.base import INFRARED, VISIBLE
from unreid.memory.base import Memory, MemoryContext, require_built
from unreid.memory.cluster import cluster_centroids, sequential_momentum_update
from unreid.pseudo_labels.base import PseudoLabels

#: the four banks, in update order
BANKS = ("visible", "infrared", "visible_cross", "infrared_cross")


class CrossModalityMemory(Memory):
    """The four MBCCM cluster memories (module docstring).

    Args:
        momentum: of ``visible`` / ``infrared``.
        cross_momentum: of the two cross memories.
        device: where the banks live.

    Attributes:
        banks: name -> ``(C_m, d)`` float32 rows (empty until built or loaded).
        local: ``(C,) int64``: global cluster id -> row within its modality's banks.
        modality_of_cluster: ``(C,) int64``: ``VISIBLE`` / ``INFRARED`` of each cluster.

    The step outputs it reads (:meth:`update`): ``visible_1``, ``visible_2``, ``infrared`` ``(B, d)`` features
    and ``visible_rows``, ``infrared_rows`` ``(B,) int64`` (their rows in this memory: the visible images' and
    the infrared images' own clusters, each also the partner label of the other modality's image in stage 2),
    and ``cross`` (a 0-d tensor, nonzero in stage 2, when the cross memories are updated).
    """

    def __init__(self, momentum: float = 0.1, cross_momentum: float = 0.1, device: torch.device | str = "cpu"
                 ) -> None:
        self.momentum, self.cross_momentum = float(momentum), float(cross_momentum)
        self.device = torch.device(device)
        self.banks: dict[str, Tensor] = {}
        self.local: Tensor | None = None
        self.modality_of_cluster: Tensor | None = None

    def build(self, features: dict[str, Tensor], labels: PseudoLabels, ctx: MemoryContext) -> None:
        """Centroids of each modality's clusters from ``features["global"]`` ``(N, d)``.

        Raises:
            ValueError: ``labels`` has no ``group_of_cluster`` (use ``pseudo_labels.group_by=modality`` with
                ``association=matches``), or a modality has no cluster.
        """
        if labels.group_of_cluster is None:
            raise ValueError("MBCCM's memories need clusters formed per modality: set pseudo_labels.group_by="
                             "modality and pseudo_labels.association=matches")
        goc = np.asarray(labels.group_of_cluster)
        cents = cluster_centroids(features["global"], labels.labels, labels.num_clusters)
        local = np.zeros(len(goc), dtype=np.int64)
        for m, name in ((VISIBLE, "visible"), (INFRARED, "infrared")):
            ids = np.flatnonzero(goc == m)
            if ids.size == 0:
                raise ValueError(f"MBCCM: no {name} cluster this epoch; nothing to contrast against (lower "
                                 "pseudo_labels.eps or min_samples)")
            local[ids] = np.arange(ids.size)
            rows = cents[torch.as_tensor(ids)].to(self.device)  # cluster_centroids: already L2-normalised
            self.banks[name] = rows
            self.banks[f"{name}_cross"] = rows.clone()
        self.local = torch.as_tensor(local, device=self.device)
        self.modality_of_cluster = torch.as_tensor(goc, device=self.device)

    def rows(self, cluster_ids: Tensor) -> Tensor:
        """Rows within their modality's banks ``(B,) int64`` of global cluster ids ``(B,) int64``."""
        return require_built(self.local, type(self).__name__, "rows")[cluster_ids.to(self.device)]

    @torch.no_grad()
    def update(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> None:
        """Momentum updates of the step (class docstring)."""
        require_built(self.local, type(self).__name__, "update")

        def upd(bank: str, f: Tensor, rows: Tensor, mu: float) -> None:
            sequential_momentum_update(self.banks[bank], F.normalize(f.detach().float().to(self.device), dim=1),
                                       rows.to(self.device), mu)

        v1, v2, r = outputs["visible_1"], outputs["visible_2"], outputs["infrared"]
        yv, yr = outputs["visible_rows"], outputs["infrared_rows"]
        for f in (v1, v2):
            upd("visible", f, yv, self.momentum)
        upd("infrared", r, yr, self.momentum)
        if bool(outputs.get("cross", torch.tensor(0))):
            for f in (v1, v2, r):
                upd("visible_cross", f, yv, self.cross_momentum)
            for f in (v1, v2, r):
                upd("infrared_cross", f, yr, self.cross_momentum)

    def report(self) -> dict[str, Any]:
        return {"visible_clusters": int(self.banks["visible"].shape[0]),
                "infrared_clusters": int(self.banks["infrared"].shape[0])} if self.banks else {}

    def state_dict(self) -> dict[str, Any]:
        if self.local is None:
            return {}
        state: dict[str, Any] = {k: v.detach().cpu().clone() for k, v in self.banks.items()}
        state["local"] = self.local.cpu().clone()
        state["modality_of_cluster"] = self.modality_of_cluster.cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            self.banks, self.local, self.modality_of_cluster = {}, None, None
            return
        self.banks = {k: state[k].float().to(self.device) for k in BANKS}
        self.local = state["local"].long().to(self.device)
        self.modality_of_cluster = state["modality_of_cluster"].long().to(self.device)


__all__ = ["BANKS", "CrossModalityMemory"]
