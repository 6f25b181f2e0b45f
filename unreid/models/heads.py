"""Re-ID heads: global pooling (average, GeM) and the BNNeck."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GeneralizedMeanPooling(nn.Module):
    """Generalised-mean (GeM) pooling over the spatial dimensions.

    ``y_c = (mean_{h,w} clamp(x_{c,h,w}, min=eps)^p)^(1/p)`` (Radenović, Tolias & Chum, "Fine-tuning CNN
    Image Retrieval with No Human Annotation", TPAMI 2018, the GeM descriptor, eq. 1). ``p = 1`` is
    average pooling and ``p -> inf`` tends to max pooling. Cluster Contrast uses a trainable ``p``
    initialised at 3 (alibaba/cluster-contrast-reid ``clustercontrast/models/pooling.py``,
    GeneralizedMeanPoolingP); MBCCM a fixed ``p = 3``. The clamp keeps the power and its gradient finite
    for the zeros a ReLU produces.

    Computed in float32 whatever the input dtype (under AMP ``x^p`` of a float16 map overflows or
    underflows easily); the output is float32.

    Args:
        p: initial exponent (> 0).
        trainable: ``p`` is an ``nn.Parameter`` (learned by the optimiser) when True, a buffer otherwise.
        eps: lower clamp of the activations (CC: 1e-6).

    Shapes: ``(B, C, H, W) -> (B, C)`` float32.

    Raises:
        ValueError: ``p <= 0`` or ``eps <= 0``.
    """

    def __init__(self, p: float = 3.0, trainable: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        if p <= 0:
            raise ValueError(f"GeM p must be > 0 (model.gem_p), got {p}")
        if eps <= 0:
            raise ValueError(f"GeM eps must be > 0, got {eps}")
        t = torch.tensor(float(p))
        if trainable:
            self.p = nn.Parameter(t)
        else:
            self.register_buffer("p", t)
        self.eps = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        p = self.p.float()
        return x.float().clamp(min=self.eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={float(self.p):.4f}, trainable={isinstance(self.p, nn.Parameter)}, eps={self.eps}"


class AvgPooling(nn.Module):
    """Global average pooling ``(B, C, H, W) -> (B, C)`` float32 (HHCL's ``--pooling-type avg``)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.float().mean(dim=(-2, -1))


def build_pooling(kind: str, p: float = 3.0, trainable: bool = True, eps: float = 1e-6) -> nn.Module:
    """``"gem"`` -> :class:`GeneralizedMeanPooling` (``p``, ``trainable``, ``eps``), ``"avg"`` ->
    :class:`AvgPooling`.

    Raises:
        ValueError: another ``kind`` (message names ``model.pooling`` and the choices).
    """
    if kind == "gem":
        return GeneralizedMeanPooling(p, trainable, eps)
    if kind == "avg":
        return AvgPooling()
    raise ValueError(f"model.pooling={kind!r} is not one of ['avg', 'gem']")


class BNNeck(nn.BatchNorm1d):
    """BatchNorm neck after pooling (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person
    Re-identification", CVPRW 2019, Sec. 3.4; Cluster Contrast's ``feat_bn``).

    ``BatchNorm1d(dim)`` with weight initialised to 1 and bias to 0, the bias **frozen**
    (``requires_grad=False``) as in ``clustercontrast/models/resnet.py`` (``feat_bn.bias.requires_grad_(False)``),
    so it stays exactly 0 under any optimiser.

    Shapes: ``(B, dim) -> (B, dim)``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        nn.init.constant_(self.weight, 1.0)
        nn.init.constant_(self.bias, 0.0)
        self.bias.requires_grad_(False)
