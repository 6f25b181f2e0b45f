"""MBCCM: efficient bilateral cross-modality cluster matching for unsupervised visible-infrared person re-ID
(Cheng, He, Wang, Zhang, Wang, Gao, ACM MM 2023, arXiv 2305.12673). Reference: FranklinLingfeng/MBCCM-master-MM-23
@3492a38 (``train_mbccm.py``, ``trainer.py``, ``memory.py``, ``sampler.py``); ANCHORS.md "MBCCM"; what differs
on purpose: docs/methods/mbccm.md.

Each epoch (engine): the global features of every training image; pseudo-labels from the label pipeline with
``pseudo_labels.group_by=modality`` and ``association=matches`` (Jaccard + DBSCAN per modality, then the
bilateral many-to-many matches kept as data: :class:`unreid.pseudo_labels.pipeline.MatchesAcrossGroups`); the
four cluster memories (:class:`unreid.memory.modality.CrossModalityMemory`). Two stages:

* ``modality_specific`` (``method.mbccm.stage1_epochs``, 40): L_MS; the sampler draws visible and infrared
  clusters independently;
* ``cross_modality`` (the rest of ``optim.epochs``): L_MS + alpha L_MA + beta L_CC
  (:func:`unreid.losses.mbccm.mbccm_losses`); the sampler draws matched cluster pairs
  (:class:`unreid.data.samplers.ModalityPairSampler`).

A batch holds ``P x K`` visible images in two augmented views (``img``, ``img2``) and, aligned with them,
``P x K`` infrared images (``P = method.mbccm.clusters_per_step``, ``K = data.num_instances``): ``data.batch_size``
must be ``2 P K``. The three feature sets go through the model in one forward pass
with their modalities (a two-stream model picks each image's stem), as the public code passes both modalities
through its network at once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from unreid.config import ConfigError, resolve_grouping
from unreid.data.datasets.base import INFRARED, VISIBLE
from unreid.losses.mbccm import mbccm_losses
from unreid.memory.base import Memory
from unreid.memory.modality import CrossModalityMemory
from unreid.methods.base import Method, Stage, StepOutput, register_method
from unreid.pseudo_labels.base import PseudoLabels

STAGE1, STAGE2 = "modality_specific", "cross_modality"


class TwoViews:
    """A per-sample transform giving two independently augmented views, ``{"img": t1(x), "img2": t2(x)}``
    (each pipeline draws its own geometry, as the public code's two visible ``Compose``), or, without
    ``second``, one view under both keys (infrared images: one view; the key keeps batches collatable)."""

    def __init__(self, first: Any, second: Any = None) -> None:
        self.first, self.second = first, second

    def __call__(self, img: Any) -> dict[str, Tensor]:
        one = self.first(img)
        return {"img": one, "img2": one if self.second is None else self.second(img)}


@register_method("mbccm")
class MBCCM(Method):
    """MBCCM on the shared engine (module docstring; :class:`Method` for the contract).

    Raises:
        unreid.config.ConfigError: the pseudo-labels are not formed per modality with matches kept
            (``pseudo_labels.group_by=modality``, ``association=matches``), or ``data.batch_size`` is not
            ``2 x clusters_per_step x num_instances``.
    """

    config_section = "mbccm"
    memory_name = "modality_clusters"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.supervised_labels is None and resolve_grouping(self.cfg) != ("modality", "matches"):
            raise ConfigError("MBCCM clusters each modality on its own and keeps the cross-modality matches: set "
                              "pseudo_labels.group_by=modality and pseudo_labels.association=matches")
        p, k = int(self.settings.clusters_per_step), int(self.cfg.data.num_instances)
        if int(self.cfg.data.batch_size) != 2 * p * k:
            raise ConfigError(f"MBCCM's batch is {p} clusters x {k} images per modality, visible then infrared: set "
                              f"data.batch_size={2 * p * k} (2 x method.mbccm.clusters_per_step x data.num_instances)")

    # ------------------------------------------------------------------ stages, data
    def stages(self) -> list[Stage]:
        """``modality_specific`` for ``stage1_epochs`` epochs, then ``cross_modality`` for the rest (either may be
        absent when ``optim.epochs`` leaves it no epoch)."""
        total, s1 = int(self.cfg.optim.epochs), min(int(self.settings.stage1_epochs), int(self.cfg.optim.epochs))
        out = [Stage(STAGE1, s1, losses=("ms",))] if s1 > 0 else []
        if total > s1:
            out.append(Stage(STAGE2, total - s1, losses=("ms", "ma", "cc")))
        return out

    @property
    def cross_stage(self) -> bool:
        return self.stage is not None and self.stage.name == STAGE2

    def train_transform(self) -> dict[int, TwoViews]:
        """The public code's augmentations (``dataset.py``; :func:`unreid.data.transforms.build_modality_transforms`):
        visible images in two views (view 1: local linear intensity, channel erasing; view 2: channel erasing,
        ChannelExchange), infrared images in one (channel erasing, adaptive grey)."""
        from unreid.data.transforms import build_modality_transforms

        d = self.cfg.data
        return {VISIBLE: TwoViews(build_modality_transforms(d, VISIBLE, 1), build_modality_transforms(d, VISIBLE, 2)),
                INFRARED: TwoViews(build_modality_transforms(d, INFRARED, 1))}

    def train_batch_size(self) -> int:
        return 2 * int(self.settings.clusters_per_step) * int(self.cfg.data.num_instances)

    def batch_segments(self) -> int:
        """Visible half, then infrared half: under DDP each process gets its share of both, aligned pair by pair
        (as DataParallel scattered the public code's two inputs)."""
        return 2

    def sampler(self, labels: PseudoLabels, seed: int) -> Any:
        """:class:`~unreid.data.samplers.ModalityPairSampler`, paired in the ``cross_modality`` stage; one pass =
        ``optim.iters`` steps (or as many batches as the clustered images fill when ``optim.iters`` is 0)."""
        from unreid.data.samplers import ModalityPairSampler

        p, k = int(self.settings.clusters_per_step), int(self.cfg.data.num_instances)
        steps = int(self.cfg.optim.iters) or max(1, int((labels.labels >= 0).sum()) // (2 * p * k))
        return ModalityPairSampler(labels.labels, self.modalities, labels.group_of_cluster, labels.matches, p, k,
                                   steps, paired=self.cross_stage, seed=seed)

    # ------------------------------------------------------------------ memories
    def memory_names(self) -> list[str]:
        return [self.memory_name] + super().memory_names()

    def new_memory(self, name: str) -> Memory:
        if name == self.memory_name:
            return CrossModalityMemory(self.cfg.method.momentum, self.settings.cross_momentum, self.device)
        return super().new_memory(name)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Tensor], epoch: int = 0) -> StepOutput:
        """The MBCCM loss of a batch (module docstring).

        Args:
            batch: ``img`` / ``img2`` ``(B, 3, H, W)`` (the two views), ``index``, ``camid``, ``modality``
                ``(B,) int64``; the first ``B / 2`` images visible, the rest infrared, aligned pair by pair.
            epoch: unused.

        Returns:
            losses of :func:`~unreid.losses.mbccm.mbccm_losses`; outputs ``features`` ``(B, d)`` (view 1 of the
            visible images, then the infrared images: ``index`` order, for the camera-aware options),
            ``targets`` ``(B,)``, and what :class:`~unreid.memory.modality.CrossModalityMemory` updates with.

        Raises:
            RuntimeError: no memory yet, or a batch that is not laid out visible-then-infrared.
        """
        mem = self.memories.get(self.memory_name)
        if mem is None:
            raise RuntimeError("MBCCM.training_step before refresh()/build_memories(): no memory yet")
        h = batch["img"].shape[0] // 2
        mods = batch["modality"]
        if batch["img"].shape[0] != 2 * h or bool((mods[:h] != VISIBLE).any()) or bool((mods[h:] != INFRARED).any()):
            raise RuntimeError("MBCCM needs batches of visible images then as many infrared images (its sampler, "
                               "ModalityPairSampler); another sampler was used")
        cams = batch["camid"]
        images = torch.cat([batch["img"][:h], batch["img2"][:h], batch["img"][h:]])
        ids = {"camid": torch.cat([cams[:h], cams[:h], cams[h:]]), "modality": torch.cat([mods[:h], mods[:h], mods[h:]])}
        f = self.forward({"img": images, **ids})
        v1, v2, r = f[:h], f[h:2 * h], f[2 * h:]
        targets = self.batch_targets(batch)
        y_v, y_r = mem.rows(targets[:h]), mem.rows(targets[h:])
        s = self.settings
        losses = mbccm_losses(v1, v2, r, y_v, y_r, mem.banks, self.cfg.method.temperature, stage2=self.cross_stage,
                              alpha=s.alpha, beta=s.beta, raw_cross=s.raw_cross)
        losses = {k: v if k == "loss" else v.detach() for k, v in losses.items()}
        outputs = {"features": torch.cat([v1, r]), "targets": targets, "visible_1": v1, "visible_2": v2,
                   "infrared": r, "visible_rows": y_v, "infrared_rows": y_r,
                   "cross": torch.tensor(self.cross_stage)}
        return StepOutput(losses, outputs)


__all__ = ["MBCCM", "STAGE1", "STAGE2", "TwoViews"]
