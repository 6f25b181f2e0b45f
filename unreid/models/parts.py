"""Part features for TCL (ANCHORS.md "TCL"): the shared encoder's features of **masked copies** of each
image (random black square patches; the authors' README and framework figure), or, as an option, the
horizontal stripes of the last feature map (the usual part pooling of PCB, Sun et al., ECCV 2018).

:func:`random_patch_masks` draws the masks; :class:`PartViews` wraps a re-ID model so that one call gives
the ``V`` part features of a batch, ``(B, V, d)`` (or, with ``flat=True``, ``(B, V * d)`` for the engine's
feature extractor, which normalises rows: the caller re-normalises each view, which undoes the common
scale exactly).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: part kinds (config key ``method.tcl.part``)
PART_KINDS: tuple[str, ...] = ("mask", "stripes")


def random_patch_masks(batch: int, height: int, width: int, patch_size: int, ratio: float,
                       generator: torch.Generator | None = None) -> Tensor:
    """Boolean masks of random square patches, ``True`` where the image is blacked out.

    The image is tiled by a grid of ``ceil(H / s) x ceil(W / s)`` squares of side ``s = patch_size`` (the
    last row / column cut at the border); in each mask exactly ``round(ratio * cells)`` cells, drawn without
    replacement (at least one, at most all but one), are set.

    Args:
        batch: number of masks ``B``.
        height, width: image size in pixels.
        patch_size: side of a square in pixels, ``>= 1``.
        ratio: share of the cells to mask, in ``(0, 1)``.
        generator: CPU generator (``None``: torch's global one).

    Returns:
        ``(B, H, W) bool`` on the CPU.

    Raises:
        ValueError: ``patch_size < 1`` or ``ratio`` outside ``(0, 1)``.
    """
    if patch_size < 1 or not 0.0 < ratio < 1.0:
        raise ValueError(f"need patch_size >= 1 and mask ratio in (0, 1), got {patch_size} and {ratio}")
    gh, gw = -(-height // patch_size), -(-width // patch_size)
    cells = gh * gw
    n = min(max(round(ratio * cells), 1), max(cells - 1, 1))
    order = torch.rand(batch, cells, generator=generator).argsort(dim=1)
    grid = torch.zeros(batch, cells, dtype=torch.bool)
    grid.scatter_(1, order[:, :n], True)
    grid = grid.view(batch, gh, gw)
    full = grid.repeat_interleave(patch_size, dim=1).repeat_interleave(patch_size, dim=2)
    return full[:, :height, :width]


def apply_masks(images: Tensor, masks: Tensor, fill: Tensor) -> Tensor:
    """``images`` ``(B, C, H, W)`` with the ``True`` pixels of ``masks`` ``(B, H, W)`` set to ``fill`` ``(C,)``
    (the normalised value of a black pixel, ``-mean / std``); a new tensor."""
    m = masks.to(images.device).unsqueeze(1)
    return torch.where(m, fill.to(images.device, images.dtype).view(1, -1, 1, 1), images)


class PartViews(nn.Module):
    """The part features of a batch from a re-ID model (:class:`unreid.models.reid.ReIDModel`).

    * ``kind="mask"``: ``num_views`` masked copies of each image (:func:`random_patch_masks`), each passed
      through the whole model: ``V = num_views`` features per image, the model's output (train mode:
      normalised then dropout; eval mode: normalised).
    * ``kind="stripes"``: the model's last feature map cut into ``num_stripes`` horizontal stripes, each pooled
      with the model's pooling and passed through its embedding, then L2-normalised (the BNNeck is left out,
      so that its running statistics stay those of the global feature): ``V = num_stripes``. One forward pass
      gives the global feature too (:meth:`with_global`).

    Args:
        model: the re-ID model (``forward(x, camids=None, modalities=None, return_map=False)``; for stripes it
            needs ``pool`` and ``embedding`` attributes).
        kind: ``"mask"`` or ``"stripes"``.
        num_views, mask_ratio, patch_size: masked copies (``method.tcl``).
        num_stripes: stripes (``method.tcl``).
        fill: ``(3,)`` normalised value of a black pixel, ``-mean / std`` of the input normalisation.
        flat: return ``(B, V * d)`` instead of ``(B, V, d)`` (for the feature extractor).
        generator: CPU generator for the masks (``None``: torch's global one; training draws from it, so that
            a resumed run, whose RNG state is restored, draws the same masks).

    Raises:
        ValueError: an unknown kind, or stripes on a model without ``pool`` / ``embedding``.
    """

    def __init__(self, model: nn.Module, kind: str = "mask", num_views: int = 1, mask_ratio: float = 0.3,
                 patch_size: int = 16, num_stripes: int = 2, fill: Tensor | None = None, flat: bool = False,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if kind not in PART_KINDS:
            raise ValueError(f"unknown part kind {kind!r}; choose one of {PART_KINDS} (method.tcl.part)")
        if kind == "stripes" and not (hasattr(model, "pool") and hasattr(model, "embedding")):
            raise ValueError(f"part=stripes needs a model with pool and embedding layers; {type(model).__name__} "
                             "has none: use method.tcl.part=mask")
        self.model = model
        self.kind, self.num_views, self.mask_ratio, self.patch_size = kind, num_views, mask_ratio, patch_size
        self.num_stripes, self.flat, self.generator = num_stripes, flat, generator
        self.register_buffer("fill", torch.zeros(3) if fill is None else torch.as_tensor(fill, dtype=torch.float32),
                             persistent=False)

    @property
    def views(self) -> int:
        return self.num_views if self.kind == "mask" else self.num_stripes

    def stripes(self, fmap: Tensor) -> Tensor:
        """``(B, C, H', W')`` feature map -> ``(B, S, d)`` L2-normalised stripe features (float32)."""
        parts = [self.model.embedding(self.model.pool(s)).float()
                 for s in torch.tensor_split(fmap, self.num_stripes, dim=2)]
        return F.normalize(torch.stack(parts, dim=1), dim=2)

    def with_global(self, x: Tensor, camids: Tensor | None = None, modalities: Tensor | None = None
                    ) -> tuple[Tensor, Tensor]:
        """``(global (B, d), parts (B, V, d))`` of a batch; the stripes share the global forward pass."""
        if self.kind == "stripes":
            f, fmap = self.model(x, camids=camids, modalities=modalities, return_map=True)
            return f, self.stripes(fmap)
        return self.model(x, camids=camids, modalities=modalities), self._masked(x, camids, modalities)

    def _masked(self, x: Tensor, camids: Tensor | None, modalities: Tensor | None) -> Tensor:
        out = []
        for _ in range(self.num_views):
            masks = random_patch_masks(x.shape[0], x.shape[2], x.shape[3], self.patch_size, self.mask_ratio,
                                       generator=self.generator)
            out.append(self.model(apply_masks(x, masks, self.fill), camids=camids, modalities=modalities))
        return torch.stack(out, dim=1)

    def forward(self, x: Tensor, camids: Tensor | None = None, modalities: Tensor | None = None) -> Tensor:
        """Part features ``(B, V, d)`` (``(B, V * d)`` with ``flat``) of images ``x`` ``(B, 3, H, W)``."""
        if self.kind == "stripes":
            parts = self.stripes(self.model(x, camids=camids, modalities=modalities, return_map=True)[1])
        else:
            parts = self._masked(x, camids, modalities)
        return parts.flatten(1) if self.flat else parts


__all__ = ["PART_KINDS", "PartViews", "apply_masks", "random_patch_masks"]
