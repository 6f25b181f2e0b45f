"""The hand-crafted prior computed once (``pseudo_labels.prior_mode=gram``, the default).

With ``pseudo_labels.colour_weight = w > 0`` the pseudo-labeller sees ``x = normalize([f, w c])``
(:func:`unreid.pseudo_labels.colour.append_colour`): ``f`` the L2-normalised network feature, ``c``
the hand-crafted descriptor standardised per camera and L2-normalised. Both parts have unit norm, so
``|[f, w c]| = sqrt(1 + w^2)`` for every image and every inner product the labeller uses splits into
a part that changes every epoch and a part that never does::

    x_i . x_j = f_i . f_j / (1 + w^2)  +  w^2 c_i . c_j / (1 + w^2)
              = f'_i . f'_j            +  G_ij

The ``append`` form (``pseudo_labels.prior_mode=append``) concatenates the parts every epoch: with
LOMO (26,960 dimensions) every k-NN search multiplies 29,008-dimensional vectors and the whole
``N x 26,960`` matrix stays in memory (0.6 GB for CUHK03's 5,300 images, 3.5 GB at MSMT17's 32,621).
The ``gram`` form computes what never changes once:

* the standardised descriptors ``c' = w c / sqrt(1 + w^2)`` are written once, in row chunks, to a
  :class:`DescriptorStore` (in memory, or an anonymous file on disk, so that their size is not held
  in memory);
* each labelling group's Gram block ``G = C'_g C'_g^T`` (per camera with the camera-grouped
  recipes: ``sum_g N_g^2`` floats, not ``N^2``) is computed once and kept;
* every epoch the k-NN search runs on the network part only and adds ``G`` block by block
  (:func:`unreid.pseudo_labels.knn.knn` with ``gram=``), and the k-reciprocal encoding takes the
  missing inner products from ``G`` too;
* the cross-camera matching compares cluster centroids. With two groups their descriptor part is
  summed by streaming the store once (``K x D`` sums). With more groups, comparing 29k-dimensional
  centroids of every pair of groups costs ``sum_{g<h} K_g K_h D`` multiply-adds (about 1 TFLOP per
  epoch at MSMT17's 32,621 images and 15 cameras), so the full ``N x N`` Gram matrix of the prior is
  computed once (an anonymous file above 1 GiB, ``4 N^2`` bytes, used up to
  :data:`CROSS_GRAM_MAX_BYTES` and from :data:`CROSS_GRAM_MIN_DIM` descriptor dimensions) and
  the clusters' descriptor products ``S G S^T`` are formed by streaming it: about ``N^2``
  additions per epoch.

Nothing the labeller sees changes: the same inner products, summed in another order, so equal up to
float32 rounding (``tests/test_label_prior.py`` compares the two forms' neighbours, Jaccard graph and
labels). The cost and memory figures are in docs/BENCHMARKS.md ("The LOMO prior at scale").
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger("unreid")

#: ``pseudo_labels.prior_mode`` values (unreid.config)
PRIOR_MODES = ("gram", "append")
#: ``pseudo_labels.prior_store`` values (unreid.config)
PRIOR_STORES = ("auto", "memory", "disk")
#: ``prior_store=auto`` keeps the descriptors in memory up to this size, on disk above (the 1 GB
#: budget of issue 34 for an MSMT17-size prior)
AUTO_MEMORY_BYTES = 1 << 30
#: rows read from the store at a time (26,960-d LOMO: 110 MB per chunk)
CHUNK_ROWS = 1024
#: with more than two labelling groups, the cross-camera centroid products come from the full ``N x N``
#: Gram matrix of the prior (an anonymous file) when it takes at most this many bytes (:meth:`DescriptorStore.cross_products`)
CROSS_GRAM_MAX_BYTES = 8 << 30
#: ... and when the descriptors have at least this many dimensions. Our choice, from the two costs per epoch:
#: pairs of centroids ~ K^2 D / 2 multiply-adds in float64 products, the streamed Gram ~ N^2 additions plus
#: 4 N^2 bytes read; with K ~ N / 5 clusters the Gram wins from a few thousand dimensions (LOMO: 26,960),
#: not for the colour stripes (1,024), whose full Gram would also outweigh the descriptors themselves
CROSS_GRAM_MIN_DIM = 8192


class _Rows:
    """Float32 rows ``(n, d)`` in memory or in an anonymous file read and written with ``pread`` /
    ``pwrite`` (not ``mmap``: the pages read stay in the kernel's page cache, not in the process's
    resident set). Row positions are the file's order; runs of consecutive positions are read at once."""

    def __init__(self, n: int, d: int, on_disk: bool, directory: str | Path | None, what: str = "descriptors") -> None:
        self.n, self.d = n, d
        self.row_bytes = d * 4
        self.fh = None
        self.mem: np.ndarray | None = None
        if on_disk:
            directory = Path(directory) if directory is not None else Path(tempfile.gettempdir())
            directory.mkdir(parents=True, exist_ok=True)
            self.fh = tempfile.TemporaryFile(dir=directory, prefix="unreid-prior-")
            self.fh.truncate(n * self.row_bytes)
            log.info("pseudo-labels: the prior's %d x %d %s (%.2f GB) live in an anonymous file in %s",
                     n, d, what, n * self.row_bytes / 1e9, directory)
        else:
            self.mem = np.empty((n, d), dtype=np.float32)

    @staticmethod
    def _runs(pos: np.ndarray) -> list[tuple[int, int, int]]:
        """``(first position, count, index into pos)`` of each run of consecutive sorted positions."""
        cuts = np.flatnonzero(np.diff(pos) != 1) + 1
        starts = np.concatenate([[0], cuts])
        ends = np.concatenate([cuts, [len(pos)]])
        return [(int(pos[a]), int(b - a), int(a)) for a, b in zip(starts, ends)]

    def read(self, pos: np.ndarray) -> np.ndarray:
        """``(len(pos), d) float32`` rows at positions ``pos`` (any order)."""
        if self.mem is not None:
            return self.mem[pos]
        order = np.argsort(pos, kind="stable")
        out = np.empty((len(pos), self.d), dtype=np.float32)
        sorted_out = np.empty_like(out)
        fd = self.fh.fileno()
        for first, count, at in self._runs(pos[order]):
            buf = os.pread(fd, count * self.row_bytes, first * self.row_bytes)
            sorted_out[at:at + count] = np.frombuffer(buf, dtype=np.float32).reshape(count, self.d)
        out[order] = sorted_out
        return out

    def read_range(self, first: int, count: int, buf: np.ndarray) -> np.ndarray:
        """Rows at positions ``first .. first + count - 1``: a view of the memory store, or read with
        ``preadv`` straight into ``buf`` (``(>= count, d) float32``, C-contiguous) and returned as its head."""
        if self.mem is not None:
            return self.mem[first:first + count]
        out = buf[:count]
        self._pread_into(out, first * self.row_bytes)
        return out

    def read_block(self, first: int, count: int, col: int, width: int, buf: np.ndarray) -> np.ndarray:
        """Columns ``col .. col + width - 1`` of rows ``first .. first + count - 1``, ``(count, width)``:
        a view of the memory store, or one ``pread`` per row into ``buf`` (``(>= count * width,)``
        float32) reshaped."""
        if self.mem is not None:
            return self.mem[first:first + count, col:col + width]
        out = buf[:count * width].reshape(count, width)
        for r in range(count):
            self._pread_into(out[r], (first + r) * self.row_bytes + col * 4)
        return out

    def _pread_into(self, out: np.ndarray, offset: int) -> None:
        """Fill the C-contiguous array ``out`` from the file's bytes at ``offset`` (``preadv`` until done).

        Raises:
            OSError: the file ends before ``out`` is full."""
        view = memoryview(out).cast("B")
        done = 0
        while done < len(view):
            got = os.preadv(self.fh.fileno(), [view[done:]], offset + done)
            if got <= 0:
                raise OSError(f"short read from the prior's store at byte {offset + done}")
            done += got

    def write(self, pos: np.ndarray, rows: np.ndarray) -> None:
        """Write ``rows`` ``(len(pos), d) float32`` at positions ``pos``."""
        if self.mem is not None:
            self.mem[pos] = rows
            return
        order = np.argsort(pos, kind="stable")
        rows = np.ascontiguousarray(rows[order], dtype=np.float32)
        fd = self.fh.fileno()
        for first, count, at in self._runs(pos[order]):
            os.pwrite(fd, rows[at:at + count].tobytes(), first * self.row_bytes)


class DescriptorStore:
    """Per-camera standardised, L2-normalised, weighted descriptors ``(N, D) float32``, written once.

    Row ``i`` is ``scale * normalize((d_i - mu_c) / (sigma_c + 1e-6))`` for camera ``c`` of image
    ``i``: :func:`unreid.pseudo_labels.camera.camera_standardize` (unbiased per-dimension standard
    deviation; a camera with a single image keeps its descriptor, only normalised) computed in two
    passes over row chunks, so the raw descriptors never need to be in memory at once. The per-camera
    sums are accumulated in float64. Rows are kept camera by camera, so that a camera's rows (the
    labelling groups of the camera-grouped recipes) are read as one run.

    Args:
        chunks: the raw descriptors ``(b, D) float32`` in row order, in chunks (any sizes), e.g.
            :func:`unreid.pseudo_labels.colour.iter_descriptors`; or one ``(N, D)`` tensor.
        camids: ``(N,) int64`` camera id of every row.
        scale: the factor applied after normalisation (``w / sqrt(1 + w^2)`` for the prior).
        store: ``"memory"``, ``"disk"`` (an anonymous file in ``directory``, read with ``pread``; the
            operating system removes it when the store is closed or the process ends, even on SIGKILL)
            or ``"auto"`` (disk when ``N * D * 4`` bytes exceed :data:`AUTO_MEMORY_BYTES`).
        directory: where the ``disk`` file lives (the run's output directory in training); ``None``
            = the system's temporary directory.

    Raises:
        ValueError: ``store`` unknown, chunks of different widths, or not ``N`` rows in all.
    """

    def __init__(self, chunks: Tensor | Iterable[Tensor], camids: np.ndarray, scale: float = 1.0,
                 store: str = "auto", directory: str | Path | None = None) -> None:
        if store not in PRIOR_STORES:
            raise ValueError(f"unknown prior store {store!r}; choose one of {PRIOR_STORES}")
        self.camids = np.asarray(camids, dtype=np.int64)
        n = len(self.camids)
        if isinstance(chunks, Tensor):
            chunks = [chunks]
        cams, cam_index = np.unique(self.camids, return_inverse=True)
        order = np.argsort(cam_index, kind="stable")
        self.pos = np.empty(n, dtype=np.int64)
        self.pos[order] = np.arange(n)  # file position of every row: camera by camera
        self._rows: _Rows | None = None
        sums = sq = None
        row = 0
        for chunk in chunks:
            x = np.ascontiguousarray(torch.as_tensor(chunk, dtype=torch.float32).cpu().numpy())
            if self._rows is None:
                d = x.shape[1] if x.ndim == 2 else 0
                on_disk = store == "disk" or (store == "auto" and n * d * 4 > AUTO_MEMORY_BYTES)
                self._rows = _Rows(n, d, on_disk, directory)
                sums = np.zeros((len(cams), d))
                sq = np.zeros((len(cams), d))
            if x.ndim != 2 or x.shape[1] != self._rows.d or row + len(x) > n:
                raise ValueError(f"descriptor chunk of shape {x.shape} at row {row} does not fit ({n}, "
                                 f"{self._rows.d}) descriptors (one row per training image)")
            self._rows.write(self.pos[row:row + len(x)], x)
            ci = cam_index[row:row + len(x)]
            for c in np.unique(ci):
                xc = x[ci == c].astype(np.float64)
                sums[c] += xc.sum(0)
                sq[c] += (xc * xc).sum(0)
            row += len(x)
        if self._rows is None or row != n:
            raise ValueError(f"{row} descriptor rows for {n} training images")
        counts = np.bincount(cam_index, minlength=len(cams))
        mean = sums / counts[:, None]
        var = np.maximum(sq - counts[:, None] * mean * mean, 0.0) / np.maximum(counts - 1, 1)[:, None]
        std = np.sqrt(var)
        cam_of_pos = cam_index[order]
        for s in range(0, n, CHUNK_ROWS):
            pos = np.arange(s, min(n, s + CHUNK_ROWS))
            x = torch.from_numpy(np.array(self._rows.read(pos)))
            ci = cam_of_pos[pos]
            y = (x - torch.from_numpy(mean[ci].astype(np.float32))) / (torch.from_numpy(std[ci].astype(np.float32))
                                                                       + 1e-6)
            single = torch.from_numpy(counts[ci] == 1)
            y[single] = x[single]
            self._rows.write(pos, (F.normalize(y, dim=1) * scale).numpy())
        self.scale = float(scale)
        self._grams: dict[bytes, Tensor] = {}
        self._dir = directory
        self._full: _Rows | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(N, D)``: training images, descriptor dimensions."""
        return (self._rows.n, self._rows.d)

    @property
    def on_disk(self) -> bool:
        """Whether the descriptors live in the anonymous file rather than in memory."""
        return self._rows.fh is not None

    def rows(self, idx: np.ndarray) -> Tensor:
        """``(len(idx), D) float32`` rows ``idx`` (a copy)."""
        return torch.from_numpy(np.ascontiguousarray(self._rows.read(self.pos[np.asarray(idx, dtype=np.int64)])))

    def close(self) -> None:
        """Release the disk files, the descriptors' and the full Gram's (the operating system removes them)."""
        for rows in (self._rows, self._full):
            if rows is not None and rows.fh is not None:
                rows.fh.close()

    def gram(self, idx: np.ndarray | None = None) -> Tensor:
        """``(n, n) float32`` inner products of rows ``idx`` (``None`` = all rows), computed once per
        distinct ``idx`` and kept (the labelling groups never change during a run).

        Blocked over row chunks of :data:`CHUNK_ROWS` (upper block triangle, mirrored), so only two
        chunks of descriptors are in memory at a time; or, when the :meth:`full_gram` has been computed
        and the rows are consecutive in the store (a camera's rows), read from it.
        """
        idx = np.arange(self.shape[0]) if idx is None else np.asarray(idx, dtype=np.int64)
        key = idx.tobytes()
        if key not in self._grams and self._full is not None and len(idx):
            pos = self.pos[idx]
            if np.array_equal(pos, np.arange(pos[0], pos[0] + len(pos))):
                n, p0 = len(pos), int(pos[0])
                block = self._full.read_block(p0, n, p0, n, np.empty(n * n, dtype=np.float32))
                self._grams[key] = torch.from_numpy(block.copy() if self._full.mem is not None else block)
        if key not in self._grams:
            n = len(idx)
            g = torch.empty(n, n, dtype=torch.float32)
            starts = list(range(0, n, CHUNK_ROWS))
            for a, s0 in enumerate(starts):
                xa = self.rows(idx[s0:s0 + CHUNK_ROWS])
                for s1 in starts[a:]:
                    xb = xa if s1 == s0 else self.rows(idx[s1:s1 + CHUNK_ROWS])
                    block = xa @ xb.T
                    g[s0:s0 + len(xa), s1:s1 + len(xb)] = block
                    if s1 != s0:
                        g[s1:s1 + len(xb), s0:s0 + len(xa)] = block.T
            self._grams[key] = g
        return self._grams[key]

    def full_gram(self) -> _Rows:
        """The ``(N, N) float32`` Gram matrix of all rows in the store's (camera-sorted) order, computed
        once, in row bands of ``2 * CHUNK_ROWS``: each band's products with the chunks from its own first
        row on (``N^2 D / 2`` multiply-adds in all, plus the bands' own squares), and the columns left of
        it copied, transposed, from the rows already written (so ``G`` is exactly symmetric outside the
        bands' own squares). In memory when the store is and it takes at most
        :data:`AUTO_MEMORY_BYTES`, else in an anonymous file next to the store; ``4 N^2`` bytes."""
        if self._full is None:
            n = self.shape[0]
            full = _Rows(n, n, self.on_disk or 4 * n * n > AUTO_MEMORY_BYTES, self._dir, what="Gram matrix")
            band = 2 * CHUNK_ROWS
            out = np.empty((min(band, n), n), dtype=np.float32)
            xa_buf = np.empty((min(band, n), self.shape[1]), dtype=np.float32) if self.on_disk else None
            xb_buf = np.empty((min(CHUNK_ROWS, n), self.shape[1]), dtype=np.float32) if self.on_disk else None
            t_buf = np.empty(min(CHUNK_ROWS, n) * min(band, n), dtype=np.float32) if full.mem is None else None
            for s0 in range(0, n, band):
                b = min(band, n - s0)
                for r0 in range(0, s0, CHUNK_ROWS):  # left of the band: G[r, s0:s0+b] of earlier rows r
                    c = min(CHUNK_ROWS, s0 - r0)
                    out[:b, r0:r0 + c] = full.read_block(r0, c, s0, b, t_buf).T
                xa = torch.from_numpy(self._rows.read_range(s0, b, xa_buf))
                for s1 in range(s0, n, CHUNK_ROWS):
                    c = min(CHUNK_ROWS, n - s1)
                    xb = torch.from_numpy(self._rows.read_range(s1, c, xb_buf))
                    out[:b, s1:s1 + c] = (xa @ xb.T).numpy()
                full.write(np.arange(s0, s0 + b), out[:b])
            self._full = full
        return self._full

    def cross_products(self, clusters: list[tuple[np.ndarray, np.ndarray, int]]) -> np.ndarray:
        """``(K, K) float64`` inner products of the clusters' descriptor sums, ``K`` all groups' clusters.

        Args:
            clusters: per group, ``(idx, labels, offset)``: its rows, their group-local cluster ids
                (``-1`` outliers) and the offset of its ids in the global numbering.

        ``P = S G S^T`` with ``S`` the ``(K, N)`` cluster indicator and ``G`` the :meth:`full_gram`,
        streamed in row bands (each band's columns summed per cluster by ``index_add_``, then its rows):
        about ``N^2`` additions per call instead of the ``K_a K_b D`` multiply-adds of every pair of
        groups' centroids.
        """
        n = self.shape[0]
        col = np.full(n, -1, dtype=np.int64)  # global cluster of every file position
        for idx, labels, offset in clusters:
            keep = labels >= 0
            col[self.pos[np.asarray(idx, dtype=np.int64)[keep]]] = labels[keep] + offset
        k = int(col.max()) + 1 if (col >= 0).any() else 0
        target = torch.from_numpy(np.where(col >= 0, col, k))  # outliers go to a spare column k
        full = self.full_gram()
        out = np.zeros((k, k))
        band = CHUNK_ROWS
        buf = np.empty((min(band, n), n), dtype=np.float32) if full.mem is None else None
        sums = torch.empty(min(band, n), k + 1)
        for s0 in range(0, n, band):
            b = min(band, n - s0)
            rows = col[s0:s0 + b]
            here = np.flatnonzero(rows >= 0)
            if len(here) == 0:
                continue
            x = torch.from_numpy(full.read_range(s0, b, buf))  # (b, N) rows of G
            z = sums[:b].zero_().index_add_(1, target, x)[:, :k]  # (b, K): each cluster's columns summed
            present, local = np.unique(rows[here], return_inverse=True)  # clusters with rows in this band
            acc = torch.zeros(len(present), k, dtype=torch.float64).index_add_(
                0, torch.from_numpy(local), z[torch.from_numpy(here)].double())
            out[present] += acc.numpy()
        return out

    @property
    def uses_full_gram(self) -> bool:
        """Whether :meth:`full_gram` has been computed."""
        return self._full is not None

    def gram_bytes(self) -> int:
        """Bytes held by the cached Gram blocks."""
        return sum(g.numel() * 4 for g in self._grams.values())

    def cluster_sums(self, idx: np.ndarray, labels: np.ndarray, num_clusters: int) -> Tensor:
        """``(num_clusters, D) float32`` sum of the rows ``idx[labels == k]`` for every cluster ``k``
        (``labels`` ``(len(idx),) int64``, ``-1`` left out), streamed over row chunks."""
        import scipy.sparse as sp

        idx = np.asarray(idx, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        out = np.zeros((num_clusters, self.shape[1]), dtype=np.float32)
        pos = self.pos[idx]
        order = np.argsort(pos, kind="stable")
        pos, labels = pos[order], labels[order]
        contiguous = len(pos) > 0 and pos[-1] - pos[0] + 1 == len(pos)
        if contiguous and not self.on_disk:  # a view of the memory store: one sparse product
            keep = np.flatnonzero(labels >= 0)
            onehot = sp.csr_matrix((np.ones(len(keep), dtype=np.float32), (labels[keep], keep)),
                                   shape=(num_clusters, len(pos)))
            return torch.from_numpy(np.asarray(onehot @ self._rows.read_range(int(pos[0]), len(pos), None),
                                               dtype=np.float32))
        buf = np.empty((min(CHUNK_ROWS, len(pos)), self.shape[1]), dtype=np.float32) if self.on_disk else None
        for s in range(0, len(pos), CHUNK_ROWS):
            lab = labels[s:s + CHUNK_ROWS]
            keep = np.flatnonzero(lab >= 0)
            if len(keep) == 0:
                continue
            if contiguous:  # one camera's rows: one sequential read, outliers summed with weight 0
                x = self._rows.read_range(int(pos[s]), len(lab), buf)
                cols = keep
            else:
                x = self._rows.read(pos[s:s + CHUNK_ROWS][keep])
                cols = np.arange(len(keep))
            onehot = sp.csr_matrix((np.ones(len(keep), dtype=np.float32), (lab[keep], cols)),
                                   shape=(num_clusters, len(x)))
            out += onehot @ x
        return torch.from_numpy(out)


@dataclass
class GramFeatures:
    """Features whose inner products are ``features @ features.T + gram`` (one labelling group).

    What :class:`unreid.pseudo_labels.PseudoLabeler` takes in place of a feature matrix under
    ``prior_mode=gram``: the k-NN search adds ``gram`` to each block of products
    (:func:`unreid.pseudo_labels.knn.knn`), the k-reciprocal encoding reads the inner products it
    lacks from both.

    Attributes:
        features: ``(n, d) float32``, the changing part (``f / sqrt(1 + w^2)``).
        gram: ``(n, n) float32``, the fixed part's inner products (symmetric).
    """

    features: Tensor
    gram: Tensor

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        if self.features.ndim != 2 or tuple(self.gram.shape) != (n, n):
            raise ValueError(f"GramFeatures needs (n, d) features and an (n, n) Gram matrix, got "
                             f"{tuple(self.features.shape)} and {tuple(self.gram.shape)}")

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, d)`` of the changing part."""
        return tuple(self.features.shape)


class PriorFeatures:
    """The network features with the fixed prior attached, before the grouping (``prior_mode=gram``).

    Args:
        features: ``(N, d) float32`` network features (any norm; L2-normalised here).
        store: the prior's :class:`DescriptorStore` (already scaled by ``w / sqrt(1 + w^2)``).
        weight: the prior's weight ``w`` (``pseudo_labels.colour_weight``).
    """

    def __init__(self, features: Tensor, store: DescriptorStore, weight: float) -> None:
        if features.shape[0] != store.shape[0]:
            raise ValueError(f"{store.shape[0]} descriptors for {features.shape[0]} features")
        self.features = F.normalize(torch.as_tensor(features, dtype=torch.float32).cpu(), dim=1) / math.sqrt(
            1.0 + weight * weight)
        self.store = store

    def __len__(self) -> int:
        return self.features.shape[0]

    def select(self, idx: np.ndarray | None = None) -> GramFeatures:
        """The :class:`GramFeatures` of rows ``idx`` (``None`` = all), the Gram block kept by the store."""
        f = self.features if idx is None else self.features[torch.as_tensor(np.asarray(idx, dtype=np.int64))]
        return GramFeatures(f.contiguous(), self.store.gram(idx))

    def centroids(self, idx: np.ndarray, labels: np.ndarray, num_clusters: int) -> Tensor:
        """``(num_clusters, d + D) float32`` L2-normalised cluster means of the appended features
        ``[f', c']`` of rows ``idx`` (what :func:`~unreid.pseudo_labels.matching.cluster_centroids`
        gives in the ``append`` form), the descriptor part streamed from the store."""
        net = self._net_sums(idx, labels, num_clusters, torch.float32)
        return F.normalize(torch.cat([net, self.store.cluster_sums(idx, labels, num_clusters)], dim=1), dim=1)

    def _net_sums(self, idx: np.ndarray, labels: np.ndarray, num_clusters: int, dtype: torch.dtype) -> Tensor:
        """``(num_clusters, d)`` sums of the network part of rows ``idx[labels == k]`` (``-1`` left out)."""
        keep = np.flatnonzero(labels >= 0)
        f = self.features[torch.as_tensor(np.asarray(idx, dtype=np.int64)[keep])].to(dtype)
        return torch.zeros(num_clusters, f.shape[1], dtype=dtype).index_add_(0, torch.as_tensor(labels[keep]), f)

    def uses_cross_products(self, groups: int) -> bool:
        """Whether the cross-group centroid costs come from :meth:`pair_costs` (more than two groups,
        a full Gram of at most :data:`CROSS_GRAM_MAX_BYTES`, descriptors of at least
        :data:`CROSS_GRAM_MIN_DIM` dimensions) rather than from :meth:`centroids`."""
        n, d = self.store.shape
        return groups > 2 and 4 * n * n <= CROSS_GRAM_MAX_BYTES and d >= CROSS_GRAM_MIN_DIM

    def pair_costs(self, clusters: list[tuple[np.ndarray, np.ndarray, int, int]]) -> Callable[[int, int], np.ndarray]:
        """The centroid cost between any two groups' clusters without forming the centroids.

        Args:
            clusters: per clustered group, in the association's order, ``(idx, labels, offset,
                num_clusters)``.

        Returns:
            ``cost(i, j)`` -> ``(K_i, K_j) float64``: ``2 - 2 cos`` of the clusters' mean appended
            features ``[f', c']``, which is :func:`~unreid.pseudo_labels.matching.centroid_cost` of
            the centroids :meth:`centroids` gives (up to rounding): the network part from float64
            cluster sums, the descriptor part and the norms from :meth:`DescriptorStore.cross_products`.
        """
        products = self.store.cross_products([(idx, labels, offset) for idx, labels, offset, _ in clusters])
        nets = [self._net_sums(idx, labels, k, torch.float64) for idx, labels, _, k in clusters]
        ids = [np.arange(offset, offset + k) for _, _, offset, k in clusters]
        norms = [torch.sqrt((net * net).sum(1) + torch.from_numpy(np.diag(products)[g]))
                 for net, g in zip(nets, ids)]

        def cost(i: int, j: int) -> np.ndarray:
            dots = nets[i] @ nets[j].T + torch.from_numpy(products[np.ix_(ids[i], ids[j])])
            cos = dots / (norms[i][:, None] * norms[j][None, :])
            return (2.0 - 2.0 * cos).clamp_min_(0.0).numpy()

        return cost


def build_store(descriptors: Callable[[], Tensor | Iterable[Tensor]], camids: np.ndarray, weight: float,
                store: str = "auto", directory: str | Path | None = None) -> DescriptorStore:
    """A :class:`DescriptorStore` of the prior scaled by ``w / sqrt(1 + w^2)`` (module doc)."""
    return DescriptorStore(descriptors(), camids, weight / math.sqrt(1.0 + weight * weight), store, directory)


__all__ = ["AUTO_MEMORY_BYTES", "DescriptorStore", "GramFeatures", "PRIOR_MODES", "PRIOR_STORES", "PriorFeatures",
           "build_store"]
