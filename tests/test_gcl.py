"""GCL (unreid/methods/gcl.py, unreid/losses/gcl.py, unreid/data/structure.py): the memory loss on hand-built
examples, the negative cap, the structure views in the authors' mesh layout and the stand-in, the warm start's
report, and short stage-2 + stage-3 runs on the synthetic set (the encoder untouched in stage 2, the
reconstruction loss falling, the memory filled once and clustered, exact resume across the stage boundary)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.io import write_png

from tests.conftest import metrics_rows, tiny_overrides
from unreid.config import ConfigError, load_config
from unreid.data.datasets.base import Sample
from unreid.losses.gcl import sample_per_row, view_invariant_memory_loss


def _nce(pos: float, negs: list[float], tau: float) -> float:
    """-log softmax of the positive, by hand."""
    z = [pos / tau] + [n / tau for n in negs]
    return -(z[0] - math.log(sum(math.exp(v) for v in z)))


def test_memory_loss_on_a_hand_built_example():
    # rows: m0 (1,0) alone in cluster 0; m1 (0,1), m2 (-1,0) in cluster 1; m3 (0,-1) outlier
    mem = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], requires_grad=True)
    labels = torch.tensor([0, 1, 1, -1])
    f = torch.tensor([[1.0, 0.0]], requires_grad=True)
    f_nv = torch.tensor([[0.6, 0.8]], requires_grad=True)
    tau = 0.5
    out = view_invariant_memory_loss(f, f_nv, mem, labels, torch.tensor([0]), tau, negatives=8192)
    neg_nv = [0.8, -0.6, -0.8]  # f_nv . m1, m2, m3: every row of another cluster, the outlier included
    want_self = _nce(0.6, neg_nv, tau)
    want_orig = _nce(1.0, neg_nv, tau)  # the public code: the novel view's negative logits in all three terms
    assert out["memory_self"].item() == pytest.approx(want_self, rel=1e-5)
    assert out["memory_cluster_novel"].item() == pytest.approx(want_self, rel=1e-5)  # its cluster is itself
    assert out["memory_cluster_original"].item() == pytest.approx(want_orig, rel=1e-5)
    assert out["memory"].item() == pytest.approx(2 * want_self + want_orig, rel=1e-5)
    assert out["negatives"].item() == 3
    own = view_invariant_memory_loss(f, f_nv, mem, labels, torch.tensor([0]), tau, 8192, negative_logits="own")
    assert own["memory_cluster_original"].item() == pytest.approx(_nce(1.0, [0.0, -1.0, 0.0], tau), rel=1e-5)
    out["memory"].backward()
    assert mem.grad is None and f.grad is not None and f_nv.grad is not None


def test_memory_loss_cluster_positive_is_a_random_member():
    mem = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    f = torch.tensor([[1.0, 0.0]])
    f_nv = torch.tensor([[1.0, 0.0]])
    tau = 1.0
    seen = set()
    torch.manual_seed(0)
    for _ in range(40):
        v = view_invariant_memory_loss(f, f_nv, mem, labels, torch.tensor([0]), tau, 10)["memory_cluster_novel"]
        seen.add(round(v.item(), 5))
    # positive m0 (f.m0 = 1) or m1 (f.m1 = 0), the image itself allowed; negative m2 (-1)
    assert seen == {round(_nce(1.0, [-1.0], tau), 5), round(_nce(0.0, [-1.0], tau), 5)}


def test_negatives_are_capped_per_row_by_what_exists():
    # cluster 0 = rows 0-2 (identical), row 3 its own cluster: row 0 has 1 negative, row 3 has 3
    mem = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 0, 1])
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    f_nv = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    tau = 0.5
    for k in (2, 8192):  # more than one row has: the public code would stack rows of unequal length and crash
        out = view_invariant_memory_loss(f, f_nv, mem, labels, torch.tensor([0, 3]), tau, k)
        kk = min(k, 3)
        assert out["negatives"].item() == kk
        row0 = 2 * _nce(0.6, [0.8], tau) + _nce(1.0, [0.8], tau)
        row3 = 2 * _nce(0.6, [0.8] * kk, tau) + _nce(1.0, [0.8] * kk, tau)
        assert out["memory"].item() == pytest.approx((row0 + row3) / 2, rel=1e-5)


def test_sample_per_row_draws_only_allowed_columns_without_repeats():
    torch.manual_seed(1)
    mask = torch.rand(6, 50) < 0.3
    mask[2] = False
    idx, valid = sample_per_row(mask, 7)
    assert idx.shape == (6, 7)
    for r in range(6):
        picked = idx[r][valid[r]].tolist()
        assert len(picked) == min(7, int(mask[r].sum())) and len(set(picked)) == len(picked)
        assert all(bool(mask[r, c]) for c in picked)


def test_memory_loss_refuses_an_outlier_in_the_batch():
    mem = F.normalize(torch.randn(4, 3), dim=1)
    with pytest.raises(ValueError, match="outlier"):
        view_invariant_memory_loss(mem[:1], mem[:1], mem, torch.tensor([-1, 0, 0, 1]), torch.tensor([0]))


# ------------------------------------------------------------------ structure views
def _grey_png(path: Path, value: int, h: int = 16, w: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(torch.full((1, h, w), value, dtype=torch.uint8), str(path))


def test_mesh_views_read_the_authors_layout(tmp_path):
    from unreid.data.structure import StructureViews, check_mesh_dir

    img = tmp_path / "bounding_box_train" / "0001_c1s1_000151_01.jpg"
    mesh = tmp_path / "mesh"
    _grey_png(mesh / "train" / "render" / img.name, 255)
    for d in (45, 90):
        _grey_png(mesh / "train" / f"render_{d}" / img.name, d)
    sample = Sample(str(img), -1, 0)
    check_mesh_dir(mesh, [sample], [45, 90])
    views = StructureViews(lambda x: x.float(), (32, 16), "mesh", str(mesh), [45, 90])
    got = set()
    torch.manual_seed(0)
    for _ in range(20):
        out = views(torch.zeros(3, 8, 4, dtype=torch.uint8), sample)
        assert out["mesh"].shape == (1, 32, 16) and torch.allclose(out["mesh"], torch.ones(1, 32, 16))  # 255 -> 1
        got.add(round(out["mesh_nv"].mean().item(), 3))
    assert got == {round((d / 255 - 0.5) / 0.5, 3) for d in (45, 90)}  # both novel angles, normalised 0.5 / 0.5
    with pytest.raises(FileNotFoundError, match="render_135"):
        check_mesh_dir(mesh, [sample], [45, 90, 135])


def test_mesh_views_find_msmt_style_nested_names(tmp_path):
    from unreid.data.structure import find_mesh

    img = tmp_path / "train" / "0001" / "0001_011_01_0303morning_0015_0.jpg"
    target = tmp_path / "mesh" / "train" / "render" / "0001" / img.name
    _grey_png(target, 10)
    assert find_mesh(tmp_path / "mesh", str(img), "render") == target


def test_edge_stand_in_gives_two_structure_views():
    from unreid.data.structure import StructureViews, sobel_edges

    img = torch.zeros(3, 32, 16, dtype=torch.uint8)
    img[:, :, 8:] = 200  # one vertical edge
    views = StructureViews(lambda x: x.float() / 255, (32, 16), "edges")
    out = views(img, Sample("x.jpg", -1, 0))
    assert out["img"].shape == (3, 32, 16) and out["mesh"].shape == out["mesh_nv"].shape == (1, 32, 16)
    assert out["mesh"].min() >= -1 and out["mesh"].max() <= 1
    edge = sobel_edges(torch.zeros(1, 8, 8).index_fill_(2, torch.arange(4, 8), 1.0))
    assert edge[0, :, 3:5].min() == 1.0 and edge[0, :, :2].max() == 0.0 and edge[0, :, 6:].max() == 0.0


# ------------------------------------------------------------------ runs
def _gcl(root, out, **extra) -> list[str]:
    o = {"method.name": "gcl", "method.gcl.generator_epochs": 1, "method.gcl.joint_epochs": 2,
         "method.gcl.gen_dim": 8, "method.gcl.mlp_dim": 32, "method.gcl.dis_dim": 8, "method.gcl.image_every": 2,
         "method.gcl.negatives": 64, "data.batch_size": 8, "optim.iters": 3, "pseudo_labels.rho": 0.02,
         "pseudo_labels.k1": 10, "pseudo_labels.min_samples": 2, "eval.every": 1}
    o.update(extra)
    return tiny_overrides(root, out, **o)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def gcl_full_run(synthetic_root, tmp_path_factory):
    """One GCL run: 1 epoch of stage 2, 2 of stage 3, 6 steps each; the encoder's and generator's weights at the
    start and at the end of stage 2, the reconstruction loss of every step, and how often the memory was filled."""
    from unreid.engine.hooks import Hook
    from unreid.engine.trainer import Trainer
    from unreid.memory.instance import InstanceMemory

    out = tmp_path_factory.mktemp("gcl") / "full"
    cfg = load_config(None, _gcl(synthetic_root, out, **{"optim.named.generator.step_size": 1,
                                                         "optim.named.generator.lr": 1e-3, "optim.iters": 6}))
    tr = Trainer(cfg)
    seen: dict = {"recon": [], "start": (_state(tr.model), _state(tr.method.generator)), "fills": 0}

    class Watch(Hook):
        def after_step(self, trainer, vals):
            seen["recon"].append(vals["recon"])

        def after_stage(self, trainer, stage):
            if stage.name == "generator":
                seen["end_stage2"] = (_state(trainer.model), _state(trainer.method.generator))
                seen["labels_stage2"] = trainer.method.labels

    tr.hooks.append(Watch())
    orig_build = InstanceMemory.build

    def counting_build(self, *a, **k):
        seen["fills"] += 1
        return orig_build(self, *a, **k)

    InstanceMemory.build = counting_build
    try:
        tr.train()
    finally:
        InstanceMemory.build = orig_build
    seen["end"] = _state(tr.model)
    seen["out"] = out
    return seen


@pytest.mark.slow
def test_stage2_trains_the_generator_only_then_stage3_trains_all(gcl_full_run):
    run = gcl_full_run
    (enc0, gen0), (enc1, gen1) = run["start"], run["end_stage2"]
    assert all(torch.equal(enc0[k], enc1[k]) for k in enc0), "stage 2 must leave the identity encoder untouched"
    assert any(not torch.equal(gen0[k], gen1[k]) for k in gen0)
    assert run["labels_stage2"] is None  # no labelling in stage 2
    assert any(not torch.equal(enc1[k], v) for k, v in run["end"].items())  # stage 3 trains the encoder
    assert len(run["recon"]) == 18 and all(np.isfinite(run["recon"]))
    assert list((run["out"] / "images").glob("*.png"))  # the image grid every 2 steps
    assert run["fills"] == 1  # the memory is filled at the first labelling of stage 3 only
    rows = [r for r in metrics_rows(run["out"]) if r["epoch"] >= 0]
    assert [r["stage"] for r in rows] == ["generator", "joint", "joint"]
    assert "test" not in rows[0] and "pseudo_labels" not in rows[0]  # frozen encoder: no evaluation, no labels
    assert all("memory" in r["losses"] and "pseudo_labels" in r and "test" in r for r in rows[1:])
    lr = [r["lrs"] for r in rows]
    assert lr[0] == pytest.approx({"model": 3.5e-4, "generator": 1e-3, "discriminator": 1e-4})  # not stepped in stage 2
    assert [x["generator"] for x in lr[1:]] == pytest.approx([1e-4, 1e-5])  # stepped in stage 3 (step_size 1 here)


@pytest.mark.slow
def test_gcl_resumes_exactly_inside_stage3(gcl_full_run, synthetic_root, tmp_path):
    from unreid.engine.trainer import Trainer

    over = {"optim.named.generator.step_size": 1, "optim.named.generator.lr": 1e-3, "optim.iters": 6}
    Trainer(load_config(None, _gcl(synthetic_root, tmp_path / "part", **over, **{"method.gcl.joint_epochs": 1}))).train()
    Trainer(load_config(None, _gcl(synthetic_root, tmp_path / "part", **over)), resume=True).train()
    a = torch.load(gcl_full_run["out"] / "checkpoint_last.pth", weights_only=False)
    b = torch.load(tmp_path / "part" / "checkpoint_last.pth", weights_only=False)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for name in ("generator", "discriminator"):
        for k, v in a["modules"][name].items():
            assert torch.equal(v, b["modules"][name][k]), (name, k)
    assert torch.equal(a["method"]["memories"]["instances"]["features"], b["method"]["memories"]["instances"]["features"])
    assert torch.equal(a["method"]["labels"], b["method"]["labels"])


def test_warm_start_says_what_it_loaded(synthetic_root, tmp_path):
    from tests.conftest import write_checkpoint
    from unreid.methods.gcl import warm_start
    from unreid.models import build_model

    base = load_config(None, tiny_overrides(synthetic_root, tmp_path / "a"))
    ckpt = write_checkpoint(base, tmp_path / "cc.pth", seed=3)
    gcl_cfg = load_config(None, tiny_overrides(synthetic_root, tmp_path / "b", **{"model.embedding_dim": 16,
                                                                                   "model.pooling": "avg"}))
    model = build_model(gcl_cfg.model)
    rep = warm_start(model, ckpt)
    saved = torch.load(ckpt, weights_only=False)["model"]
    assert "embedding.weight" in rep["initialised"] and "backbone.conv1.weight" in rep["loaded"]
    assert "neck.bn.weight" in rep["shape_mismatch"] or any("neck" in k for k in rep["shape_mismatch"])
    assert torch.equal(model.state_dict()["backbone.conv1.weight"], saved["backbone.conv1.weight"])
    torch.save({"model": {"other.weight": torch.zeros(3)}}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="none of its 1 tensors"):
        warm_start(model, tmp_path / "bad.pth")


def test_gcl_config_errors(synthetic_root, tmp_path):
    with pytest.raises(ConfigError, match="mesh_dir"):
        load_config(None, _gcl(synthetic_root, tmp_path / "x", **{"method.gcl.structure": "mesh"}))
    with pytest.raises(ConfigError, match="multiples of 45"):
        load_config(None, _gcl(synthetic_root, tmp_path / "x", **{"method.gcl.novel_degrees": "[30]"}))


def test_shuffle_sampler_yields_each_clustered_sample_once_per_pass():
    from unreid.data.samplers import build_sampler

    labels = np.array([0, -1, 1, 1, -1, 2, 0, 3])
    s = build_sampler(labels, np.zeros(8, dtype=int), batch_size=4, num_instances=2, kind="shuffle", seed=5)
    first, second = list(s), list(s)
    assert sorted(first) == sorted(second) == [0, 2, 3, 5, 6, 7] and len(s) == 6
    again = build_sampler(labels, np.zeros(8, dtype=int), 4, 2, kind="shuffle", seed=5)
    assert list(again) == first  # the same seed, the same passes
    with pytest.raises(ValueError, match="no clustered sample"):
        build_sampler(np.full(3, -1), np.zeros(3, dtype=int), 4, 2, kind="shuffle")


def test_published_configs_carry_the_public_codes_values():
    root = Path(__file__).resolve().parents[1] / "configs" / "gcl"
    want = {"market1501": (40, 0.002), "dukemtmc": (20, 0.002), "msmt17": (20, 0.0012)}
    for name, (joint, rho) in want.items():
        c = load_config(root / f"{name}.yaml")
        g = c.method.gcl
        assert (c.method.name, c.model.backbone, c.model.embedding_dim, c.model.pooling) == ("gcl", "resnet50", 512, "avg")
        assert (c.data.height, c.data.width, c.data.batch_size, c.data.sampler) == (256, 128, 16, "shuffle")
        assert (c.data.flip_p, c.data.random_erasing_p, c.data.pad) == (0.0, 0.0, 0)  # no augmentation
        assert (g.generator_epochs, g.joint_epochs, c.pseudo_labels.rho, c.pseudo_labels.k1) == (40, joint, rho, 30)
        assert (g.memory_momentum, g.memory_temperature, g.negatives) == (0.2, 0.04, 8192)
        assert (g.recon_weight, g.cycle_weight, g.feature_weight, g.gan_weight, g.memory_weight) == (5, 5, 5, 1, 1)
        assert (c.optim.iters, c.eval.select) == (0, "last")


def test_warmup_config_trains_stage1_in_the_same_command(synthetic_root, tmp_path):
    import yaml

    from unreid.engine.trainer import Trainer

    warm = dict(kv.split("=", 1) for kv in tiny_overrides(synthetic_root, tmp_path / "ignored",
                                                         **{"optim.epochs": 1, "optim.iters": 2, "eval.every": 5}))
    tree: dict = {}
    for key, value in warm.items():
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    (tmp_path / "warm.yaml").write_text(yaml.safe_dump(tree))
    out = tmp_path / "gcl"
    cfg = load_config(None, _gcl(synthetic_root, out, **{"method.gcl.warmup_config": str(tmp_path / "warm.yaml"),
                                                         "method.gcl.generator_epochs": 1,
                                                         "method.gcl.joint_epochs": 0, "optim.iters": 1}))
    tr = Trainer(cfg)
    ckpt = out / "warmup" / "checkpoint_last.pth"
    assert ckpt.is_file()  # stage 1 ran in <output_dir>/warmup
    saved = torch.load(ckpt, weights_only=False)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in tr.model.state_dict().items())  # the same head: all loaded
    text = (out / "train.log").read_text()  # the GCL run's log goes on after the warm-up's
    assert "GCL warm start from" in text and "stage 1 done" in text
    assert "GCL warm start" not in (out / "warmup" / "train.log").read_text()



@pytest.mark.slow
def test_stage2_steps_lower_the_generators_loss_on_a_batch(synthetic_root, tmp_path):
    """Stage-2 steps on one batch lower the generator's non-adversarial loss (5 recon + 5 cycle + 5 feature; the
    adversarial weight is 0 here: a fresh GAN's adversarial terms are not meant to fall). With a random encoder the
    appearance-code term dominates at first, so the image reconstruction alone may rise in the first steps; the
    total falls. The identity encoder stays as it was."""
    from unreid.engine.optim import Optimizers
    from unreid.methods.gcl import GCL
    from unreid.models import build_model

    torch.manual_seed(0)
    cfg = load_config(None, _gcl(synthetic_root, tmp_path / "x", **{"method.gcl.gan_weight": 0.0}))
    model = build_model(cfg.model)
    method = GCL(cfg, model, [Sample(f"{i}.jpg", -1, 0) for i in range(4)])
    optim = Optimizers(method.param_groups(), cfg.optim)
    stage = method.stages()[0]
    method.stage = stage
    model.eval().requires_grad_(False)
    enc = _state(model)
    g = torch.Generator().manual_seed(1)
    batch = {"img": torch.randn(4, 3, 64, 32, generator=g), "mesh": torch.rand(4, 1, 64, 32, generator=g) * 2 - 1,
             "mesh_nv": torch.rand(4, 1, 64, 32, generator=g) * 2 - 1, "index": torch.arange(4),
             "camid": torch.zeros(4, dtype=torch.long)}
    losses = []
    for _ in range(12):
        out = method.step(batch, 0)
        method.optimize_step(out, optim, stage)
        losses.append(float(out.losses["loss"]))
    assert losses[-1] < 0.9 * losses[0] and np.mean(losses[-3:]) < np.mean(losses[:3])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in enc.items())


@pytest.mark.slow
def test_stage3_starts_from_a_stage2_checkpoint(gcl_full_run, synthetic_root, tmp_path):
    """``method.gcl.stage2_checkpoint``: a stage-3-only run starts from everything a finished stage 2 left (encoder,
    generator, discriminator, Adam's moments), keeps its own learning rates, and then trains all three; a checkpoint
    of another method, or one written in stage 3, is refused with the file named."""
    from tests.conftest import write_checkpoint
    from unreid.engine.trainer import Trainer

    stage2 = tmp_path / "stage2"
    Trainer(load_config(None, _gcl(synthetic_root, stage2, **{"method.gcl.joint_epochs": 0}))).train()
    saved = torch.load(stage2 / "checkpoint_last.pth", weights_only=False)
    assert saved["stage"] == "generator"
    out = tmp_path / "stage3"
    tr = Trainer(load_config(None, _gcl(synthetic_root, out, **{
        "method.gcl.generator_epochs": 0, "method.gcl.joint_epochs": 1, "seed": 7,
        "method.gcl.stage2_checkpoint": str(stage2 / "checkpoint_last.pth"), "optim.named.generator.lr": 5e-5})))
    for name, module in (("generator", tr.method.generator), ("discriminator", tr.method.discriminator)):
        assert all(torch.equal(v, saved["modules"][name][k]) for k, v in module.state_dict().items()), name
    assert all(torch.equal(v, saved["model"][k]) for k, v in tr.model.state_dict().items())
    for name in ("generator", "discriminator"):
        own = tr.optim.optimizers[name].state_dict()
        old = saved["optim"]["optimizers"][name]
        assert own["state"] and set(own["state"]) == set(old["state"]), name  # Adam has stepped in stage 2
        for i, st in old["state"].items():
            assert torch.equal(own["state"][i]["exp_avg"], st["exp_avg"]), (name, i)
    assert tr.optim.lr("generator") == pytest.approx(5e-5)  # this run's rate, not stage 2's 1e-4
    start = _state(tr.model)
    tr.train()
    rows = [r for r in metrics_rows(out) if r["epoch"] >= 0]
    assert len(rows) == 1 and "test" in rows[0] and "memory" in rows[0]["losses"]  # stage 3 only
    assert any(not torch.equal(v, start[k]) for k, v in tr.model.state_dict().items())  # stage 3 trains the encoder

    with pytest.raises(ValueError, match="not a GCL checkpoint"):
        Trainer(load_config(None, _gcl(synthetic_root, tmp_path / "x1", **{
            "method.gcl.generator_epochs": 0, "method.gcl.stage2_checkpoint": str(
                write_checkpoint(load_config(None, tiny_overrides(synthetic_root, tmp_path / "cc")), tmp_path / "cc.pth"))})))
    with pytest.raises(ValueError, match="not at the end of stage 2"):
        Trainer(load_config(None, _gcl(synthetic_root, tmp_path / "x2", **{
            "method.gcl.generator_epochs": 0,
            "method.gcl.stage2_checkpoint": str(gcl_full_run["out"] / "checkpoint_last.pth")})))
    with pytest.raises(FileNotFoundError, match="no such file"):
        Trainer(load_config(None, _gcl(synthetic_root, tmp_path / "x3", **{
            "method.gcl.stage2_checkpoint": str(tmp_path / "missing.pth")})))
    with pytest.raises(ConfigError, match="one of init_checkpoint"):
        load_config(None, _gcl(synthetic_root, tmp_path / "x4", **{
            "method.gcl.init_checkpoint": "a.pth", "method.gcl.stage2_checkpoint": "b.pth"}))


@pytest.mark.slow
def test_gcl_clusters_its_memory_with_the_camera_aware_labelling(synthetic_root, tmp_path, monkeypatch):
    """The camera-aware labelling options reach GCL's stage 3 (gcl.py's error for method.camera.proxies says they
    work): per-camera standardisation of the memory rows (method.camera.neighbourhood=standardize), per-camera
    clustering with cross-camera matching (method.camera.matching), camera-based BN in the encoder."""
    from tests.test_camera_aware import _spy_labeller
    from unreid.engine.trainer import Trainer
    from unreid.models.camera_bn import camera_bn_layers
    from unreid.pseudo_labels.camera import camera_standardize

    fed = _spy_labeller(monkeypatch)  # what every PseudoLabeler.fit receives
    cfg = load_config(None, _gcl(synthetic_root, tmp_path / "run", **{
        "method.gcl.generator_epochs": 0, "method.camera.neighbourhood": "standardize",
        "method.camera.matching": True, "model.camera_bn": True, "pseudo_labels.eps": 0.3, "eval.every": 10}))
    tr = Trainer(cfg)
    given: list[torch.Tensor] = []
    label = tr.method.pseudo_label

    def spy_label(epoch, features):
        given.append(features.clone())
        return label(epoch, features)

    tr.method.pseudo_label = spy_label
    tr.train()
    cams = np.asarray(tr.method.camids)
    assert camera_bn_layers(tr.model)
    # two labellings (one per stage-3 epoch), each clustering, camera by camera, the standardised rows of what GCL
    # handed over
    cameras = np.unique(cams)
    assert len(given) == 2 and len(fed) == 2 * len(cameras)
    for i, raw in enumerate(given):
        std = camera_standardize(raw, cams)
        for j, c in enumerate(cameras):
            clustered = fed[i * len(cameras) + j]
            torch.testing.assert_close(clustered, std[cams == c])
            assert (clustered - raw[cams == c]).abs().max() > 1e-2
    # each epoch reports the per-camera clustering and the matching, beside GCL's memory loss
    rows = [r for r in metrics_rows(tmp_path / "run") if r["epoch"] >= 0]
    assert len(rows) == 2
    for r in rows:
        pl = r["pseudo_labels"]
        assert len(pl["per_camera_clusters"]) == len(cameras) and "matched_pairs" in pl
        assert "memory" in r["losses"]
