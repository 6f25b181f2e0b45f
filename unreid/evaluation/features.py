"""Feature extraction for pseudo-labelling and evaluation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unreid.models.registry import takes_ids


@torch.no_grad()
def extract_features(model: nn.Module, loader, device: torch.device | str, amp: bool = False,
                     flip: bool = False) -> torch.Tensor:
    """Embed every image of ``loader.dataset``: ``(N, d) float32`` CPU tensor, rows L2-normalised.

    Args:
        model: already on ``device``; in eval mode it maps ``(B, 3, H, W)`` float images to ``(B, d)``
            features (unreid models return L2-normalised features in eval mode; rows are re-normalised
            here anyway).
        loader: iterable of dict batches with ``img`` ``(B, 3, H, W)`` float and ``index`` ``(B,)`` int64,
            the position of each image in ``loader.dataset`` (other keys such as ``camid`` and
            ``modality`` are not needed; identities are never read). ``len(loader.dataset)`` gives N. Any
            sampler order works: row ``index[b]`` of the result receives image ``b``'s feature. When a
            batch has ``modality`` and ``model.forward`` takes ``modalities`` (every registered
            architecture), they are passed (``model(x, modalities=...)``): a two-stream model
            (:mod:`unreid.models.two_stream`) embeds each image through its modality's stem; a
            single-stream model ignores them.
        device: where the forward passes run.
        amp: float16 autocast, used only when ``device`` is CUDA.
        flip: test-time augmentation: the feature is the sum (equivalently the mean) of the image's and
            its horizontal mirror's features, then normalised (the usual re-ID flip test, e.g. fast-reid's
            ``flip_test``).

    Returns:
        ``(N, d)`` float32 CPU tensor in dataset order; each row has unit L2 norm (zero rows stay zero).

    Raises:
        KeyError: a batch lacks ``img`` or ``index``.
        ValueError: the loader is empty, an index is outside ``[0, N)``, or some dataset rows were never
            produced (e.g. ``drop_last=True`` or a sub-sampling sampler): use a loader covering the dataset.

    The model's previous train/eval mode is restored, also when an error is raised.
    """
    device = torch.device(device)
    use_amp = bool(amp) and device.type == "cuda"
    n = len(loader.dataset)
    was_training = model.training
    model.eval()
    out: torch.Tensor | None = None
    seen = torch.zeros(n, dtype=torch.bool)
    takes_modalities = takes_ids(model)
    try:
        for batch in loader:
            if "img" not in batch or "index" not in batch:
                raise KeyError(f"extract_features: batches need 'img' and 'index' keys, got {sorted(batch)}")
            idx = torch.as_tensor(batch["index"], dtype=torch.long).reshape(-1).cpu()
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
                raise ValueError(f"extract_features: batch index outside [0, {n}) (len(loader.dataset) = {n})")
            x = batch["img"].to(device, non_blocking=True)
            kw = {}
            if takes_modalities and batch.get("modality") is not None:
                kw["modalities"] = torch.as_tensor(batch["modality"]).to(device)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                f = model(x, **kw).float()
                if flip:
                    f = f + model(torch.flip(x, dims=[3]), **kw).float()
            f = F.normalize(f, dim=1).cpu()
            if out is None:
                out = torch.zeros(n, f.shape[1], dtype=torch.float32)
            out[idx] = f
            seen[idx] = True
    finally:
        model.train(was_training)
    if out is None:
        raise ValueError("extract_features: the loader produced no batch (empty dataset?)")
    if not bool(seen.all()):
        raise ValueError(
            f"extract_features: {int((~seen).sum())} of {n} dataset rows were never produced by the loader "
            "(drop_last=True or a sub-sampling sampler?); use a loader that covers the whole dataset"
        )
    return out


__all__ = ["extract_features"]
