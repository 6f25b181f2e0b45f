"""The re-ID network: backbone -> pooling -> (linear embedding) -> BNNeck -> feature."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from unreid.config import ModelConfig
from unreid.models.backbones import (
    EFFICIENTNET_LITES,
    RESNETS,
    EfficientNetLiteBackbone,
    ResNetBackbone,
    TimmBackbone,
)
from unreid.models.heads import BNNeck, build_pooling

#: accepted ``model.backbone`` values (plus ``timm:<name>``)
BACKBONES: tuple[str, ...] = tuple(sorted(RESNETS)) + tuple(sorted(EFFICIENTNET_LITES)) + ("timm:<name>",)


class ReIDModel(nn.Module):
    """Backbone + global pooling + optional linear embedding + BNNeck, as Cluster Contrast's
    ``clustercontrast/models/resnet.py`` (``base`` -> ``gap`` -> ``feat`` -> ``feat_bn``).

    * ``backbone``: image -> feature map ``(B, C, H', W')``; ``pool``: GeM or average -> ``(B, C)``.
    * ``embedding``: ``nn.Linear(C, embedding_dim)`` when ``cfg.embedding_dim > 0`` (CC ``feat``, weight
      Kaiming-normal fan-out, bias 0), else identity.
    * ``neck``: :class:`~unreid.models.heads.BNNeck` (CC ``feat_bn``, frozen zero bias) when ``cfg.bnneck``,
      else identity.

    Output of :meth:`forward`:

    * **train mode**: the BNNeck output L2-normalised along dim 1, **then** dropout (``cfg.dropout``;
      inverted dropout, so the surviving entries are scaled by ``1 / (1 - p)`` and the norm is no longer 1),
      float32. This is CC's ``ResNet.forward`` as its training scripts build it (``models.create(...,
      norm=True, ...)`` in ``examples/cluster_contrast_train_usl.py`` ``create_model``; HHCL's
      ``examples/train.py`` likewise): ``if self.norm: bn_x = F.normalize(bn_x)``, then ``self.drop``.
      The ReLU of that function (``elif self.has_embedding: bn_x = F.relu(bn_x)``) sits in the branch
      ``norm=False``, which those scripts never take: no ReLU, with or without an embedding.
    * **eval mode**: the BNNeck output L2-normalised along dim 1 (cosine retrieval), float32; no dropout
      (CC returns ``F.normalize(bn_x)`` before reaching its dropout).

    Args:
        backbone: a module with ``out_channels`` returning ``(B, out_channels, H', W')``.
        cfg: ``model`` section of the config (pooling, gem_p, gem_trainable, embedding_dim, bnneck, dropout).

    Attributes:
        feature_dim: d, the output width (``embedding_dim`` if > 0 else ``backbone.out_channels``).

    Raises:
        ValueError: ``embedding_dim < 0``, ``dropout`` outside [0, 1), or an unknown pooling.
    """

    def __init__(self, backbone: nn.Module, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.embedding_dim < 0:
            raise ValueError(f"model.embedding_dim must be >= 0 (0 = no embedding), got {cfg.embedding_dim}")
        if not 0.0 <= cfg.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {cfg.dropout}")
        self.backbone = backbone
        self.pool = build_pooling(cfg.pooling, cfg.gem_p, cfg.gem_trainable)
        dim = int(backbone.out_channels)
        self.has_embedding = cfg.embedding_dim > 0
        self.embedding: nn.Module = nn.Identity()
        if self.has_embedding:
            linear = nn.Linear(dim, cfg.embedding_dim)
            nn.init.kaiming_normal_(linear.weight, mode="fan_out")
            nn.init.zeros_(linear.bias)
            self.embedding = linear
            dim = cfg.embedding_dim
        self.neck: nn.Module = BNNeck(dim) if cfg.bnneck else nn.Identity()
        self.dropout: nn.Module = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.feature_dim = dim
        self._camera_bn: bool | None = None  # cached by the camera_bn property

    def forward_features(self, x: Tensor) -> Tensor:
        """The feature that enters the BNNeck (pooled, after the embedding when there is one).

        Shapes: ``(B, 3, H, W) -> (B, feature_dim)`` float32, not normalised, in any mode.
        """
        return self.embedding(self.pool(self.backbone(x))).float()

    def forward(self, x: Tensor, camids: Tensor | None = None, modalities: Tensor | None = None,
                return_map: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Re-ID features.

        Args:
            x: ``(B, 3, H, W)`` float images (ImageNet-normalised).
            camids: ``(B,) int64`` camera ids of the images. With camera-based BN (``model.camera_bn``) in
                train mode, each camera's images are normalised with their own batch statistics
                (:mod:`unreid.models.camera_bn`); ignored by a plain model and in eval mode.
            modalities: ``(B,) int64`` modality ids (0 visible, 1 infrared); ignored by this single-stream
                model (accepted so that every architecture has one call signature).
            return_map: also return the backbone feature map (for part / stripe features).

        Returns:
            ``f``: ``(B, feature_dim)`` float32, L2-normalised along dim 1 (train mode: then dropout, see
            class docstring); with ``return_map``, ``(f, fmap)`` where ``fmap`` is ``(B, C, H', W')``.

        Raises:
            ValueError: ``camids`` does not have one entry per image (camera BN only).
        """
        if camids is not None and self.training and self.camera_bn:
            from unreid.models.camera_bn import camera_batch

            with camera_batch(self, camids):
                return self._forward(x, return_map)
        return self._forward(x, return_map)

    @property
    def camera_bn(self) -> bool:
        """Whether the BN layers are camera-based (:func:`unreid.models.camera_bn.convert_camera_bn`)."""
        from unreid.models.camera_bn import camera_bn_layers

        if self._camera_bn is None:
            self._camera_bn = bool(camera_bn_layers(self))
        return self._camera_bn

    def _forward(self, x: Tensor, return_map: bool) -> Tensor | tuple[Tensor, Tensor]:
        fmap = self.backbone(x)
        f = F.normalize(self.neck(self.embedding(self.pool(fmap))).float(), dim=1)
        if self.training:
            f = self.dropout(f)
        return (f, fmap) if return_map else f


def build_backbone(cfg: ModelConfig, init_weights: bool = True) -> nn.Module:
    """The backbone named by ``cfg.backbone``.

    Names: ``resnet18/34/50/101``, ``resnet50_ibn_a``, ``resnet101_ibn_a`` (:class:`ResNetBackbone`,
    ``cfg.last_stride`` applies), ``efficientnet_lite0/1/2`` (:class:`EfficientNetLiteBackbone`),
    ``timm:<name>`` (:class:`TimmBackbone`).

    Args:
        cfg: the ``model`` config.
        init_weights: load ``cfg.weights`` / the ImageNet weights of ``cfg.pretrained``. Pass False when a
            trained checkpoint is loaded right after (no download, no need for the ImageNet file).

    Raises:
        ValueError: unknown name (the message lists the choices).
        ImportError, RuntimeError, FileNotFoundError: see the backbone classes.
    """
    name = cfg.backbone
    pretrained = bool(cfg.pretrained) and init_weights
    weights = cfg.weights if init_weights else None
    if name in RESNETS:
        return ResNetBackbone(name, pretrained, weights, cfg.last_stride)
    if name in EFFICIENTNET_LITES:
        return EfficientNetLiteBackbone(name, pretrained, weights)
    if name.startswith("timm:") and len(name) > 5:
        return TimmBackbone(name[5:], pretrained, weights)
    raise ValueError(f"unknown backbone {name!r} (model.backbone); choose from {list(BACKBONES)}")


def build_model(cfg: ModelConfig, init_weights: bool = True) -> ReIDModel:
    """Build the re-ID model described by ``cfg`` (``unreid.config.ModelConfig``).

    Args:
        cfg: the ``model`` config.
        init_weights: see :func:`build_backbone`; False skips ImageNet / ``model.weights`` loading.

    Returns:
        A :class:`ReIDModel` in train mode on the CPU.

    Raises:
        ValueError: unknown backbone or pooling, bad embedding_dim / dropout / gem_p / last_stride /
            camera_bn_images, or ``model.camera_bn`` with a BN layer camera BN cannot split.

    ``cfg.arch`` picks the architecture from :data:`unreid.models.registry.ARCHITECTURES` (``"reid"``:
    :func:`build_reid_model`). With ``cfg.camera_bn`` the BN layers are camera-based
    (:func:`unreid.models.camera_bn.convert_camera_bn`).
    """
    if cfg.camera_bn_images < 2:
        raise ValueError(f"model.camera_bn_images must be >= 2 (images per camera for its BN statistics), "
                         f"got {cfg.camera_bn_images}")
    from unreid.models.registry import build_architecture

    return build_architecture(cfg, init_weights=init_weights)


def build_reid_model(cfg: ModelConfig, init_weights: bool = True) -> ReIDModel:
    """The ``"reid"`` architecture: :class:`ReIDModel` on :func:`build_backbone`, with camera-based BN
    layers when ``cfg.camera_bn`` (:func:`unreid.models.camera_bn.convert_camera_bn`)."""
    model = ReIDModel(build_backbone(cfg, init_weights=init_weights), cfg)
    if cfg.camera_bn:
        from unreid.models.camera_bn import convert_camera_bn

        convert_camera_bn(model)
    return model
