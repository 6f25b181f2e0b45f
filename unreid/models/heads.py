"""Re-ID heads: pooling (average, GeM) and the BNNeck."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GeneralizedMeanPooling(nn.Module):
    """Generalised-mean (GeM) pooling over the spatial dimensions.

    ``y = (mean_{h,w} clamp(x, eps)^p)^(1/p)`` (Radenović et al., "Fine-tuning CNN Image Retrieval with
    No Human Annotation", TPAMI 2018, eq. 2). ``p = 1`` is average pooling, ``p -> inf`` max pooling.
    Cluster Contrast uses a trainable ``p`` initialised at 3 (alibaba/cluster-contrast-reid,
    ``clustercontrast/models/pooling.py`` GeneralizedMeanPoolingP); MBCCM a fixed ``p = 3``.

    Args:
        p: initial exponent (> 0).
        trainable: make ``p`` an ``nn.Parameter``.
        eps: lower clamp of activations (keeps the power finite).

    Shapes: ``(B, C, H, W) -> (B, C)``.
    """

    def __init__(self, p: float = 3.0, trainable: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        if p <= 0:
            raise ValueError(f"GeM p must be > 0, got {p}")
        t = torch.tensor(float(p))
        if trainable:
            self.p = nn.Parameter(t)
        else:
            self.register_buffer("p", t)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        p = self.p.to(x.dtype)
        return x.clamp(min=self.eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={float(self.p):.3f}, trainable={isinstance(self.p, nn.Parameter)}, eps={self.eps}"


class AvgPooling(nn.Module):
    """Global average pooling ``(B, C, H, W) -> (B, C)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(-2, -1))


def build_pooling(kind: str, p: float = 3.0, trainable: bool = True) -> nn.Module:
    """``"gem"`` -> :class:`GeneralizedMeanPooling`, ``"avg"`` -> :class:`AvgPooling`."""
    if kind == "gem":
        return GeneralizedMeanPooling(p, trainable)
    if kind == "avg":
        return AvgPooling()
    raise ValueError(f"unknown pooling {kind!r}; choose 'gem' or 'avg'")


class BNNeck(nn.BatchNorm1d):
    """BatchNorm neck after pooling (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person
    Re-identification", CVPRW 2019, Sec. 3.4; Cluster Contrast ``feat_bn``): weight 1, bias 0 and
    **frozen** (``bias.requires_grad = False``), as in ``clustercontrast/models/resnet.py``."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        nn.init.constant_(self.weight, 1.0)
        nn.init.constant_(self.bias, 0.0)
        self.bias.requires_grad_(False)
