"""The label pipeline: features -> pseudo-labels, composed from the config (DESIGN.md, "A method's contract").

::

    feature transforms -> grouping (none | camera | modality) -> labeller per group
                       -> association across groups (merge, or keep the matches as data)

Built once per run by :func:`build_label_pipeline` and called every epoch::

    pipeline = build_label_pipeline(cfg, camids, modalities, descriptors=load_my_descriptors)
    labels = pipeline(features)          # PseudoLabels; NoClustersError when nothing clusters
    log.info("pseudo-labels: %s", pipeline.describe())

The steps and where each comes from:

* **Feature transforms** (in this order), each ``(N, d) float32 -> (N, d') float32``:
  :class:`CameraStandardize` (``method.camera.neighbourhood=standardize``: each camera's feature
  statistics removed, after camera-based BN, Zhuang et al. ECCV 2020, Sec. 3.2;
  :mod:`unreid.pseudo_labels.camera`) and :class:`HandCraftedPrior` (``pseudo_labels.colour_weight >
  0``: stripe colour histograms or LOMO appended, standardised per camera;
  :mod:`unreid.pseudo_labels.colour`). Only the labelling sees the transformed features.
* **Grouping** (``pseudo_labels.group_by``): ``none`` clusters the whole set at once (Cluster
  Contrast); ``modality`` clusters each modality on its own (MBCCM, Cheng et al., ACM MM 2023:
  per-modality Jaccard + DBSCAN); ``camera`` does the same per camera, our own application of
  MBCCM's scheme to cameras (``method.camera.matching``; docs/methods/camera_aware.md).
* **Labeller** (one per group): :class:`~unreid.pseudo_labels.PseudoLabeler` (k-reciprocal
  Jaccard + DBSCAN / InfoMap), or with ``method.camera.neighbourhood=ca_jaccard`` the
  :class:`~unreid.pseudo_labels.ca_jaccard.CameraAwareJaccardLabeler` (CA-Jaccard, Chen et al.,
  CVPR 2024), which needs every camera in one clustering (so ``group_by=none``).
* **Association** (``pseudo_labels.association``, only with a grouping): :class:`MergeAcrossGroups`
  (matched clusters share one label: one-to-one Hungarian by default, ``pseudo_labels.merge_mode``;
  :func:`~unreid.pseudo_labels.matching.cross_camera_labels`) or :class:`MatchesAcrossGroups`
  (the groups keep their own clusters in one label space, offset group after group, and MBCCM's
  many-to-many bilateral matches, FranklinLingfeng/MBCCM-master-MM-23 ``trainer.py``, are returned
  as data in :attr:`PseudoLabels.matches`).

``auto`` settings keep the recipes that existed before the pipeline: ``method.camera.matching=true``
is ``group_by=camera`` + ``association=merge``, otherwise everything is clustered together
(:func:`unreid.config.resolve_grouping`). With the same config the pipeline gives exactly the labels,
cluster count, eps and report of the former ``Method.pseudo_label`` chain
(``tests/test_label_pipeline.py``).

Not here: the supervised reference (``method.supervised``) and ``pseudo_labels.outliers=singleton``
(:meth:`PseudoLabels.with_singletons`) stay with the method.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from unreid.config import Config, PseudoLabelConfig, check_grouping, resolve_grouping
from unreid.pseudo_labels import NoClustersError, PseudoLabeler
from unreid.pseudo_labels.base import PseudoLabels
from unreid.pseudo_labels.prior import PriorFeatures
from unreid.pseudo_labels.quality import cluster_report

log = logging.getLogger("unreid")


# ---------------------------------------------------------------------------------------- transforms
class CameraStandardize:
    """Per-camera standardisation of the features (``method.camera.neighbourhood=standardize``).

    Wraps :func:`unreid.pseudo_labels.camera.camera_standardize` (Zhuang et al., ECCV 2020, Sec. 3.2:
    each camera normalised with its own mean and variance; applied here to the extracted features).

    Args:
        camids: ``(N,) int64`` camera id of every training sample.
    """

    def __init__(self, camids: np.ndarray) -> None:
        self.camids = np.asarray(camids, dtype=np.int64)

    def __call__(self, features: Tensor) -> Tensor:
        """``(N, d) float32`` -> ``(N, d) float32``, L2-normalised; ``ValueError`` on a length mismatch."""
        from unreid.pseudo_labels.camera import camera_standardize

        return camera_standardize(features, self.camids)

    def describe(self) -> str:
        return "per-camera standardisation"


class HandCraftedPrior:
    """Appends hand-crafted descriptors to the features (``pseudo_labels.colour_weight``).

    Wraps :func:`unreid.pseudo_labels.colour.append_colour`: ``[f, weight * c]`` L2-normalised, ``c``
    the descriptors standardised per camera (stripe colour histograms after ELF / LOMO, or LOMO
    itself, Liao et al. CVPR 2015; see :mod:`unreid.pseudo_labels.colour`).

    Two forms give the labeller the same inner products (``pseudo_labels.prior_mode``):
    ``"append"`` returns the concatenated ``(N, d + D)`` features every call; ``"gram"`` returns a
    :class:`~unreid.pseudo_labels.prior.PriorFeatures` whose fixed part (standardised descriptors,
    per-group Gram blocks) is computed once (:mod:`unreid.pseudo_labels.prior`).

    Args:
        descriptors: zero-argument callable returning ``(N, D) float32`` descriptors of the training
            images, or an iterable of their row chunks (the method owns the images and their cache).
            It is called once, on the first use, and its result is kept: computing LOMO takes minutes.
        camids: ``(N,) int64`` camera ids (the descriptors are standardised per camera).
        weight: ``> 0``, the descriptors' weight (``pseudo_labels.colour_weight``).
        name: the descriptor's name for :meth:`describe` (``pseudo_labels.colour_descriptor``).
        mode: ``"append"`` (this class's default, the form before issue 34) or ``"gram"`` (the
            config's default, ``pseudo_labels.prior_mode``).
        store: where ``gram`` keeps the standardised descriptors (``pseudo_labels.prior_store``:
            ``auto`` / ``memory`` / ``disk``).
        store_dir: the folder of the ``disk`` store's anonymous file (``None``: the system's
            temporary directory).

    Raises:
        ValueError: ``weight <= 0``, or an unknown ``mode`` / ``store``.
    """

    def __init__(self, descriptors: Callable[[], Tensor | Iterable[Tensor]], camids: np.ndarray, weight: float,
                 name: str = "descriptors", mode: str = "append", store: str = "auto",
                 store_dir: str | Path | None = None) -> None:
        from unreid.pseudo_labels.prior import PRIOR_MODES, PRIOR_STORES

        if weight <= 0:
            raise ValueError(f"pseudo_labels.colour_weight must be > 0 to append descriptors, got {weight}")
        if mode not in PRIOR_MODES or store not in PRIOR_STORES:
            raise ValueError(f"prior mode / store must be in {PRIOR_MODES} / {PRIOR_STORES}, got {mode!r} / {store!r}")
        self._load = descriptors
        self._descriptors: Tensor | None = None
        self._store = None
        self.camids = np.asarray(camids, dtype=np.int64)
        self.weight = float(weight)
        self.name = name
        self.mode = mode
        self.store_kind = store
        self.store_dir = store_dir

    @property
    def descriptors(self) -> Tensor:
        """The ``(N, D)`` raw descriptors (``append`` mode), computed on first access and cached."""
        if self._descriptors is None:
            loaded = self._load()
            self._descriptors = loaded if isinstance(loaded, Tensor) else torch.cat(list(loaded))
        return self._descriptors

    @property
    def store(self):
        """The :class:`~unreid.pseudo_labels.prior.DescriptorStore` (``gram`` mode), built on first access."""
        if self._store is None:
            from unreid.pseudo_labels.prior import build_store

            self._store = build_store(self._load, self.camids, self.weight, self.store_kind, self.store_dir)
        return self._store

    def __call__(self, features: Tensor):
        """``append``: ``(N, d) float32`` -> ``(N, d + D) float32``, L2-normalised. ``gram``: a
        :class:`~unreid.pseudo_labels.prior.PriorFeatures` (the same inner products, the fixed part
        computed once). ``ValueError`` when the descriptors do not have one row per feature."""
        if self.mode == "gram":
            from unreid.pseudo_labels.prior import PriorFeatures

            return PriorFeatures(features, self.store, self.weight)
        from unreid.pseudo_labels.colour import append_colour

        return append_colour(features, self.descriptors, self.camids, self.weight)

    def describe(self) -> str:
        how = "; its Gram blocks computed once" if self.mode == "gram" else ""
        return f"append {self.name} (weight {self.weight:g}, standardised per camera{how})"


# ---------------------------------------------------------------------------------------- labellers
class Labeller(Protocol):
    """What labels one group: :class:`~unreid.pseudo_labels.PseudoLabeler` and its subclasses."""

    def fit(self, features: Tensor, camids: np.ndarray | None = None) -> PseudoLabels: ...


def _describe_labeller(labeller: Labeller) -> str:
    from unreid.pseudo_labels.ca_jaccard import CameraAwareJaccardLabeler
    from unreid.pseudo_labels.jaccard import jaccard_backend

    cfg = getattr(labeller, "cfg", None)
    if not isinstance(labeller, PseudoLabeler) or cfg is None:
        return type(labeller).__name__
    if cfg.cluster == "infomap":  # no Jaccard step: numba is not loaded for it (CA-Jaccard refuses InfoMap)
        return f"InfoMap (k {cfg.infomap_k})"
    kernel = f"{jaccard_backend(cfg.jaccard_backend)} kernel"
    if isinstance(labeller, CameraAwareJaccardLabeler):
        k1i, k1o, k2i, k2o = labeller.sizes
        return f"CA-Jaccard (k1 {k1i}/{k1o}, k2 {k2i}/{k2o}; {kernel}) + DBSCAN"
    eps = f"rho {cfg.rho:g}" if cfg.rho is not None else f"eps {cfg.eps:g}"
    return (f"k-reciprocal Jaccard (k1 {cfg.k1}, k2 {cfg.k2}; {kernel}) + DBSCAN ({eps}, "
            f"min_samples {cfg.min_samples})")


# ---------------------------------------------------------------------------------------- association
class _Grouped:
    """The groups' own clusterings, in one label space (internal to :class:`LabelPipeline`).

    Attributes:
        labels: ``(N,) int64`` group-local cluster ids offset so that the groups' ids follow each
            other (groups in increasing id order), ``-1`` for outliers.
        num_clusters: clusters of all groups together.
        clustered: per group with a cluster: ``(group id, (K_g,) global ids, (K_g, d) centroids)``.
        per_group: group id -> its number of clusters (0 where none formed; groups of fewer than two
            samples are left out, as :func:`~unreid.pseudo_labels.matching.cluster_each_camera`).
        per_group_eps: group id -> the DBSCAN eps it used (groups with a cluster only).
    """

    def __init__(self, labels, num_clusters, clustered, per_group, per_group_eps, pair_cost=None) -> None:
        self.labels = labels
        self.num_clusters = num_clusters
        self.clustered = clustered
        self.per_group = per_group
        self.per_group_eps = per_group_eps
        self.pair_cost = pair_cost  # cost(i, j) between clustered groups i, j; None = from the centroids


class MergeAcrossGroups:
    """Association ``merge``: clusters matched across groups become one cluster.

    The behaviour of :func:`unreid.pseudo_labels.matching.cross_camera_labels` (our application of
    MBCCM's matching to cameras): union-find over the matches of every pair of groups, by
    :func:`~unreid.pseudo_labels.matching.merge_matched_clusters`.

    Args:
        mode: ``"one_to_one"`` (default), ``"bilateral"`` or ``"relaxed"``
            (:data:`~unreid.pseudo_labels.matching.MATCH_MODES`).
        check: ``"auto"`` (default: ``"ratio"`` when more than two groups have clusters, else
            ``"none"``), ``"none"`` or ``"ratio"``
            (:func:`~unreid.pseudo_labels.matching.merge_matched_clusters`).
        ratio: the ratio test's distance ratio (``check="ratio"``; Lowe 2004: 0.8).

    Raises:
        ValueError: unknown ``mode`` or ``check``, or ``ratio`` outside ``(0, 1]``.
    """

    name = "merge"

    def __init__(self, mode: str = "one_to_one", check: str = "auto", ratio: float = 0.8) -> None:
        from unreid.pseudo_labels.matching import MATCH_MODES, MERGE_CHECKS

        if mode not in MATCH_MODES:
            raise ValueError(f"unknown matching mode {mode!r}; choose one of {MATCH_MODES}")
        if check not in ("auto",) + MERGE_CHECKS:
            raise ValueError(f"unknown merge check {check!r}; choose one of {('auto',) + MERGE_CHECKS}")
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"pseudo_labels.merge_ratio must be in (0, 1], got {ratio}")
        self.mode, self.check, self.ratio = mode, check, ratio

    def resolved_check(self, groups: int) -> str:
        """The check used with ``groups`` clustered groups (``"auto"`` resolved)."""
        if self.check == "auto":
            return "ratio" if groups > 2 else "none"
        return self.check

    def __call__(self, grouped: _Grouped, group_name: str) -> dict:
        """The merged labels: ``{"labels", "num_clusters", "report"}`` (report: ``per_<group>_clusters``,
        ``matched_pairs``, ``matches_rejected`` (by the check), ``per_<group>_eps``)."""
        from unreid.pseudo_labels.matching import merge_matched_clusters

        merged, pairs, rejected = merge_matched_clusters(
            grouped.num_clusters, [(ids, cents) for _, ids, cents in grouped.clustered], self.mode,
            pair_cost=grouped.pair_cost, check=self.resolved_check(len(grouped.clustered)), ratio=self.ratio)
        labels = grouped.labels.copy()
        keep = grouped.labels >= 0
        labels[keep] = merged[grouped.labels[keep]]
        report = {f"per_{group_name}_clusters": grouped.per_group, "matched_pairs": pairs,
                  "matches_rejected": rejected, f"per_{group_name}_eps": grouped.per_group_eps}
        return {"labels": labels, "num_clusters": int(merged.max()) + 1, "report": report}

    def describe(self) -> str:
        check = {"auto": f"; ratio test {self.ratio:g} with > 2 groups", "none": "",
                 "ratio": f"; ratio test {self.ratio:g}"}[self.check]
        return f"merge matched clusters ({self.mode}{check})"


class MatchesAcrossGroups:
    """Association ``matches``: each group keeps its clusters; the matches are returned as data.

    MBCCM (Cheng et al., ACM MM 2023; FranklinLingfeng/MBCCM-master-MM-23 ``trainer.py``): the
    visible and infrared clusters are matched many-to-many by
    :func:`~unreid.pseudo_labels.matching.bilateral_cluster_matching` and the matches serve as
    cross-modality targets; no label is merged. Here every pair of groups is matched
    (:func:`~unreid.pseudo_labels.matching.cluster_matches`).

    Args:
        relax: the published relaxed rule (``False``: the bare Hungarian assignments).
    """

    name = "matches"

    def __init__(self, relax: bool = True) -> None:
        self.relax = relax

    def __call__(self, grouped: _Grouped, group_name: str) -> dict:
        """``{"labels", "num_clusters", "group_of_cluster", "matches", "report"}``: the groups' labels
        unchanged, ``group_of_cluster`` ``(C,) int64``, ``matches`` ``(M, 2) int64`` global id pairs.

        The report holds ``per_<group>_clusters``, ``per_<group>_eps``, ``matched_pairs`` (``M``) and
        ``mean_partners``: the number of partners of each cluster (pairs it is in), averaged over
        every cluster of every group (MBCCM logs the mean partners of its matching).
        """
        from unreid.pseudo_labels.matching import cluster_matches

        group_of_cluster = np.full(grouped.num_clusters, -1, dtype=np.int64)
        for g, ids, _ in grouped.clustered:
            group_of_cluster[ids] = g
        matches = cluster_matches([(ids, cents) for _, ids, cents in grouped.clustered], relax=self.relax,
                                  pair_cost=grouped.pair_cost)
        partners = np.bincount(matches.ravel(), minlength=grouped.num_clusters)
        report = {f"per_{group_name}_clusters": grouped.per_group, f"per_{group_name}_eps": grouped.per_group_eps,
                  "matched_pairs": int(len(matches)), "mean_partners": float(partners.mean())}
        return {"labels": grouped.labels, "num_clusters": grouped.num_clusters,
                "group_of_cluster": group_of_cluster, "matches": matches, "report": report}

    def describe(self) -> str:
        return "keep bilateral matches (" + ("relaxed" if self.relax else "Hungarian") + ")"


Association = MergeAcrossGroups | MatchesAcrossGroups


# ---------------------------------------------------------------------------------------- pipeline
class LabelPipeline:
    """Feature transforms -> grouping -> labeller per group -> association (module doc).

    Args:
        labeller: labels a set of features (``fit(features, camids=...) -> PseudoLabels``).
        camids: ``(N,) int64`` camera ids of the training samples (for the labeller's report and
            CA-Jaccard).
        transforms: applied to the features in order, each ``(N, d) float32 -> (N, d') float32``.
        groups: ``(N,) int64`` group of every sample, or ``None`` to label all samples together.
        group_name: what the groups are (``"camera"``, ``"modality"``): names the report's keys.
        association: how the groups' clusters meet; required with ``groups``, ignored without.
        cfg: the :class:`~unreid.config.PseudoLabelConfig` (``eps`` / ``rho`` for the grouped
            result's ``eps``); defaults to the labeller's.

    Raises:
        ValueError: ``groups`` without an ``association``, or ``groups`` / ``camids`` of different
            lengths.
    """

    def __init__(self, labeller: Labeller, camids: np.ndarray, transforms: Sequence[Callable[[Tensor], Tensor]] = (),
                 groups: np.ndarray | None = None, group_name: str = "group",
                 association: Association | None = None, cfg: PseudoLabelConfig | None = None) -> None:
        self.labeller = labeller
        self.camids = np.asarray(camids, dtype=np.int64)
        self.transforms = list(transforms)
        self.groups = None if groups is None else np.asarray(groups, dtype=np.int64)
        if self.groups is not None:
            if association is None:
                raise ValueError("grouped labelling needs an association (MergeAcrossGroups or MatchesAcrossGroups)")
            if self.groups.shape != self.camids.shape:
                raise ValueError(f"groups has shape {self.groups.shape}, camids {self.camids.shape}")
        self.group_name = group_name
        self.association = association if self.groups is not None else None
        self.cfg = cfg if cfg is not None else getattr(labeller, "cfg", PseudoLabelConfig())

    def __call__(self, features: Tensor) -> PseudoLabels:
        """Pseudo-labels of ``features`` ``(N, d) float32`` (L2-normalised; the trainer's are on CPU;
        the centroids matched across groups are moved there).

        Returns:
            :class:`PseudoLabels` with ``source="clustering"``. Ungrouped: the labeller's result
            (report :func:`~unreid.pseudo_labels.quality.cluster_report` plus timings). Grouped:
            ``groups`` set; ``eps`` the config's (``None`` with ``rho``: each group has its own,
            reported as ``per_<group>_eps``); ``merge`` adds nothing else, ``matches`` adds
            ``group_of_cluster`` and ``matches`` and a report with ``cluster_report``'s keys too.

        Raises:
            NoClustersError: every sample is an outlier (no group produced a cluster).
            ValueError: ``features`` has not one row per sample, or holds NaN / inf / zero rows.
        """
        if len(features) != len(self.camids):
            raise ValueError(f"{len(features)} feature rows for {len(self.camids)} samples (camids)")
        for transform in self.transforms:
            features = transform(features)
        if self.groups is None:
            if isinstance(features, PriorFeatures):  # prior_mode=gram
                features = features.select()
            return self.labeller.fit(features, camids=self.camids)
        grouped = self._label_groups(features)
        out = self.association(grouped, self.group_name)
        report = out["report"]
        if "matches" in out:
            report = {**cluster_report(out["labels"], self.camids), **report}
        return PseudoLabels(out["labels"], out["num_clusters"], report=report,
                            eps=self.cfg.eps if self.cfg.rho is None else None, source="clustering",
                            groups=self.groups, group_of_cluster=out.get("group_of_cluster"),
                            matches=out.get("matches"))

    def _label_groups(self, features: Tensor) -> _Grouped:
        """Each group labelled on its own (groups of fewer than two samples left out, their
        samples outliers); ``NoClustersError`` when no group produced a cluster."""
        from unreid.pseudo_labels.matching import cluster_centroids

        prior = features if isinstance(features, PriorFeatures) else None  # prior_mode=gram
        feats = None if prior is not None else torch.as_tensor(features, dtype=torch.float32)
        labels = np.full(len(self.groups), -1, dtype=np.int64)
        offset, clustered, per_group, per_group_eps = 0, [], {}, {}
        cross = prior is not None and prior.uses_cross_products(len(np.unique(self.groups)))
        if cross and self.association is not None:
            prior.store.full_gram()  # first: each group's Gram block is then read from it, not recomputed
        parts = []  # (idx, labels, offset, K) of every clustered group, for prior.pair_costs
        for g in np.unique(self.groups):
            idx = np.flatnonzero(self.groups == g)
            if len(idx) < 2:
                continue
            try:
                pl = self.labeller.fit(prior.select(idx) if prior is not None else feats[idx], camids=self.camids[idx])
            except NoClustersError:
                per_group[int(g)] = 0
                continue
            keep = pl.labels >= 0
            labels[idx[keep]] = pl.labels[keep] + offset
            if cross:
                centroids = None
                parts.append((idx, pl.labels, offset, pl.num_clusters))
            elif prior is not None:
                centroids = prior.centroids(idx, pl.labels, pl.num_clusters).cpu()
            else:
                centroids = cluster_centroids(feats[idx], pl.labels, pl.num_clusters).cpu()
            clustered.append((int(g), np.arange(offset, offset + pl.num_clusters), centroids))
            per_group[int(g)] = pl.num_clusters
            per_group_eps[int(g)] = pl.eps
            offset += pl.num_clusters
        if offset == 0:
            raise NoClustersError(f"no {self.group_name} produced a cluster (N={len(self.groups)}, eps={self.cfg.eps}, "
                                  f"min_samples={self.cfg.min_samples}); raise pseudo_labels.eps")
        pair_cost = prior.pair_costs(parts) if cross and self.association is not None else None
        return _Grouped(labels, offset, clustered, per_group, per_group_eps, pair_cost)

    def describe(self) -> str:
        """The steps, one line, e.g. ``per-camera standardisation -> group by camera -> k-reciprocal
        Jaccard (...) + DBSCAN (...) per camera -> merge matched clusters (one_to_one)``."""
        steps = [t.describe() if hasattr(t, "describe") else type(t).__name__ for t in self.transforms]
        if self.groups is None:
            steps.append(_describe_labeller(self.labeller))
        else:
            steps += [f"group by {self.group_name}", f"{_describe_labeller(self.labeller)} per {self.group_name}",
                      self.association.describe()]
        return " -> ".join(steps)

    def __repr__(self) -> str:
        return f"LabelPipeline({self.describe()})"


def build_label_pipeline(cfg: Config, camids: np.ndarray, modalities: np.ndarray | None = None,
                         descriptors: Callable[[], Tensor | Iterable[Tensor]] | None = None,
                         store_dir: str | Path | None = None) -> LabelPipeline:
    """The label pipeline of ``cfg`` (module doc), built once per run.

    Args:
        cfg: the run configuration (validated); reads ``pseudo_labels`` and ``method.camera``.
        camids: ``(N,) int64`` camera ids of the training samples.
        modalities: ``(N,) int64`` modalities (needed with ``pseudo_labels.group_by=modality``).
        descriptors: zero-argument callable returning the ``(N, D) float32`` hand-crafted
            descriptors, or an iterable of their row chunks (needed with ``pseudo_labels.colour_weight
            > 0``); called once, lazily.
        store_dir: where ``pseudo_labels.prior_store`` puts the prior's anonymous file when it is on
            disk (the run's output directory; ``None`` = the system's temporary directory).

    Returns:
        a :class:`LabelPipeline`; ``pipeline(features)`` gives the epoch's :class:`PseudoLabels`.

    Raises:
        ValueError: ``colour_weight > 0`` without ``descriptors``; ``group_by=modality`` without
            ``modalities``; ``modalities`` of another length than ``camids``; CA-Jaccard with
            ``pseudo_labels.cluster=infomap``.
        ConfigError: contradictory grouping settings (from :func:`unreid.config.validate`).
    """
    check_grouping(cfg)
    p, cam = cfg.pseudo_labels, cfg.method.camera
    camids = np.asarray(camids, dtype=np.int64)
    transforms: list[Callable[[Tensor], Tensor]] = []
    if cam.neighbourhood == "standardize":
        transforms.append(CameraStandardize(camids))
    if p.colour_weight > 0:
        if descriptors is None:
            raise ValueError("pseudo_labels.colour_weight > 0 needs the images' descriptors: pass descriptors=")
        mode = p.prior_mode
        if mode == "gram" and (cam.neighbourhood == "ca_jaccard" or p.knn != "exact"):
            log.info("pseudo-labels: prior_mode=gram needs knn=exact and the k-reciprocal labeller; the prior is "
                     "appended to the features instead (prior_mode=append)")
            mode = "append"
        transforms.append(HandCraftedPrior(descriptors, camids, p.colour_weight, p.colour_descriptor, mode=mode,
                                           store=p.prior_store, store_dir=store_dir))
    if cam.neighbourhood == "ca_jaccard":
        from unreid.pseudo_labels.ca_jaccard import CameraAwareJaccardLabeler

        labeller: Labeller = CameraAwareJaccardLabeler(p, cam.ca_k1_intra, cam.ca_k1_inter, cam.ca_k2_intra,
                                                       cam.ca_k2_inter)
    else:
        labeller = PseudoLabeler(p)
    group_by, association = resolve_grouping(cfg)
    groups = None
    if group_by == "camera":
        groups = camids
    elif group_by == "modality":
        if modalities is None:
            raise ValueError("pseudo_labels.group_by=modality needs the modality of every sample (modalities)")
        groups = np.asarray(modalities, dtype=np.int64)
        if groups.shape != camids.shape:
            raise ValueError(f"modalities has shape {groups.shape}, camids {camids.shape}")
    assoc: Association | None = None
    if association == "merge":
        assoc = MergeAcrossGroups(p.merge_mode, p.merge_check, p.merge_ratio)
    elif association == "matches":
        assoc = MatchesAcrossGroups()
    return LabelPipeline(labeller, camids, transforms, groups=groups, group_name=group_by, association=assoc, cfg=p)


__all__ = ["CameraStandardize", "HandCraftedPrior", "LabelPipeline", "MatchesAcrossGroups", "MergeAcrossGroups",
           "build_label_pipeline"]
