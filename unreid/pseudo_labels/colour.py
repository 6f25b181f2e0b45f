"""Hand-crafted colour features as a prior for pseudo-labelling (``pseudo_labels.colour_weight``).

Clothing colour, stripe by stripe from head to feet, changes little between a side view and a front
or back view, while an ImageNet-initialised network at low resolution sees mostly the view and the
background. Horizontal-stripe colour histograms are the colour half of the hand-crafted cross-view
descriptors of the pre-deep re-ID literature: ELF (Gray and Tao, ECCV 2008, colour histograms over
horizontal stripes) and LOMO (Liao et al., "Person Re-identification by Local Maximal Occurrence
Representation and Metric Learning", CVPR 2015, Sec. 4: HSV histograms of 8 x 8 x 8 bins over
horizontal strips); unsupervised re-ID used such features for its first cross-view associations
(e.g. CAMEL, Yu et al., ICCV 2017; DGM, Ye et al., ICCV 2017). Ours is a simplified form: one HSV
histogram per stripe, no sliding windows, no maximal occurrence, no SILTP texture.

:func:`colour_stripe_histograms` computes them; :func:`append_colour` appends them, standardised
per camera, to the network features before the k-reciprocal step. Only the pseudo-labels see them:
the memories, the losses and the evaluation use the network features alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

#: horizontal stripes per image (ELF / LOMO use 6 and overlapping 10-pixel strips; our choice)
STRIPES = 8
#: HSV bins: hue, saturation, value (LOMO: 8 x 8 x 8; coarser saturation and value here, our choice,
#: so that a 16 x 64-pixel stripe fills its 128 bins)
HSV_BINS = (8, 4, 4)


def colour_stripe_histograms(images: Tensor, stripes: int = STRIPES,
                             bins: tuple[int, int, int] = HSV_BINS) -> Tensor:
    """HSV histograms of horizontal stripes, one vector per image.

    Args:
        images: ``(N, 3, H, W) uint8`` RGB images (``H >= stripes``).
        stripes: number of equal horizontal stripes (rows split with ``numpy.array_split``).
        bins: ``(hue, saturation, value)`` bins, each channel quantised uniformly over 0..255 (PIL's
            HSV, hue included).

    Returns:
        ``(N, stripes * prod(bins)) float32``: per stripe the pixel counts divided by the stripe's pixel
        count, square-rooted (the Hellinger embedding: the dot product of two rows is the Bhattacharyya
        coefficient summed over stripes), the whole row then L2-normalised.

    Raises:
        ValueError: ``images`` is not ``(N, 3, H, W) uint8``, ``H < stripes``, or a bin count < 1.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
    if images.shape[2] < stripes or stripes < 1:
        raise ValueError(f"{stripes} stripes need images at least that many rows high, got H={images.shape[2]}")
    if min(bins) < 1:
        raise ValueError(f"bins must be >= 1 per channel, got {bins}")
    nb = int(np.prod(bins))
    rows = np.array_split(np.arange(images.shape[2]), stripes)
    out = np.zeros((images.shape[0], stripes * nb), dtype=np.float32)
    scale = np.asarray(bins, dtype=np.int64)
    for i, img in enumerate(images.permute(0, 2, 3, 1).numpy()):
        hsv = np.asarray(Image.fromarray(np.ascontiguousarray(img)).convert("HSV"), dtype=np.int64)  # (H, W, 3), 0..255
        q = (hsv * scale) >> 8  # uniform bins over 0..255
        code = (q[..., 0] * bins[1] + q[..., 1]) * bins[2] + q[..., 2]
        for s, r in enumerate(rows):
            h = np.bincount(code[r].ravel(), minlength=nb).astype(np.float32)
            out[i, s * nb:(s + 1) * nb] = np.sqrt(h / h.sum())
    return F.normalize(torch.from_numpy(out), dim=1)


def load_images(paths: Sequence[str], size: tuple[int, int], cache: Any = None, batch: int = 256) -> Iterator[Tensor]:
    """Image files at ``size = (H, W)``, in chunks of ``batch``: ``(b, 3, H, W) uint8`` RGB each.

    Images are loaded as every other stage loads them (:class:`unreid.data.loader.ReIDImageDataset`):
    from ``cache`` (an :class:`unreid.data.loader.ImageCache`, e.g. the trainer's, whose images are
    already at the input size) when it holds the path, else decoded from disk; an unreadable file is
    logged once and stands in as a black image, as in training and evaluation.
    """
    from unreid.data.datasets.base import Sample
    from unreid.data.loader import ReIDImageDataset, _resize

    images = ReIDImageDataset([Sample(str(p), -1, -1) for p in paths], lambda img: _resize(img, size),
                              cache=cache, size=size)
    for start in range(0, len(images), batch):
        yield torch.stack([images[i]["img"] for i in range(start, min(start + batch, len(images)))])


def load_colour_histograms(paths: Sequence[str], size: tuple[int, int], cache: Any = None,
                           batch: int = 256) -> Tensor:
    """:func:`colour_stripe_histograms` of image files, resized to ``size = (H, W)`` as the network
    input is, loaded by :func:`load_images` (``cache`` used when it holds the path).

    Returns:
        ``(len(paths), STRIPES * prod(HSV_BINS)) float32``, rows L2-normalised.
    """
    parts = [colour_stripe_histograms(chunk) for chunk in load_images(paths, size, cache=cache, batch=batch)]
    return torch.cat(parts) if parts else torch.zeros(0, STRIPES * int(np.prod(HSV_BINS)))


#: ``pseudo_labels.colour_descriptor`` values (unreid.config): the descriptor :func:`load_descriptors` computes
DESCRIPTORS = ("stripes", "lomo")


def iter_descriptors(paths: Sequence[str], size: tuple[int, int], descriptor: str = "stripes",
                     cache: Any = None, batch: int | None = None) -> Iterator[Tensor]:
    """:func:`load_descriptors` in row chunks of ``batch`` images (default: 64 for LOMO, 256 for the
    stripes, the loaders' own chunks), ``(b, D) float32`` each, so that a
    consumer (:class:`unreid.pseudo_labels.prior.DescriptorStore`) never holds all of them at once.

    Raises:
        ValueError: ``descriptor`` not one of :data:`DESCRIPTORS`.
    """
    if descriptor not in DESCRIPTORS:
        raise ValueError(f"unknown descriptor {descriptor!r}; choose one of {DESCRIPTORS}")
    if descriptor == "lomo":
        from unreid.pseudo_labels.lomo import lomo_descriptors as compute
    else:
        compute = colour_stripe_histograms
    for chunk in load_images(paths, size, cache=cache, batch=batch or (64 if descriptor == "lomo" else 256)):
        yield compute(chunk)


def load_descriptors(paths: Sequence[str], size: tuple[int, int], descriptor: str = "stripes",
                     cache: Any = None) -> Tensor:
    """The prior's descriptors of image files at ``size = (H, W)``: the one place that maps
    ``pseudo_labels.colour_descriptor`` to its loader.

    Args:
        paths: image files, loaded by :func:`load_images` (``cache`` used when it holds the path).
        size: ``(H, W)`` in pixels, the network's input size.
        descriptor: ``"stripes"`` (:func:`load_colour_histograms`) or ``"lomo"``
            (:func:`unreid.pseudo_labels.lomo.load_lomo_descriptors`).
        cache: an optional :class:`unreid.data.loader.ImageCache`.

    Returns:
        ``(len(paths), D) float32``, rows L2-normalised.

    Raises:
        ValueError: ``descriptor`` not one of :data:`DESCRIPTORS`.
    """
    if descriptor == "stripes":
        return load_colour_histograms(paths, size, cache=cache)
    if descriptor == "lomo":
        from unreid.pseudo_labels.lomo import load_lomo_descriptors

        return load_lomo_descriptors(paths, size, cache=cache)
    raise ValueError(f"unknown descriptor {descriptor!r}; choose one of {DESCRIPTORS}")


def append_colour(features: Tensor, colour: Tensor, camids: np.ndarray | Tensor, weight: float) -> Tensor:
    """The features the pseudo-labeller sees: ``[f, weight * c]``, L2-normalised.

    ``c`` is ``colour`` standardised per camera (:func:`unreid.pseudo_labels.camera.camera_standardize`:
    each camera's histograms lose their mean and are scaled to unit variance per bin, which removes the
    camera's own colour cast), ``f`` the L2-normalised network features. Both parts have unit norm, so
    ``weight = 1`` gives them equal say in every cosine similarity.

    Args:
        features: ``(N, d) float`` network features.
        colour: ``(N, D) float`` colour histograms (:func:`colour_stripe_histograms`).
        camids: ``(N,) int`` camera ids.
        weight: > 0, the colour part's weight.

    Returns:
        ``(N, d + D) float32``, rows L2-normalised.

    Raises:
        ValueError: lengths differ, or ``weight <= 0``.
    """
    from unreid.pseudo_labels.camera import camera_standardize

    if weight <= 0:
        raise ValueError(f"pseudo_labels.colour_weight must be > 0 to append colour, got {weight}")
    if colour.shape[0] != features.shape[0]:
        raise ValueError(f"{colour.shape[0]} colour histograms for {features.shape[0]} features")
    f = F.normalize(torch.as_tensor(features, dtype=torch.float32), dim=1)
    c = camera_standardize(colour.to(f.device), camids)
    return F.normalize(torch.cat([f, weight * c], dim=1), dim=1)


__all__ = ["DESCRIPTORS", "HSV_BINS", "STRIPES", "append_colour", "colour_stripe_histograms", "iter_descriptors",
           "load_colour_histograms", "load_descriptors", "load_images"]
