"""GCL: joint generative and contrastive learning for unsupervised person re-ID (Chen, Wang, Lagadec,
Dantcheva, Bremond, CVPR 2021). Reference: chenhao2345/GCL @88aed52 (``examples/main.py``, ``gcl/trainer.py``,
``gcl/models/memory.py``, ``configs/latest.yaml``); ANCHORS.md "GCL"; what differs on purpose:
docs/methods/gcl.md.

Three modules share the identity encoder (the run's re-ID model, ``model``): the view ``generator``
(:class:`unreid.models.generator.ViewGenerator`: structure encoder + AdaIN decoder driven by the encoder's
4-stripe appearance code) and the multi-scale ``discriminator``. Each step (``gcl/trainer.py``
``DGNet_Trainer.forward``):

* ``x_recon = G(s(x), a(x))``, ``x_nv = G(s_nv, a(x))`` (novel view), ``x_cyc = G(s(x), a(x_nv))`` (cycle), with
  ``s`` the structure code of the original / novel structure view (:mod:`unreid.data.structure`) and ``a`` the
  appearance code of an image;
* the discriminator's step first: LSGAN on the three generated images against ``x``, plus the squared-gradient
  penalty on ``x`` (``dis_update``);
* then the generator's (and in stage 3 the encoder's) step on ``gan_w (adv(x_recon) + adv(x_nv) + adv(x_cyc))
  + 5 |x_recon - x| + 5 |x_cyc - x| + 5 (|a(x_recon) - a(x)| + |a(x_cyc) - a(x)|) + memory`` (``gen_update``), the
  memory term (:func:`unreid.losses.gcl.view_invariant_memory_loss`) only in stage 3.

Stages (docs/methods/gcl.md):

1. warm start of the identity encoder (``method.gcl.init_checkpoint``, or ``warmup_config`` trained first in
   ``<output_dir>/warmup``): outside this run's epochs;
2. ``generator`` (``generator_epochs``, 40): G and D train, the encoder is frozen; no labels, every image once
   per epoch in a random order; constant learning rates and no evaluation (the encoder does not change);
3. ``joint`` (``joint_epochs``, 20): everything trains; the instance memory is filled once from the encoder's
   features at the stage's first labelling, and each epoch the pseudo-labels come from clustering **the memory**
   (rho-adaptive eps: ``pseudo_labels.rho``); only the clustered images are shuffled into batches.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unreid.config import ConfigError
from unreid.engine.hooks import Hook
from unreid.engine.optim import OptimizerSpec
from unreid.losses.gcl import l1, view_invariant_memory_loss
from unreid.memory.base import Memory
from unreid.memory.instance import InstanceMemory
from unreid.methods.base import Method, Stage, StepOutput, register_method
from unreid.pseudo_labels.base import PseudoLabels

log = logging.getLogger("unreid")

GENERATOR_STAGE, JOINT_STAGE = "generator", "joint"
#: the generated images the discriminator judges (``gcl/trainer.py``: recon, novel view, cycle)
FAKES = ("x_recon", "x_nv", "x_cyc")


def warm_start(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Initialise ``model`` from the tensors of ``path`` whose names and shapes match, and say what was not.

    ``path`` may be an unreid checkpoint (its ``"model"`` entry: ``checkpoint_last.pth``, ``model_best.pth``) or a
    plain state dict (``"state_dict"`` entry or top level; a ``"module."`` prefix is removed), as the public
    code's ``--init``. Unlike its ``load_state_dict(..., strict=False)``, nothing is silent: the names loaded,
    initialised here (in the model, not in the file or of another shape) and ignored (in the file only) are
    returned and logged.

    Returns:
        ``{"loaded": [...], "initialised": [...], "ignored": [...], "shape_mismatch": [...]}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: no tensor of the file matches the model (another architecture; the message says which
            names the file holds).
    """
    from unreid.engine.checkpoint import load_checkpoint

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"method.gcl.init_checkpoint={path}: no such file")
    ckpt = load_checkpoint(p)
    state = ckpt.get("model") or ckpt.get("state_dict") or ckpt
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    own = model.state_dict()
    loaded = [k for k, v in state.items() if k in own and own[k].shape == v.shape]
    mismatch = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    ignored = [k for k in state if k not in own]
    if not loaded:
        raise ValueError(f"{path}: none of its {len(state)} tensors matches the identity encoder (the file holds e.g. "
                         f"{sorted(state)[:3]}, the model e.g. {sorted(own)[:3]}); warm-start from a checkpoint of the "
                         "same backbone (model.backbone)")
    model.load_state_dict({k: state[k] for k in loaded}, strict=False)
    initialised = [k for k in own if k not in set(loaded)]
    report = {"loaded": loaded, "initialised": initialised, "ignored": ignored, "shape_mismatch": mismatch}

    def some(names: list[str]) -> str:
        return ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "") if names else "none"

    log.info("GCL warm start from %s: loaded %d of the model's %d tensors; initialised here (not in the file, or "
             "another shape): %s; in the file but not used: %s", path, len(loaded), len(own), some(initialised),
             some(ignored + mismatch))
    return report


class ImageGridHook(Hook):
    """Every ``every`` steps, a PNG grid of GCL's images in ``<output_dir>/images/`` (``image_display_iter``):
    rows input / original structure / reconstruction / novel structure / novel view / cycle, up to 8 columns."""

    priority = 50

    def __init__(self, method: GCL, every: int) -> None:
        self.method, self.every, self.count = method, int(every), 0

    def after_step(self, trainer: Any, losses: dict[str, float]) -> None:
        from unreid.engine import dist

        self.count += 1
        if self.every <= 0 or self.count % self.every or not dist.is_main() or self.method.last_images is None:
            return
        path = Path(trainer.output_dir) / "images" / f"epoch{trainer.epoch:03d}_step{self.count:07d}.png"
        self.method.save_grid(path)


@register_method("gcl")
class GCL(Method):
    """GCL on the shared engine (module docstring; :class:`Method` for the contract).

    Raises:
        unreid.config.ConfigError: an architecture without the feature map GCL's appearance code needs (``model.arch``
            must be ``reid``), the camera-aware proxies (not supported with GCL), or a run under torchrun.
        FileNotFoundError: ``structure=mesh`` with views missing from ``mesh_dir``.
    """

    config_section = "gcl"
    memory_name = "instances"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from unreid.engine import dist
        from unreid.models.generator import MultiScaleDiscriminator, ViewGenerator

        s = self.settings
        if "return_map" not in inspect.signature(type(self.model).forward).parameters:
            raise ConfigError(f"GCL needs the encoder's feature map for its appearance code; model.arch="
                              f"{self.cfg.model.arch!r} does not give it: use model.arch=reid")
        if self.cfg.method.camera.proxies:
            raise ConfigError("GCL does not support method.camera.proxies (its memory is an instance memory); "
                              "the camera-aware labelling options (pseudo_labels, method.camera.neighbourhood) work")
        if dist.is_dist():
            raise ConfigError("GCL under torchrun is not supported yet: run it in one process (docs/methods/gcl.md)")
        self.structure = s.structure if s.structure != "auto" else ("mesh" if s.mesh_dir else "edges")
        if self.structure == "mesh":
            from unreid.data.structure import check_mesh_dir

            check_mesh_dir(s.mesh_dir, self.train_set, s.novel_degrees)
        else:
            log.info("GCL structure views: the edge-map stand-in (method.gcl.structure=edges), not the paper's "
                     "rendered SMPL meshes (docs/methods/gcl.md)")
        channels = int(self.model.backbone.out_channels)
        self.generator = ViewGenerator(channels, parts=s.parts, in_channels=1, dim=s.gen_dim, mlp_dim=s.mlp_dim)
        self.discriminator = MultiScaleDiscriminator(dim=s.dis_dim, num_scales=s.dis_scales,
                                                     gp_weight=s.gp_weight)
        self.generator.to(self.device)
        self.discriminator.to(self.device)
        #: detached images of the last step for the PNG grid (``method.gcl.image_every``)
        self.last_images: dict[str, Tensor] | None = None
        self.warm_start_report: dict[str, list[str]] | None = None

    # ------------------------------------------------------------------ modules, optimisers, stages
    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "generator": self.generator, "discriminator": self.discriminator}

    def param_groups(self) -> dict[str, OptimizerSpec]:
        """``model``: SGD, momentum 0.9, Nesterov, lr 3.5e-4 (``lr2``), weight decay 5e-4; ``generator`` and
        ``discriminator``: Adam, lr 1e-4 (``lr_g`` / ``lr_d``), betas (0, 0.999) (``beta1`` / ``beta2``), weight
        decay 5e-4; each x0.1 after 10 epochs (``step_size: 10``, ``gamma`` / ``gamma2: 0.1``), stepped in stage 3
        only (``examples/main.py`` calls ``update_learning_rate`` only there). ``optim.named.<name>`` overrides."""
        sched = {"step_size": 10, "gamma": 0.1, "milestones": []}
        adam = {"optimizer": "adam", "lr": 1e-4, "betas": (0.0, 0.999), "weight_decay": 5e-4, **sched}
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        return {"model": OptimizerSpec(trainable, {"optimizer": "sgd", "lr": 3.5e-4, "momentum": 0.9, "nesterov": True,
                                                   "weight_decay": 5e-4, **sched}),
                "generator": OptimizerSpec(list(self.generator.parameters()), dict(adam)),
                "discriminator": OptimizerSpec(list(self.discriminator.parameters()), dict(adam))}

    def stages(self) -> list[Stage]:
        s, out = self.settings, []
        if s.generator_epochs > 0:
            out.append(Stage(GENERATOR_STAGE, int(s.generator_epochs), train=("generator", "discriminator"),
                             optimizers=("generator", "discriminator"), losses=("gan", "recon"), sampler="shuffle",
                             relabel=False, needs_labels=False, step_lr=False, evaluate=False))
        if s.joint_epochs > 0:
            out.append(Stage(JOINT_STAGE, int(s.joint_epochs), losses=("gan", "recon", "memory"), sampler="shuffle"))
        if not out:
            raise ConfigError("method.gcl: generator_epochs and joint_epochs are both 0: nothing to train")
        return out

    @property
    def joint(self) -> bool:
        return self.stage is not None and self.stage.name == JOINT_STAGE

    def hooks(self) -> list[Hook]:
        return [ImageGridHook(self, self.settings.image_every)] if self.settings.image_every > 0 else []

    def on_fresh_start(self, optim: Any = None) -> None:
        """Stage 1: the warm start (``init_checkpoint``, or ``warmup_config`` trained first); or, with
        ``stage2_checkpoint``, everything stage 2 left (:meth:`start_from_stage2`)."""
        s = self.settings
        if s.stage2_checkpoint:
            self.start_from_stage2(s.stage2_checkpoint, optim)
            return
        path = s.init_checkpoint
        if s.warmup_config:
            path = str(run_warmup(s.warmup_config, Path(self.cfg.output_dir) / "warmup", self.cfg))
        if path:
            self.warm_start_report = warm_start(self.model, path)
        else:
            log.warning("GCL without a warm start (method.gcl.init_checkpoint / warmup_config unset): the identity "
                        "encoder starts from its ImageNet weights (the paper warm-starts it: docs/methods/gcl.md)")

    def start_from_stage2(self, path: str | Path, optim: Any = None) -> None:
        """Start from the end of stage 2: the identity encoder, generator and discriminator of ``path`` (a GCL
        run's ``checkpoint_last.pth`` written in stage 2), and the moments of their optimisers (Adam's averages;
        the encoder's SGD has none yet) into ``optim`` (:class:`unreid.engine.optim.Optimizers`). This run's own
        learning rates, betas and weight decay are kept, and its schedules start fresh, as the public code's
        stage 3 (``train_stage3_*.sh``: ``--resume --stage 3``; ``gcl/trainer.py`` ``resume`` loads the
        modules and ``optimizer.pt``, and re-creates the schedulers). Nothing else (RNG, epoch, labels) carries
        over: with ``generator_epochs: 0``, seeds of stage 3 share one stage 2.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a GCL checkpoint, not written in stage 2, or its modules or optimisers have other
                shapes than this config's (the message names the file and what differs).
        """
        from unreid.engine.checkpoint import load_checkpoint

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"method.gcl.stage2_checkpoint={path}: no such file; give the "
                                    "checkpoint_last.pth of a GCL run whose stage 2 ('generator') has finished")
        ckpt = load_checkpoint(p)
        modules = ckpt.get("modules") or {}
        if "model" not in ckpt or not {"generator", "discriminator"} <= set(modules):
            raise ValueError(f"{path} is not a GCL checkpoint (it holds no generator and discriminator); give the "
                             "checkpoint_last.pth of a GCL run, or warm-start the encoder with "
                             "method.gcl.init_checkpoint instead")
        if ckpt.get("stage") != GENERATOR_STAGE:
            raise ValueError(f"{path} was written in stage {ckpt.get('stage')!r}, not at the end of stage 2 "
                             f"({GENERATOR_STAGE!r}); continue that run with --resume instead")
        planned = (((ckpt.get("config") or {}).get("method") or {}).get("gcl") or {}).get("generator_epochs")
        done = int(ckpt.get("epoch", 0))  # epochs finished
        if planned is not None and done < int(planned):
            log.warning("%s: stage 2 stopped after %d of its %s epochs; stage 3 starts from there", path, done,
                        planned)
        try:
            self.model.load_state_dict(ckpt["model"])
            self.generator.load_state_dict(modules["generator"])
            self.discriminator.load_state_dict(modules["discriminator"])
        except RuntimeError as e:
            raise ValueError(f"{path}: its modules do not fit this config's (model.backbone, model.camera_bn, "
                             f"method.gcl.gen_dim / mlp_dim / dis_dim / dis_scales must be stage 2's): {e}") from e
        moments = []
        saved = ((ckpt.get("optim") or {}).get("optimizers")) or {}
        for name in ("model", "generator", "discriminator"):
            if optim is None or name not in saved or name not in optim.optimizers:
                continue
            opt, old = optim.optimizers[name], saved[name]
            own = opt.state_dict()["param_groups"]
            if [len(g["params"]) for g in own] != [len(g["params"]) for g in old["param_groups"]]:
                raise ValueError(f"{path}: optimiser {name!r} holds other parameters than this run's; stage 3 "
                                 "needs the modules of stage 2's config")
            opt.load_state_dict({"state": old["state"], "param_groups": own})
            if old["state"]:
                moments.append(name)
        log.info("GCL stage 3 from the stage-2 checkpoint %s (%d epoch(s) of stage 2): identity encoder, generator "
                 "and discriminator loaded; optimiser moments of %s; this run's learning rates and schedules",
                 path, done, ", ".join(moments) or "none")

    # ------------------------------------------------------------------ data
    def train_transform(self) -> Any:
        """:class:`unreid.data.structure.StructureViews` around the test transform (GCL: resize + normalise, no
        augmentation)."""
        from unreid.data.structure import StructureViews
        from unreid.data.transforms import build_test_transform

        s, d = self.settings, self.cfg.data
        return StructureViews(build_test_transform(d), (d.height, d.width), self.structure, s.mesh_dir,
                              s.novel_degrees)

    # ------------------------------------------------------------------ features, labels, memory
    def extract(self, samples: list[Any], extractor: Any) -> dict[str, Tensor]:
        """The encoder's features at the first labelling; afterwards the instance memory's rows (GCL clusters
        the memory, ``examples/main.py``: ``cf = trainer.module.memory.features.clone()``)."""
        mem = self.memories.get(self.memory_name)
        if isinstance(mem, InstanceMemory) and mem.features is not None:
            return {"global": mem.view(0).detach().cpu()}
        return {"global": extractor(self.model, samples)}

    def memory_names(self) -> list[str]:
        return [self.memory_name]

    def new_memory(self, name: str) -> Memory:
        if name == self.memory_name:
            return InstanceMemory("global", "features", self.settings.memory_momentum, self.device)
        return super().new_memory(name)

    def build_memories(self, epoch: int, features: dict[str, Tensor], labels: PseudoLabels) -> None:
        """Fill the instance memory once (its first labelling); later only its labels change."""
        mem = self.memories.get(self.memory_name)
        if isinstance(mem, InstanceMemory) and mem.features is not None:
            mem.labels = torch.as_tensor(np.asarray(labels.labels), dtype=torch.long, device=self.device)
            return
        mem = self.new_memory(self.memory_name)
        mem.build(features, labels, self.memory_context(epoch))
        self.memories = {self.memory_name: mem}

    # ------------------------------------------------------------------ training
    def encode(self, img: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(feature (B, d) L2-normalised, appearance code (B, parts, C))`` of ``img`` by the identity encoder,
        with the batch's cameras (camera-based BN)."""
        from unreid.models.generator import appearance_code

        cams = batch.get("camid")
        f, fmap = self.model(img, camids=None if cams is None else cams.to(self.device), return_map=True)
        return f, appearance_code(fmap, self.settings.parts)

    def training_step(self, batch: dict[str, Tensor], epoch: int = 0) -> StepOutput:
        """The generator's losses but the adversarial terms (added in :meth:`optimize_step`, after the
        discriminator's step, as the public code), plus the memory loss in stage 3.

        Args:
            batch: ``img`` ``(B, 3, H, W)``, ``mesh`` / ``mesh_nv`` ``(B, 1, H, W)``, ``index`` / ``camid`` ``(B,)``.

        Returns:
            losses ``recon``, ``cycle``, ``feature``, (``memory`` and its three terms), ``loss``; outputs
            ``features`` (the original images' L2-normalised features: the memory update), ``real`` and the
            generated images of :data:`FAKES`.

        Raises:
            RuntimeError: stage 3 without a memory (no labelling ran).
        """
        s = self.settings
        x = batch["img"].to(self.device)
        g = self.generator
        s_org, s_nv = g.encode(batch["mesh"].to(self.device)), g.encode(batch["mesh_nv"].to(self.device))
        f, app = self.encode(x, batch)
        x_recon, x_nv = g.decode(s_org, app), g.decode(s_nv, app)
        _, app_recon = self.encode(x_recon, batch)
        f_nv, app_nv = self.encode(x_nv, batch)
        x_cyc = g.decode(s_org, app_nv)
        _, app_cyc = self.encode(x_cyc, batch)
        losses = {"recon": l1(x_recon, x), "cycle": l1(x_cyc, x), "feature": l1(app_recon, app) + l1(app_cyc, app)}
        total = s.recon_weight * losses["recon"] + s.cycle_weight * losses["cycle"] + s.feature_weight * losses["feature"]
        if self.joint:
            mem = self.memories.get(self.memory_name)
            if not isinstance(mem, InstanceMemory) or mem.features is None:
                raise RuntimeError("GCL stage 3 before its memory was filled (no labelling ran)")
            terms = view_invariant_memory_loss(F.normalize(f, dim=1), F.normalize(f_nv, dim=1), mem.view(0), mem.labels,
                                               batch["index"].to(self.device), s.memory_temperature, s.negatives,
                                               s.negative_logits)
            total = total + s.memory_weight * terms["memory"]
            losses.update(terms)
        losses = {k: v.detach() for k, v in losses.items()}
        losses["loss"] = total
        outputs = {"features": F.normalize(f, dim=1), "real": x, "x_recon": x_recon, "x_nv": x_nv, "x_cyc": x_cyc}
        if s.image_every > 0:
            self.last_images = {"input": x.detach(), "mesh": batch["mesh"].detach(), "x_recon": x_recon.detach(),
                                "mesh_nv": batch["mesh_nv"].detach(), "x_nv": x_nv.detach(), "x_cyc": x_cyc.detach()}
        return StepOutput(losses, outputs)

    def optimize_step(self, out: StepOutput, optim: Any, stage: Stage) -> None:
        """The discriminator's step, then the generator's (with the encoder's in stage 3) on the step's losses plus
        the adversarial terms of the freshly updated discriminator (``dis_update`` then ``gen_update``).
        Adds ``dis`` and ``adv`` to ``out.losses`` and makes ``out.losses["loss"]`` the generator's total."""
        s, d, o = self.settings, self.discriminator, out.outputs
        names = list(stage.optimizers or optim.names)
        if "discriminator" in names:
            optim.zero_grad(["discriminator"])
            d_loss = s.gan_weight * d.dis_loss_multi([o[k].detach() for k in FAKES], o["real"])
            optim.backward(d_loss)
            optim.step(["discriminator"])
            out.losses["dis"] = d_loss.detach()
        adv = sum(d.gen_loss(o[k]) for k in FAKES)
        total = out.losses["loss"] + s.gan_weight * adv
        rest = [n for n in names if n != "discriminator"]
        optim.zero_grad(rest)
        optim.backward(total)
        optim.step(rest)
        out.losses["adv"] = adv.detach()
        out.losses["loss"] = total.detach()

    # ------------------------------------------------------------------ images
    def save_grid(self, path: Path) -> Path:
        """Write :attr:`last_images` as a PNG grid (module :class:`ImageGridHook`); images de-normalised with
        ImageNet's mean and std, structure views from [-1, 1]."""
        from torchvision.utils import save_image

        from unreid.data.transforms import IMAGENET_MEAN, IMAGENET_STD

        assert self.last_images is not None
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        rows = []
        for key in ("input", "mesh", "x_recon", "mesh_nv", "x_nv", "x_cyc"):
            t = self.last_images[key][:8].float().cpu()
            t = (t * 0.5 + 0.5).expand(-1, 3, -1, -1) if t.shape[1] == 1 else t * std + mean
            rows.append(t.clamp(0, 1))
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(torch.cat(rows), path, nrow=rows[0].shape[0], padding=2)
        return path


def run_warmup(config: str, output_dir: Path, parent: Any) -> Path:
    """Stage 1 in the same command: train ``config`` into ``output_dir`` (resuming what is there) and return its
    ``checkpoint_last.pth``. The warm-up keeps the GCL run's data, seed and device; its log goes to its own
    ``train.log``, and the GCL run's logging is restored afterwards.

    Raises:
        FileNotFoundError: ``config`` does not exist.
    """
    from unreid.config import load_config
    from unreid.engine.trainer import Trainer

    if not Path(config).is_file():
        raise FileNotFoundError(f"method.gcl.warmup_config={config}: no such file")
    overrides = [f"output_dir={output_dir}", f"seed={parent.seed}", f"device={parent.device}",
                 f"data.name={parent.data.name}", f"data.root={parent.data.root}"]
    cfg = load_config(config, overrides)
    ckpt = output_dir / "checkpoint_last.pth"
    log.info("GCL stage 1: training the warm-up %s in %s%s", config, output_dir, " (resumed)" if ckpt.is_file() else "")
    handlers = list(log.handlers)  # the GCL run's train.log / stdout: the warm-up's Trainer replaces them
    try:
        Trainer(cfg, resume=ckpt.is_file()).train()
    finally:
        for h in list(log.handlers):
            if h not in handlers:
                log.removeHandler(h)
                h.close()
        for h in handlers:
            if h not in log.handlers:
                log.addHandler(h)  # a closed FileHandler reopens its file (append mode) at the next record
    log.info("GCL stage 1 done: %s", ckpt)
    return ckpt


__all__ = ["FAKES", "GCL", "GENERATOR_STAGE", "ImageGridHook", "JOINT_STAGE", "run_warmup", "warm_start"]
