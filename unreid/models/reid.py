"""The re-ID network: backbone -> pooling -> (embedding) -> BNNeck -> feature."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from unreid.config import ModelConfig
from unreid.models.heads import BNNeck, build_pooling


class ReIDModel(nn.Module):
    """Backbone + pooling + optional linear embedding + BNNeck.

    Cluster Contrast's ``clustercontrast/models/resnet.py``: pooled feature -> (``feat`` Linear when
    ``num_features > 0``) -> ``feat_bn`` (BNNeck, frozen bias). In training mode the BNNeck output is
    returned **un-normalised** (the memories normalise it); in eval mode it is L2-normalised (cosine
    retrieval).

    Shapes: input ``(B, 3, H, W)`` float (ImageNet-normalised); output ``(B, feature_dim)`` float32.
    """

    def __init__(self, backbone: nn.Module, cfg: ModelConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = build_pooling(cfg.pooling, cfg.gem_p, cfg.gem_trainable)
        dim = backbone.out_channels
        self.embedding: nn.Module = nn.Identity()
        if cfg.embedding_dim > 0:
            self.embedding = nn.Linear(dim, cfg.embedding_dim)
            nn.init.kaiming_normal_(self.embedding.weight, mode="fan_out")
            nn.init.zeros_(self.embedding.bias)
            dim = cfg.embedding_dim
        self.neck: nn.Module = BNNeck(dim) if cfg.bnneck else nn.Identity()
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.feature_dim = dim

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled (pre-BNNeck) features ``(B, C)``."""
        return self.pool(self.backbone(x))

    def forward(self, x: Tensor, return_map: bool = False):
        fmap = self.backbone(x)
        f = self.neck(self.embedding(self.pool(fmap)))
        if self.training:
            f = self.dropout(f)
        else:
            f = F.normalize(f, dim=1)
        return (f, fmap) if return_map else f


def build_backbone(cfg: ModelConfig) -> nn.Module:
    """The backbone named by ``cfg.backbone`` (see ``ModelConfig``).

    Raises:
        ValueError: unknown name (lists the choices).
    """
    from unreid.models.backbones import RESNETS, EfficientNetLiteBackbone, ResNetBackbone, TimmBackbone

    name = cfg.backbone
    if name in RESNETS:
        return ResNetBackbone(name, cfg.pretrained, cfg.weights, cfg.last_stride)
    if name.startswith("efficientnet_lite"):
        return EfficientNetLiteBackbone(name, cfg.pretrained, cfg.weights)
    if name.startswith("timm:"):
        return TimmBackbone(name[5:], cfg.pretrained, cfg.weights)
    raise ValueError(f"unknown backbone {name!r}; choose from {sorted(RESNETS)}, efficientnet_lite0/1/2, "
                     "or timm:<model name>")


def build_model(cfg: ModelConfig) -> ReIDModel:
    """Build the re-ID model described by ``cfg`` (``unreid.config.ModelConfig``)."""
    return ReIDModel(build_backbone(cfg), cfg)
