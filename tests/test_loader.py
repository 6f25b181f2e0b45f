"""Transforms, the uint8 image cache, the dataset (no pid, unreadable files survive) and the loaders."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

import unreid.data.loader as loader_mod
from unreid.config import DataConfig
from unreid.data.datasets.base import Sample
from unreid.data.loader import (
    ImageCache,
    IterLoader,
    ReIDImageDataset,
    build_test_loader,
    build_train_loader,
    read_image,
    should_cache,
)
from unreid.data.samplers import build_sampler
from unreid.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomGrayscalePatch,
    build_test_transform,
    build_train_transform,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities:DeprecationWarning")

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)
H, W = 16, 8


def _cfg(**kw) -> DataConfig:
    base = dict(height=H, width=W, batch_size=4, num_instances=2, workers=0)
    return DataConfig(**{**base, **kw})


def _pattern(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture()
def files(tmp_path):
    """Six readable images in three formats and sizes (one greyscale), one corrupt and one missing file."""
    paths = []
    for i in range(6):
        arr = _pattern(20 + i, 10, i)
        if i == 1:
            p = tmp_path / f"{i}.png"
            Image.fromarray(arr).save(p)
        elif i == 2:
            p = tmp_path / f"{i}.bmp"
            Image.fromarray(arr).save(p)
        elif i == 3:
            p = tmp_path / f"{i}.png"
            Image.fromarray(arr[..., 0]).save(p)  # greyscale
        else:
            p = tmp_path / f"{i}.jpg"
            Image.fromarray(arr).save(p, quality=95)
        paths.append(str(p))
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    paths += [str(bad), str(tmp_path / "missing.jpg")]
    return paths


def _samples(paths):
    return [Sample(p, 100 + i, i % 2, i % 2) for i, p in enumerate(paths)]


def test_should_cache_arithmetic():
    # 3 * 256 * 128 bytes = 96 KiB per image: 10 images fit in 1 MiB (960 KiB), 11 do not (1056 KiB)
    assert should_cache(10, (256, 128), 1) and not should_cache(11, (256, 128), 1)
    assert should_cache(0, (256, 128), 0)


def test_read_image_rgb_for_every_format(files):
    for i, p in enumerate(files[:6]):
        img = read_image(p)
        assert img.dtype == torch.uint8 and img.shape == (3, 20 + i, 10)
        ref = np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1)
        assert (img.numpy() == ref).all()  # same pixels as PIL (torchvision or PIL decoder)
    assert (read_image(files[3])[0] == read_image(files[3])[2]).all()  # greyscale -> 3 equal channels


def test_image_cache_decodes_once_resizes_and_counts_failures(files, monkeypatch, caplog):
    calls = []
    real = loader_mod.read_image
    monkeypatch.setattr(loader_mod, "read_image", lambda p: calls.append(p) or real(p))
    with caplog.at_level(logging.WARNING, logger="unreid"):
        cache = ImageCache(files + files[:2], (H, W))  # duplicates stored once
    assert len(cache) == 8 and sorted(calls) == sorted(files)  # each path decoded exactly once
    assert cache.data.shape == (8, 3, H, W) and cache.data.dtype == torch.uint8
    assert cache.num_failed == 2 and cache.failed == {6, 7}
    assert "corrupt.jpg" in caplog.text and "missing.jpg" in caplog.text
    assert (cache[files[6]] == 0).all() and (cache.get(files[7]) == 0).all()
    for p in files[:6]:  # bicubic + antialias resize of the decoded image
        ref = TF.resize(real(p), [H, W], interpolation=InterpolationMode.BICUBIC, antialias=True)
        assert torch.equal(cache[p], ref)
    assert files[0] in cache and "nope.jpg" not in cache and cache.get("nope.jpg") is None
    threaded = ImageCache(files, (H, W), workers=2)
    assert torch.equal(threaded.data, cache.data) and threaded.failed == cache.failed


def test_dataset_items_never_hold_the_pid_and_survive_bad_files(files, caplog):
    samples = _samples(files)
    ds = ReIDImageDataset(samples, build_test_transform(_cfg()), size=(H, W))
    with caplog.at_level(logging.WARNING, logger="unreid"):
        items = [ds[i] for i in range(len(ds))] + [ds[6]]  # the corrupt file read twice
    for i, it in enumerate(items[:8]):
        assert set(it) == {"img", "index", "camid", "modality"}  # no pid, by design
        assert it["img"].shape == (3, H, W) and it["img"].dtype == torch.float32
        assert it["index"].item() == i and it["index"].dtype == torch.int64
        assert it["camid"].item() == i % 2 and it["modality"].item() == i % 2
    black = (0 - MEAN) / STD  # a black stand-in, normalised
    assert torch.allclose(items[6]["img"], black.expand(3, H, W))
    assert torch.allclose(items[7]["img"], items[6]["img"])
    assert ds.num_failed == 2 and ds.failed == {files[6], files[7]}
    assert sum("corrupt.jpg" in r.getMessage() for r in caplog.records) == 1  # warned once per file


def test_failures_in_worker_processes_are_counted(files):
    ds = ReIDImageDataset(_samples(files), build_test_transform(_cfg()))
    batches = list(DataLoader(ds, batch_size=4, num_workers=1))
    assert sum(len(b["index"]) for b in batches) == 8
    assert ds.num_failed == 2  # flagged in shared memory by the worker process


def test_cached_and_disk_paths_give_the_same_tensors(files):
    cfg = _cfg()
    samples = _samples(files[:6])
    cache = ImageCache(files[:6], (H, W))
    a = next(iter(build_test_loader(samples, cfg, cache=cache, batch_size=6)))["img"]
    b = next(iter(build_test_loader(samples, cfg, batch_size=6)))["img"]
    assert torch.allclose(a, b, atol=1e-6)


def test_test_transform_is_resize_then_imagenet_normalisation(files):
    img = read_image(files[0])
    ref = TF.resize(img, [H, W], interpolation=InterpolationMode.BICUBIC, antialias=True).float() / 255
    out = build_test_transform(_cfg())(img)
    assert type(out) is torch.Tensor and torch.allclose(out, (ref - MEAN) / STD, atol=1e-5)
    pil = build_test_transform(_cfg())(Image.open(files[0]))  # PIL input works the same
    assert torch.allclose(pil, out, atol=1e-5)


def test_train_transform_steps(files):
    img = TF.resize(read_image(files[0]), [H, W], interpolation=InterpolationMode.BICUBIC, antialias=True)
    norm = (img.float() / 255 - MEAN) / STD
    flip_only = build_train_transform(_cfg(flip_p=1.0, pad=0, random_erasing_p=0.0))
    assert torch.allclose(flip_only(img), norm.flip(-1), atol=1e-5)
    # pad + random crop: the output is a shifted window of the zero-padded normalised image
    torch.manual_seed(0)
    crop = build_train_transform(_cfg(flip_p=0.0, pad=3, random_erasing_p=0.0))(img)
    padded = (TF.pad(img, [3]).float() / 255 - MEAN) / STD
    windows = [padded[:, y:y + H, x:x + W] for y in range(7) for x in range(7)]
    assert crop.shape == (3, H, W) and any(torch.allclose(crop, w, atol=1e-5) for w in windows)
    # random erasing (p=1): one rectangle set to 0 (= the ImageNet mean colour), 2-40 % of the area
    torch.manual_seed(1)
    erased = build_train_transform(_cfg(height=64, width=32, flip_p=0.0, pad=0, random_erasing_p=1.0))(img)
    big = TF.resize(img, [64, 32], interpolation=InterpolationMode.BICUBIC, antialias=True)
    big = (big.float() / 255 - MEAN) / STD
    changed = ~torch.isclose(erased, big, atol=1e-5).all(0)
    ys, xs = torch.nonzero(changed, as_tuple=True)
    box = erased[:, ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    assert (box == 0).all() and 0.02 <= box[0].numel() / (64 * 32) <= 0.4


def _luma(img: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma of a float (3, H, W) image, written out (torchvision's weights)."""
    return 0.2989 * img[0] + 0.587 * img[1] + 0.114 * img[2]


def test_grayscale_patch_greys_one_rectangle_and_nothing_else():
    torch.manual_seed(0)
    img = torch.rand(3, 64, 32)  # every pixel coloured: any grey pixel was made grey
    for seed in range(5):
        torch.manual_seed(seed)
        out = RandomGrayscalePatch(1.0)(img)
        grey = (out[0] == out[1]) & (out[1] == out[2])
        ys, xs = torch.nonzero(grey, as_tuple=True)
        box = (slice(None), slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        assert grey[box[1:]].all() and grey.sum() == grey[box[1:]].numel()  # one full rectangle
        assert 0.02 <= grey.sum().item() / (64 * 32) <= 0.4
        assert torch.allclose(out[box][0], _luma(img[box]), atol=1e-5)  # the luma of the same pixels
        assert torch.equal(out[:, ~grey], img[:, ~grey])  # the rest untouched
    assert torch.equal(RandomGrayscalePatch(0.0)(img), img)
    with pytest.raises(ValueError, match="p must be in"):
        RandomGrayscalePatch(1.2)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        RandomGrayscalePatch(1.0)(torch.rand(1, 8, 8))


def test_train_transform_grayscale_options(files):
    img = TF.resize(read_image(files[0]), [H, W], interpolation=InterpolationMode.BICUBIC, antialias=True)
    plain = dict(flip_p=0.0, pad=0, random_erasing_p=0.0)
    norm = img.float() / 255
    # whole image grey (p=1): the output is the normalised luma image
    out = build_train_transform(_cfg(**plain, grayscale_p=1.0))(img) * STD + MEAN
    assert torch.allclose(out, TF.rgb_to_grayscale(img, num_output_channels=3).float() / 255, atol=1e-5)
    assert not torch.allclose(out, norm, atol=1e-3)  # the fixture image is coloured
    # patch (p=1): part of the image grey, the rest as without the option
    torch.manual_seed(3)
    out = build_train_transform(_cfg(**plain, grayscale_patch_p=1.0))(img) * STD + MEAN
    same = torch.isclose(out, norm, atol=1e-5).all(0)
    assert 0 < (~same).sum() <= 0.4 * H * W
    assert torch.allclose(out[0][~same], out[1][~same], atol=1e-5)
    assert "RandomGrayscalePatch" not in repr(build_train_transform(_cfg()))  # off by default


def test_train_loader_batches_and_iterloader(files):
    cfg = _cfg()
    samples = _samples(files[:6])
    labels = np.array([0, 0, 1, 1, 2, -1])
    sampler = build_sampler(labels, np.array([s.camid for s in samples]), 4, 2, "random_identity", seed=0)
    loader = build_train_loader(samples, sampler, cfg, ImageCache(files[:6], (H, W)))
    assert loader.drop_last and loader.batch_size == 4 and loader.num_workers == 0
    assert not loader.persistent_workers and loader.pin_memory == torch.cuda.is_available()
    assert len(loader) == len(sampler) // 4 == 1  # 3 ids x 2 = 6 indices, P = 2 ids per batch -> one batch
    it = IterLoader(loader, 5)
    got = list(it)
    assert len(got) == len(it) == 5 and all(b["img"].shape == (4, 3, H, W) for b in got)
    assert all(5 not in b["index"].tolist() for b in got)  # the outlier is never loaded
    orders = {tuple(b["index"].tolist()) for b in got}
    assert len(orders) > 1  # every restart draws a new sampler pass
    assert len(list(IterLoader(loader, 0))) == 0
    empty = build_train_loader(samples, build_sampler(labels, np.zeros(6), 8, 2, "random_identity", 0), _cfg(
        batch_size=8))
    with pytest.raises(ValueError, match="no batch"):
        IterLoader(empty, 3)


def test_test_loader_is_ordered_and_keeps_the_last_batch(files):
    batches = list(build_test_loader(_samples(files), _cfg(batch_size=64), batch_size=3))
    assert [b["index"].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert [len(b["img"]) for b in build_test_loader(_samples(files), _cfg(batch_size=5))] == [5, 3]
