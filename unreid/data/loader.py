"""Image loading that keeps the model busy.

On sets that fit (:func:`should_cache`), every image is decoded **once**, resized to the training size
and kept in one ``uint8`` tensor ``(N, 3, H, W)`` (:class:`ImageCache`); augmentations then run on small
tensors and an epoch never touches the disk. Otherwise the DataLoader workers decode from disk.
Decoding: ``torchvision.io.decode_image`` (libjpeg-turbo / libpng), PIL as the fallback (BMP and other
formats); greyscale and RGBA images become RGB.

An unreadable image is never a crash mid-epoch: a warning names the file (once), it is counted, and a
black image stands in. :func:`unreadable_images` gathers every such file met in this process (and in
its DataLoader workers); the trainer counts them in each ``metrics.jsonl`` record.

Batches are dicts: ``img (B, 3, H, W) float32``, ``index (B,) int64`` (position in the sample list),
``camid (B,) int64``, ``modality (B,) int64`` - never the identity: training code cannot see pids
(DESIGN.md, hidden labels).

The loaders follow Cluster Contrast ``examples/cluster_contrast_train_usl.py`` (``get_train_loader``:
``drop_last=True``, a fixed number of iterations per epoch through ``IterLoader``; ``get_test_loader``:
ordered, nothing dropped).
"""

from __future__ import annotations

import logging
import warnings
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from unreid.config import DataConfig
from unreid.data.datasets.base import Sample
from unreid.data.transforms import build_test_transform, build_train_transform

log = logging.getLogger("unreid")
_UNREADABLE = "unreadable image, a black image stands in: %s (%s: %s)"

try:  # deprecated since torchvision 0.29 (TorchCodec supersedes it) but twice as fast as PIL on small JPEGs
    from torchvision.io import ImageReadMode, decode_image

    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning)
except ImportError:  # pragma: no cover - a future torchvision without it: PIL only
    decode_image = None


#: unreadable files met in this process (a black image stood in for each); see :func:`unreadable_images`
_UNREADABLE_PATHS: set[str] = set()
_LIVE_DATASETS: weakref.WeakSet = weakref.WeakSet()


def unreadable_images() -> set[str]:
    """Paths of the image files found unreadable so far in this process, by :class:`ImageCache` or by any
    :class:`ReIDImageDataset` (also those met in its DataLoader worker processes)."""
    for ds in list(_LIVE_DATASETS):
        _UNREADABLE_PATHS.update(ds.failed)
    return set(_UNREADABLE_PATHS)


def _gather_failed(flags: torch.Tensor, samples: list[Sample]) -> None:
    """Finaliser of a :class:`ReIDImageDataset`: keep its failures once it is gone."""
    _UNREADABLE_PATHS.update(samples[i].path for i in torch.nonzero(flags).flatten().tolist())


def should_cache(n: int, size: tuple[int, int], max_mb: int) -> bool:
    """Whether ``n`` decoded images of ``size = (H, W)``, ``uint8`` RGB (``n * 3 * H * W`` bytes), fit in
    ``max_mb`` MiB."""
    return n * 3 * size[0] * size[1] <= max_mb * 2**20


def read_image(path: str) -> torch.Tensor:
    """Decode ``path`` to an RGB ``(3, H, W) uint8`` tensor.

    ``torchvision.io.decode_image`` first (about 2x faster than PIL on 64 x 192 JPEGs, same pixels);
    PIL when torchvision cannot decode the file (e.g. BMP) or lacks the decoder.

    Raises:
        OSError (or another exception from the decoders): missing or unreadable file.
    """
    if decode_image is not None:
        try:
            return decode_image(path, mode=ImageReadMode.RGB)
        except Exception:
            pass
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    return TF.pil_to_tensor(rgb)


def _resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    # bicubic with antialiasing, as the train / test transforms (CC: Resize(interpolation=3))
    return TF.resize(img, list(size), interpolation=InterpolationMode.BICUBIC, antialias=True)


class ImageCache:
    """Every image decoded once and resized to ``size``, kept in one ``(N, 3, H, W) uint8`` tensor.

    Args:
        paths: image files (duplicates are stored once).
        size: ``(H, W)`` in pixels, the training / test input size.
        workers: decoding threads (0 = in this thread); decoding and resizing release the GIL.

    Attributes:
        data: ``(N, 3, H, W) uint8`` tensor, one row per distinct path.
        failed: indices (rows of ``data``) of unreadable files, each logged once with its path and
            stored as a black image.

    Memory: ``N * 3 * H * W`` bytes (:func:`should_cache`).
    """

    def __init__(self, paths: Sequence[str], size: tuple[int, int], workers: int = 0) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.index: dict[str, int] = {p: i for i, p in enumerate(dict.fromkeys(map(str, paths)))}
        self.data = torch.zeros(len(self.index), 3, *self.size, dtype=torch.uint8)
        self.failed: set[int] = set()
        items = list(self.index.items())
        if workers > 0 and len(items) > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(self._fill, items):
                    pass
        else:
            for item in items:
                self._fill(item)

    def _fill(self, item: tuple[str, int]) -> None:
        path, i = item
        try:
            img = read_image(path)
        except Exception as err:  # unreadable or missing: warn, count, keep going
            log.warning(_UNREADABLE, path, type(err).__name__, err)
            self.failed.add(i)
            _UNREADABLE_PATHS.add(path)
            return
        self.data[i] = _resize(img, self.size)

    @property
    def num_failed(self) -> int:
        """Number of unreadable files."""
        return len(self.failed)

    @property
    def paths(self) -> list[str]:
        """The cached paths, in row order of :attr:`data`."""
        return list(self.index)

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, path: object) -> bool:
        return path in self.index

    def __getitem__(self, path: str) -> torch.Tensor:
        """The ``(3, H, W) uint8`` image of ``path`` (a view into :attr:`data`); ``KeyError`` if absent."""
        return self.data[self.index[path]]

    def get(self, path: str) -> torch.Tensor | None:
        """The ``(3, H, W) uint8`` image of ``path``, or ``None`` when it is not cached."""
        i = self.index.get(path)
        return None if i is None else self.data[i]


class ReIDImageDataset(Dataset):
    """``dataset[i]`` -> ``{"img", "index", "camid", "modality"}``; the pid is never returned, by design.

    Args:
        samples: the images (:class:`~unreid.data.datasets.base.Sample`).
        transform: maps a ``uint8 (3, h, w)`` tensor to the model input (``unreid.data.transforms``), or to a
            dict of named inputs (e.g. ``{"img": view1, "img2": view2}``, merged into the item: methods that
            train on several views, MBCCM); or a dict ``{modality: transform}`` picking one by the sample's
            modality (then every modality's transform must return the same keys). A transform whose
            ``takes_sample`` attribute is true is called as ``transform(img, sample)`` (GCL's structure views,
            read from files named after the sample's path).
        cache: an :class:`ImageCache` holding (some of) the paths; others are decoded from disk.
        size: ``(H, W)`` of the black stand-in for an unreadable image (default: the cache's size, else
            16 x 8; the transform resizes it anyway).

    Items: ``img`` whatever ``transform`` returns (``float32 (3, H, W)`` for ours), ``index`` /
    ``camid`` / ``modality`` ``int64`` scalars.

    Unreadable files (decoded from disk) are logged once per file and process, and flagged in a
    shared-memory tensor so that :attr:`num_failed` / :attr:`failed` also count failures met in
    DataLoader worker processes.
    """

    def __init__(self, samples: Sequence[Sample], transform: Any, cache: ImageCache | None = None,
                 size: tuple[int, int] | None = None) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.cache = cache
        self.size = tuple(size) if size is not None else (cache.size if cache is not None else (16, 8))
        self._failed_flags = torch.zeros(max(len(self.samples), 1), dtype=torch.uint8).share_memory_()
        self._warned: set[str] = set()
        _LIVE_DATASETS.add(self)
        weakref.finalize(self, _gather_failed, self._failed_flags, self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def failed(self) -> set[str]:
        """Paths that could not be decoded so far (in this process or its DataLoader workers)."""
        return {self.samples[i].path for i in torch.nonzero(self._failed_flags).flatten().tolist()}

    @property
    def num_failed(self) -> int:
        """Number of distinct unreadable files met so far."""
        return len(self.failed)

    def _load(self, i: int, path: str) -> torch.Tensor:
        if self.cache is not None:
            img = self.cache.get(path)
            if img is not None:
                return img
        try:
            return read_image(path)
        except Exception as err:
            if path not in self._warned:
                self._warned.add(path)
                log.warning(_UNREADABLE, path, type(err).__name__, err)
            self._failed_flags[i] = 1
            return torch.zeros(3, *self.size, dtype=torch.uint8)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.samples[i]
        transform = self.transform[s.modality] if isinstance(self.transform, dict) else self.transform
        img = self._load(i, s.path)
        out = transform(img, s) if getattr(transform, "takes_sample", False) else transform(img)
        item = dict(out) if isinstance(out, dict) else {"img": out}
        item.update({
            "index": torch.tensor(i, dtype=torch.int64),
            "camid": torch.tensor(s.camid, dtype=torch.int64),
            "modality": torch.tensor(s.modality, dtype=torch.int64),
        })
        return item


def build_train_loader(samples: Sequence[Sample], sampler: Sampler[int], cfg: DataConfig,
                       cache: ImageCache | None = None, transform: Any = None, batch_size: int | None = None
                       ) -> DataLoader:
    """Training loader: ``sampler`` order, the train transform, ``cfg.batch_size``, last incomplete batch
    dropped, ``cfg.workers`` worker processes (0 = main process; not persistent, so that each pass sees the
    sampler's new order), memory pinned only when CUDA is available.

    ``transform`` / ``batch_size`` replace :func:`~unreid.data.transforms.build_train_transform` and
    ``cfg.batch_size`` when given (a method's own, :meth:`unreid.methods.Method.train_transform`; see
    :class:`ReIDImageDataset` for the forms a transform may take).

    Batches: ``img (B, 3, cfg.height, cfg.width) float32`` (and any other view the transform names),
    ``index`` / ``camid`` / ``modality (B,) int64``.
    """
    ds = ReIDImageDataset(samples, build_train_transform(cfg) if transform is None else transform, cache,
                          (cfg.height, cfg.width))
    return DataLoader(ds, batch_size=batch_size or cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                      drop_last=True,
                      persistent_workers=False, pin_memory=torch.cuda.is_available())


def build_test_loader(samples: Sequence[Sample], cfg: DataConfig, cache: ImageCache | None = None,
                      batch_size: int | None = None) -> DataLoader:
    """Ordered loader with the test transform; nothing dropped, ``batch_size`` (default ``cfg.batch_size``).

    Batches as :func:`build_train_loader`; ``index`` gives each image's position in ``samples``.
    """
    ds = ReIDImageDataset(samples, build_test_transform(cfg), cache, (cfg.height, cfg.width))
    return DataLoader(ds, batch_size=batch_size or cfg.batch_size, shuffle=False, drop_last=False,
                      num_workers=cfg.workers, persistent_workers=False, pin_memory=torch.cuda.is_available())


class IterLoader:
    """Exactly ``length`` batches per ``iter()``, restarting ``loader`` (and so drawing a new sampler pass)
    whenever it is exhausted - Cluster Contrast's ``IterLoader`` (``clustercontrast/utils/data/__init__.py``),
    which gives a fixed number of iterations per epoch (``optim.iters``).

    Args:
        loader: any iterable with ``len() > 0``.
        length: batches per pass (>= 0).

    Raises:
        ValueError: ``loader`` has no batch (fewer samples than one batch) or ``length < 0``.
    """

    def __init__(self, loader: DataLoader, length: int) -> None:
        if length < 0:
            raise ValueError(f"IterLoader length must be >= 0, got {length}")
        if len(loader) == 0:
            raise ValueError("the loader yields no batch (fewer samples than one batch); "
                             "lower data.batch_size")
        self.loader = loader
        self.length = int(length)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        for _ in range(self.length):
            try:
                batch = next(it)
            except StopIteration:
                it = iter(self.loader)
                batch = next(it)
            yield batch
