"""LOMO, the Local Maximal Occurrence descriptor, as a prior for pseudo-labelling
(``pseudo_labels.colour_descriptor=lomo``).

Liao, Hu, Zhu and Li, "Person Re-identification by Local Maximal Occurrence Representation and
Metric Learning", CVPR 2015, Sec. 4; behaviour of the authors' MATLAB release (``LOMO.m``,
``SILTP.m``, version 1.0, 2015; read to learn, reproduced, not copied). It is the hand-crafted
descriptor built for cross-view matching: colour that survives a change of light (Retinex), texture
that survives a change of scale of the intensities (SILTP), and, per horizontal band, the maximum
occurrence of each pattern over the band's sub-windows, so that a pattern seen anywhere across the
band counts as much whatever the view puts it.

Per image (``H x W`` RGB, here the network's input size):

1. Colour: Retinex (:func:`retinex`), then a joint HSV histogram of 8 x 8 x 8 bins.
2. Texture: SILTP (:func:`siltp`) of the grey image, tau 0.3, 4 neighbours, radius 3 and radius 5
   (3^4 = 81 patterns each).
3. Sub-windows of 10 x 10 pixels at a step of 5; per row of sub-windows, the **maximum** over the
   row's sub-windows of each bin's count.
4. A three-scale pyramid: steps 1-3 repeated after each of two 2 x 2 average poolings (the colour
   branch pools the quantised HSV codes and rounds down, as the release does; the texture branch pools
   the grey image).
5. ``log(1 + x)``, then each of the three parts (HSV, SILTP R=3, SILTP R=5) L2-normalised on its own.

At 128 x 48 (the paper's size) or 128 x 64 (this library's CPU configs) the descriptor has
40 bands x (512 + 2 x 81) = 26,960 dimensions, the paper's figure.

Deviation, named: the release's Retinex is a closed binary. :func:`retinex` is the multi-scale
Retinex with colour restoration of Jobson, Rahman and Woodell (IEEE TIP 1997) at the paper's scales
(sigma 5 and 20), with Jobson's colour-restoration constants and a global gain / offset that maps the
1st-99th percentile of the image to [0, 1] (our choice).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from torch import Tensor

#: LOMO.m defaults (Liao et al. 2015, Sec. 4.1)
BLOCK_SIZE = 10
BLOCK_STEP = 5
NUM_SCALES = 3
HSV_BINS = (8, 8, 8)
SILTP_TAU = 0.3
SILTP_RADII = (3, 5)
#: multi-scale Retinex scales (Liao et al. 2015, Sec. 4.1: sigma 5 and 20)
RETINEX_SIGMAS = (5.0, 20.0)
#: MSRCR colour restoration (Jobson, Rahman and Woodell, IEEE TIP 1997, Sec. IV: alpha 125, beta 46)
RETINEX_ALPHA = 125.0
RETINEX_BETA = 46.0


def retinex(image: np.ndarray, sigmas: Sequence[float] = RETINEX_SIGMAS) -> np.ndarray:
    """Multi-scale Retinex with colour restoration (Jobson et al., IEEE TIP 1997).

    ``R_i = beta * (log(alpha I_i) - log(sum_j I_j)) * mean_s (log I_i - log(G_s * I_i))`` with
    ``I = image + 1`` and ``G_s`` a Gaussian of standard deviation ``s`` pixels (borders replicated),
    then one gain / offset for all channels mapping the 1st and 99th percentiles to 0 and 1, clipped.

    Args:
        image: ``(H, W, 3) uint8`` RGB.
        sigmas: Gaussian scales in pixels (LOMO: 5 and 20).

    Returns:
        ``(H, W, 3) float64`` in [0, 1].

    Raises:
        ValueError: ``image`` is not ``(H, W, 3)``.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"retinex expects an (H, W, 3) RGB image, got shape {image.shape}")
    i = image.astype(np.float64) + 1.0
    log_i = np.log(i)
    msr = np.mean([log_i - np.log(gaussian_filter(i, sigma=(s, s, 0), mode="nearest")) for s in sigmas], axis=0)
    out = RETINEX_BETA * (np.log(RETINEX_ALPHA * i) - np.log(i.sum(axis=2, keepdims=True))) * msr
    lo, hi = np.percentile(out, [1.0, 99.0])
    if hi <= lo:
        return np.zeros_like(out)
    return np.clip((out - lo) / (hi - lo), 0.0, 1.0)


def siltp(grey: np.ndarray, tau: float = SILTP_TAU, radius: int = 3) -> np.ndarray:
    """Scale-invariant local ternary patterns, 4 neighbours (Liao et al., CVPR 2010; ``SILTP.m``).

    For each pixel ``I_c`` and its neighbours at ``radius`` pixels right, up, left and down
    (borders replicated), each neighbour gives 1 if ``I_k < (1 - tau) I_c``, 2 if
    ``I_k > (1 + tau) I_c``, else 0; the code is ``sum_k t_k 3^k``.

    Args:
        grey: ``(N, H, W) float`` intensities (any positive scale: the pattern is scale invariant).
        tau: the tolerance (LOMO: 0.3).
        radius: neighbour distance in pixels, ``>= 1``.

    Returns:
        ``(N, H, W) int64`` codes in ``[0, 81)``.

    Raises:
        ValueError: ``radius < 1`` or an image smaller than ``2 * radius + 1`` on a side.
    """
    if radius < 1 or grey.shape[1] < 2 * radius + 1 or grey.shape[2] < 2 * radius + 1:
        raise ValueError(f"SILTP radius {radius} needs images at least {2 * radius + 1} pixels on a side, "
                         f"got {grey.shape[1]} x {grey.shape[2]}")
    r = radius
    padded = np.pad(grey, ((0, 0), (r, r), (r, r)), mode="edge")
    h, w = grey.shape[1:]
    neighbours = (padded[:, r:r + h, 2 * r:],  # right
                  padded[:, :h, r:r + w],  # up
                  padded[:, r:r + h, :w],  # left
                  padded[:, 2 * r:, r:r + w])  # down
    lower, upper = (1 - tau) * grey, (1 + tau) * grey
    code = np.zeros(grey.shape, dtype=np.int64)
    for k, nb in enumerate(neighbours):
        code += ((nb < lower) + 2 * (nb > upper)).astype(np.int64) * 3 ** k
    return code


def _max_occurrence(codes: np.ndarray, num_bins: int, block: int = BLOCK_SIZE, step: int = BLOCK_STEP) -> np.ndarray:
    """Per row of ``block x block`` sub-windows (``step`` apart), the maximum over the row of each
    bin's count. ``codes`` ``(N, H, W) int`` in ``[0, num_bins)``; returns ``(N, rows * num_bins)``
    float64 (empty when the image is smaller than one sub-window)."""
    n, h, w = codes.shape
    tops, lefts = np.arange(0, h - block + 1, step), np.arange(0, w - block + 1, step)
    if len(tops) == 0 or len(lefts) == 0:
        return np.zeros((n, 0))
    win = (np.arange(block)[:, None] * w + np.arange(block)[None, :]).ravel()  # pixel offsets in a window
    starts = (tops[:, None] * w + lefts[None, :]).ravel()  # (rows * cols,) top-left pixels
    pix = codes.reshape(n, -1)[:, starts[:, None] + win[None, :]]  # (N, windows, block^2)
    windows = len(starts)
    offsets = (np.arange(n)[:, None] * windows + np.arange(windows)[None, :]) * num_bins
    counts = np.bincount((pix + offsets[..., None]).ravel(), minlength=n * windows * num_bins)
    counts = counts.reshape(n, len(tops), len(lefts), num_bins).max(axis=2)
    return counts.reshape(n, -1).astype(np.float64)


def _pool2(x: np.ndarray) -> np.ndarray:
    """2 x 2 average pooling of ``(N, H, W, ...)``, an odd last row / column dropped (``LOMO.m``)."""
    h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    x = x[:, :h, :w]
    return (x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2]) / 4.0


def _log_l2(parts: list[np.ndarray]) -> np.ndarray:
    x = np.log1p(np.concatenate(parts, axis=1))
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def lomo_descriptors(images: Tensor, num_scales: int = NUM_SCALES) -> Tensor:
    """LOMO descriptors of a batch (see the module docstring for the steps and their sources).

    Args:
        images: ``(N, 3, H, W) uint8`` RGB, ``H, W >= 11`` (one sub-window and the SILTP radius 5).
        num_scales: pyramid scales (LOMO: 3); a scale too small for one sub-window is left out.

    Returns:
        ``(N, D) float32`` rows of unit L2 norm: ``[hsv, siltp_r3, siltp_r5] / sqrt(3)``, each part
        ``log(1 + max-occurrence counts)`` of unit norm. ``D = bands * (512 + 162)``, 26,960 at 128 x 64.

    Raises:
        ValueError: ``images`` is not ``(N, 3, H, W) uint8``, is smaller than 11 pixels on a side, or
            ``num_scales < 1``.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
    if min(images.shape[2:]) < 2 * max(SILTP_RADII) + 1 or num_scales < 1:
        raise ValueError(f"LOMO needs images of at least {2 * max(SILTP_RADII) + 1} pixels on a side and "
                         f"num_scales >= 1, got {tuple(images.shape[2:])} and {num_scales}")
    rgb = images.permute(0, 2, 3, 1).numpy()
    bins = np.asarray(HSV_BINS, dtype=np.int64)
    hsv_q = np.stack([(np.asarray(Image.fromarray((retinex(im) * 255).astype(np.uint8)).convert("HSV"),
                                  dtype=np.int64) * bins) >> 8 for im in rgb])  # (N, H, W, 3) bin indices
    grey = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(im)).convert("L"), dtype=np.float64) / 255.0
                     for im in rgb])
    nb = int(np.prod(bins))
    colour, texture = [], {r: [] for r in SILTP_RADII}
    for scale in range(num_scales):
        code = (hsv_q[..., 0] * bins[1] + hsv_q[..., 1]) * bins[2] + hsv_q[..., 2]
        colour.append(_max_occurrence(code, nb))
        for r in SILTP_RADII:
            if grey.shape[2] >= 2 * r + 1 and grey.shape[1] >= 2 * r + 1:
                texture[r].append(_max_occurrence(siltp(grey, SILTP_TAU, r), 3 ** 4))
        if scale + 1 < num_scales:
            hsv_q = np.floor(_pool2(hsv_q.astype(np.float64))).astype(np.int64)
            grey = _pool2(grey)
    out = np.concatenate([_log_l2(colour)] + [_log_l2(texture[r]) for r in SILTP_RADII], axis=1) / np.sqrt(3.0)
    return torch.from_numpy(out.astype(np.float32))


def load_lomo_descriptors(paths: Sequence[str], size: tuple[int, int], cache: Any = None, batch: int = 64) -> Tensor:
    """:func:`lomo_descriptors` of image files at ``size = (H, W)``, loaded by
    :func:`unreid.pseudo_labels.colour.load_images` (from ``cache`` when it holds the path; an unreadable
    file is logged and stands in as a black image). Returns ``(len(paths), D) float32``."""
    from unreid.pseudo_labels.colour import load_images

    parts = [lomo_descriptors(chunk) for chunk in load_images(paths, size, cache=cache, batch=batch)]
    return torch.cat(parts) if parts else torch.zeros(0, 0)


__all__ = ["lomo_descriptors", "load_lomo_descriptors", "retinex", "siltp"]
