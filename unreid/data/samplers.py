"""P x K samplers over pseudo-labels (outliers, label -1, are never drawn).

* ``camera_aware``: Cluster Contrast's ``RandomMultipleGallerySampler``
  (alibaba/cluster-contrast-reid ``clustercontrast/utils/data/sampler.py``; ANCHORS.md): for every
  pseudo-identity in random order, one random anchor image, then ``K-1`` images of the same
  pseudo-identity taken from **other cameras** (without replacement when there are enough, with
  replacement otherwise); when no other camera has it, from the same camera; a single-image
  pseudo-identity contributes just that image.
* ``random_identity``: the classic P x K sampler (torchreid ``RandomIdentitySampler``): each identity's
  images shuffled and cut into groups of K (with replacement when it has fewer than K); groups of
  ``P = batch_size / K`` different identities form each batch.

Both are deterministic for a given ``seed`` (own ``numpy.random.Generator``; global RNGs untouched).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def _groups(labels: np.ndarray) -> dict[int, np.ndarray]:
    idx = np.flatnonzero(labels >= 0)
    if idx.size == 0:
        raise ValueError("the sampler got no clustered sample (every label is -1); nothing to train on")
    out: dict[int, list[int]] = defaultdict(list)
    for i in idx:
        out[int(labels[i])].append(int(i))
    return {k: np.asarray(v) for k, v in sorted(out.items())}


class CameraAwareSampler(Sampler[int]):
    """Cluster Contrast's RandomMultipleGallerySampler (see module docstring).

    Args:
        labels: ``(N,) int`` pseudo-labels (-1 = outlier).
        camids: ``(N,) int`` cameras.
        num_instances: K.
        seed: RNG seed of this pass.
    """

    def __init__(self, labels: np.ndarray, camids: np.ndarray, num_instances: int, seed: int = 0) -> None:
        self.labels = np.asarray(labels)
        self.camids = np.asarray(camids)
        self.k = num_instances
        self.seed = seed
        self.groups = _groups(self.labels)
        self._order = self._build()

    def _build(self) -> list[int]:
        rng = np.random.default_rng(self.seed)
        out: list[int] = []
        for key in rng.permutation(list(self.groups)):
            members = self.groups[int(key)]
            anchor = int(rng.choice(members))
            out.append(anchor)
            if len(members) == 1 or self.k == 1:
                continue
            others = members[members != anchor]
            pool = others[self.camids[others] != self.camids[anchor]]
            if pool.size == 0:
                pool = others
            picks = rng.choice(pool, size=self.k - 1, replace=pool.size < self.k - 1)
            out.extend(int(i) for i in picks)
        return out

    def __iter__(self) -> Iterator[int]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)


class RandomIdentitySampler(Sampler[int]):
    """Classic P x K sampling (see module docstring); every yielded batch of ``batch_size`` holds K
    images of each of P distinct identities."""

    def __init__(self, labels: np.ndarray, batch_size: int, num_instances: int, seed: int = 0) -> None:
        if batch_size % num_instances:
            raise ValueError(f"batch_size {batch_size} must be a multiple of num_instances {num_instances}")
        self.groups = _groups(np.asarray(labels))
        self.k = num_instances
        self.p = batch_size // num_instances
        self.seed = seed
        self._order = self._build()

    def _build(self) -> list[int]:
        rng = np.random.default_rng(self.seed)
        chunks: dict[int, list[np.ndarray]] = {}
        for key, members in self.groups.items():
            m = rng.choice(members, size=self.k, replace=True) if len(members) < self.k else rng.permutation(members)
            chunks[key] = [m[i:i + self.k] for i in range(0, len(m) - self.k + 1, self.k)]
        out: list[int] = []
        avail = [k for k in chunks if chunks[k]]
        while len(avail) >= self.p:
            chosen = rng.choice(avail, size=self.p, replace=False)
            for key in chosen:
                out.extend(int(i) for i in chunks[int(key)].pop(0))
            avail = [k for k in avail if chunks[k]]
        return out

    def __iter__(self) -> Iterator[int]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)


def build_sampler(labels: np.ndarray, camids: np.ndarray, batch_size: int, num_instances: int,
                  kind: str = "camera_aware", seed: int = 0) -> Sampler[int]:
    """The sampler ``kind`` (``"camera_aware"`` | ``"random_identity"``) over ``labels``.

    Raises:
        ValueError: unknown kind, or no clustered sample.
    """
    if kind == "camera_aware":
        return CameraAwareSampler(labels, camids, num_instances, seed)
    if kind == "random_identity":
        return RandomIdentitySampler(labels, batch_size, num_instances, seed)
    raise ValueError(f"unknown sampler {kind!r}; choose camera_aware or random_identity")
