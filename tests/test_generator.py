"""GCL's view generator and discriminator (unreid.models.generator): shapes, the appearance-code -> AdaIN
mapping of the public AdaINGen, AdaIN and the LSGAN / gradient-penalty losses against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from unreid.models.generator import (
    AdaINDecoder,
    AdaptiveInstanceNorm2d,
    MultiScaleDiscriminator,
    StructureEncoder,
    ViewGenerator,
    appearance_code,
)

C_APP, PARTS = 16, 4  # small appearance code: 4 parts x 16 channels


@pytest.fixture(autouse=True)
def _one_thread():
    """These convs are tiny: a second intra-op thread only adds contention (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_gen(**kw) -> ViewGenerator:
    return ViewGenerator(C_APP, parts=PARTS, dim=8, mlp_dim=32, **kw)


# ---------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("hw", [(64, 32), (128, 64)])
def test_encoder_and_generator_shapes(hw):
    torch.manual_seed(0)
    h, w = hw
    g = small_gen()
    code = g.encode(torch.randn(2, 1, h, w))
    assert code.shape == (2, 8 * 8, h // 4, w // 4)
    out = g.decode(code, torch.randn(2, PARTS, C_APP))
    assert out.shape == (2, 3, h, w)
    assert g(torch.randn(2, 1, h, w), torch.randn(2, PARTS, C_APP)).shape == (2, 3, h, w)


def test_default_widths_are_the_public_config():
    enc = StructureEncoder()  # gen.dim 16, n_downsample 2, n_res 4
    assert enc(torch.randn(1, 1, 64, 32)).shape == (1, 128, 16, 8)
    dec = ViewGenerator(2048).decoder
    # 4 (weight, bias) MLP pairs of 3 layers, 2048 -> 512 -> 512 -> 2 AdaIN layers x 128 channels
    for mlps in (dec.weight_mlps, dec.bias_mlps):
        assert len(mlps) == 4
        for mlp in mlps:
            shapes = [tuple(m.weight.shape) for m in mlp if isinstance(m, nn.Linear)]
            assert shapes == [(512, 2048), (512, 512), (256, 512)]
    assert sum(isinstance(m, AdaptiveInstanceNorm2d) for m in dec.modules()) == 8


@pytest.mark.parametrize("hw, maps", [((128, 64), [(32, 16), (16, 8), (8, 4)]),
                                      ((256, 128), [(64, 32), (32, 16), (16, 8)])])
def test_discriminator_maps(hw, maps):
    torch.manual_seed(0)
    d = MultiScaleDiscriminator(dim=8)
    outs = d(torch.randn(2, 3, *hw))
    assert [tuple(o.shape) for o in outs] == [(2, 1, *m) for m in maps]


class _FirstChannel(nn.Module):
    """Stub scale net: the first channel of its input, plus a constant."""

    def __init__(self, add: float = 0.0):
        super().__init__()
        self.add = add

    def forward(self, x):
        return x[:, :1] + self.add


def _pool_by_hand(x: torch.Tensor) -> torch.Tensor:
    """3x3 / stride 2 / padding 1 average pooling, padded cells left out of the mean, with loops."""
    b, c, h, w = x.shape
    oh, ow = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    out = torch.empty(b, c, oh, ow, dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            rows = [r for r in range(2 * i - 1, 2 * i + 2) if 0 <= r < h]
            cols = [q for q in range(2 * j - 1, 2 * j + 2) if 0 <= q < w]
            out[:, :, i, j] = x[:, :, rows][:, :, :, cols].mean(dim=(2, 3))
    return out


def test_scales_see_average_pooled_images():
    d = MultiScaleDiscriminator(num_scales=3)
    d.nets = nn.ModuleList(_FirstChannel() for _ in range(3))
    x = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    outs = d(x)
    p1 = _pool_by_hand(x)
    p2 = _pool_by_hand(p1)
    torch.testing.assert_close(outs[0], x[:, :1])
    torch.testing.assert_close(outs[1], p1[:, :1])
    torch.testing.assert_close(outs[2], p2[:, :1])
    assert outs[2].shape == (2, 1, 2, 2)


def test_appearance_code_is_row_band_means():
    fmap = torch.arange(2 * 3 * 8 * 2, dtype=torch.float64).view(2, 3, 8, 2) ** 1.5
    code = appearance_code(fmap, parts=4)
    assert code.shape == (2, 4, 3)
    for p in range(4):
        torch.testing.assert_close(code[:, p], fmap[:, :, 2 * p:2 * p + 2].mean(dim=(2, 3)))
    # 6 rows into 4 stripes: adaptive pooling's overlapping bins [0,2) [1,3) [3,5) [4,6)
    fmap6 = fmap[:, :, :6]
    code6 = appearance_code(fmap6, parts=4)
    for p, (a, b) in enumerate([(0, 2), (1, 3), (3, 5), (4, 6)]):
        torch.testing.assert_close(code6[:, p], fmap6[:, :, a:b].mean(dim=(2, 3)))


# ------------------------------------------------------------------------------------- AdaIN and mapping


def _adain_by_hand(x, weight, bias, eps=1e-5):
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            v = x[b, c]
            mean = v.sum() / v.numel()
            var = ((v - mean) ** 2).sum() / v.numel()  # biased, as batch_norm's normalisation
            out[b, c] = (v - mean) / math.sqrt(var + eps) * weight[b, c] + bias[b, c]
    return out


def _public_flat(app):
    """The public (B, C * parts) code: partpool's (B, C, parts, 1) map flattened, entry c * parts + p."""
    b, parts, c = app.shape
    flat = torch.empty(b, c * parts, dtype=app.dtype)
    for ci in range(c):
        for p in range(parts):
            flat[:, ci * parts + p] = app[:, p, ci]
    return flat


def test_adain_layer_against_hand_computation():
    torch.manual_seed(0)
    layer = AdaptiveInstanceNorm2d(3)
    x = torch.randn(2, 3, 2, 3, dtype=torch.float64) * 2 + 1
    w = torch.randn(2, 3, dtype=torch.float64)
    b = torch.randn(2, 3, dtype=torch.float64)
    torch.testing.assert_close(layer(x, w, b), _adain_by_hand(x, w, b))

    # the decoder's first AdaIN layer with its weight / bias from weight MLP 0 / bias MLP 0
    dec = small_gen().decoder.double()
    app = torch.randn(2, PARTS, C_APP, dtype=torch.float64)
    wd, bd = dec.adain_params(app)
    c_s = dec.in_channels
    chunk0 = _public_flat(app)[:, :C_APP]
    w0, b0 = dec.weight_mlps[0](chunk0)[:, :c_s], dec.bias_mlps[0](chunk0)[:, :c_s]
    torch.testing.assert_close(wd[:, 0], w0)
    torch.testing.assert_close(bd[:, 0], b0)
    x = torch.randn(2, c_s, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(dec.blocks[0].norm1(x, wd[:, 0], bd[:, 0]), _adain_by_hand(x, w0, b0))


def test_mlp_to_adain_mapping_is_the_public_one():
    """MLP pair k reads the public flat code's k-th chunk of C entries (channels k*C/4 .. (k+1)*C/4 of all
    four stripes) and drives AdaIN layers 2k and 2k+1 (residual block k)."""
    torch.manual_seed(0)
    dec = small_gen().decoder.double()
    app = torch.randn(2, PARTS, C_APP, dtype=torch.float64)
    w, b = dec.adain_params(app)
    flat = _public_flat(app)
    c_s = dec.in_channels
    for k in range(PARTS):
        chunk = flat[:, k * C_APP:(k + 1) * C_APP]
        torch.testing.assert_close(w[:, 2 * k:2 * k + 2].reshape(2, 2 * c_s), dec.weight_mlps[k](chunk))
        torch.testing.assert_close(b[:, 2 * k:2 * k + 2].reshape(2, 2 * c_s), dec.bias_mlps[k](chunk))
    # channel 0 of stripe 2 is in chunk 0, channel 15 of stripe 0 in chunk 3 (not chunk = stripe)
    for (p, c), k in [((2, 0), 0), ((0, C_APP - 1), 3)]:
        app2 = app.clone()
        app2[:, p, c] += 1.0
        w2, b2 = dec.adain_params(app2)
        changed = [(w2[:, i] - w[:, i]).abs().max().item() > 0 for i in range(2 * dec.n_res)]
        assert changed == [i // 2 == k for i in range(2 * dec.n_res)]
        assert not torch.equal(b2[:, 2 * k], b[:, 2 * k])


def test_decoder_depends_on_both_codes():
    torch.manual_seed(0)
    g = small_gen()
    s = g.encode(torch.randn(2, 1, 32, 16))
    app = torch.randn(2, PARTS, C_APP)
    out = g.decode(s, app)
    app2 = app.clone()
    app2[:, 1] = torch.randn(2, C_APP)  # one part's code
    out_app = g.decode(s, app2)
    out_s = g.decode(g.encode(torch.randn(2, 1, 32, 16)), app)
    for other in (out_app, out_s):
        assert (other - out).abs().mean() > 1e-3 * out.abs().mean()
    torch.testing.assert_close(g.decode(s, app), out)  # deterministic: no state between calls


# ---------------------------------------------------------------------------------------------- losses


def test_lsgan_losses_on_stub_scores():
    """Per-sample constant images, stub scale k = first channel + k: every score map is constant, so the
    losses are sums over scales of means over samples."""
    d = MultiScaleDiscriminator(num_scales=3, gp_weight=0.0)
    d.nets = nn.ModuleList(_FirstChannel(k) for k in range(3))
    a = torch.tensor([0.3, -1.2], dtype=torch.float64)
    r = torch.tensor([0.5, 2.0], dtype=torch.float64)
    fake = a.view(2, 1, 1, 1).expand(2, 3, 8, 4).clone()
    real = r.view(2, 1, 1, 1).expand(2, 3, 8, 4).clone()
    want_d = sum(((a + k) ** 2).mean() + ((r + k - 1) ** 2).mean() for k in range(3))
    want_g = sum(2 * ((a + k - 1) ** 2).mean() for k in range(3))
    torch.testing.assert_close(d.dis_loss(fake, real), want_d)
    torch.testing.assert_close(d.gen_loss(fake), want_g)


class _Linear(nn.Module):
    """Stub scale net D(x) = sum(w * x) per sample, as a (B, 1, 1, 1) map."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return (x * self.w).sum(dim=(1, 2, 3)).view(-1, 1, 1, 1)


def test_gradient_penalty_of_linear_discriminators():
    torch.manual_seed(0)
    dt = torch.float64
    # one scale: dD/dx = w for every sample, so the penalty is sum(w ** 2)
    w = torch.randn(3, 2, 2, dtype=dt)
    d = MultiScaleDiscriminator(num_scales=1, gp_weight=0.5)
    d.nets = nn.ModuleList([_Linear(w.clone())])
    real = torch.randn(2, 3, 2, 2, dtype=dt)
    fake = torch.randn(2, 3, 2, 2, dtype=dt, requires_grad=True)
    torch.testing.assert_close(d.gradient_penalty(real), (w ** 2).sum())
    s_f = (fake.detach() * w).sum(dim=(1, 2, 3))
    s_r = (real * w).sum(dim=(1, 2, 3))
    loss = d.dis_loss(fake, real)
    torch.testing.assert_close(loss, (s_f ** 2).mean() + ((s_r - 1) ** 2).mean() + 0.5 * (w ** 2).sum())
    loss.backward()
    # the penalty trains D (d/dw of 0.5 * sum(w^2) is w) ...
    want_wgrad = (2 * s_f.view(2, 1, 1, 1) * fake.detach() + 2 * (s_r - 1).view(2, 1, 1, 1) * real).mean(0) + w
    torch.testing.assert_close(d.nets[0].w.grad, want_wgrad)
    # ... and sends nothing into the fakes (their gradient is the LSGAN term's alone); real untouched
    torch.testing.assert_close(fake.grad, (2 * s_f / 2).view(2, 1, 1, 1) * w.expand(2, -1, -1, -1))
    assert not real.requires_grad and real.grad is None
    # changing the fakes changes the LSGAN term only
    fake2 = torch.randn(2, 3, 2, 2, dtype=dt)
    s_f2 = (fake2 * w).sum(dim=(1, 2, 3))
    torch.testing.assert_close(d.dis_loss(fake2, real) - d.dis_loss(fake.detach(), real),
                               (s_f2 ** 2).mean() - (s_f ** 2).mean())

    # two scales on 2x2 images: scale 1 sees the 1x1 mean of the four pixels, so dD_1/dx = w1 / 4 per
    # pixel and its penalty is 4 pixels * sum(w1 ** 2) / 16
    w0 = torch.randn(3, 2, 2, dtype=dt)
    w1 = torch.randn(3, 1, 1, dtype=dt)
    d2 = MultiScaleDiscriminator(num_scales=2)
    d2.nets = nn.ModuleList([_Linear(w0), _Linear(w1)])
    torch.testing.assert_close(d2.gradient_penalty(real), (w0 ** 2).sum() + (w1 ** 2).sum() / 4)


# -------------------------------------------------------------------------------------------- training


def test_a_few_adam_steps_lower_the_reconstruction_loss():
    torch.manual_seed(0)
    g = small_gen()
    mesh = torch.randn(2, 1, 32, 16)
    app = torch.randn(2, PARTS, C_APP)
    target = torch.randn(2, 3, 32, 16)
    opt = torch.optim.Adam(g.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = (g(mesh, app) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    final = (g(mesh, app) - target).abs().mean().item()
    assert final < 0.9 * losses[0], losses + [final]


# ------------------------------------------------------------------------------------------ bad inputs


def test_bad_inputs_raise():
    g = small_gen()
    code = g.encode(torch.randn(2, 1, 32, 16))
    with pytest.raises(ValueError, match=r"\(B, 4, 16\)"):
        g.decode(code, torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match=r"\(B, 4, 16\)"):
        g.decode(code, torch.randn(2, 64))  # the public flat layout is not accepted
    with pytest.raises(ValueError, match=r"\(2, 4, 16\)"):
        g.decode(code, torch.randn(3, 4, 16))
    with pytest.raises(ValueError, match="divisible by 4"):
        g.encode(torch.randn(2, 1, 30, 16))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        g.encode(torch.randn(2, 3, 32, 16))
    with pytest.raises(ValueError, match=r"\(B, 64, H, W\)"):
        g.decode(torch.randn(2, 32, 8, 4), torch.randn(2, 4, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        MultiScaleDiscriminator(dim=8).dis_loss(torch.randn(2, 1, 32, 16), torch.randn(2, 3, 32, 16))
    with pytest.raises(ValueError, match=r"\(B, C, h, w\)"):
        appearance_code(torch.randn(2, 16, 8))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        AdaptiveInstanceNorm2d(3)(torch.randn(2, 3, 2, 2), torch.randn(3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="split evenly"):
        AdaINDecoder(16, parts=3, in_channels=64, n_res=4)


def test_dis_loss_multi_equals_the_sum_of_single_losses():
    from unreid.models.generator import MultiScaleDiscriminator

    torch.manual_seed(0)
    d = MultiScaleDiscriminator(dim=4, n_layer=1, num_scales=2, n_res=1)
    real = torch.randn(2, 3, 16, 8)
    fakes = [torch.randn(2, 3, 16, 8) for _ in range(3)]
    d.zero_grad()
    one = sum(d.dis_loss(f, real) for f in fakes)
    one.backward()
    g1 = [p.grad.clone() for p in d.parameters()]
    d.zero_grad()
    multi = d.dis_loss_multi(fakes, real)
    multi.backward()
    assert multi.item() == pytest.approx(one.item(), rel=1e-6)
    for a, b in zip(g1, [p.grad for p in d.parameters()]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
