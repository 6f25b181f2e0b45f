"""torchvision ResNets for re-ID: last stride 1, optional IBN-a, local or torchvision ImageNet weights.

* Last stride 1 (Sun et al., PCB, ECCV 2018; used by Cluster Contrast ``clustercontrast/models/resnet.py``
  and fast-reid): layer4's first block keeps the resolution, so a 256x128 input gives a 16x8 map.
* IBN-a (Pan et al., "Two at Once: Enhancing Learning and Generalization Capacities via IBN-Net",
  ECCV 2018, Sec. 3.2): in layers 1-3 the first BatchNorm of every bottleneck is replaced by IBN -
  InstanceNorm (affine) on the first half of the channels, BatchNorm on the rest; layer4 unchanged.
  Parameter names follow the public IBN-Net checkpoints (XingangPan/IBN-Net ``resnet_ibn_a``:
  ``layer1.0.bn1.IN.weight``, ``layer1.0.bn1.BN.running_mean``) so they load directly.
* Weights: torchvision's weights API (``IMAGENET1K_V1``, what ``resnet50(pretrained=True)`` gave the
  anchors) when online; or a local state dict (torchvision or IBN-Net names, optionally wrapped in
  ``state_dict`` / ``model`` and ``module.``-prefixed), always loaded with ``weights_only=True``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

log = logging.getLogger("unreid")

RESNETS: dict[str, tuple[Callable[..., torchvision.models.ResNet], bool]] = {
    "resnet18": (torchvision.models.resnet18, False),
    "resnet34": (torchvision.models.resnet34, False),
    "resnet50": (torchvision.models.resnet50, False),
    "resnet101": (torchvision.models.resnet101, False),
    "resnet50_ibn_a": (torchvision.models.resnet50, True),
    "resnet101_ibn_a": (torchvision.models.resnet101, True),
}


class IBN(nn.Module):
    """Instance-batch normalisation (IBN-a): InstanceNorm2d(affine) on the first ``int(C*ratio)``
    channels, BatchNorm2d on the rest. Shapes ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, planes: int, ratio: float = 0.5) -> None:
        super().__init__()
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x: Tensor) -> Tensor:
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(a.contiguous()), self.BN(b.contiguous())], dim=1)


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a local checkpoint with ``weights_only=True`` and unwrap ``state_dict`` / ``model`` /
    ``module.`` wrappers.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        RuntimeError: the file holds no tensor state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.weights: file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RuntimeError(f"model.weights: cannot read {path} as a PyTorch state dict: {err}") from err
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not any(isinstance(v, Tensor) for v in obj.values()):
        raise RuntimeError(f"model.weights: {path} does not hold a state dict of tensors")
    out = {}
    for k, v in obj.items():
        for prefix in ("module.", "base.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its pooling and classifier.

    Args:
        name: a key of :data:`RESNETS`.
        pretrained: load ImageNet weights (torchvision weights API; needs internet) unless ``weights``.
        weights: local state-dict path (overrides ``pretrained``).
        last_stride: 1 or 2, the stride of layer4.

    Attributes:
        out_channels: 512 (ResNet-18/34) or 2048.

    Raises:
        ValueError: unknown name or stride; RuntimeError: weights unavailable or not matching.
    """

    def __init__(self, name: str = "resnet50", pretrained: bool = True, weights: str | None = None,
                 last_stride: int = 1) -> None:
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"unknown ResNet {name!r}; choose from {sorted(RESNETS)}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        ctor, ibn = RESNETS[name]
        net = ctor(weights=None)
        if ibn:
            for layer in (net.layer1, net.layer2, net.layer3):
                for block in layer:
                    block.bn1 = IBN(block.bn1.num_features)
        if last_stride == 1:
            block = net.layer4[0]
            conv = block.conv2 if isinstance(block, Bottleneck) else block.conv1
            assert isinstance(block, (Bottleneck, BasicBlock))
            conv.stride = (1, 1)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = 2048 if isinstance(net.layer4[0], Bottleneck) else 512
        self.name = name
        if weights:
            self.load_weights(load_state_dict_file(weights), source=str(weights))
        elif pretrained:
            if ibn:
                raise RuntimeError(
                    f"{name}: torchvision has no IBN-a weights. Download the ImageNet checkpoint of IBN-Net "
                    "(github.com/XingangPan/IBN-Net releases, e.g. resnet50_ibn_a-d9d0bb7b.pth) and pass "
                    "model.weights=/path/to/it, or set model.pretrained=false")
            enum = torchvision.models.get_model_weights(ctor)
            try:
                sd = enum.IMAGENET1K_V1.get_state_dict(progress=False)
            except Exception as err:
                raise RuntimeError(
                    f"{name}: could not download the torchvision ImageNet weights ({err}). Offline, pass a "
                    "local file with model.weights=/path/to/resnet.pth, or set model.pretrained=false") from err
            self.load_weights(sd, source="torchvision IMAGENET1K_V1")

    def _tv_key(self, k: str) -> str:
        for a, b in (("stem.0.", "conv1."), ("stem.1.", "bn1.")):
            if k.startswith(a):
                return b + k[len(a):]
        return k

    def load_weights(self, state: dict[str, Tensor], source: str = "") -> None:
        """Load a torchvision / IBN-Net named state dict (``fc.*`` ignored); logs what did not match.

        Raises:
            RuntimeError: no parameter matched (wrong architecture or file).
        """
        own = {self._tv_key(k): k for k in self.state_dict()}
        mapped = {own[k]: v for k, v in state.items() if k in own}
        if not mapped:
            raise RuntimeError(f"{self.name}: no parameter of {source or 'the weights'} matches this "
                               "architecture (expected torchvision / IBN-Net ResNet names such as layer1.0.conv1.weight)")
        shapes = {k: v.shape for k, v in self.state_dict().items()}
        bad = [k for k, v in mapped.items() if v.shape != shapes[k]]
        if bad:
            raise RuntimeError(f"{self.name}: shape mismatch for {bad[:5]} in {source}")
        missing, _ = self.load_state_dict(mapped, strict=False)
        unexpected = [k for k in state if k not in own and not k.startswith("fc.")]
        if missing or unexpected:
            log.warning("%s weights from %s: %d missing keys %s, %d unexpected keys %s", self.name, source,
                        len(missing), missing[:5], len(unexpected), unexpected[:5])

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
