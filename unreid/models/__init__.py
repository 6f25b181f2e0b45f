"""Re-ID models: backbones (torchvision ResNet with last stride and IBN-a, EfficientNet-Lite, timm),
GeM / average pooling, BNNeck. The trainer calls :func:`build_model`."""

from unreid.models.heads import AvgPooling, BNNeck, GeneralizedMeanPooling, build_pooling
from unreid.models.reid import BACKBONES, ReIDModel, build_backbone, build_model

__all__ = [
    "BACKBONES",
    "AvgPooling",
    "BNNeck",
    "GeneralizedMeanPooling",
    "ReIDModel",
    "build_backbone",
    "build_model",
    "build_pooling",
]
