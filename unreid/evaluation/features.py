"""Feature extraction for pseudo-labelling and evaluation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def extract_features(model: nn.Module, loader, device: torch.device | str = "cpu", amp: bool = False,
                     flip: bool = False) -> torch.Tensor:
    """L2-normalised features ``(N, d) float32`` on CPU, in dataset order (rows placed by ``index``).

    Args:
        model: in eval mode it must return ``(B, d)`` features.
        loader: batches of dicts with ``img`` and ``index`` (``unreid.data.loader``).
        amp: autocast (float16) on CUDA.
        flip: average the features of each image and its horizontal flip before normalising.

    The model's train/eval mode is restored afterwards.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out: torch.Tensor | None = None
    n = len(loader.dataset)
    try:
        for batch in loader:
            x = batch["img"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
                f = model(x).float()
                if flip:
                    f = f + model(torch.flip(x, dims=[3])).float()
            f = F.normalize(f, dim=1).cpu()
            if out is None:
                out = torch.zeros(n, f.shape[1])
            out[batch["index"]] = f
    finally:
        model.train(was_training)
    if out is None:
        raise ValueError("extract_features: the loader is empty")
    return out
