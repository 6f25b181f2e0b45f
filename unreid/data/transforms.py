"""Train / test transforms from torchvision ``transforms.v2``, on ``uint8 (3, H, W)`` tensors (the image
cache) or PIL images (decoded from disk).

Training, as Cluster Contrast (alibaba/cluster-contrast-reid ``examples/cluster_contrast_train_usl.py``,
``get_train_loader``): Resize((H, W), bicubic) -> RandomHorizontalFlip(0.5) -> Pad(10) + RandomCrop((H, W))
-> to float in [0, 1] + Normalize(ImageNet mean / std) -> RandomErasing(p=0.5).

Random erasing: CC uses its own class (``clustercontrast/utils/data/transforms.py``, after Zhong et al.,
AAAI 2020) with erased area 2-40 % of the image, aspect ratio in [0.3, 1/0.3], applied after
normalisation, filling the region with ``mean=[0.485, 0.456, 0.406]``. We use torchvision's
``RandomErasing`` with the same area and ratio ranges and ``value=0`` after normalisation, i.e. the region
takes the ImageNet mean colour. Deliberate deviations: CC writes the raw numbers 0.485 / 0.456 / 0.406
into the *normalised* tensor (a light grey, about RGB 152 / 142 / 127), and draws the aspect ratio
uniformly where torchvision draws its logarithm uniformly; neither is known to change results.

Test: Resize((H, W), bicubic) -> Normalize (CC ``get_test_loader``).
"""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from unreid.config import DataConfig

#: ImageNet channel statistics (torchvision weights; CC ``normalizer``)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: CC RandomErasing sl=0.02, sh=0.4, r1=0.3
ERASE_SCALE = (0.02, 0.4)
ERASE_RATIO = (0.3, 1 / 0.3)


def _resize(cfg: DataConfig) -> T.Resize:
    # CC: T.Resize((h, w), interpolation=3), 3 = PIL bicubic
    return T.Resize((cfg.height, cfg.width), interpolation=InterpolationMode.BICUBIC, antialias=True)


def build_train_transform(cfg: DataConfig) -> T.Compose:
    """Training augmentation (see the module docstring for the sources).

    Uses ``cfg.height``, ``cfg.width``, ``cfg.flip_p``, ``cfg.pad`` and ``cfg.random_erasing_p``; a value
    of 0 leaves that step out.

    Returns:
        a callable mapping a PIL image or a ``uint8 (3, h, w)`` tensor of any size to a plain
        ``float32 (3, cfg.height, cfg.width)`` tensor, ImageNet-normalised. Randomness comes from torch's
        global generator (seeded per DataLoader worker by torch).
    """
    ops: list = [T.ToImage(), _resize(cfg)]
    if cfg.flip_p > 0:
        ops.append(T.RandomHorizontalFlip(cfg.flip_p))
    if cfg.pad > 0:
        ops += [T.Pad(cfg.pad, fill=0), T.RandomCrop((cfg.height, cfg.width))]
    ops += [T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if cfg.random_erasing_p > 0:
        ops.append(T.RandomErasing(p=cfg.random_erasing_p, scale=ERASE_SCALE, ratio=ERASE_RATIO, value=0))
    ops.append(T.ToPureTensor())
    return T.Compose(ops)


def build_test_transform(cfg: DataConfig) -> T.Compose:
    """Resize to ``(cfg.height, cfg.width)`` (bicubic) + ImageNet normalisation.

    Returns:
        a callable mapping a PIL image or ``uint8 (3, h, w)`` tensor to a ``float32 (3, H, W)`` tensor.
    """
    return T.Compose([
        T.ToImage(),
        _resize(cfg),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        T.ToPureTensor(),
    ])
