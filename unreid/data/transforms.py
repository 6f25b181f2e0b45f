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

Visible-infrared (modality) augmentations of MBCCM / CAJ, at the end of the module:
:class:`LocalLinearIntensity`, :class:`ChannelRandomErasing`, :class:`ChannelExchange`, :class:`AdaptiveGrey`,
and :func:`build_modality_transforms` (MBCCM's visible view 1, visible view 2 and infrared pipelines;
docs/methods/mbccm.md "Augmentations").
"""

from __future__ import annotations

import math

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


# --------------------------------------------------------------------------------------------------------
# Visible-infrared (modality) augmentations: MBCCM (Cheng et al., ACM MM 2023;
# FranklinLingfeng/MBCCM-master-MM-23 @3492a38, ``ChannelAug.py`` and ``dataset.py`` L170-205), which takes
# ChannelRandomErasing / ChannelAdapGray / ChannelExchange from CAJ (Ye et al., "Channel Augmented Joint
# Learning for Visible-Infrared Recognition", ICCV 2021). Each is a class called on a ``float (3, H, W)``
# tensor that returns a new tensor (the input is never modified; the reference modifies it in place).
# Randomness: torch's global generator (seeded per DataLoader worker), or the ``generator`` passed.

#: ITU-R 601-2 luma weights as CAJ / MBCCM write them (``0.2989 R + 0.5870 G + 0.1140 B``)
LUMA = (0.2989, 0.5870, 0.1140)
#: ChannelRandomErasing fill (CAJ / MBCCM ``mean=[0.4914, 0.4822, 0.4465]``, written into the normalised tensor)
CHANNEL_ERASE_VALUE = (0.4914, 0.4822, 0.4465)
#: MBCCM ``dataset.py``: LinearTransform(probability=0.8) on visible view 1
LOCAL_LINEAR_P = 0.8
#: MBCCM ``dataset.py``: ChannelAdapGray(probability=0.5) on infrared images
ADAPTIVE_GREY_P = 0.5


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return lo + (hi - lo) * torch.rand(1, generator=generator).item()


def _randint(lo: int, hi: int, generator: torch.Generator | None) -> int:
    """An integer uniform in ``[lo, hi]`` (both included, as Python's ``random.randint``)."""
    return int(torch.randint(lo, hi + 1, (1,), generator=generator).item())


def _check_image(name: str, img: torch.Tensor) -> None:
    if not isinstance(img, torch.Tensor) or img.ndim != 3 or img.shape[0] != 3 or not img.is_floating_point():
        shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise ValueError(f"{name} needs a float (3, H, W) image tensor, got {shape}; apply it after ToDtype(float32)")


def _check_p(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: probability p must be in [0, 1], got {p}")
    return float(p)


def _rectangle(h_img: int, w_img: int, scale: tuple[float, float], r1: float,
               generator: torch.Generator | None) -> tuple[int, int, int, int] | None:
    """One try of CAJ / MBCCM's rectangle draw: area uniform in ``scale`` x image area, aspect ratio h / w
    uniform in ``[r1, 1 / r1]``, ``h = round(sqrt(area * ratio))``, ``w = round(sqrt(area / ratio))``;
    ``(top, left, h, w)`` with the corner uniform, or ``None`` when it does not fit (``h < H``, ``w < W``)."""
    area = _uniform(scale[0], scale[1], generator) * h_img * w_img
    ratio = _uniform(r1, 1.0 / r1, generator)
    h, w = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
    if w < w_img and h < h_img:
        return _randint(0, h_img - h, generator), _randint(0, w_img - w, generator), h, w
    return None


class LocalLinearIntensity:
    """Random local linear intensity change (MBCCM ``ChannelAug.py`` ``LinearTransform``; visible view 1).

    With probability ``p`` (MBCCM: 0.8): repeatedly draw a rectangle (:func:`_rectangle`: area 2-40 %,
    aspect ratio in [0.3, 1/0.3]; a rectangle that does not fit is redrawn) and multiply each channel ``c``
    of it by ``alpha_c = b / max(region_c)`` with ``b ~ Beta(0.5, 0.5)`` (a channel whose region is all 0
    is left alone), so that each region stays in ``[0, max]`` -> ``[0, b]``; keep a per-pixel record ``M``
    of the product of the factors and stop once ``min(M) <= tmin`` (the reference's loop: it returns only
    when some pixel has been darkened to a 1e-6 fraction, usually after tens of rectangles, so overlapping
    rectangles compound). The result is ``img * M`` with ``M`` piecewise constant per channel.

    Apply to images in ``[0, 1]`` before normalisation (MBCCM: after ``ToTensor``, before ``Normalize``).

    Args:
        p: probability of changing an image (MBCCM 0.8).
        scale: rectangle area range as a fraction of the image (MBCCM sl 0.02, sh 0.4).
        r1: minimum aspect ratio (MBCCM 0.3).
        tmin: stop once a pixel's factor product is <= this (MBCCM hard-codes 1e-6; its ``tmin`` argument
            is unused).
        max_rects: safety cap on the rectangles drawn (ours; the reference loops without bound).
        generator: optional ``torch.Generator``.

    ``Beta(0.5, 0.5)`` is drawn as ``sin^2(pi u / 2)``, ``u ~ U[0, 1)`` (its inverse CDF: the arcsine
    law), so that a ``torch.Generator`` drives it (the reference uses NumPy's global ``beta``).

    Raises:
        ValueError: ``p`` outside [0, 1], or the input is not a float ``(3, H, W)`` tensor.
    """

    def __init__(self, p: float = LOCAL_LINEAR_P, scale: tuple[float, float] = ERASE_SCALE, r1: float = 0.3,
                 tmin: float = 1e-6, max_rects: int = 10_000, generator: torch.Generator | None = None):
        self.p = _check_p("LocalLinearIntensity", p)
        self.scale, self.r1, self.tmin, self.max_rects, self.generator = scale, r1, tmin, max_rects, generator

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _check_image("LocalLinearIntensity", img)
        if torch.rand(1, generator=self.generator).item() >= self.p:
            return img
        out = img.clone()
        factor = torch.ones_like(img)
        _, h_img, w_img = img.shape
        for _ in range(self.max_rects):
            rect = _rectangle(h_img, w_img, self.scale, self.r1, self.generator)
            if rect is None:
                continue
            i, j, h, w = rect
            for c in range(3):
                peak = out[c, i:i + h, j:j + w].max()
                if peak > 0:
                    b = math.sin(math.pi * torch.rand(1, generator=self.generator).item() / 2) ** 2
                    alpha = b / float(peak)
                    out[c, i:i + h, j:j + w] *= alpha
                    factor[c, i:i + h, j:j + w] *= alpha
            if factor.min() <= self.tmin:
                break
        return out

    def __repr__(self) -> str:
        return f"LocalLinearIntensity(p={self.p}, scale={self.scale}, r1={self.r1}, tmin={self.tmin})"


class ChannelRandomErasing:
    """Random erasing with a per-channel constant fill (CAJ / MBCCM ``ChannelAug.py`` ``ChannelRandomErasing``).

    With probability ``p`` (MBCCM 0.5 on every view): up to ``attempts`` (100) tries of :func:`_rectangle`
    (area 2-40 %, aspect ratio in [0.3, 1/0.3]); the first that fits gets ``value[c]`` in channel ``c``.
    The fill is the reference's fixed ``(0.4914, 0.4822, 0.4465)`` written into the *normalised* tensor
    (as CAJ and MBCCM do; not random values, whatever the name suggests). Apply after normalisation.

    Args:
        p: probability of erasing. scale, r1, attempts: the rectangle draw. value: the fill per channel.
        generator: optional ``torch.Generator``.

    Raises:
        ValueError: ``p`` outside [0, 1], or the input is not a float ``(3, H, W)`` tensor.
    """

    def __init__(self, p: float = 0.5, scale: tuple[float, float] = ERASE_SCALE, r1: float = 0.3,
                 value: tuple[float, float, float] = CHANNEL_ERASE_VALUE, attempts: int = 100,
                 generator: torch.Generator | None = None):
        self.p = _check_p("ChannelRandomErasing", p)
        self.scale, self.r1, self.value, self.attempts, self.generator = scale, r1, value, attempts, generator

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _check_image("ChannelRandomErasing", img)
        if torch.rand(1, generator=self.generator).item() >= self.p:
            return img
        for _ in range(self.attempts):
            rect = _rectangle(img.shape[1], img.shape[2], self.scale, self.r1, self.generator)
            if rect is not None:
                i, j, h, w = rect
                out = img.clone()
                for c in range(3):
                    out[c, i:i + h, j:j + w] = self.value[c]
                return out
        return img

    def __repr__(self) -> str:
        return f"ChannelRandomErasing(p={self.p}, scale={self.scale}, r1={self.r1}, value={self.value})"


class ChannelExchange:
    """Copy one channel into all three (MBCCM ``dataset.py`` ``ChannelExchange``; CAJ's channel exchange).

    Draws ``k`` uniform in ``{0, ..., gray}``: ``k`` in 0..2 copies channel ``k`` (R, G, B) into the three
    channels; ``k == 3`` (only when ``gray == 3``) turns the image grey (``LUMA`` weights) with probability
    ``p`` and leaves it unchanged otherwise. MBCCM's visible view 2 uses ``gray=2``: **always** one of R, G,
    B, each with probability 1/3.

    Args:
        gray: 2 (channels only) or 3 (channels, or grey).
        p: probability of grey when ``k == 3`` (MBCCM ``probability=1``).
        generator: optional ``torch.Generator``.

    Raises:
        ValueError: ``gray`` not 2 or 3, ``p`` outside [0, 1], or the input is not a float ``(3, H, W)`` tensor.
    """

    def __init__(self, gray: int = 2, p: float = 1.0, generator: torch.Generator | None = None):
        if gray not in (2, 3):
            raise ValueError(f"ChannelExchange: gray must be 2 (R/G/B only) or 3 (or grey), got {gray}")
        self.gray, self.p, self.generator = gray, _check_p(type(self).__name__, p), generator

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _check_image(type(self).__name__, img)
        k = _randint(0, self.gray, self.generator)
        if k < 3:
            return img[k:k + 1].expand(3, -1, -1).clone()
        if torch.rand(1, generator=self.generator).item() >= self.p:
            return img
        grey = LUMA[0] * img[0] + LUMA[1] * img[1] + LUMA[2] * img[2]
        return grey.unsqueeze(0).expand(3, -1, -1).clone()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(gray={self.gray}, p={self.p})"


class AdaptiveGrey(ChannelExchange):
    """Adaptive grey for infrared images (CAJ / MBCCM ``ChannelAug.py`` ``ChannelAdapGray``).

    :class:`ChannelExchange` with ``gray=3``: R, G or B copied into all channels (probability 1/4 each);
    otherwise (1/4) grey luma with probability ``p`` (MBCCM 0.5), else unchanged. So even ``p = 0`` changes
    3/4 of the images (a channel copy); ``p`` only decides between grey and unchanged.

    Raises:
        ValueError: ``p`` outside [0, 1], or the input is not a float ``(3, H, W)`` tensor.
    """

    def __init__(self, p: float = ADAPTIVE_GREY_P, generator: torch.Generator | None = None):
        super().__init__(gray=3, p=p, generator=generator)

    def __repr__(self) -> str:
        return f"AdaptiveGrey(p={self.p})"


def build_modality_transforms(cfg: DataConfig, modality: int, view: int = 1) -> T.Compose:
    """MBCCM's training pipelines (``dataset.py`` L170-205; ANCHORS.md "MBCCM").

    Shared geometry: Resize((H, W), bicubic) -> RandomHorizontalFlip(``cfg.flip_p``) -> Pad(``cfg.pad``) +
    RandomCrop((H, W)) -> float in [0, 1]. Then:

    * visible, view 1: :class:`LocalLinearIntensity` (p 0.8) -> Normalize -> :class:`ChannelRandomErasing`;
    * visible, view 2: Normalize -> :class:`ChannelRandomErasing` -> :class:`ChannelExchange` (gray=2);
    * infrared (view 1 only): Normalize -> :class:`ChannelRandomErasing` -> :class:`AdaptiveGrey` (p 0.5).

    The erasing probability is ``cfg.random_erasing_p`` (default 0.5 = MBCCM's; 0 leaves it out). MBCCM
    resizes with PIL ANTIALIAS when caching and again with ``transforms.Resize`` (bilinear); we resize once,
    bicubic, as the other pipelines of this module.

    Args:
        cfg: the ``data`` config (height, width, flip_p, pad, random_erasing_p).
        modality: :data:`unreid.data.datasets.base.VISIBLE` (0) or ``INFRARED`` (1).
        view: 1 or 2 for visible images; 1 for infrared.

    Returns:
        a callable mapping a PIL image or ``uint8 (3, h, w)`` tensor to a ``float32 (3, H, W)`` tensor.

    Raises:
        ValueError: unknown ``modality`` or ``view``.
    """
    from unreid.data.datasets.base import INFRARED, VISIBLE

    if (modality, view) not in ((VISIBLE, 1), (VISIBLE, 2), (INFRARED, 1)):
        raise ValueError(f"build_modality_transforms: (modality, view) must be (0 visible, 1 | 2) or (1 infrared, 1), "
                         f"got ({modality}, {view})")
    ops: list = [T.ToImage(), _resize(cfg)]
    if cfg.flip_p > 0:
        ops.append(T.RandomHorizontalFlip(cfg.flip_p))
    if cfg.pad > 0:
        ops += [T.Pad(cfg.pad, fill=0), T.RandomCrop((cfg.height, cfg.width))]
    ops += [T.ToDtype(torch.float32, scale=True), T.ToPureTensor()]
    if modality == VISIBLE and view == 1:
        ops.append(LocalLinearIntensity(LOCAL_LINEAR_P))
    ops.append(T.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    if cfg.random_erasing_p > 0:
        ops.append(ChannelRandomErasing(cfg.random_erasing_p))
    if modality == VISIBLE and view == 2:
        ops.append(ChannelExchange(gray=2))
    if modality == INFRARED:
        ops.append(AdaptiveGrey(ADAPTIVE_GREY_P))
    return T.Compose(ops)
