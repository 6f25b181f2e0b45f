"""Colour-stripe histograms as a pseudo-labelling prior (pseudo_labels.colour_weight)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.conftest import metrics_rows, tiny_overrides
from tests.test_camera_aware import _spy_labeller
from unreid.config import ConfigError, load_config
from unreid.data.loader import ImageCache
from unreid.engine import Trainer
from unreid.pseudo_labels.colour import append_colour, colour_stripe_histograms, load_colour_histograms


def _two_colour_image(top, bottom, h=8, w=2):
    img = torch.zeros(3, h, w, dtype=torch.uint8)
    img[:, : h // 2] = torch.tensor(top, dtype=torch.uint8)[:, None, None]
    img[:, h // 2:] = torch.tensor(bottom, dtype=torch.uint8)[:, None, None]
    return img


def test_histograms_by_hand():
    # PIL HSV: pure red = (0, 255, 255) -> bins (0, 3, 3) -> code (0 * 4 + 3) * 4 + 3 = 15;
    # pure blue = (170, 255, 255) (hue 240 deg = 170/255) -> bins (170 * 8 >> 8 = 5, 3, 3) -> code 95
    imgs = torch.stack([_two_colour_image((255, 0, 0), (0, 0, 255)), _two_colour_image((0, 0, 255), (0, 0, 255))])
    h = colour_stripe_histograms(imgs, stripes=2, bins=(8, 4, 4))
    assert h.shape == (2, 2 * 128) and h.dtype == torch.float32
    expected = torch.zeros(2, 256)
    expected[0, 15] = expected[0, 128 + 95] = 1 / math.sqrt(2)  # one bin per stripe, sqrt(1), row norm 1
    expected[1, 95] = expected[1, 128 + 95] = 1 / math.sqrt(2)
    assert torch.allclose(h, expected)
    # the dot product of two rows is the Bhattacharyya coefficient summed over stripes, / stripes
    assert float(h[0] @ h[1]) == pytest.approx(0.5)
    # a stripe split into two colours: sqrt(1/2) in each bin
    mixed = torch.stack([_two_colour_image((255, 0, 0), (0, 0, 255))])
    one = colour_stripe_histograms(mixed, stripes=1, bins=(8, 4, 4))
    assert one[0, 15] == pytest.approx(1 / math.sqrt(2)) and one[0, 95] == pytest.approx(1 / math.sqrt(2))


def test_histograms_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        colour_stripe_histograms(torch.zeros(1, 3, 8, 2))
    with pytest.raises(ValueError, match="stripes"):
        colour_stripe_histograms(torch.zeros(1, 3, 4, 2, dtype=torch.uint8), stripes=8)


def test_loading_reads_the_cache_and_survives_an_unreadable_file(tmp_path):
    from PIL import Image

    paths = []
    for i, (top, bottom) in enumerate((((255, 0, 0), (0, 0, 255)), ((0, 255, 0), (255, 255, 0)))):
        img = _two_colour_image(top, bottom, h=32, w=16).permute(1, 2, 0).numpy()
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(img).save(paths[-1])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    from_files = load_colour_histograms(paths + [str(broken)], (16, 8))
    from_cache = load_colour_histograms(paths + [str(broken)], (16, 8), cache=ImageCache(paths, (16, 8)))
    assert from_files.shape == (3, 8 * 128) and torch.equal(from_files, from_cache)
    # the unreadable file is a black stand-in, as in training: all pixels in the bin of black (code 0)
    black = colour_stripe_histograms(torch.zeros(1, 3, 16, 8, dtype=torch.uint8))
    assert torch.equal(from_files[2:], black)
    assert float(from_files[0] @ from_files[1]) < 0.5  # two different images stay different


def test_append_colour_removes_a_camera_colour_cast():
    torch.manual_seed(0)
    colour = torch.rand(6, 5)
    colour[3:] = colour[:3] + 0.3  # camera 1 sees the same three people with a constant cast
    cams = np.array([0, 0, 0, 1, 1, 1])
    feats = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    out = append_colour(feats, colour, cams, weight=1.0)
    assert out.shape == (6, 9) and torch.allclose(out.norm(dim=1), torch.ones(6))
    # the colour parts of each person's two images are equal after per-camera standardisation
    ratio = out[:, 4:] / out[:, :4].norm(dim=1, keepdim=True)
    assert torch.allclose(ratio[:3], ratio[3:], atol=1e-5)
    # weight 1: network part and colour part have equal norm
    assert torch.allclose(out[:, :4].norm(dim=1), out[:, 4:].norm(dim=1), atol=1e-5)
    with pytest.raises(ValueError, match="colour_weight"):
        append_colour(feats, colour, cams, weight=0.0)
    with pytest.raises(ValueError, match="colour histograms"):
        append_colour(feats, colour[:5], cams, weight=1.0)


def test_colour_prior_reaches_the_pseudo_labels_only(synthetic_root, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="colour_weight"):
        load_config(None, tiny_overrides(synthetic_root, tmp_path / "bad", **{"pseudo_labels.colour_weight": -1}))
    out = tmp_path / "run"
    cfg = load_config(None, tiny_overrides(synthetic_root, out, **{"optim.epochs": 1, "data.batch_size": 8,
                                                                   "pseudo_labels.colour_weight": 1.0,
                                                                   "pseudo_labels.prior_mode": "append"}))
    trainer = Trainer(cfg)
    seen = {}
    fit = trainer.method.pseudo_label
    fed = _spy_labeller(monkeypatch)

    def spy(epoch, features):
        labels = fit(epoch, features)
        seen["d"], seen["raw"] = features.shape[1], features.clone()
        return labels

    trainer.method.pseudo_label = spy
    trainer.train()
    assert trainer.method._colour is not None and trainer.method._colour.shape[0] == len(trainer.method.train_set)
    # the clustering saw the network features with the colour histograms appended (weight 1)
    colour, cams = trainer.method._colour, trainer.method.camids
    assert len(fed) == 1 and fed[0].shape[1] == seen["d"] + colour.shape[1]
    torch.testing.assert_close(fed[0], append_colour(seen["raw"], colour, cams, 1.0))
    assert trainer.cache is not None and trainer.method.image_cache is trainer.cache  # decoded once, shared
    # the memory is built from the network features, not from the features with colour appended
    assert trainer.method.memory.features.shape[1] == seen["d"] == trainer.model.feature_dim
    assert metrics_rows(out)[-1]["pseudo_labels"]["num_clusters"] >= 1
