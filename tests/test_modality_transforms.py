"""MBCCM / CAJ modality augmentations on tensors: hand-checkable effects, p = 0 and p = 1, the pipelines."""

from __future__ import annotations

import pytest
import torch

from unreid.config import DataConfig
from unreid.data.transforms import (
    CHANNEL_ERASE_VALUE,
    AdaptiveGrey,
    ChannelExchange,
    ChannelRandomErasing,
    LocalLinearIntensity,
    build_modality_transforms,
)


def _img(seed: int = 0, h: int = 24, w: int = 12) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed)) * 0.9 + 0.05


def _box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the bounding box of a 2-D bool mask."""
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    return int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


@pytest.mark.parametrize("cls", [LocalLinearIntensity, ChannelRandomErasing])
def test_p_zero_is_identity(cls):
    img = _img()
    for s in range(20):
        assert torch.equal(cls(p=0.0, generator=torch.Generator().manual_seed(s))(img), img)


def test_channel_random_erasing_fills_exactly_one_rectangle():
    for s in range(20):
        img = _img(s)
        out = ChannelRandomErasing(p=1.0, generator=torch.Generator().manual_seed(s))(img)
        changed = (out != img).any(0)
        assert changed.any(), "p = 1 always erases a 24 x 12 image"
        i, j, h, w = _box(changed)
        assert changed[i:i + h, j:j + w].all() and changed.sum() == h * w  # a full rectangle, nothing else
        assert 0.02 * 24 * 12 - 2 * (h + w) <= h * w <= 0.4 * 24 * 12 + 2 * (h + w)  # area 2-40 % (rounding)
        for c in range(3):
            assert (out[c, i:i + h, j:j + w] == CHANNEL_ERASE_VALUE[c]).all()
        assert torch.equal(img, _img(s)), "the input is not modified"


def test_local_linear_intensity_single_rectangle_is_linear_per_channel():
    # tmin = 1: the loop stops after the first rectangle (pixels outside it keep factor 1 <= 1)
    for s in range(20):
        img = _img(s)
        out = LocalLinearIntensity(p=1.0, tmin=1.0, generator=torch.Generator().manual_seed(s))(img)
        changed = (out != img).any(0)
        i, j, h, w = _box(changed)
        assert changed.sum() == h * w
        assert torch.equal(out[:, ~changed], img[:, ~changed])
        for c in range(3):
            region, before = out[c, i:i + h, j:j + w], img[c, i:i + h, j:j + w]
            alpha = region / before
            assert torch.allclose(alpha, alpha.flatten()[0].expand_as(alpha), rtol=1e-5)  # one factor
            assert region.max() <= 1.0 + 1e-6  # alpha <= 1 / max(region): the peak maps into [0, 1]
        assert torch.equal(img, _img(s))


def test_local_linear_intensity_loops_until_a_pixel_is_darkened_to_tmin():
    img = torch.full((3, 24, 12), 0.5)
    out = LocalLinearIntensity(p=1.0, generator=torch.Generator().manual_seed(3))(img)
    factor = out / img
    assert factor.min() <= 1e-6 and factor.max() <= 2.0 + 1e-6 and out.max() <= 1.0 + 1e-6
    assert factor.max() > 1.0, "alpha = b / max(region) brightens a region whose peak is below b"
    assert len(torch.unique(factor)) > 4, "several overlapping rectangles"


def test_channel_exchange_copies_one_source_channel():
    img = _img()
    sources = set()
    for s in range(40):
        out = ChannelExchange(gray=2, generator=torch.Generator().manual_seed(s))(img)
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
        k = [c for c in range(3) if torch.equal(out[0], img[c])]
        assert len(k) == 1
        sources.add(k[0])
    assert sources == {0, 1, 2}
    with pytest.raises(ValueError, match="gray"):
        ChannelExchange(gray=1)


def _outcome(out: torch.Tensor, img: torch.Tensor) -> str:
    if torch.equal(out, img):
        return "same"
    for c in range(3):
        if all(torch.equal(out[d], img[c]) for d in range(3)):
            return f"ch{c}"
    grey = 0.2989 * img[0] + 0.5870 * img[1] + 0.1140 * img[2]
    assert all(torch.allclose(out[d], grey) for d in range(3)), "the only other outcome is grey luma"
    return "grey"


def test_adaptive_grey_outcomes_for_p_zero_and_one():
    img = _img()
    seen0 = {_outcome(AdaptiveGrey(p=0.0, generator=torch.Generator().manual_seed(s))(img), img) for s in range(60)}
    seen1 = {_outcome(AdaptiveGrey(p=1.0, generator=torch.Generator().manual_seed(s))(img), img) for s in range(60)}
    assert seen0 == {"ch0", "ch1", "ch2", "same"}  # p = 0: never grey (3/4 still a channel copy)
    assert seen1 == {"ch0", "ch1", "ch2", "grey"}  # p = 1: never unchanged


def test_errors_on_bad_input():
    with pytest.raises(ValueError, match=r"float \(3, H, W\)"):
        ChannelRandomErasing(p=1.0)(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="float"):
        AdaptiveGrey()(torch.zeros(3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="p must be in"):
        LocalLinearIntensity(p=1.5)
    with pytest.raises(ValueError, match="modality, view"):
        build_modality_transforms(DataConfig(), 1, view=2)


def test_modality_pipelines_order_and_output():
    cfg = DataConfig(height=32, width=16)
    names = {}
    for key in ((0, 1), (0, 2), (1, 1)):
        tf = build_modality_transforms(cfg, *key)
        names[key] = [type(t).__name__ for t in tf.transforms]
        torch.manual_seed(0)
        out = tf(torch.randint(0, 256, (3, 40, 20), dtype=torch.uint8))
        assert out.shape == (3, 32, 16) and out.dtype == torch.float32
    geometry = ["ToImage", "Resize", "RandomHorizontalFlip", "Pad", "RandomCrop", "ToDtype", "ToPureTensor"]
    assert names[(0, 1)] == geometry + ["LocalLinearIntensity", "Normalize", "ChannelRandomErasing"]
    assert names[(0, 2)] == geometry + ["Normalize", "ChannelRandomErasing", "ChannelExchange"]
    assert names[(1, 1)] == geometry + ["Normalize", "ChannelRandomErasing", "AdaptiveGrey"]
    tf = build_modality_transforms(cfg, 0, 1)
    assert tf.transforms[7].p == 0.8 and tf.transforms[9].p == 0.5
    assert build_modality_transforms(cfg, 1, 1).transforms[-1].p == 0.5
    assert build_modality_transforms(cfg, 0, 2).transforms[-1].gray == 2
