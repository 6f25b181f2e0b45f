"""Any timm model as a backbone (``model.backbone=timm:<name>``).

Built with ``timm.create_model(name, pretrained=..., num_classes=0, global_pool="")`` (no classifier, no
pooling; our own pooling and BNNeck follow). ``forward_features`` gives the final feature map, brought to
``(B, C, H', W')``:

* CNNs already return ``NCHW``;
* models whose ``output_fmt`` is ``"NHWC"`` (e.g. Swin) are permuted;
* token models (ViT, DeiT ...) return ``(B, prefix + N, C)``: the ``num_prefix_tokens`` class /
  distillation / register tokens are dropped and the N patch tokens are laid back on the patch grid
  (``H / patch_h`` x ``W / patch_w``), or on an ``N x 1`` grid when that does not fit.

Transformers with fixed position embeddings need the input size they were built for (timm raises otherwise).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from unreid.models.backbones.weights import load_matching, load_state_dict_file


def _rename(name: str) -> str:
    """Drop unreid's ``backbone.net.`` / ``net.`` prefixes."""
    for prefix in ("backbone.", "net."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


class TimmBackbone(nn.Module):
    """A ``timm`` model without classifier or pooling.

    Args:
        name: a timm model name (``timm.list_models()``), e.g. ``"resnet50"``, ``"convnext_tiny"``.
        pretrained: let timm fetch its default pretrained weights (Hugging Face hub or local cache) when
            ``weights`` is not given.
        weights: local state dict in timm's naming (classifier names that do not exist are reported).

    Attributes:
        out_channels: the model's ``num_features``.

    Shapes: ``(B, 3, H, W) -> (B, out_channels, H', W')``.

    Raises:
        ImportError: timm is not installed (``pip install timm``).
        ValueError: timm does not know ``name``.
        RuntimeError: the pretrained download failed (set ``model.weights`` or ``model.pretrained=false``),
            or ``weights`` does not match.
    """

    def __init__(self, name: str, pretrained: bool = True, weights: str | Path | None = None) -> None:
        super().__init__()
        try:
            import timm
        except ImportError as err:
            raise ImportError(f"backbone timm:{name} needs timm: pip install timm") from err
        if not timm.is_model(name):
            raise ValueError(f"timm has no model {name!r} (model.backbone=timm:{name}); "
                             f"list the names with timm.list_models('*{name[:6]}*')")
        self.name = f"timm:{name}"
        fetch = bool(pretrained and not weights)
        try:
            self.net = timm.create_model(name, pretrained=fetch, num_classes=0, global_pool="")
        except Exception as err:
            if not fetch:
                raise
            raise RuntimeError(
                f"timm:{name}: could not fetch timm's pretrained weights ({type(err).__name__}: {err}). "
                "Offline, save them on this machine and set model.weights=/path/to/file.pth, or set "
                "model.pretrained=false") from err
        if weights:
            load_matching(self.net, load_state_dict_file(weights), what=self.name, source=str(weights),
                          rename=_rename)
        self.out_channels = int(self.net.num_features)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> ``(B, out_channels, H', W')`` (see module docstring for token models)."""
        y = self.net.forward_features(x)
        if y.ndim == 4:
            if getattr(self.net, "output_fmt", "NCHW") == "NHWC":
                y = y.permute(0, 3, 1, 2)
            return y
        if y.ndim != 3:
            raise RuntimeError(f"{self.name}: forward_features gave shape {tuple(y.shape)}; expected 3 or 4 dims")
        y = y[:, int(getattr(self.net, "num_prefix_tokens", 0)):]  # (B, N, C) patch tokens
        b, n, c = y.shape
        h, w = n, 1
        patch = getattr(getattr(self.net, "patch_embed", None), "patch_size", None)
        if patch is not None:
            ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
            if (x.shape[-2] // ph) * (x.shape[-1] // pw) == n:
                h, w = x.shape[-2] // ph, x.shape[-1] // pw
        return y.transpose(1, 2).reshape(b, c, h, w)
