"""The two-stream re-ID model for visible-infrared re-ID (``model.arch="two_stream"``).

MBCCM (Cheng et al., ACM MM 2023; FranklinLingfeng/MBCCM-master-MM-23 @3492a38 ``model/network.py``,
after AGW, mangye16/ReID-Survey): each modality has its own stem, the rest of the network is shared.
For ResNet the stem is ``conv1, bn1, relu, maxpool`` (MBCCM ``visible_module`` / ``thermal_module``) and
the shared part ``layer1``-``layer4`` (``base_resnet``); for EfficientNet-Lite (the project's CPU
configurations; our extension) the stem is ``_conv_stem, _bn0`` and the activation, the shared part the
MBConv blocks and the head convolution. Pooling, embedding and BNNeck are those of
:class:`unreid.models.reid.ReIDModel` (MBCCM: GeM with a **fixed** p = 3 = ``model.gem_trainable=false``,
BN neck, last stride 1; these come from the config, the builder does not force them).

Modules and state-dict names: ``backbone`` is the ordinary single-stream backbone (its stem is the
**visible** stem, so a ``"reid"`` checkpoint's ``backbone.*`` names load unchanged) and
``infrared_stem`` holds the infrared stem with the same attribute names (``infrared_stem.conv1.weight``
mirrors ``backbone.conv1.weight``; EfficientNet: ``infrared_stem._conv_stem.weight`` mirrors
``backbone.net._conv_stem.weight``). The infrared stem is a copy of the visible one taken after the
backbone's weights are loaded, so ImageNet (or ``model.weights``) initialises both stems, as MBCCM
builds each of its modules from a pretrained ResNet-50.

Routing: ``forward(x, camids=None, modalities=None)`` sends image ``i`` through the stem of
``modalities[i]`` (0 visible, 1 infrared); a batch may mix both (each stem sees, and in train mode
normalises over, its own images only, as MBCCM's separate modules; the shared layers see the whole batch,
as MBCCM's ``torch.cat((x_rgb, x_ir))``). ``modalities=None`` sends every image through the visible stem.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unreid.config import ModelConfig
from unreid.models.backbones import EfficientNetLiteBackbone, ResNetBackbone
from unreid.models.reid import ReIDModel, build_backbone


class ResNetStem(nn.Module):
    """A ResNet stem ``maxpool(relu(bn1(conv1(x))))`` (copies of a :class:`ResNetBackbone`'s modules).

    Shapes: ``(B, 3, H, W) -> (B, 64, H/4, W/4)``.
    """

    def __init__(self, backbone: ResNetBackbone) -> None:
        super().__init__()
        self.conv1, self.bn1 = copy.deepcopy(backbone.conv1), copy.deepcopy(backbone.bn1)
        self.relu, self.maxpool = copy.deepcopy(backbone.relu), copy.deepcopy(backbone.maxpool)

    def forward(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


class EfficientNetStem(nn.Module):
    """An EfficientNet-Lite stem ``act(_bn0(_conv_stem(x)))`` (copies of the package model's modules;
    ``_swish`` is the activation module the package uses, ReLU6 for the Lite variants)."""

    def __init__(self, backbone: EfficientNetLiteBackbone) -> None:
        super().__init__()
        net = backbone.net
        self._conv_stem, self._bn0 = copy.deepcopy(net._conv_stem), copy.deepcopy(net._bn0)
        self._swish = copy.deepcopy(net._swish)

    def forward(self, x: Tensor) -> Tensor:
        return self._swish(self._bn0(self._conv_stem(x)))


class TwoStreamModel(ReIDModel):
    """:class:`ReIDModel` with one stem per modality (module docstring).

    Args:
        backbone: a :class:`ResNetBackbone` or :class:`EfficientNetLiteBackbone` with its weights loaded
            (its stem becomes the visible stem, a copy of it the infrared stem).
        cfg: the ``model`` config (as :class:`ReIDModel`).

    Raises:
        ValueError: another backbone type (timm backbones have no common stem), or what :class:`ReIDModel`
            raises.
    """

    def __init__(self, backbone: nn.Module, cfg: ModelConfig) -> None:
        super().__init__(backbone, cfg)
        if isinstance(backbone, ResNetBackbone):
            self.infrared_stem: nn.Module = ResNetStem(backbone)
        elif isinstance(backbone, EfficientNetLiteBackbone):
            self.infrared_stem = EfficientNetStem(backbone)
        else:
            raise ValueError(f"model.arch=two_stream needs a resnet* or efficientnet_lite* backbone, got "
                             f"{type(backbone).__name__} (model.backbone={cfg.backbone!r})")

    # ---------------------------------------------------------------------------------------------- parts
    def visible_stem(self, x: Tensor) -> Tensor:
        """The backbone's own stem (visible images)."""
        b = self.backbone
        if isinstance(b, ResNetBackbone):
            return b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.net._swish(b.net._bn0(b.net._conv_stem(x)))

    def shared(self, x: Tensor) -> Tensor:
        """The shared layers: ResNet ``layer1``-``layer4``; EfficientNet-Lite the blocks (drop-connect rate
        scaled per block as the package's ``extract_features``) and the head convolution."""
        b = self.backbone
        if isinstance(b, ResNetBackbone):
            return b.layer4(b.layer3(b.layer2(b.layer1(x))))
        net = b.net
        for idx, block in enumerate(net._blocks):
            rate = net._global_params.drop_connect_rate
            if rate:
                rate *= float(idx) / len(net._blocks)
            x = block(x, drop_connect_rate=rate)
        return net._swish(net._bn1(net._conv_head(x)))

    def feature_map(self, x: Tensor, modalities: Tensor | None = None) -> Tensor:
        """Each image through its modality's stem, then the shared layers.

        Args:
            x: ``(B, 3, H, W)`` float images.
            modalities: ``(B,)`` int modality ids (0 visible, 1 infrared), or ``None`` (all visible).

        Returns:
            ``(B, C, H', W')`` feature map, rows in the order of ``x``.

        Raises:
            ValueError: ``modalities`` has not one entry per image, or a value other than 0 / 1.
        """
        if modalities is None:
            return self.shared(self.visible_stem(x))
        m = torch.as_tensor(modalities, device=x.device).long().reshape(-1)
        if m.numel() != x.shape[0]:
            raise ValueError(f"two_stream: {m.numel()} modalities for {x.shape[0]} images; pass one per image")
        if bool(((m != 0) & (m != 1)).any()):
            raise ValueError(f"two_stream: modalities must be 0 (visible) or 1 (infrared), got values "
                             f"{sorted(set(m.tolist()))}")
        ir = m == 1
        if not bool(ir.any()):
            return self.shared(self.visible_stem(x))
        if bool(ir.all()):
            return self.shared(self.infrared_stem(x))
        yv, yi = self.visible_stem(x[~ir]), self.infrared_stem(x[ir])
        y = yv.new_empty((x.shape[0], *yv.shape[1:]))
        y[~ir], y[ir] = yv, yi
        return self.shared(y)

    # ---------------------------------------------------------------------------------------------- calls
    def forward_features(self, x: Tensor, modalities: Tensor | None = None) -> Tensor:
        """As :meth:`ReIDModel.forward_features`, with the stems chosen by ``modalities``."""
        return self.embedding(self.pool(self.feature_map(x, modalities))).float()

    def forward(self, x: Tensor, camids: Tensor | None = None, modalities: Tensor | None = None,
                return_map: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Re-ID features, as :meth:`ReIDModel.forward` (same outputs and modes), each image through the stem
        of its modality (``modalities``: ``(B,)`` 0 visible / 1 infrared; ``None`` = all visible).
        ``camids`` is accepted and ignored (camera BN is refused at build time).

        Raises:
            ValueError: bad ``modalities`` (see :meth:`feature_map`).
        """
        fmap = self.feature_map(x, modalities)
        f = F.normalize(self.neck(self.embedding(self.pool(fmap))).float(), dim=1)
        if self.training:
            f = self.dropout(f)
        return (f, fmap) if return_map else f


def build_two_stream_model(cfg: ModelConfig, init_weights: bool = True) -> TwoStreamModel:
    """The ``"two_stream"`` architecture: :class:`TwoStreamModel` on :func:`unreid.models.reid.build_backbone`.

    Raises:
        ValueError: ``model.camera_bn`` (each stem sees a subset of the batch, which camera-based BN's
            per-camera split does not follow; not supported), or a backbone without a common stem.
    """
    if cfg.camera_bn:
        raise ValueError("model.camera_bn=true is not supported with model.arch=two_stream (each stem normalises "
                         "its own modality's images); set model.camera_bn=false")
    return TwoStreamModel(build_backbone(cfg, init_weights=init_weights), cfg)
