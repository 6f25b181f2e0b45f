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
    """

    labels: np.ndarray
    num_clusters: int
    report: dict = field(default_factory=dict)
    eps: float | None = None
    source: str = "clustering"

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.ndim != 1:
            raise ValueError(f"labels must be 1-D, got shape {self.labels.shape}")
        valid = self.labels[self.labels >= 0]
        if valid.size and (valid.max() >= self.num_clusters):
            raise ValueError(f"label {valid.max()} out of range for num_clusters={self.num_clusters}")

    @property
    def num_outliers(self) -> int:
        return int((self.labels < 0).sum())

    @property
    def clustered_indices(self) -> np.ndarray:
        """``(M,) int64`` indices of samples with a cluster (outliers left out of the epoch)."""
        return np.flatnonzero(self.labels >= 0)
