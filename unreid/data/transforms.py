"""Train / test transforms from torchvision (``transforms.v2``), on uint8 CHW tensors or PIL images.

Cluster Contrast (``examples/cluster_contrast_train_usl.py`` ``get_train_loader``): Resize (bicubic),
RandomHorizontalFlip(0.5), Pad(10) + RandomCrop, ToTensor, Normalize(ImageNet), RandomErasing(p=0.5)
filled with the ImageNet mean - i.e. 0 after normalisation, which is what ``value=0`` gives here.
Test: Resize + Normalize.
"""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from unreid.config import DataConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_train_transform(cfg: DataConfig) -> T.Compose:
    """Augmentations for training (output ``(3, H, W) float32``, ImageNet-normalised)."""
    size = (cfg.height, cfg.width)
    ops: list = [T.ToImage(), T.Resize(size, interpolation=InterpolationMode.BICUBIC, antialias=True)]
    if cfg.flip_p > 0:
        ops.append(T.RandomHorizontalFlip(cfg.flip_p))
    if cfg.pad > 0:
        ops += [T.Pad(cfg.pad), T.RandomCrop(size)]
    ops += [T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if cfg.random_erasing_p > 0:
        ops.append(T.RandomErasing(p=cfg.random_erasing_p, value=0))
    return T.Compose(ops)


def build_test_transform(cfg: DataConfig) -> T.Compose:
    """Resize + normalise (output ``(3, H, W) float32``)."""
    return T.Compose([
        T.ToImage(),
        T.Resize((cfg.height, cfg.width), interpolation=InterpolationMode.BICUBIC, antialias=True),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
