"""Image loading that keeps the model busy.

On small sets (``should_cache``) every image is decoded **once**, resized to the training size and
kept as one ``uint8`` tensor ``(N, 3, H, W)`` in memory (:class:`ImageCache`); augmentations then run
on tensors. Otherwise images are decoded from disk by the DataLoader workers. An unreadable image
is never a crash mid-epoch: a warning names the file, it is counted, and a black image stands in.

Batches are dicts ``img (B, 3, H, W) float32``, ``index (B,) int64`` (position in the sample list),
``camid (B,) int64``, ``modality (B,) int64`` - never the identity: training code cannot see pids.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from unreid.config import DataConfig
from unreid.data.datasets.base import Sample
from unreid.data.transforms import build_test_transform, build_train_transform

log = logging.getLogger("unreid")


def should_cache(n: int, size: tuple[int, int], max_mb: int) -> bool:
    """Whether ``n`` decoded ``uint8`` images of ``size = (H, W)`` fit in ``max_mb`` MiB."""
    return n * 3 * size[0] * size[1] <= max_mb * 2**20


def _read_rgb(path: str) -> torch.Tensor:
    """Decode ``path`` to a ``(3, H, W) uint8`` tensor (PIL; greyscale / RGBA converted to RGB)."""
    with Image.open(path) as im:
        arr = torch.frombuffer(bytearray(im.convert("RGB").tobytes()), dtype=torch.uint8)
        w, h = im.size
    return arr.view(h, w, 3).permute(2, 0, 1).contiguous()


class ImageCache:
    """All images decoded once and resized to ``size = (H, W)``: one ``(N, 3, H, W) uint8`` tensor.

    Attributes:
        num_failed: unreadable files (each logged with its path; stored as black images).
        failed: their indices.
    """

    def __init__(self, paths: Sequence[str], size: tuple[int, int]) -> None:
        self.size = size
        self.index = {p: i for i, p in enumerate(dict.fromkeys(paths))}
        self.data = torch.zeros(len(self.index), 3, size[0], size[1], dtype=torch.uint8)
        self.failed: set[int] = set()
        for p, i in self.index.items():
            try:
                img = _read_rgb(p)
            except Exception as err:  # unreadable or missing: warn, count, keep going
                log.warning("unreadable image skipped (black stand-in): %s (%s)", p, err)
                self.failed.add(i)
                continue
            if tuple(img.shape[1:]) != tuple(size):
                img = F.interpolate(img[None].float(), size=size, mode="bicubic", antialias=True,
                                    align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
            self.data[i] = img

    @property
    def num_failed(self) -> int:
        return len(self.failed)

    def __contains__(self, path: str) -> bool:
        return path in self.index

    def __getitem__(self, path: str) -> torch.Tensor:
        return self.data[self.index[path]]

    def get(self, path: str) -> torch.Tensor | None:
        i = self.index.get(path)
        return None if i is None else self.data[i]


class ReIDImageDataset(Dataset):
    """``samples[i]`` -> ``{"img", "index", "camid", "modality"}`` (no pid, by design).

    Args:
        samples: the images.
        transform: a torchvision transform taking a ``uint8`` tensor.
        cache: an :class:`ImageCache` holding them (else read from disk).
        size: ``(H, W)`` of the black stand-in for an unreadable image.
    """

    def __init__(self, samples: Sequence[Sample], transform, cache: ImageCache | None = None,
                 size: tuple[int, int] = (256, 128)) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.cache = cache
        self.size = size
        self.failed: set[str] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, path: str) -> torch.Tensor:
        if self.cache is not None and path in self.cache:
            return self.cache[path]
        try:
            return _read_rgb(path)
        except Exception as err:
            if path not in self.failed:
                log.warning("unreadable image skipped (black stand-in): %s (%s)", path, err)
                self.failed.add(path)
            return torch.zeros(3, *self.size, dtype=torch.uint8)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.samples[i]
        return {"img": self.transform(self._load(s.path)), "index": torch.tensor(i, dtype=torch.long),
                "camid": torch.tensor(s.camid, dtype=torch.long),
                "modality": torch.tensor(s.modality, dtype=torch.long)}


def build_train_loader(samples: Sequence[Sample], sampler: Sampler[int], cfg: DataConfig,
                       cache: ImageCache | None = None) -> DataLoader:
    """Training loader: ``sampler`` order, ``cfg.batch_size``, last incomplete batch dropped."""
    ds = ReIDImageDataset(samples, build_train_transform(cfg), cache, (cfg.height, cfg.width))
    return DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                      drop_last=True, pin_memory=torch.cuda.is_available())


def build_test_loader(samples: Sequence[Sample], cfg: DataConfig, cache: ImageCache | None = None,
                      batch_size: int | None = None) -> DataLoader:
    """Ordered loader with the test transform (nothing dropped)."""
    ds = ReIDImageDataset(samples, build_test_transform(cfg), cache, (cfg.height, cfg.width))
    return DataLoader(ds, batch_size=batch_size or cfg.batch_size, shuffle=False, num_workers=cfg.workers,
                      pin_memory=torch.cuda.is_available())


class IterLoader:
    """Exactly ``length`` batches from ``loader``, restarting it when exhausted (fixed iterations per
    epoch, as Cluster Contrast's ``IterLoader``)."""

    def __init__(self, loader: DataLoader, length: int) -> None:
        if len(loader) == 0:
            raise ValueError("the loader yields no batch (too few samples for one batch)")
        self.loader = loader
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        it = iter(self.loader)
        for _ in range(self.length):
            try:
                yield next(it)
            except StopIteration:
                it = iter(self.loader)
                yield next(it)
