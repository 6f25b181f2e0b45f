"""Memories: plain objects holding tensors (no parameters, no gradient), rebuilt each epoch from the
pseudo-labels and updated after ``optimizer.step()``. Cluster (Cluster Contrast), hybrid (HHCL),
camera-aware proxies (``unreid.memory.proxy``)."""

from unreid.memory.cluster import (
    ClusterMemory,
    cluster_centroids,
    occurrence_rank,
    sequential_momentum_update,
)
from unreid.memory.hybrid import HybridMemory

__all__ = ["ClusterMemory", "HybridMemory", "cluster_centroids", "occurrence_rank", "sequential_momentum_update"]
