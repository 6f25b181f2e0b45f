"""The result type of every pseudo-labelling step."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PseudoLabels:
    """Pseudo-labels of the training set.

    Attributes:
        labels: ``(N,) int64``; cluster index in ``[0, num_clusters)`` or ``-1`` for an outlier.
        num_clusters: number of clusters (labels are contiguous 0..num_clusters-1).
        report: quality report (``unreid.pseudo_labels.quality``): counts, ratios and, when
            ground truth was given *for reporting*, NMI / ARI / pairwise precision and recall.
        eps: the DBSCAN eps actually used (differs from the config with rho-adaptive eps).
        source: ``"clustering"`` or ``"ground_truth"`` (supervised reference only).
        num_singletons: how many of the ``num_clusters`` labels are former outliers kept as
            one-sample classes (:meth:`with_singletons`); they are the last ``num_singletons`` ids.
        groups: ``(N,) int64`` or ``None``: the group of every sample (its camera or modality) when
            the samples were clustered group by group (``pseudo_labels.group_by``,
            :mod:`unreid.pseudo_labels.pipeline`); ``None`` when all were clustered together.
        group_of_cluster: ``(num_clusters,) int64`` or ``None``: the group each cluster was formed
            in, when the groups' clusters are kept apart (``pseudo_labels.association=matches``).
        matches: ``(M, 2) int64`` or ``None``: pairs of cluster ids (global, ``< num_clusters``)
            matched across groups (MBCCM's bilateral matches, ``association=matches``); each pair
            is ``(cluster of the earlier group, cluster of the later group)``, in the order of
            :func:`unreid.pseudo_labels.matching.cluster_matches` (sorted when there are two groups).
    """

    labels: np.ndarray
    num_clusters: int
    report: dict = field(default_factory=dict)
    eps: float | None = None
    source: str = "clustering"
    num_singletons: int = 0
    groups: np.ndarray | None = None
    group_of_cluster: np.ndarray | None = None
    matches: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.ndim != 1:
            raise ValueError(f"labels must be 1-D, got shape {self.labels.shape}")
        valid = self.labels[self.labels >= 0]
        if valid.size and (valid.max() >= self.num_clusters):
            raise ValueError(f"label {valid.max()} out of range for num_clusters={self.num_clusters}")
        if not 0 <= self.num_singletons <= self.num_clusters:
            raise ValueError(f"num_singletons must be in [0, num_clusters={self.num_clusters}], "
                             f"got {self.num_singletons}")
        n = len(self.labels)
        if self.groups is not None:
            self.groups = np.asarray(self.groups, dtype=np.int64)
            if self.groups.shape != (n,):
                raise ValueError(f"groups must have shape ({n},) like labels, got {self.groups.shape}")
        if self.group_of_cluster is not None:
            self.group_of_cluster = np.asarray(self.group_of_cluster, dtype=np.int64)
            if self.group_of_cluster.shape != (self.num_clusters,):
                raise ValueError(f"group_of_cluster must have shape ({self.num_clusters},) (one per cluster), "
                                 f"got {self.group_of_cluster.shape}")
        if self.matches is not None:
            self.matches = np.asarray(self.matches, dtype=np.int64).reshape(-1, 2)
            if self.matches.size and (self.matches.min() < 0 or self.matches.max() >= self.num_clusters):
                raise ValueError(f"matches hold cluster ids outside [0, num_clusters={self.num_clusters})")

    @property
    def cluster_labels(self) -> np.ndarray:
        """``(N,) int64``: the clustering itself, singletons (:meth:`with_singletons`) back to ``-1``.
        The pseudo-label quality report is computed on these."""
        if not self.num_singletons:
            return self.labels
        return np.where(self.labels >= self.num_clusters - self.num_singletons, -1, self.labels)

    def with_singletons(self) -> PseudoLabels:
        """A copy in which every outlier is a class of its own (``outliers=singleton``).

        Outlier ``i`` (in dataset order) gets label ``num_clusters + i``; clusters keep their ids.
        This is SpCL's treatment of un-clustered instances (Ge et al., "Self-paced Contrastive
        Learning with Hybrid Memory", NeurIPS 2020, Sec. 3.1 / Eq. 2: each outlier is its own class in
        the memory, so it is trained on, as an instance, instead of being left out of the epoch).
        Cluster Contrast (``examples/cluster_contrast_train_usl.py``) drops outliers instead.

        Returns:
            new :class:`PseudoLabels` with no ``-1`` left, ``num_clusters`` grown by the number of
            outliers and ``num_singletons`` set to it; ``report`` gets ``"num_singletons"``.
            ``groups`` and ``matches`` are kept (a singleton matches nothing); ``group_of_cluster``
            grows by the group of each singleton's sample (``-1`` where ``groups`` is ``None``).
        """
        out = self.labels.copy()
        idx = np.flatnonzero(out < 0)
        out[idx] = self.num_clusters + np.arange(idx.size)
        singletons = self.num_singletons + int(idx.size)
        goc = self.group_of_cluster
        if goc is not None:
            extra = self.groups[idx] if self.groups is not None else np.full(idx.size, -1, dtype=np.int64)
            goc = np.concatenate([goc, extra])
        return PseudoLabels(out, self.num_clusters + int(idx.size), report=dict(self.report, num_singletons=singletons),
                            eps=self.eps, source=self.source, num_singletons=singletons,
                            groups=None if self.groups is None else self.groups.copy(), group_of_cluster=goc,
                            matches=None if self.matches is None else self.matches.copy())

    #: the array fields, saved as ``int64`` tensors (or ``None``) by :meth:`state_dict`
    _ARRAYS = ("labels", "groups", "group_of_cluster", "matches")

    def state_dict(self) -> dict:
        """Every field as tensors, ints, floats, strings, ``None`` and plain dicts / lists, so that
        ``torch.load(..., weights_only=True)`` reads it back; :meth:`from_state_dict` inverts it.

        Keys: ``labels`` (``(N,) int64`` tensor), ``num_clusters``, ``num_singletons`` (the keys
        :meth:`unreid.methods.base.Method.state_dict` has always written), ``eps``, ``source``,
        ``report`` (numpy scalars made python numbers, arrays made lists), ``groups``,
        ``group_of_cluster`` and ``matches`` (``int64`` tensors or ``None``).
        """
        import torch

        state: dict = {k: None if getattr(self, k) is None else torch.from_numpy(getattr(self, k).copy())
                       for k in self._ARRAYS}
        state.update(num_clusters=int(self.num_clusters), num_singletons=int(self.num_singletons),
                     eps=None if self.eps is None else float(self.eps), source=str(self.source),
                     report=_plain(self.report))
        return state

    @classmethod
    def from_state_dict(cls, state: dict) -> PseudoLabels:
        """Rebuild from :meth:`state_dict` output; also reads older states that hold only ``labels``
        (tensor or array), ``num_clusters`` and optionally ``num_singletons`` (the rest default).

        Raises:
            KeyError: ``labels`` or ``num_clusters`` missing.
            ValueError: inconsistent shapes or ids (as the constructor).
        """
        arrays = {}
        for k in cls._ARRAYS:
            v = state.get(k)
            if v is not None:
                v = v.cpu().numpy() if hasattr(v, "cpu") else np.asarray(v)
                arrays[k] = v.astype(np.int64)
            else:
                arrays[k] = None
        if arrays["labels"] is None:
            raise KeyError("a PseudoLabels state needs 'labels'")
        eps = state.get("eps")
        return cls(arrays["labels"], int(state["num_clusters"]), report=dict(state.get("report") or {}),
                   eps=None if eps is None else float(eps), source=str(state.get("source", "clustering")),
                   num_singletons=int(state.get("num_singletons", 0)), groups=arrays["groups"],
                   group_of_cluster=arrays["group_of_cluster"], matches=arrays["matches"])

    @property
    def num_outliers(self) -> int:
        return int((self.labels < 0).sum())

    @property
    def clustered_indices(self) -> np.ndarray:
        """``(M,) int64`` indices of samples with a cluster (outliers left out of the epoch)."""
        return np.flatnonzero(self.labels >= 0)


def _plain(value):
    """``value`` with numpy scalars / arrays turned into python numbers / lists (recursively in dicts,
    lists and tuples), so that a report survives ``torch.load(weights_only=True)``."""
    if isinstance(value, dict):
        return {k.item() if isinstance(k, np.generic) else k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
