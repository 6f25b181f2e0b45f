"""P x K samplers over pseudo-labels: they yield dataset indices; outliers (label -1) are never drawn.

* ``camera_aware`` - Cluster Contrast's ``RandomMultipleGallerySampler`` (alibaba/cluster-contrast-reid
  ``clustercontrast/utils/data/sampler.py``; ANCHORS.md). For every pseudo-identity, in a random order:
  one random anchor image, then ``K-1`` images of the same pseudo-identity from **other cameras** than the
  anchor's - drawn without replacement when at least ``K`` such images exist, with replacement otherwise
  (CC's exact threshold: ``>= K``, not ``>= K-1``); when no other camera has the pseudo-identity, the
  ``K-1`` come from its other images in the same camera (same rule); a single-image pseudo-identity
  contributes only its anchor. ``batch_size`` is not used: consecutive groups of K fill the batches, as
  in CC (a single-image pseudo-identity shifts the grouping, as there).
* ``random_identity`` - the classic P x K sampler (torchreid ``torchreid/data/sampler.py``
  ``RandomIdentitySampler``): each identity's images are shuffled (drawn K times with replacement when
  it has fewer than K) and cut into groups of K (an incomplete last group is dropped); while at least
  ``P = batch_size / K`` identities still have groups, P distinct ones are drawn and one group of each
  is emitted, so every batch of ``batch_size`` holds K images of each of P distinct identities.
* ``proxy`` - P x K over camera-aware **proxies** (the samples of one pseudo-identity seen by one
  camera), as CAP and O2CAP train (``ClassUniformlySampler`` on the proxy label, ``k=4``:
  Terminator8758/CAP-master ``train_cap.py`` and Terminator8758/O2CAP ``reid/utils/data/sampler.py``).
  Proxies in a random order; for each, K of its images without replacement when it has at least K,
  otherwise K drawn from K copies of its images (the reference's ``value * k``: every image at most K
  times). Consecutive groups of K fill the batches. A pseudo-identity seen by c cameras is drawn c
  times per pass, once per camera, so every proxy's memory entry gets K updates per pass.

Deviations from the references, on purpose: randomness comes from the sampler's own
``numpy.random.Generator`` seeded from ``(seed, pass number)`` - never a global RNG - so a run is
reproducible and every pass (every ``iter()``, e.g. when :class:`unreid.data.loader.IterLoader` restarts
the loader within an epoch) draws a fresh order. ``len()`` is the exact length of the next pass (CC
returns ``#ids * K`` even when single-image ids yield fewer indices; torchreid an estimate).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from unreid.memory.proxy import camera_proxies

SAMPLERS = ("camera_aware", "random_identity", "proxy", "shuffle")


def _groups(labels: np.ndarray) -> list[np.ndarray]:
    """Indices of each label >= 0, labels in increasing order, indices increasing."""
    idx = np.flatnonzero(labels >= 0)
    if idx.size == 0:
        raise ValueError(
            "the sampler got no clustered sample (every label is -1): nothing to train on; raise "
            "pseudo_labels.eps or lower pseudo_labels.min_samples so that clusters form")
    order = idx[np.argsort(labels[idx], kind="stable")]
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    return np.split(order, cuts)


def _labels_and_cameras(labels: np.ndarray, camids: np.ndarray, num_instances: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` and ``camids`` as arrays, checked: 1-D of equal length, ``num_instances >= 1``."""
    labels, camids = np.asarray(labels), np.asarray(camids)
    if labels.ndim != 1 or camids.shape != labels.shape:
        raise ValueError(f"labels {labels.shape} and camids {camids.shape} must be 1-D of equal length")
    if num_instances < 1:
        raise ValueError(f"num_instances must be >= 1, got {num_instances}")
    return labels, camids


class _PassSampler(Sampler[int]):
    """A sampler that draws a new order per pass from ``default_rng([seed, pass])``; ``len`` is exact."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = int(seed) % 2**63
        self._pass = 0
        self._next: list[int] | None = None

    def _build(self, rng: np.random.Generator) -> list[int]:
        raise NotImplementedError

    def _peek(self) -> list[int]:
        if self._next is None:
            self._next = self._build(np.random.default_rng([self.seed, self._pass]))
        return self._next

    def __iter__(self) -> Iterator[int]:
        order = self._peek()
        self._next, self._pass = None, self._pass + 1
        return iter(order)

    def __len__(self) -> int:
        return len(self._peek())


class ShuffleSampler(_PassSampler):
    """Every clustered sample once per pass, in a random order: a plain shuffle, no identity structure
    (GCL's loader, ``examples/main.py`` ``get_train_loader`` with ``num_instances=0``: ``shuffle=True`` over the
    clustered images in stage 3, over all images in stage 2).

    Args:
        labels: ``(N,) int`` labels, ``-1`` = outlier (never yielded).
        seed: seed of the sampler's own generator (pass ``p`` uses ``default_rng([seed, p])``).

    Raises:
        ValueError: ``labels`` not 1-D, or no label >= 0.
    """

    def __init__(self, labels: np.ndarray, seed: int = 0) -> None:
        super().__init__(seed)
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
        self.indices = np.flatnonzero(labels >= 0)
        if self.indices.size == 0:
            _groups(labels)  # raises the sampler's "no clustered sample" error

    def _build(self, rng: np.random.Generator) -> list[int]:
        return self.indices[rng.permutation(self.indices.size)].tolist()


class CameraAwareSampler(_PassSampler):
    """Cluster Contrast's ``RandomMultipleGallerySampler`` (rules in the module docstring).

    Args:
        labels: ``(N,) int`` pseudo-labels, ``-1`` = outlier (never yielded).
        camids: ``(N,) int`` camera of each sample.
        num_instances: K, images per pseudo-identity per pass (>= 1).
        seed: seed of the sampler's own generator (pass ``p`` uses ``default_rng([seed, p])``).

    Raises:
        ValueError: no label >= 0, mismatched shapes, or ``num_instances < 1``.
    """

    def __init__(self, labels: np.ndarray, camids: np.ndarray, num_instances: int, seed: int = 0) -> None:
        super().__init__(seed)
        labels, camids = _labels_and_cameras(labels, camids, num_instances)
        self.k = int(num_instances)
        self.groups = _groups(labels)
        self.group_cams = [camids[g] for g in self.groups]

    def _build(self, rng: np.random.Generator) -> list[int]:
        out: list[int] = []
        for gi in rng.permutation(len(self.groups)):
            members, cams = self.groups[gi], self.group_cams[gi]
            a = int(rng.integers(len(members)))
            out.append(int(members[a]))
            if len(members) == 1 or self.k == 1:
                continue
            pool = np.flatnonzero(cams != cams[a])  # other cameras
            if pool.size == 0:
                pool = np.delete(np.arange(len(members)), a)  # same camera, anchor excluded
            picks = rng.choice(pool, size=self.k - 1, replace=pool.size < self.k)
            out.extend(members[picks].tolist())
        return out


class RandomIdentitySampler(_PassSampler):
    """Classic P x K sampling (torchreid ``RandomIdentitySampler``; rules in the module docstring).

    Args:
        labels: ``(N,) int`` labels, ``-1`` = outlier (never yielded).
        batch_size: P * K.
        num_instances: K.
        seed: seed of the sampler's own generator (pass ``p`` uses ``default_rng([seed, p])``).

    Raises:
        ValueError: no label >= 0, or ``batch_size`` not a positive multiple of ``num_instances``.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, num_instances: int, seed: int = 0) -> None:
        super().__init__(seed)
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
        if num_instances < 1 or batch_size < num_instances or batch_size % num_instances:
            raise ValueError(
                f"batch_size ({batch_size}) must be a positive multiple of num_instances ({num_instances})")
        self.k = int(num_instances)
        self.p = batch_size // num_instances
        self.groups = _groups(labels)

    def _build(self, rng: np.random.Generator) -> list[int]:
        chunks: list[list[np.ndarray]] = []
        for members in self.groups:
            if len(members) < self.k:
                m = rng.choice(members, size=self.k, replace=True)
            else:
                m = rng.permutation(members)
            chunks.append([m[i:i + self.k] for i in range(0, len(m) - self.k + 1, self.k)])
        out: list[int] = []
        avail = list(range(len(chunks)))
        while len(avail) >= self.p:
            for gi in rng.choice(avail, size=self.p, replace=False):
                out.extend(chunks[gi].pop(0).tolist())
            avail = [g for g in avail if chunks[g]]
        return out


class ProxySampler(_PassSampler):
    """P x K over camera-aware proxies (CAP / O2CAP ``ClassUniformlySampler``; rules in the module docstring).

    A proxy is a (pseudo-label, camera) pair with at least one sample, numbered by
    :func:`unreid.memory.proxy.camera_proxies` as the proxy memory numbers them.

    Args:
        labels: ``(N,) int`` pseudo-labels, ``-1`` = outlier (never yielded).
        camids: ``(N,) int`` camera of each sample.
        num_instances: K, images per proxy per pass (>= 1).
        seed: seed of the sampler's own generator (pass ``p`` uses ``default_rng([seed, p])``).

    Raises:
        ValueError: no label >= 0, mismatched shapes, or ``num_instances < 1``.
    """

    def __init__(self, labels: np.ndarray, camids: np.ndarray, num_instances: int, seed: int = 0) -> None:
        super().__init__(seed)
        labels, camids = _labels_and_cameras(labels, camids, num_instances)
        self.k = int(num_instances)
        self.groups = _groups(camera_proxies(labels, camids)[0])

    def _build(self, rng: np.random.Generator) -> list[int]:
        out: list[int] = []
        for gi in rng.permutation(len(self.groups)):
            members = self.groups[gi]
            pool = members if len(members) >= self.k else np.tile(members, self.k)
            out.extend(rng.choice(pool, size=self.k, replace=False).tolist())
        return out


class ModalityPairSampler(_PassSampler):
    """MBCCM's two samplers (FranklinLingfeng/MBCCM-master-MM-23 @3492a38, ``sampler.py``): each step draws
    ``P`` visible and ``P`` infrared clusters and ``K`` images of each, and yields the step's ``P * K`` visible
    indices, then its ``P * K`` infrared indices, position by position aligned: visible image ``k`` and infrared
    image ``k`` of a step come from the ``i = k // K``-th cluster pair.

    * ``paired=False`` (stage 1, ``IdentitySampler``): the visible and the infrared clusters are drawn
      independently (no pairing meant).
    * ``paired=True`` (stage 2, ``IdentitySamplerAssign``): ``P // 2`` infrared clusters, each with one random
      visible partner among its matches, then ``P - P // 2`` visible clusters, each with one random infrared
      partner: pair ``i`` holds matched clusters.

    Clusters are drawn without replacement (the reference's ``replace=False``; with replacement when a modality
    has fewer than needed, where the reference would stop with an error); a cluster's ``K`` images without
    replacement when it has more than ``K`` (the reference's ``>``), with replacement otherwise. Clusters
    without a partner are never drawn in stage 2 (the published matching leaves none). Randomness: this
    sampler's own generator per pass (module docstring), not numpy's global one.

    Args:
        labels: ``(N,) int`` pseudo-labels (global cluster ids; ``-1`` never drawn).
        modalities: ``(N,) int`` 0 visible, 1 infrared.
        group_of_cluster: ``(C,) int`` modality of each cluster.
        matches: ``(M, 2) int`` matched cluster pairs (one of each modality), needed when ``paired``.
        clusters_per_step: ``P`` (MBCCM: 12).
        num_instances: ``K`` (MBCCM: 12).
        steps: steps per pass (MBCCM: 300 SYSU-MM01, 100 RegDB).
        paired: stage 2's pairing.
        seed: the sampler's seed.

    Raises:
        ValueError: a modality has no cluster, ``paired`` without matches, or bad sizes.
    """

    def __init__(self, labels: np.ndarray, modalities: np.ndarray, group_of_cluster: np.ndarray,
                 matches: np.ndarray | None, clusters_per_step: int, num_instances: int, steps: int,
                 paired: bool = False, seed: int = 0) -> None:
        super().__init__(seed)
        labels, modalities = np.asarray(labels), np.asarray(modalities)
        goc = np.asarray(group_of_cluster)
        if clusters_per_step < 1 or num_instances < 1 or steps < 1:
            raise ValueError(f"need clusters_per_step, num_instances, steps >= 1, got {clusters_per_step}, "
                             f"{num_instances}, {steps}")
        self.p, self.k, self.steps, self.paired = int(clusters_per_step), int(num_instances), int(steps), paired
        self.members = {int(c): np.flatnonzero(labels == c) for c in range(len(goc))}
        self.clusters = [np.asarray([c for c in range(len(goc)) if goc[c] == m and self.members[c].size])
                         for m in (0, 1)]
        for m, name in enumerate(("visible", "infrared")):
            if self.clusters[m].size == 0:
                raise ValueError(f"ModalityPairSampler: no {name} cluster to draw from")
            if np.any(modalities[np.concatenate([self.members[c] for c in self.clusters[m]])] != m):
                raise ValueError(f"ModalityPairSampler: a {name} cluster holds images of the other modality")
        self.partners: list[dict[int, np.ndarray]] = [{}, {}]
        if paired:
            if matches is None or len(matches) == 0:
                raise ValueError("ModalityPairSampler(paired=True) needs the cross-modality matches")
            pairs = np.asarray(matches).reshape(-1, 2)
            for a, b in pairs:
                v, r = (a, b) if goc[a] == 0 else (b, a)
                self.partners[0].setdefault(int(v), []).append(int(r))
                self.partners[1].setdefault(int(r), []).append(int(v))
            self.partners = [{c: np.asarray(sorted(set(p))) for c, p in d.items()} for d in self.partners]

    def _draw(self, rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
        return rng.choice(pool, size=n, replace=pool.size < n)

    def _images(self, rng: np.random.Generator, cluster: int) -> np.ndarray:
        m = self.members[cluster]
        return rng.choice(m, size=self.k, replace=m.size <= self.k)

    def _build(self, rng: np.random.Generator) -> list[int]:
        out: list[int] = []
        for _ in range(self.steps):
            if not self.paired:
                vis, ir = self._draw(rng, self.clusters[0], self.p), self._draw(rng, self.clusters[1], self.p)
            else:
                half = self.p // 2
                ir_a = self._draw(rng, np.asarray(sorted(self.partners[1])), half)
                vis_a = [int(rng.choice(self.partners[1][int(c)])) for c in ir_a]
                vis_b = self._draw(rng, np.asarray(sorted(self.partners[0])), self.p - half)
                ir_b = [int(rng.choice(self.partners[0][int(c)])) for c in vis_b]
                vis, ir = np.concatenate([vis_a, vis_b]).astype(int), np.concatenate([ir_a, ir_b]).astype(int)
            v_idx, r_idx = [], []
            for cv, cr in zip(vis, ir):
                v_idx.extend(self._images(rng, int(cv)).tolist())
                r_idx.extend(self._images(rng, int(cr)).tolist())
            out.extend(v_idx + r_idx)
        return out


def build_sampler(labels: np.ndarray, camids: np.ndarray, batch_size: int, num_instances: int,
                  kind: str = "camera_aware", seed: int = 0) -> Sampler[int]:
    """The training sampler ``kind`` over (pseudo-)labels.

    Args:
        labels: ``(N,) int`` labels of the training samples, ``-1`` = outlier (never yielded).
        camids: ``(N,) int`` cameras (used by ``camera_aware`` and ``proxy``).
        batch_size: images per batch (P * K; ``random_identity`` needs a multiple of K).
        num_instances: K, images per identity in a batch.
        kind: ``"camera_aware"`` (CC RandomMultipleGallerySampler) | ``"random_identity"`` (P x K) |
            ``"proxy"`` (P x K over (pseudo-label, camera) proxies, CAP's ClassUniformlySampler) |
            ``"shuffle"`` (every clustered sample once, random order: :class:`ShuffleSampler`).
        seed: seed of the sampler's own generator; the same seed gives the same passes.

    Returns:
        a ``Sampler[int]`` of dataset indices; ``len()`` is the exact length of its next pass.

    Raises:
        ValueError: unknown ``kind``, no label >= 0, mismatched shapes or bad sizes.
    """
    if kind in ("camera_aware", "proxy"):
        if batch_size < num_instances:
            raise ValueError(f"batch_size ({batch_size}) must be >= num_instances ({num_instances})")
        cls = CameraAwareSampler if kind == "camera_aware" else ProxySampler
        return cls(labels, camids, num_instances, seed)
    if kind == "shuffle":
        return ShuffleSampler(labels, seed)
    if kind == "random_identity":
        if np.shape(camids) != np.shape(labels):
            raise ValueError(
                f"labels {np.shape(labels)} and camids {np.shape(camids)} must have equal length")
        return RandomIdentitySampler(labels, batch_size, num_instances, seed)
    raise ValueError(f"unknown sampler {kind!r}; choose one of {SAMPLERS} (data.sampler)")
