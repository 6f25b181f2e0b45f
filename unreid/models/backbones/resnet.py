"""torchvision ResNets for re-ID: last stride 1, optional IBN-a, torchvision or local ImageNet weights.

* Last stride 1 (Sun et al., PCB, ECCV 2018, Sec. 3.1; Luo et al., "Bag of Tricks", CVPRW 2019, Sec. 3.3):
  layer4's first block keeps the resolution, so a 256x128 input gives a 16x8 map instead of 8x4.
  As Cluster Contrast (alibaba/cluster-contrast-reid, ``clustercontrast/models/resnet.py``) and
  fast-reid do it: the stride of layer4[0]'s strided conv (``conv2`` of a Bottleneck, ``conv1`` of a
  BasicBlock) and of its downsample conv is set to 1. No weight changes shape, so ImageNet weights load.
* IBN-a (Pan et al., "Two at Once: Enhancing Learning and Generalization Capacities via IBN-Net",
  ECCV 2018, Sec. 3.2): in layers 1-3 the ``bn1`` of every Bottleneck becomes :class:`IBN` (InstanceNorm
  on half of the channels, BatchNorm on the rest); layer4 and the stem are unchanged. torchvision's
  Bottleneck already strides in ``conv2`` as IBN-Net does, so only ``bn1`` is replaced. Names match the
  public IBN-Net checkpoints (XingangPan/IBN-Net, ``ibnnet/resnet_ibn.py`` / ``modules.py``):
  ``layer1.0.bn1.IN.weight``, ``layer1.0.bn1.BN.running_mean``, ...
* The module keeps torchvision's attribute names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``), so its
  ``state_dict()`` is a torchvision / IBN-Net state dict without ``fc.*``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from unreid.models.backbones.weights import load_matching, load_state_dict_file

#: name -> (torchvision constructor, IBN-a?)
RESNETS: dict[str, tuple[Callable[..., torchvision.models.ResNet], bool]] = {
    "resnet18": (torchvision.models.resnet18, False),
    "resnet34": (torchvision.models.resnet34, False),
    "resnet50": (torchvision.models.resnet50, False),
    "resnet101": (torchvision.models.resnet101, False),
    "resnet50_ibn_a": (torchvision.models.resnet50, True),
    "resnet101_ibn_a": (torchvision.models.resnet101, True),
}

#: ImageNet checkpoints of IBN-a published by the IBN-Net authors (XingangPan/IBN-Net, release v1.0)
IBN_A_URLS = {
    "resnet50_ibn_a": "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet50_ibn_a-d9d0bb7b.pth",
    "resnet101_ibn_a": "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet101_ibn_a-59ea0ac6.pth",
}

# Cluster Contrast keeps the ResNet as ``self.base = nn.Sequential(conv1, bn1, relu, maxpool, layer1..4)``
# (clustercontrast/models/resnet.py), so its checkpoints name layers by position.
_CC_BASE_NAMES = {"base.0.": "conv1.", "base.1.": "bn1.", "base.4.": "layer1.", "base.5.": "layer2.",
                  "base.6.": "layer3.", "base.7.": "layer4."}


class IBN(nn.Module):
    """Instance-batch normalisation of IBN-a (Pan et al., ECCV 2018, Sec. 3.2).

    ``InstanceNorm2d(half, affine=True)`` on the first ``half = int(planes * ratio)`` channels and
    ``BatchNorm2d(planes - half)`` on the others, concatenated back in order. Sub-module names ``IN`` and
    ``BN`` follow IBN-Net's ``ibnnet/modules.py`` so public checkpoints load.

    Args:
        planes: channels C.
        ratio: fraction of channels instance-normalised (IBN-Net: 0.5).

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``, same dtype.
    """

    def __init__(self, planes: int, ratio: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"IBN ratio must be in (0, 1), got {ratio}")
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x: Tensor) -> Tensor:
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(a.contiguous()), self.BN(b.contiguous())], dim=1)


def _cc_rename(name: str) -> str:
    """Map checkpoint names to torchvision names: drop a ``backbone.`` prefix (unreid checkpoints) and
    translate Cluster Contrast's ``base.<i>.`` positions."""
    if name.startswith("backbone."):
        name = name[len("backbone."):]
    for old, new in _CC_BASE_NAMES.items():
        if name.startswith(old):
            return new + name[len(old):]
    return name


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without ``avgpool`` and ``fc``, returning the layer4 feature map.

    Args:
        name: a key of :data:`RESNETS` (``resnet18/34/50/101``, ``resnet50_ibn_a``, ``resnet101_ibn_a``).
        pretrained: load ImageNet weights when ``weights`` is not given: torchvision's
            ``ResNet*_Weights.IMAGENET1K_V1`` (what ``torchvision.models.resnet50(pretrained=True)``, used by
            Cluster Contrast's ``clustercontrast/models/resnet.py``, resolves to). Needs internet or a
            filled torch hub cache. IBN-a has no torchvision weights: pass ``weights`` instead.
        weights: local checkpoint path (torchvision, IBN-Net, unreid or Cluster Contrast names; see
            :func:`unreid.models.backbones.weights.load_state_dict_file`); takes precedence over
            ``pretrained``. ``fc.*`` is ignored; other missing / unexpected names are logged as a warning.
        last_stride: 1 or 2, the stride of layer4 (see module docstring).

    Attributes:
        out_channels: channels of the feature map: 512 (ResNet-18/34) or 2048.

    Shapes: ``(B, 3, H, W) -> (B, out_channels, H/32, W/32)`` (``H/16, W/16`` with ``last_stride=1``),
    for H and W multiples of 32.

    Raises:
        ValueError: unknown ``name`` or ``last_stride``.
        RuntimeError: ImageNet weights cannot be downloaded (message: set ``model.weights`` or
            ``model.pretrained=false``); IBN-a with ``pretrained`` and no ``weights``; a weights file that
            does not match the architecture.
        FileNotFoundError: ``weights`` does not exist.
    """

    def __init__(self, name: str = "resnet50", pretrained: bool = True, weights: str | Path | None = None,
                 last_stride: int = 1) -> None:
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"unknown ResNet {name!r}; choose from {sorted(RESNETS)}")
        if last_stride not in (1, 2):
            raise ValueError(f"model.last_stride must be 1 or 2, got {last_stride}")
        ctor, ibn = RESNETS[name]
        net = ctor(weights=None)
        if ibn:
            for layer in (net.layer1, net.layer2, net.layer3):
                for block in layer:
                    block.bn1 = IBN(block.bn1.num_features)
        if last_stride == 1:
            block = net.layer4[0]
            if isinstance(block, Bottleneck):
                block.conv2.stride = (1, 1)
            elif isinstance(block, BasicBlock):
                block.conv1.stride = (1, 1)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
        # torchvision attribute names, so state_dict() == torchvision / IBN-Net names without fc.*
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = 2048 if isinstance(net.layer4[0], Bottleneck) else 512
        self.name = name
        self.ibn = ibn
        if weights:
            self.load_weights(load_state_dict_file(weights), source=str(weights))
        elif pretrained:
            self.load_imagenet()

    def load_imagenet(self) -> None:
        """Download (or read from the torch hub cache) torchvision's ``IMAGENET1K_V1`` weights and load them.

        Raises:
            RuntimeError: IBN-a (no torchvision weights; the message gives the IBN-Net checkpoint URL), or
                the download failed (offline): set ``model.weights=/path/to/file.pth`` or
                ``model.pretrained=false``.
        """
        if self.ibn:
            raise RuntimeError(
                f"{self.name}: torchvision has no IBN-a ImageNet weights. Download the IBN-Net checkpoint "
                f"({IBN_A_URLS[self.name]}, from github.com/XingangPan/IBN-Net releases) and pass "
                "model.weights=/path/to/it, or set model.pretrained=false to train from scratch")
        member = torchvision.models.get_model_weights(RESNETS[self.name][0]).IMAGENET1K_V1
        try:
            state = member.get_state_dict(progress=False, check_hash=True)
        except Exception as err:  # URLError, HTTPError, OSError, hash mismatch ...
            raise RuntimeError(
                f"{self.name}: could not download torchvision's {member} weights from {member.url} ({err}). "
                "Offline, put the file on this machine and set model.weights=/path/to/file.pth, or set "
                "model.pretrained=false") from err
        self.load_weights(state, source=f"torchvision {member}", strict=True)

    def load_weights(self, state: dict[str, Tensor], source: str = "the weights", strict: bool = False) -> None:
        """Load a state dict named like torchvision / IBN-Net (also ``backbone.``-prefixed unreid names and
        Cluster Contrast's ``base.<i>.`` names). ``fc.*`` is ignored.

        Args:
            state: ``{name: tensor}``.
            source: where it came from, for messages.
            strict: raise when names are missing / unexpected instead of logging a warning.

        Raises:
            RuntimeError: no name matched, a shape differs, or (``strict``) names are missing / unexpected.
        """
        load_matching(self, state, what=self.name, source=source, rename=_cc_rename, ignore=("fc.",),
                      strict=strict)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` float -> feature map ``(B, out_channels, H', W')``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
