"""Camera-based batch normalisation (CBN): every camera normalised with its own statistics.

Zhuang et al., "Rethinking the Distribution Gap of Person Re-identification with Camera-based Batch
Normalization", ECCV 2020 (Sec. 3.2-3.3). A plain BN layer normalises a mixed-camera batch with
one mean and variance, so each camera's images keep their own offset (light, background, viewpoint)
all through the network, and the pseudo-labels group by camera. CBN removes that offset at *every*
BN layer:

* **training**: the images of each camera in the mini-batch are normalised with that camera's batch
  mean and variance (the affine weight and bias stay shared by all cameras);
* **feature extraction** (pseudo-labelling and evaluation): the statistics of each camera are
  re-estimated from that camera's images of the set being embedded, and its images are embedded
  with them. At test time that uses the unlabelled query and gallery images of each camera, as the
  paper does (its "camera-specific statistics" of the test cameras); cameras never seen in training
  work the same way.

Camera ids are metadata that every re-ID benchmark ships; no identity is ever read here.

Ours, where the paper is silent:

* the layers are converted in place (:func:`convert_camera_bn`), so the parameter and buffer names, and
  therefore checkpoints and ImageNet weights, stay those of the plain model;
* in training, images whose camera has a single image in the batch are normalised with the
  statistics of the whole batch (a one-image variance is undefined for ``BatchNorm1d``);
* the statistics of a camera are estimated from at most ``model.camera_bn_images`` of its images (all of
  them when fewer; default 512, a seeded random subset otherwise), as the cumulative average of the
  per-batch statistics (PyTorch's ``momentum=None``), the model in train mode with its stochastic
  layers' draws seeded, so the estimate is deterministic (:func:`estimate_statistics`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unreid.models.heads import BNNeck
from unreid.rng import forked_seed

#: the layer types :func:`convert_camera_bn` converts (other BN subclasses, e.g. timm's ``BatchNormAct2d``,
#: add work to ``forward`` that a camera split would skip, so they are refused)
SUPPORTED_BN = (nn.BatchNorm1d, nn.BatchNorm2d, BNNeck)


class CameraBatchNormMixin:
    """Camera split for a ``torch.nn`` BatchNorm layer (mixed in by :func:`convert_camera_bn`).

    Set :attr:`camids` (``(B,) int64`` tensor, the cameras of the batch about to pass) with
    :func:`camera_batch`. In train mode with :attr:`camids` set, each camera's rows of the input
    ``(B, C)`` or ``(B, C, H, W)`` are normalised with their own batch mean and (biased) variance, as
    ``F.batch_norm`` does for a whole batch; the running statistics are updated with each camera's
    statistics in turn. Without :attr:`camids`, or in eval mode, the layer is the plain BN layer.

    Raises:
        ValueError: :attr:`camids` does not have one entry per input row.
    """

    camids: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.camids is None:
            return super().forward(x)
        cams = self.camids.to(x.device)
        if cams.numel() != x.shape[0]:
            raise ValueError(f"camera BN: {cams.numel()} camera ids for a batch of {x.shape[0]}; set them with "
                             "unreid.models.camera_bn.camera_batch(model, camids) for the batch being forwarded")
        self._check_input_dim(x)
        momentum = self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # cumulative average, as torch's _BatchNorm
                momentum = 1.0 / float(self.num_batches_tracked)
        out = torch.empty_like(x)
        values, counts = torch.unique(cams, return_counts=True)
        small = torch.zeros_like(cams, dtype=torch.bool)
        for c, n in zip(values.tolist(), counts.tolist()):
            rows = cams == c
            if n < 2:
                small |= rows
                continue
            out[rows] = F.batch_norm(x[rows], self.running_mean, self.running_var, self.weight, self.bias,
                                     True, momentum or 0.0, self.eps)
        if bool(small.any()):
            whole = F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
            out[small] = whole[small]
        return out


_CLASSES: dict[type, type] = {}


def _camera_class(cls: type) -> type:
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Camera{cls.__name__}", (CameraBatchNormMixin, cls), {"__module__": __name__})
    return _CLASSES[cls]


def convert_camera_bn(model: nn.Module) -> nn.Module:
    """Make every BatchNorm layer of ``model`` a camera-based one, in place (CBN, Zhuang et al. 2020).

    Each ``nn.BatchNorm1d`` / ``nn.BatchNorm2d`` / :class:`~unreid.models.heads.BNNeck` keeps its
    parameters, buffers and names; its class gains :class:`CameraBatchNormMixin`. Converting twice is
    a no-op. Returns ``model``.

    Raises:
        ValueError: a BatchNorm subclass whose ``forward`` does more than normalise (e.g. timm's
            ``BatchNormAct2d``): camera BN cannot split it; use a torchvision / EfficientNet-Lite backbone.
    """
    for name, m in model.named_modules():
        if isinstance(m, CameraBatchNormMixin) or not isinstance(m, nn.modules.batchnorm._BatchNorm):
            continue
        if type(m) not in SUPPORTED_BN:
            raise ValueError(f"model.camera_bn: layer {name!r} is a {type(m).__module__}.{type(m).__name__}, "
                             "which camera BN cannot split (it supports torch BatchNorm1d/2d and BNNeck); "
                             "choose a torchvision ResNet or EfficientNet-Lite backbone, or set model.camera_bn=false")
        m.__class__ = _camera_class(type(m))
    if hasattr(model, "_camera_bn"):
        model._camera_bn = None  # ReIDModel.camera_bn is re-read after a conversion
    return model


def camera_bn_layers(model: nn.Module) -> list[nn.Module]:
    """The camera BN layers of ``model`` (empty for a plain model)."""
    return [m for m in model.modules() if isinstance(m, CameraBatchNormMixin)]


@contextlib.contextmanager
def camera_batch(model: nn.Module, camids: Tensor | np.ndarray | None) -> Iterator[None]:
    """Within the block, the camera BN layers of ``model`` split the batch by ``camids`` ``(B,) int``.

    A no-op for a model without camera BN layers or when ``camids`` is None. The ids are cleared on
    exit, also when an error is raised.
    """
    layers = [] if camids is None else camera_bn_layers(model)
    if not layers:
        yield
        return
    cams = torch.as_tensor(camids, dtype=torch.long)
    for m in layers:
        m.camids = cams
    try:
        yield
    finally:
        for m in layers:
            m.camids = None


@contextlib.contextmanager
def camera_statistics(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Save the running statistics and momentum of ``model``'s camera BN layers; restore them on exit.

    Yields the layers, so that the caller can re-estimate their statistics (e.g. for one camera) inside
    the block without changing the model it was handed.
    """
    layers = camera_bn_layers(model)
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
             for m in layers]
    try:
        yield layers
    finally:
        for m, (mean, var, n, mom) in zip(layers, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(n)
            m.momentum = mom


@torch.no_grad()
def estimate_statistics(model: nn.Module, batches, seed: int = 0) -> int:
    """Replace the running statistics of ``model``'s camera BN layers by those of ``batches``.

    The whole model runs in train mode while the statistics are collected, as in the CBN code
    (automan000/Camera-based-Person-ReID, README: one camera's mini-batches passed through the
    network in train mode, BN ``momentum=None``) and PyTorch's ``torch.optim.swa_utils.update_bn``; so stochastic parts
    (dropout, EfficientNet's drop connect) act as they did when the model's own statistics were
    formed in training. Their random draws come from a generator seeded with ``seed`` inside a forked
    RNG state, so the estimate is deterministic and the caller's random streams are untouched (ours:
    the reference's ResNet has no stochastic parts). Measured alternative, not kept: only the BN
    layers in train mode (no drop connect; the "variance shift" view of Li et al., CVPR 2019) gave
    0.0-0.3 lower test mAP on ten cuhk03-detected checkpoints and trained a lower run (docs/results/cuhk03-detected.md).

    Args:
        model: with camera BN layers; the train/eval mode of all its modules is restored on return.
        batches: iterable of ``(B, 3, H, W)`` float image tensors on the model's device (one camera's
            images); a batch of one image is skipped (no variance).
        seed: seed of the stochastic layers' draws during the estimate.

    Returns:
        the number of images the statistics were estimated from (0: nothing changed).
    """
    layers = camera_bn_layers(model)
    modes = {m: m.training for m in model.modules()}
    p = next(model.parameters(), None)
    cuda = [p.device.index or 0] if p is not None and p.is_cuda else []
    seen = 0
    for m in layers:
        m.camids = None
    try:
        with forked_seed(seed, cuda):
            model.train()
            for x in batches:
                if x.shape[0] < 2:
                    continue
                if seen == 0:
                    for m in layers:
                        m.reset_running_stats()
                        m.momentum = None
                model(x)
                seen += int(x.shape[0])
    finally:
        for m, was in modes.items():
            m.training = was
    return seen


__all__ = ["SUPPORTED_BN", "CameraBatchNormMixin", "camera_batch", "camera_bn_layers", "camera_statistics",
           "convert_camera_bn", "estimate_statistics"]
