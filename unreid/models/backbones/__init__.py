"""Backbones: each returns a feature map ``(B, C, H', W')`` and exposes ``out_channels``."""

from unreid.models.backbones.efficientnet import EfficientNetLiteBackbone
from unreid.models.backbones.resnet import RESNETS, ResNetBackbone, load_state_dict_file
from unreid.models.backbones.timm_backbone import TimmBackbone

__all__ = ["RESNETS", "EfficientNetLiteBackbone", "ResNetBackbone", "TimmBackbone", "load_state_dict_file"]
