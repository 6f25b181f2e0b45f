"""GCL's view generator and multi-scale discriminator (Chen et al., "Joint Generative and Contrastive
Learning for Unsupervised Person Re-identification", CVPR 2021, Sec. 3, the generative module; public code
``chenhao2345/GCL`` ``gcl/models/gan.py``, itself DG-Net / MUNIT style).

The generator (:class:`ViewGenerator`, the public ``AdaINGen``) draws a person from two codes:

* a **structure code** from :class:`StructureEncoder` (the public ``ContentEncoder``): a 1-channel structure
  image (a rendered mesh view, normalised with mean 0.5, std 0.5) goes through a stride-2 conv and a conv
  that doubles the width, ``n_downsample - 1`` further (conv, stride-2 conv doubling the width) pairs,
  ``n_res`` residual blocks and an ASPP block (a 1x1 branch and three 1x1 + dilated 3x3 branches, dilations
  3, 6 and 9, fused by a 1x1 conv that doubles the width again). Every conv is reflection-padded, followed
  by instance normalisation (no affine parameters) and, except the last conv of a residual block and the
  ASPP's output convs, a leaky ReLU (slope 0.2). With the defaults: ``(B, 1, H, W) -> (B, 128, H/4, W/4)``.
* an **appearance code** ``(B, parts, C)``: the re-ID backbone's last feature map pooled into ``parts``
  horizontal stripes (:func:`appearance_code`, the public ``ft_net.partpool``).

:class:`AdaINDecoder` (the public ``Decoder`` plus the MLPs of ``AdaINGen``) turns the structure code into an
image: ``n_res`` residual blocks whose two convs are each followed by adaptive instance normalisation
(AdaIN), ``n_upsample`` times (nearest x2 upsampling, 5x5 conv halving the width, layer normalisation, leaky
ReLU), two 3x3 convs with leaky ReLU and a 1x1 conv to RGB, with **no tanh** (the target images are
ImageNet-normalised). The AdaIN weights and biases come from ``2 * parts`` MLPs over the appearance code
(see :meth:`AdaINDecoder.adain_params` for which MLP feeds which AdaIN layer).

:class:`MultiScaleDiscriminator` (the public ``MsImageDis``) scores the image at ``num_scales`` scales (3x3
average pooling with stride 2 between scales), without normalisation, with the LSGAN losses and a
squared-gradient penalty on the real images.

Every default is the public ``configs/latest.yaml`` (``gen:`` and ``dis:`` sections) unless said otherwise.

Deliberate deviations from the public code (the numbers of the forward pass are the same unless said):

* **Layer normalisation** is ``nn.GroupNorm(1, C)`` (normalise each sample over ``(C, H, W)``, per-channel
  affine), torch's equivalent of the DG-Net / MUNIT ``LayerNorm``. That one divides by the *unbiased*
  standard deviation plus ``eps``; ``GroupNorm`` divides by ``sqrt(biased variance + eps)``: the outputs
  differ by a factor ``sqrt((N - 1) / N)`` (``N = C * H * W``, above 10,000 at the default sizes, so under
  0.01 %). The affine weight starts uniform in ``[0, 1)`` as in the public code.
* **Reflection padding falls back to zero padding** where a feature map is not larger than the padding
  (torch cannot reflect there; the public code raises). The published 256x128 and the 128x64 inputs are
  unaffected; with the default widths it happens in the generator's ASPP for images under 40 pixels wide
  (dilation 9; 28 for dilation 6, 16 for 3) and in the discriminator's coarsest scale under 32.
* **AdaIN parameters are passed explicitly** through the decoder's forward pass instead of being assigned as
  attributes of the AdaIN modules before the call (no state is left between calls).
* **The appearance width and the number of MLP pairs are parameters** (``appearance_channels``, ``parts``);
  the public code fixes 4 pairs with input width ``id_dim = 2048`` and output width ``2 * 128`` (= two AdaIN
  layers each, which only works with ``n_res = 4``). Here each MLP outputs ``2 * n_res * C_s / parts``
  numbers (``C_s`` the structure-code width), the same sizes with the defaults.
* **Only the configured options are built**: LSGAN (not ``nsgan`` / ``wgan``), the ``basic`` residual block,
  no dropout, no non-local block, no tanh (all as in ``latest.yaml``); the init is the config's (kaiming
  ``fan_in`` for the generator, ``N(0, 0.02)`` for the discriminator, biases zero).
* :meth:`MultiScaleDiscriminator.dis_loss` returns only the total loss (the public one returns the penalty
  too; :meth:`MultiScaleDiscriminator.gradient_penalty` gives it on its own) and differentiates with respect
  to a detached copy of ``real`` instead of switching on ``requires_grad`` of the caller's tensor, so no
  gradient reaches whatever produced ``real`` (the public code passes data images, which have none).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: negative slope of the leaky ReLUs (public ``Conv2dBlock``, ``activ: lrelu``)
LRELU_SLOPE = 0.2
#: AdaIN epsilon (public ``AdaptiveInstanceNorm2d``)
ADAIN_EPS = 1e-5


def _check_image(x: Tensor, channels: int, name: str, multiple: int = 1) -> None:
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must have shape (B, {channels}, H, W), got {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(f"{name}: height and width must be divisible by {multiple}, got {h}x{w}")


def _pad(x: Tensor, p: int) -> Tensor:
    """Reflection padding by ``p`` on the four sides, zero padding where the map is not larger than ``p``
    (module docstring, deviations)."""
    if p == 0:
        return x
    mode = "reflect" if p < x.shape[-2] and p < x.shape[-1] else "constant"
    return F.pad(x, (p, p, p, p), mode=mode)


class _Conv(nn.Module):
    """Padding, conv (with bias), optional normalisation (``"in"``, ``"ln"`` or ``None``), optional leaky ReLU
    (the public ``Conv2dBlock`` with ``pad_type: reflect``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, norm: str | None = None, act: bool = True):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(cin, cout, kernel, stride, dilation=dilation)
        if norm == "in":
            self.norm: nn.Module | None = nn.InstanceNorm2d(cout)
        elif norm == "ln":
            # torch's LayerNorm normalises trailing dims with an elementwise affine of shape (C, H, W), which
            # ties it to one image size; GroupNorm with one group is the per-sample (C, H, W) normalisation
            # with a per-channel affine of MUNIT's LayerNorm (estimator difference: module docstring)
            self.norm = nn.GroupNorm(1, cout)
            nn.init.uniform_(self.norm.weight)
        elif norm is None:
            self.norm = None
        else:
            raise ValueError(f"unknown norm {norm!r}")
        self.act = nn.LeakyReLU(LRELU_SLOPE) if act else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(_pad(x, self.padding))
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


class _ResBlock(nn.Module):
    """``x + conv(act(conv(x)))``, 3x3 convs with ``norm`` after each (public ``ResBlock``, ``basic``)."""

    def __init__(self, dim: int, norm: str | None):
        super().__init__()
        self.body = nn.Sequential(_Conv(dim, dim, 3, padding=1, norm=norm),
                                  _Conv(dim, dim, 3, padding=1, norm=norm, act=False))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class _ASPP(nn.Module):
    """Atrous spatial pyramid pooling of the public ``ASPP``: ``dim -> 2 * dim`` channels, same size."""

    def __init__(self, dim: int, dilations: tuple[int, ...] = (3, 6, 9)):
        super().__init__()
        half = dim // 2
        self.branches = nn.ModuleList([_Conv(dim, half, 1, norm="in", act=False)])
        for d in dilations:
            self.branches.append(nn.Sequential(
                _Conv(dim, half, 1, norm="in"),
                _Conv(half, half, 3, padding=d, dilation=d, norm="in", act=False)))
        self.fuse = _Conv(half * len(self.branches), 2 * dim, 1, norm="in", act=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(torch.cat([b(x) for b in self.branches], dim=1))


class AdaptiveInstanceNorm2d(nn.Module):
    """Adaptive instance normalisation: each sample's channel is normalised over its ``H x W`` values (mean
    and biased variance, ``eps`` inside the square root, always with the input's own statistics, also in
    eval mode), then scaled and shifted by a **per-sample** weight and bias (public
    ``AdaptiveInstanceNorm2d``, which runs ``F.batch_norm`` on a ``(1, B * C, H, W)`` view).

    ``F.instance_norm`` / ``nn.InstanceNorm2d`` do the normalisation, but their affine parameters are one per
    channel, shared by the batch; the per-sample affine is therefore applied here after it.

    Args:
        num_features: channels ``C``.
        eps: added to the variance (default ``1e-5``, public code).
    """

    def __init__(self, num_features: int, eps: float = ADAIN_EPS):
        super().__init__()
        self.num_features = num_features
        self.eps = eps

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """Args:
            x: ``(B, C, H, W)`` float.
            weight, bias: ``(B, C)``, same dtype.

        Returns:
            ``(B, C, H, W)``: ``(x - mean) / sqrt(var + eps) * weight + bias`` per sample and channel.

        Raises:
            ValueError: ``x`` not ``(B, C, H, W)`` with ``C = num_features``, or ``weight`` / ``bias`` not
                ``(B, C)``.
        """
        c = self.num_features
        if x.dim() != 4 or x.shape[1] != c:
            raise ValueError(f"AdaIN input must have shape (B, {c}, H, W), got {tuple(x.shape)}")
        want = (x.shape[0], c)
        if tuple(weight.shape) != want or tuple(bias.shape) != want:
            raise ValueError(f"AdaIN weight and bias must have shape {want}, got {tuple(weight.shape)} and "
                             f"{tuple(bias.shape)}")
        x = F.instance_norm(x, eps=self.eps)
        return x * weight[:, :, None, None] + bias[:, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class _AdaINResBlock(nn.Module):
    """Residual block with AdaIN after each of its two 3x3 convs (public ``ResBlock`` with ``norm='adain'``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = _Conv(dim, dim, 3, padding=1, act=False)
        self.norm1 = AdaptiveInstanceNorm2d(dim)
        self.act = nn.LeakyReLU(LRELU_SLOPE)
        self.conv2 = _Conv(dim, dim, 3, padding=1, act=False)
        self.norm2 = AdaptiveInstanceNorm2d(dim)

    def forward(self, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
        y = self.act(self.norm1(self.conv1(x), w1, b1))
        return x + self.norm2(self.conv2(y), w2, b2)


def _mlp(cin: int, hidden: int, cout: int, layers: int) -> nn.Sequential:
    """``layers`` linear layers, leaky ReLU between them, none at the output (public ``MLP``,
    ``mlp_norm: none``)."""
    mods: list[nn.Module] = []
    width = cin
    for _ in range(layers - 1):
        mods += [nn.Linear(width, hidden), nn.LeakyReLU(LRELU_SLOPE)]
        width = hidden
    mods.append(nn.Linear(width, cout))
    return nn.Sequential(*mods)


def appearance_code(fmap: Tensor, parts: int = 4) -> Tensor:
    """The appearance code of a backbone feature map: ``parts`` horizontal stripes, each averaged
    (``F.adaptive_avg_pool2d`` to ``(parts, 1)``, the public ``ft_net.partpool``; 4 parts there).

    With ``h`` not divisible by ``parts`` the stripes are adaptive pooling's bins: rows
    ``floor(i * h / parts)`` to ``ceil((i + 1) * h / parts)`` (exclusive) for stripe ``i`` (they overlap).

    Args:
        fmap: ``(B, C, h, w)`` float feature map (e.g. ResNet-50's ``layer4``, ``C = 2048``).
        parts: number of stripes, top to bottom, ``>= 1``.

    Returns:
        ``(B, parts, C)``, part-major (see :meth:`AdaINDecoder.adain_params` for the public flat layout).

    Raises:
        ValueError: ``fmap`` not 4-D, or ``parts < 1``.
    """
    if fmap.dim() != 4:
        raise ValueError(f"feature map must have shape (B, C, h, w), got {tuple(fmap.shape)}")
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    return F.adaptive_avg_pool2d(fmap, (parts, 1)).squeeze(-1).transpose(1, 2)


class StructureEncoder(nn.Module):
    """Structure (content) encoder of GCL's generator (public ``ContentEncoder`` with ``norm='in'``).

    Args:
        in_channels: channels of the structure image (1: a rendered mesh view; public ``input_dim: 1``).
        dim: width of the first conv (``gen.dim: 16``).
        n_downsample: number of stride-2 convs, ``>= 1`` (``gen.n_downsample: 2``): the code is
            ``2 ** n_downsample`` times smaller than the image.
        n_res: residual blocks (``gen.n_res: 4``).

    Weights: torch's defaults (:class:`ViewGenerator` re-initialises them).

    Attributes:
        out_channels: ``dim * 2 ** (n_downsample + 1)`` (128 with the defaults).
        factor: ``2 ** n_downsample``.

    Raises:
        ValueError: ``n_downsample < 1``.
    """

    def __init__(self, in_channels: int = 1, dim: int = 16, n_downsample: int = 2, n_res: int = 4):
        super().__init__()
        if n_downsample < 1:
            raise ValueError(f"n_downsample must be >= 1, got {n_downsample}")
        self.in_channels = in_channels
        self.factor = 2 ** n_downsample
        layers: list[nn.Module] = [_Conv(in_channels, dim, 3, 2, 1, norm="in"),
                                   _Conv(dim, 2 * dim, 3, 1, 1, norm="in")]
        d = 2 * dim
        for _ in range(n_downsample - 1):
            layers += [_Conv(d, d, 3, 1, 1, norm="in"), _Conv(d, 2 * d, 3, 2, 1, norm="in")]
            d *= 2
        layers += [_ResBlock(d, "in") for _ in range(n_res)]
        layers.append(_ASPP(d))
        self.model = nn.Sequential(*layers)
        self.out_channels = 2 * d

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: ``(B, in_channels, H, W)`` float, ``H`` and ``W`` divisible by ``factor``.

        Returns:
            ``(B, out_channels, H / factor, W / factor)``.

        Raises:
            ValueError: wrong shape, or ``H`` / ``W`` not divisible by ``factor``.
        """
        _check_image(x, self.in_channels, "structure image", self.factor)
        return self.model(x)


class AdaINDecoder(nn.Module):
    """Decoder of GCL's generator: a structure code and an appearance code to an image (public ``Decoder``
    with ``res_norm='adain'`` and the eight ``mlp_w*`` / ``mlp_b*`` MLPs of ``AdaINGen``).

    Args:
        appearance_channels: ``C``, channels per part of the appearance code (public ``gen.id_dim: 2048``,
            ResNet-50; 1280 for EfficientNet-Lite0). Each MLP's input width.
        parts: parts of the appearance code = number of (weight, bias) MLP pairs (4 in the public code).
        in_channels: ``C_s``, structure-code channels (128: :class:`StructureEncoder` with the defaults).
        out_channels: image channels (3).
        n_upsample: nearest x2 upsamplings, ``C_s`` must be divisible by ``2 ** n_upsample``
            (``gen.n_downsample: 2``).
        n_res: AdaIN residual blocks (``gen.n_res: 4``), i.e. ``2 * n_res`` AdaIN layers.
        mlp_dim: hidden width of the MLPs (``gen.mlp_dim: 512``).
        mlp_layers: linear layers per MLP, ``>= 2`` (3 in ``AdaINGen``).

    Weights: torch's defaults (:class:`ViewGenerator` re-initialises them); layer-norm weights uniform in
    ``[0, 1)``.

    Raises:
        ValueError: ``parts``, ``appearance_channels`` or ``mlp_layers`` out of range, ``in_channels`` not
            divisible by ``2 ** n_upsample``, or ``2 * n_res * in_channels`` not divisible by ``parts``.
    """

    def __init__(self, appearance_channels: int, parts: int = 4, in_channels: int = 128,
                 out_channels: int = 3, n_upsample: int = 2, n_res: int = 4, mlp_dim: int = 512,
                 mlp_layers: int = 3):
        super().__init__()
        if parts < 1 or appearance_channels < 1:
            raise ValueError(f"need parts >= 1 and appearance_channels >= 1, got {parts}, "
                             f"{appearance_channels}")
        if mlp_layers < 2:
            raise ValueError(f"mlp_layers must be >= 2, got {mlp_layers}")
        if in_channels % (2 ** n_upsample):
            raise ValueError(f"in_channels ({in_channels}) must be divisible by 2 ** n_upsample "
                             f"({2 ** n_upsample})")
        total = 2 * n_res * in_channels
        if total % parts:
            raise ValueError(f"the {total} AdaIN parameters (2 * n_res * in_channels) must split evenly "
                             f"between the {parts} MLPs")
        self.appearance_channels = appearance_channels
        self.parts = parts
        self.in_channels = in_channels
        self.n_res = n_res
        self.factor = 2 ** n_upsample
        per_mlp = total // parts
        self.weight_mlps = nn.ModuleList(
            _mlp(appearance_channels, mlp_dim, per_mlp, mlp_layers) for _ in range(parts))
        self.bias_mlps = nn.ModuleList(
            _mlp(appearance_channels, mlp_dim, per_mlp, mlp_layers) for _ in range(parts))
        self.blocks = nn.ModuleList(_AdaINResBlock(in_channels) for _ in range(n_res))
        up: list[nn.Module] = []
        d = in_channels
        for _ in range(n_upsample):
            up += [nn.Upsample(scale_factor=2, mode="nearest"), _Conv(d, d // 2, 5, padding=2, norm="ln")]
            d //= 2
        up += [_Conv(d, d, 3, padding=1), _Conv(d, d, 3, padding=1), _Conv(d, out_channels, 1, act=False)]
        self.up = nn.Sequential(*up)

    def _check_appearance(self, appearance: Tensor, batch: int | None = None) -> None:
        want = (self.parts, self.appearance_channels)
        if appearance.dim() != 3 or tuple(appearance.shape[1:]) != want:
            raise ValueError(f"appearance code must have shape (B, {want[0]}, {want[1]}), got "
                             f"{tuple(appearance.shape)}")
        if batch is not None and appearance.shape[0] != batch:
            raise ValueError(f"appearance code must have shape ({batch}, {want[0]}, {want[1]}) for a "
                             f"structure code of batch {batch}, got {tuple(appearance.shape)}")

    def adain_params(self, appearance: Tensor) -> tuple[Tensor, Tensor]:
        """The weights and biases of every AdaIN layer.

        Mapping (the public ``AdaINGen.decode`` / ``assign_adain_params``): the public appearance code is
        ``partpool``'s ``(B, C, parts, 1)`` map flattened to ``(B, C * parts)``, i.e. **channel-major**:
        entry ``c * parts + p`` is part ``p``, channel ``c``, i.e. ``appearance[:, p, c]`` here. That vector is
        cut into ``parts`` consecutive chunks of ``C`` entries, chunk ``k`` feeding weight MLP ``k`` and bias
        MLP ``k``. So, despite its name, chunk ``k`` is **not** part ``k``: it holds channels
        ``k * C / parts`` to ``(k + 1) * C / parts`` of every part (for ``C`` divisible by ``parts``),
        interleaved. The outputs of the ``parts`` MLPs are concatenated and read, ``C_s`` numbers at a time,
        by the AdaIN layers in order (block 0 first conv, block 0 second conv, block 1 first conv, ...).
        With the defaults (4 parts, 4 blocks), MLP pair ``k`` therefore drives both AdaIN layers of
        residual block ``k``.

        Args:
            appearance: ``(B, parts, C)`` float (:func:`appearance_code`).

        Returns:
            ``(weight, bias)``, each ``(B, 2 * n_res, C_s)``: row ``l`` for AdaIN layer ``l`` (``2 * i`` and
            ``2 * i + 1`` are the two of residual block ``i``).

        Raises:
            ValueError: ``appearance`` not ``(B, parts, C)``.
        """
        self._check_appearance(appearance)
        b = appearance.shape[0]
        flat = appearance.transpose(1, 2).reshape(b, -1)  # the public (B, C * parts) layout
        chunks = flat.split(self.appearance_channels, dim=1)
        shape = (b, 2 * self.n_res, self.in_channels)
        w = torch.cat([m(x) for m, x in zip(self.weight_mlps, chunks)], dim=1).view(shape)
        bias = torch.cat([m(x) for m, x in zip(self.bias_mlps, chunks)], dim=1).view(shape)
        return w, bias

    def forward(self, structure: Tensor, appearance: Tensor) -> Tensor:
        """Args:
            structure: ``(B, C_s, h, w)`` float structure code.
            appearance: ``(B, parts, C)`` float appearance code.

        Returns:
            ``(B, out_channels, h * 2 ** n_upsample, w * 2 ** n_upsample)``, unbounded (no tanh).

        Raises:
            ValueError: ``structure`` not ``(B, C_s, h, w)``, or ``appearance`` not ``(B, parts, C)`` with the
                same ``B``.
        """
        _check_image(structure, self.in_channels, "structure code")
        self._check_appearance(appearance, structure.shape[0])
        w, b = self.adain_params(appearance)
        x = structure
        for i, block in enumerate(self.blocks):
            x = block(x, w[:, 2 * i], b[:, 2 * i], w[:, 2 * i + 1], b[:, 2 * i + 1])
        return self.up(x)


class ViewGenerator(nn.Module):
    """GCL's mesh-guided view generator (public ``AdaINGen``): :class:`StructureEncoder` +
    :class:`AdaINDecoder`. ``decode(encode(mesh_view), appearance_code(fmap))`` draws the person of ``fmap``
    in the pose / view of ``mesh_view``.

    Args:
        appearance_channels: channels per part of the appearance code (``gen.id_dim: 2048`` for ResNet-50;
            1280 for EfficientNet-Lite0).
        parts: stripes of the appearance code (4, ``ft_net.part``).
        in_channels: structure-image channels (``input_dim: 1``).
        dim: first encoder width (``gen.dim: 16``).
        n_downsample: encoder stride-2 convs = decoder upsamplings (``gen.n_downsample: 2``).
        n_res: residual blocks of the encoder and of the decoder (``gen.n_res: 4``).
        mlp_dim: MLP hidden width (``gen.mlp_dim: 512``).
        mlp_layers: linear layers per MLP (3, ``AdaINGen``).
        out_channels: image channels (3).

    Weights: kaiming normal (``fan_in``, ``a = 0``) for every conv and linear layer, biases zero
    (``gen.init: kaiming``); layer-norm weights uniform in ``[0, 1)``.

    Raises:
        ValueError: as :class:`StructureEncoder` and :class:`AdaINDecoder`.
    """

    def __init__(self, appearance_channels: int, parts: int = 4, in_channels: int = 1, dim: int = 16,
                 n_downsample: int = 2, n_res: int = 4, mlp_dim: int = 512, mlp_layers: int = 3,
                 out_channels: int = 3):
        super().__init__()
        self.encoder = StructureEncoder(in_channels, dim, n_downsample, n_res)
        self.decoder = AdaINDecoder(appearance_channels, parts, self.encoder.out_channels, out_channels,
                                    n_downsample, n_res, mlp_dim, mlp_layers)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                nn.init.zeros_(m.bias)

    def encode(self, structure_image: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` (``H``, ``W`` divisible by ``2 ** n_downsample``) ->
        ``(B, C_s, H / 2 ** n_downsample, W / 2 ** n_downsample)``; ValueError as
        :meth:`StructureEncoder.forward`."""
        return self.encoder(structure_image)

    def decode(self, code: Tensor, appearance: Tensor) -> Tensor:
        """Structure code ``(B, C_s, h, w)`` and appearance code ``(B, parts, C)`` ->
        ``(B, out_channels, h * 2 ** n_downsample, w * 2 ** n_downsample)``; ValueError as
        :meth:`AdaINDecoder.forward`."""
        return self.decoder(code, appearance)

    def forward(self, structure_image: Tensor, appearance: Tensor) -> Tensor:
        """``decode(encode(structure_image), appearance)``: ``(B, out_channels, H, W)``."""
        return self.decode(self.encode(structure_image), appearance)


class MultiScaleDiscriminator(nn.Module):
    """GCL's multi-scale LSGAN discriminator (public ``MsImageDis``).

    Scale ``k`` sees the image average-pooled ``k`` times (3x3 window, stride 2, padding 1, padded cells left
    out of the mean). Each scale's net, without normalisation and with reflection padding: 1x1 conv to
    ``dim``, 3x3 conv, 3x3 stride-2 conv, then ``n_layer - 1`` times (3x3 conv, 3x3 stride-2 conv doubling
    the width up to 512), ``n_res`` residual blocks, 1x1 conv to one score per location; leaky ReLU (0.2)
    after every conv but the residual blocks' second and the last. Weights ``N(0, 0.02)``, biases zero.

    Args:
        in_channels: image channels (3).
        dim: first width (``dis.dim: 32``).
        n_layer: stride-2 convs per scale (``dis.n_layer: 2``): scale ``k``'s map is ``2 ** n_layer`` times
            smaller than its input.
        num_scales: scales (``dis.num_scales: 3``).
        n_res: residual blocks per scale (``dis.n_res: 4``).
        gp_weight: weight of the squared-gradient penalty in :meth:`dis_loss` (``dis.LAMBDA: 0.01``).

    Raises:
        ValueError: ``n_layer < 1`` or ``num_scales < 1``.
    """

    def __init__(self, in_channels: int = 3, dim: int = 32, n_layer: int = 2, num_scales: int = 3,
                 n_res: int = 4, gp_weight: float = 0.01):
        super().__init__()
        if n_layer < 1 or num_scales < 1:
            raise ValueError(f"need n_layer >= 1 and num_scales >= 1, got {n_layer}, {num_scales}")
        self.in_channels = in_channels
        self.gp_weight = gp_weight
        self.nets = nn.ModuleList(self._make_net(in_channels, dim, n_layer, n_res) for _ in range(num_scales))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _make_net(cin: int, dim: int, n_layer: int, n_res: int) -> nn.Sequential:
        layers: list[nn.Module] = [_Conv(cin, dim, 1), _Conv(dim, dim, 3, 1, 1), _Conv(dim, dim, 3, 2, 1)]
        for _ in range(n_layer - 1):
            d2 = min(2 * dim, 512)
            layers += [_Conv(dim, dim, 3, 1, 1), _Conv(dim, d2, 3, 2, 1)]
            dim = d2
        layers += [_ResBlock(dim, None) for _ in range(n_res)]
        layers.append(nn.Conv2d(dim, 1, 1))
        return nn.Sequential(*layers)

    def forward(self, img: Tensor) -> list[Tensor]:
        """Args:
            img: ``(B, in_channels, H, W)`` float (e.g. 256x128 or 128x64).

        Returns:
            ``num_scales`` score maps, ``(B, 1, h_k, w_k)``, from the finest scale down; scale ``k``'s input
            is ``ceil(H / 2 ** k) x ceil(W / 2 ** k)``.

        Raises:
            ValueError: ``img`` not ``(B, in_channels, H, W)``.
        """
        _check_image(img, self.in_channels, "discriminator input")
        outs = []
        x = img
        for k, net in enumerate(self.nets):
            if k:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(net(x))
        return outs

    @staticmethod
    def _penalty(outs: list[Tensor], real: Tensor) -> Tensor:
        total = real.new_zeros(())
        for out in outs:
            (g,) = torch.autograd.grad(out.sum(), real, create_graph=True)
            total = total + g.pow(2).flatten(1).sum(1).mean()
        return total

    def gradient_penalty(self, real: Tensor) -> Tensor:
        """Squared-gradient penalty on real images (the public ``compute_grad2``), unweighted: summed over
        scales ``k``, the batch mean of ``||d sum(D_k(x)) / dx||^2`` (the gradient of the sum of scale
        ``k``'s scores with respect to the full-size image ``x``). Differentiable (``create_graph``), so it
        trains the discriminator; no gradient reaches ``real``.

        Args:
            real: ``(B, in_channels, H, W)`` float.

        Returns:
            scalar.

        Raises:
            ValueError: as :meth:`forward`.
        """
        real = real.detach().requires_grad_(True)
        return self._penalty(self(real), real)

    def dis_loss(self, fake: Tensor, real: Tensor) -> Tensor:
        """Loss of the discriminator (public ``calc_dis_loss``, ``gan_type: lsgan``): summed over scales,
        ``mean(D_k(fake) ** 2) + mean((D_k(real) - 1) ** 2)``, plus ``gp_weight *``
        :meth:`gradient_penalty` ``(real)``.

        ``fake`` is used as given: pass ``fake.detach()`` to keep the generator out of the discriminator's
        update (as the public trainer does). The penalty depends on ``real`` only.

        Args:
            fake: ``(B', in_channels, H, W)`` float generated images.
            real: ``(B, in_channels, H, W)`` float real images (no gradient reaches them).

        Returns:
            scalar.

        Raises:
            ValueError: as :meth:`forward`, for either input.
        """
        return self.dis_loss_multi([fake], real)

    def dis_loss_multi(self, fakes: list[Tensor], real: Tensor) -> Tensor:
        """``sum(dis_loss(f, real) for f in fakes)``, with the real images' scores and penalty computed once and
        counted ``len(fakes)`` times: the same value and gradients as the public trainer's three
        ``calc_dis_loss`` calls (recon, novel view, cycle), with one real forward and one double-backward pass
        instead of three.

        Raises:
            ValueError: no fake, or as :meth:`forward`.
        """
        if not fakes:
            raise ValueError("dis_loss_multi needs at least one batch of fakes")
        real = real.detach().requires_grad_(True)
        outs_real = self(real)
        loss = real.new_zeros(())
        for orr in outs_real:
            loss = loss + (orr - 1).pow(2).mean()
        loss = len(fakes) * (loss + self.gp_weight * self._penalty(outs_real, real))
        for fake in fakes:
            for of in self(fake):
                loss = loss + of.pow(2).mean()
        return loss

    def gen_loss(self, fake: Tensor) -> Tensor:
        """Adversarial loss of the generator (public ``calc_gen_loss``, ``lsgan``): summed over scales,
        ``2 * mean((D_k(fake) - 1) ** 2)`` (the public code's factor 2).

        Args:
            fake: ``(B, in_channels, H, W)`` float generated images.

        Returns:
            scalar, differentiable with respect to ``fake`` (and the discriminator's weights).

        Raises:
            ValueError: as :meth:`forward`.
        """
        loss = fake.new_zeros(())
        for out in self(fake):
            loss = loss + 2 * (out - 1).pow(2).mean()
        return loss
