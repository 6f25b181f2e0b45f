"""Backbones: each maps ``(B, 3, H, W)`` images to a feature map ``(B, C, H', W')`` and exposes
``out_channels`` (C). See :func:`unreid.models.build_backbone` for the names."""

from unreid.models.backbones.efficientnet import EFFICIENTNET_LITES, EfficientNetLiteBackbone
from unreid.models.backbones.resnet import IBN, RESNETS, ResNetBackbone
from unreid.models.backbones.timm_backbone import TimmBackbone
from unreid.models.backbones.weights import load_matching, load_state_dict_file

__all__ = [
    "EFFICIENTNET_LITES",
    "IBN",
    "RESNETS",
    "EfficientNetLiteBackbone",
    "ResNetBackbone",
    "TimmBackbone",
    "load_matching",
    "load_state_dict_file",
]
