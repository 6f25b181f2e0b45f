"""Memories: cluster (Cluster Contrast), hybrid (HHCL), camera-aware proxies (CAP)."""
