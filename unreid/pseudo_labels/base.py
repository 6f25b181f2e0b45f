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
    """

    labels: np.ndarray
    num_clusters: int
    report: dict = field(default_factory=dict)
    eps: float | None = None
    source: str = "clustering"
    num_singletons: int = 0

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
        """
        out = self.labels.copy()
        idx = np.flatnonzero(out < 0)
        out[idx] = self.num_clusters + np.arange(idx.size)
        singletons = self.num_singletons + int(idx.size)
        return PseudoLabels(out, self.num_clusters + int(idx.size), report=dict(self.report, num_singletons=singletons),
                            eps=self.eps, source=self.source, num_singletons=singletons)

    @property
    def num_outliers(self) -> int:
        return int((self.labels < 0).sum())

    @property
    def clustered_indices(self) -> np.ndarray:
        """``(M,) int64`` indices of samples with a cluster (outliers left out of the epoch)."""
        return np.flatnonzero(self.labels >= 0)
