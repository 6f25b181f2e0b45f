"""Named optimisers and schedulers with one gradient scaler (DESIGN.md, "A method's contract").

A method declares its parameter groups by name (:meth:`unreid.methods.Method.param_groups`):
``{"model": OptimizerSpec(params)}`` for Cluster Contrast and HHCL; GCL adds ``generator`` and
``discriminator``. The engine builds one optimiser and one learning-rate scheduler per name. The
settings of a name resolve, field by field, from

1. ``optim.named.<name>`` in the config (what the user set for that name),
2. the method's defaults for that name (``OptimizerSpec.defaults``, e.g. GCL's Adam with betas (0, 0.999)),
3. the ``optim`` section (Cluster Contrast's Adam, lr 3.5e-4, weight decay 5e-4, x0.1 every 20 epochs).

Optimisers: ``adam`` (``torch.optim.Adam``, ``betas``) and ``sgd`` (``torch.optim.SGD`` with ``momentum``
and ``nesterov``). Schedulers: ``StepLR(step_size, gamma)``, or ``MultiStepLR(milestones, gamma)`` when
milestones are given; both are stepped once per epoch (after the epoch, as the reference code does).
One ``torch.amp.GradScaler`` serves every optimiser (AMP on CUDA only).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

#: the fields of one optimiser's settings (``unreid.config.NamedOptimConfig``)
SETTINGS = ("optimizer", "lr", "weight_decay", "momentum", "nesterov", "betas", "step_size", "gamma", "milestones")


@dataclass
class OptimizerSpec:
    """One named parameter group a method declares.

    Attributes:
        params: the parameters this optimiser steps (those with ``requires_grad``; a parameter must
            belong to one name only).
        defaults: the method's settings for this name over the ``optim`` section (keys from
            :data:`SETTINGS`), e.g. ``{"optimizer": "adam", "betas": (0.0, 0.999), "lr": 1e-4}``.
    """

    params: list[nn.Parameter]
    defaults: dict[str, Any] = field(default_factory=dict)


def resolve_settings(name: str, optim_cfg: Any, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings of optimiser ``name``: ``optim.named.<name>`` > ``defaults`` > ``optim`` (module docstring).

    Raises:
        ValueError: ``defaults`` holds a key that is not in :data:`SETTINGS`.
    """
    defaults = dict(defaults or {})
    unknown = set(defaults) - set(SETTINGS)
    if unknown:
        raise ValueError(f"unknown optimiser settings {sorted(unknown)} for {name!r}; known: {SETTINGS}")
    named = optim_cfg.named.get(name) if optim_cfg.named else None
    out = {}
    for key in SETTINGS:
        value = getattr(named, key, None) if named is not None else None
        if value is None:
            value = defaults.get(key, getattr(optim_cfg, key))
        out[key] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def build_optimizer(params: Iterable[nn.Parameter], s: dict[str, Any]) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` or ``SGD`` over ``params`` with the resolved settings ``s`` (:func:`resolve_settings`).

    Raises:
        ValueError: an unknown ``s["optimizer"]``.
    """
    params = list(params)
    if s["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=s["lr"], weight_decay=s["weight_decay"], betas=tuple(s["betas"]))
    if s["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=s["lr"], momentum=s["momentum"], weight_decay=s["weight_decay"],
                               nesterov=bool(s["nesterov"]) and s["momentum"] > 0)
    raise ValueError(f"unknown optimizer {s['optimizer']!r}; choose 'adam' or 'sgd'")


def build_scheduler(optimizer: torch.optim.Optimizer, s: dict[str, Any]) -> torch.optim.lr_scheduler.LRScheduler:
    """``MultiStepLR(milestones, gamma)`` when ``s["milestones"]``, else ``StepLR(step_size, gamma)``."""
    if s["milestones"]:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(s["milestones"]), gamma=s["gamma"])
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=s["step_size"], gamma=s["gamma"])


class Optimizers:
    """The named optimisers, their schedulers and the gradient scaler of a run.

    Args:
        specs: name -> :class:`OptimizerSpec` (a method's :meth:`~unreid.methods.Method.param_groups`);
            names keep their order (the first is the run's main optimiser, whose lr is logged as ``lr``).
        optim_cfg: the ``optim`` config section.
        use_amp: scale the loss (``torch.amp.GradScaler("cuda")``); AMP runs on CUDA only.

    Raises:
        ValueError: no group, an empty group, or a parameter in two groups.
    """

    def __init__(self, specs: dict[str, OptimizerSpec], optim_cfg: Any, use_amp: bool = False) -> None:
        if not specs:
            raise ValueError("a method must declare at least one parameter group (Method.param_groups)")
        seen: dict[int, str] = {}
        for name, spec in specs.items():
            if not spec.params:
                raise ValueError(f"parameter group {name!r} holds no trainable parameter")
            for p in spec.params:
                if id(p) in seen:
                    raise ValueError(f"a parameter belongs to both {seen[id(p)]!r} and {name!r}")
                seen[id(p)] = name
        self.settings = {name: resolve_settings(name, optim_cfg, spec.defaults) for name, spec in specs.items()}
        self.optimizers = {name: build_optimizer(spec.params, self.settings[name]) for name, spec in specs.items()}
        self.schedulers = {name: build_scheduler(opt, self.settings[name]) for name, opt in self.optimizers.items()}
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        self.grad_clip = float(getattr(optim_cfg, "grad_clip", 0.0))

    @property
    def names(self) -> list[str]:
        return list(self.optimizers)

    def _select(self, names: Iterable[str] | None) -> list[str]:
        chosen = self.names if names is None else list(names)
        unknown = [n for n in chosen if n not in self.optimizers]
        if unknown:
            raise KeyError(f"unknown optimiser(s) {unknown}; this run has {self.names}")
        return chosen

    def zero_grad(self, names: Iterable[str] | None = None) -> None:
        for n in self._select(names):
            self.optimizers[n].zero_grad(set_to_none=True)

    def backward(self, loss: Tensor) -> None:
        """``loss`` (scaled under AMP) back-propagated."""
        self.scaler.scale(loss).backward()

    def step(self, names: Iterable[str] | None = None) -> None:
        """Clip (``optim.grad_clip`` > 0, per optimiser, after unscaling) and step the optimisers ``names``
        (all when ``None``); then update the scaler once."""
        for n in self._select(names):
            opt = self.optimizers[n]
            if self.grad_clip > 0:
                self.scaler.unscale_(opt)
                nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], self.grad_clip)
            self.scaler.step(opt)
        self.scaler.update()

    def step_schedulers(self, names: Iterable[str] | None = None) -> None:
        """One epoch's learning-rate step of the schedulers ``names`` (all when ``None``)."""
        for n in self._select(names):
            self.schedulers[n].step()

    def restart_schedules(self, names: Iterable[str] | None = None) -> None:
        """Back to each optimiser's initial learning rate and a fresh schedule (a stage with ``lr="restart"``).
        Optimiser moments (Adam's averages, SGD's momentum buffers) are kept."""
        for n in self._select(names):
            opt = self.optimizers[n]
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"]
            self.schedulers[n] = build_scheduler(opt, self.settings[n])

    def lr(self, name: str | None = None) -> float:
        """The current learning rate of ``name`` (default: the first optimiser), first parameter group."""
        return float(self.optimizers[name or self.names[0]].param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
                "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        Raises:
            ValueError: the saved names differ from this run's (the message names both).
        """
        if set(state["optimizers"]) != set(self.optimizers):
            raise ValueError(f"the checkpoint holds optimisers {sorted(state['optimizers'])}, this run has "
                             f"{sorted(self.optimizers)}; resume with the method and config it was trained with")
        for n, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][n])
            self.schedulers[n].load_state_dict(state["schedulers"][n])
        self.scaler.load_state_dict(state["scaler"])
