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

Greyscale augmentation, off by default (the published recipes do not use it): Gong et al., "An
Effective Data Augmentation for Person Re-identification", arXiv 2101.08533 (code:
``finger-monkey/Data-Augmentation``, ``trans_gray.py`` and README). ``data.grayscale_p`` turns the whole
image grey (their RGT, ``transforms.RandomGrayscale(0.05)``); ``data.grayscale_patch_p`` turns one random
rectangle grey (their RGPR / LGT, probability 0.4 in the README, the rectangle drawn with random
erasing's area 2-40 % and aspect ratio [0.3, 1/0.3]). Both sit before normalisation and random
erasing, as in their code (PIL-level transforms). Meant for cameras that differ in colour balance, so
the network cannot rely on colour alone; measured *lower* on cuhk03-detected at the 8-epoch CPU budget
(docs/results/cuhk03-detected.md; Gong et al. train longer with it). Deviation: the rectangle's aspect ratio is drawn
log-uniformly (as torchvision's random erasing), theirs uniformly.

Test: Resize((H, W), bicubic) -> Normalize (CC ``get_test_loader``).
"""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import RandomErasing as RandomErasingV1
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

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


class RandomGrayscalePatch:
    """Turn one random rectangle of the image grey (Gong et al. 2021, RGPR; see the module docstring).

    Args:
        p: probability of changing an image at all, in ``[0, 1]``.
        scale: range of the rectangle's area as a fraction of the image (``ERASE_SCALE``: 2-40 %).
        ratio: range of its aspect ratio h / w (``ERASE_RATIO``), drawn log-uniformly.

    Called on a ``float (3, H, W)`` image tensor in ``[0, 1]`` (before normalisation); returns a tensor
    of the same shape and type in which one rectangle holds the ITU-R 601-2 luma of its pixels in all
    three channels (``torchvision rgb_to_grayscale``), or the input unchanged (probability ``1 - p``,
    or when no rectangle of the drawn size fits in 10 tries). Randomness from torch's global generator.

    Raises:
        ValueError: ``p`` outside ``[0, 1]``, or the image does not have 3 channels.
    """

    def __init__(self, p: float, scale: tuple[float, float] = ERASE_SCALE,
                 ratio: tuple[float, float] = ERASE_RATIO):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomGrayscalePatch: p must be in [0, 1], got {p}")
        self.p, self.scale, self.ratio = p, scale, ratio

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"RandomGrayscalePatch needs a (3, H, W) image tensor, got shape {tuple(img.shape)}")
        if torch.rand(1).item() >= self.p:
            return img
        # the rectangle is drawn as torchvision's random erasing draws its region (v1 get_params)
        i, j, h, w, _ = RandomErasingV1.get_params(img, scale=self.scale, ratio=self.ratio, value=[0.0])
        if h == img.shape[-2] and w == img.shape[-1]:  # get_params' "nothing fitted" answer
            return img
        out = img.clone()
        out[:, i:i + h, j:j + w] = TF.rgb_to_grayscale(img[:, i:i + h, j:j + w], num_output_channels=3)
        return out

    def __repr__(self) -> str:
        return f"RandomGrayscalePatch(p={self.p}, scale={self.scale}, ratio={self.ratio})"


def build_train_transform(cfg: DataConfig) -> T.Compose:
    """Training augmentation (see the module docstring for the sources).

    Uses ``cfg.height``, ``cfg.width``, ``cfg.flip_p``, ``cfg.pad``, ``cfg.grayscale_p``,
    ``cfg.grayscale_patch_p`` and ``cfg.random_erasing_p``; a value of 0 leaves that step out.

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
    if cfg.grayscale_p > 0:
        ops.append(T.RandomGrayscale(cfg.grayscale_p))
    ops.append(T.ToDtype(torch.float32, scale=True))
    if cfg.grayscale_patch_p > 0:
        ops.append(RandomGrayscalePatch(cfg.grayscale_patch_p))
    ops.append(T.Normalize(IMAGENET_MEAN, IMAGENET_STD))
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
