"""Re-ID models: backbones (ResNet +IBN-a, EfficientNet-Lite, timm), GeM pooling, BNNeck."""

from unreid.models.heads import BNNeck, GeneralizedMeanPooling
from unreid.models.reid import ReIDModel, build_backbone, build_model

__all__ = ["BNNeck", "GeneralizedMeanPooling", "ReIDModel", "build_backbone", "build_model"]
