"""Features -> pseudo-labels: k-NN, k-reciprocal Jaccard distance, DBSCAN / InfoMap, quality report."""

from unreid.pseudo_labels.base import PseudoLabels

__all__ = ["PseudoLabels"]
