"""Any timm model as a backbone (``model.backbone=timm:<name>``): ``timm.create_model(name,
pretrained=..., num_classes=0, global_pool="")`` returns the final feature map."""

from __future__ import annotations

from torch import Tensor, nn


class TimmBackbone(nn.Module):
    """Wraps ``timm.create_model``; ``out_channels`` = the model's ``num_features``.

    Raises:
        ImportError: timm is not installed (``pip install timm``).
    """

    def __init__(self, name: str, pretrained: bool = True, weights: str | None = None) -> None:
        super().__init__()
        try:
            import timm
        except ImportError as err:
            raise ImportError(f"backbone timm:{name} needs timm: pip install timm") from err
        self.net = timm.create_model(name, pretrained=pretrained and weights is None, num_classes=0, global_pool="")
        if weights is not None:
            from unreid.models.backbones.resnet import load_state_dict_file

            self.net.load_state_dict(load_state_dict_file(weights), strict=False)
        self.out_channels = int(self.net.num_features)

    def forward(self, x: Tensor) -> Tensor:
        y = self.net.forward_features(x)
        if y.ndim == 3:  # transformers: (B, tokens, C) -> (B, C, tokens, 1)
            y = y.transpose(1, 2).unsqueeze(-1)
        return y


