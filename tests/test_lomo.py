"""LOMO (Liao et al. CVPR 2015) as the pseudo-labelling prior (pseudo_labels.colour_descriptor=lomo)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import tiny_overrides
from tests.test_camera_aware import _spy_labeller
from unreid.config import _CHOICES, ConfigError, load_config
from unreid.engine import Trainer
from unreid.pseudo_labels.colour import DESCRIPTORS, append_colour, load_colour_histograms, load_descriptors
from unreid.pseudo_labels.lomo import _max_occurrence, load_lomo_descriptors, lomo_descriptors, retinex, siltp


def test_siltp_codes_by_hand():
    # centre 1.0; tau 0.3 -> lower bound 0.7, upper 1.3. right 2.0 (> upper: 2), up 1.1 (within: 0),
    # left 0.5 (< lower: 1), down 1.3 (not > upper: 0) -> 2 * 1 + 0 * 3 + 1 * 9 + 0 * 27 = 11
    g = np.array([[[9.0, 1.1, 9.0],
                   [0.5, 1.0, 2.0],
                   [9.0, 1.3, 9.0]]])
    assert siltp(g, tau=0.3, radius=1)[0, 1, 1] == 11
    # scale invariance: multiplying every intensity by a constant changes no code
    rng = np.random.default_rng(0)
    img = rng.uniform(0.05, 1.0, size=(2, 12, 12))
    assert np.array_equal(siltp(img, 0.3, 3), siltp(3.7 * img, 0.3, 3))
    # replicated border: a constant image is all zeros; codes stay in [0, 81)
    assert not siltp(np.ones((1, 7, 7)), 0.3, 3).any()
    assert siltp(img, 0.3, 5).max() < 81
    with pytest.raises(ValueError, match="radius 5"):
        siltp(np.ones((1, 9, 20)), 0.3, 5)


def test_max_occurrence_by_hand():
    # one row of two 10 x 10 windows (left 0 and left 5) over a 10 x 15 image of 3 bins:
    # columns 0-4 bin 0, 5-9 bin 1, 10-14 bin 2. Window 1 counts (50, 50, 0), window 2 (0, 50, 50);
    # the maximum per bin over the row is (50, 50, 50)
    codes = np.zeros((1, 10, 15), dtype=np.int64)
    codes[:, :, 5:10], codes[:, :, 10:] = 1, 2
    assert _max_occurrence(codes, 3).tolist() == [[50.0, 50.0, 50.0]]
    # a second row of windows (height 15): rows are kept apart, one block of bins each
    tall = np.zeros((1, 15, 15), dtype=np.int64)
    tall[:, 10:] = 2
    assert _max_occurrence(tall, 3).tolist() == [[100.0, 0.0, 0.0, 50.0, 0.0, 50.0]]
    assert _max_occurrence(np.zeros((2, 9, 20), dtype=np.int64), 3).shape == (2, 0)


def test_retinex_removes_a_global_illumination_change():
    rng = np.random.default_rng(1)
    img = rng.integers(60, 250, size=(32, 16, 3)).astype(np.uint8)
    dark = (img.astype(np.float64) * 0.5).round().astype(np.uint8)
    a, b = retinex(img), retinex(dark)
    assert a.shape == img.shape and a.min() >= 0.0 and a.max() <= 1.0
    # the image at half the light gives nearly the same output (the +1 offset and rounding are all
    # that differ); the raw pixels differ by about a quarter of the range
    assert np.abs(a - b).mean() < 0.02 < np.abs(img / 255.0 - dark / 255.0).mean()
    assert not retinex(np.full((8, 8, 3), 100, np.uint8)).any()  # nothing to stretch
    with pytest.raises(ValueError, match="RGB"):
        retinex(np.zeros((8, 8)))


def test_lomo_dimensions_norms_and_maximal_occurrence():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (3, 3, 128, 48), dtype=torch.uint8, generator=g)
    d = lomo_descriptors(imgs)
    # the paper's figure: (24 + 11 + 5) bands x (8^3 + 2 x 3^4) = 26,960
    assert d.shape == (3, 26960) and d.dtype == torch.float32
    hsv, s3, s5 = d[:, :40 * 512], d[:, 40 * 512:40 * 593], d[:, 40 * 593:]
    for part in (hsv, s3, s5):
        assert torch.allclose(part.norm(dim=1), torch.full((3,), 3 ** -0.5), atol=1e-5)
    assert lomo_descriptors(torch.randint(0, 256, (1, 3, 128, 64), dtype=torch.uint8)).shape == (1, 26960)
    # maximal occurrence: at width 20 the windows start at columns 0, 5, 10, a set the mirror maps onto
    # itself, so the colour part is the same for an image and its mirror image
    img = torch.randint(0, 256, (1, 3, 40, 20), dtype=torch.uint8, generator=g)
    bands = 7 + 3  # 40 x 20: 7 bands; 20 x 10: 3; 10 x 5: no 10 x 10 window
    a, b = lomo_descriptors(img), lomo_descriptors(img.flip(3))
    # SILTP radius 5 needs 11 columns, so it skips the 20 x 10 scale (as LOMO.m does): 7 bands
    assert a.shape[1] == bands * 512 + bands * 81 + 7 * 81
    assert torch.allclose(a[:, :bands * 512], b[:, :bands * 512], atol=1e-6)
    assert not torch.allclose(a, lomo_descriptors(img.flip(2)))  # head and feet are not interchangeable
    with pytest.raises(ValueError, match="uint8"):
        lomo_descriptors(torch.zeros(1, 3, 32, 16))
    with pytest.raises(ValueError, match="11 pixels"):
        lomo_descriptors(torch.zeros(1, 3, 32, 8, dtype=torch.uint8))


def test_load_lomo_descriptors_from_files(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(40, 20, 3)).astype(np.uint8)).save(p)
        paths.append(str(p))
    d = load_lomo_descriptors(paths, (32, 16), batch=2)
    assert d.shape[0] == 3 and torch.allclose(d.norm(dim=1), torch.ones(3), atol=1e-5)
    # the one dispatch on pseudo_labels.colour_descriptor, whose choices the config validates
    assert torch.equal(load_descriptors(paths, (32, 16), "lomo"), d)
    assert torch.equal(load_descriptors(paths, (32, 16), "stripes"), load_colour_histograms(paths, (32, 16)))
    assert set(DESCRIPTORS) == _CHOICES["pseudo_labels.colour_descriptor"]
    with pytest.raises(ValueError, match="unknown descriptor"):
        load_descriptors(paths, (32, 16), "hog")


@pytest.mark.slow
def test_lomo_prior_reaches_the_pseudo_labels_only(synthetic_root, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="colour_descriptor"):
        load_config(None, tiny_overrides(synthetic_root, tmp_path / "bad", **{"pseudo_labels.colour_descriptor": "x"}))
    cfg = load_config(None, tiny_overrides(synthetic_root, tmp_path / "run", **{
        "optim.epochs": 1, "data.batch_size": 8, "pseudo_labels.colour_weight": 1.0,
        "pseudo_labels.colour_descriptor": "lomo", "pseudo_labels.prior_mode": "append"}))
    trainer = Trainer(cfg)
    seen = {}
    fit = trainer.method.pseudo_label
    fed = _spy_labeller(monkeypatch)

    def spy(epoch, features):
        seen["d"], seen["raw"] = features.shape[1], features.clone()
        return fit(epoch, features)

    trainer.method.pseudo_label = spy
    trainer.train()
    # the clustering saw the network features with the LOMO descriptors appended (weight 1)
    assert len(fed) == 1 and fed[0].shape[1] == seen["d"] + 16 * 674
    torch.testing.assert_close(fed[0], append_colour(seen["raw"], trainer.method._colour, trainer.method.camids, 1.0))
    # 64 x 32 images: 11 + 5 bands (16 x 8 holds no 10 x 10 window) x (512 + 162), computed once
    assert trainer.method._colour.shape == (len(trainer.method.train_set), 16 * 674)
    assert trainer.method.memory.features.shape[1] == seen["d"] == trainer.model.feature_dim


@pytest.mark.slow
def test_lomo_prior_in_gram_form_gives_the_labeller_the_appended_inner_products(synthetic_root, tmp_path,
                                                                                 monkeypatch):
    """The default prior_mode=gram in a training run: the labeller receives GramFeatures whose inner
    products are those of the appended features (recomputed here from the images, append form)."""
    from unreid.pseudo_labels import PseudoLabeler
    from unreid.pseudo_labels.colour import load_descriptors
    from unreid.pseudo_labels.prior import GramFeatures

    cfg = load_config(None, tiny_overrides(synthetic_root, tmp_path / "run", **{
        "optim.epochs": 1, "data.batch_size": 8, "pseudo_labels.colour_weight": 1.0,
        "pseudo_labels.colour_descriptor": "lomo"}))
    assert cfg.pseudo_labels.prior_mode == "gram"
    trainer = Trainer(cfg)
    seen, fed = {}, []
    fit_labels, fit = trainer.method.pseudo_label, PseudoLabeler.fit

    def spy_fit(self, features, *args, **kwargs):
        fed.append(features)
        return fit(self, features, *args, **kwargs)

    def spy(epoch, features):
        seen["raw"] = features.clone()
        return fit_labels(epoch, features)

    monkeypatch.setattr(PseudoLabeler, "fit", spy_fit)
    trainer.method.pseudo_label = spy
    trainer.train()
    assert len(fed) == 1 and isinstance(fed[0], GramFeatures)
    assert trainer.method._colour is None  # the raw descriptors were streamed, never kept whole
    m = trainer.method
    desc = load_descriptors([s.path for s in m.train_set], (cfg.data.height, cfg.data.width), "lomo")
    x = append_colour(seen["raw"], desc, m.camids, 1.0)
    got = fed[0].features @ fed[0].features.T + fed[0].gram
    torch.testing.assert_close(got, x @ x.T, atol=3e-6, rtol=0)
