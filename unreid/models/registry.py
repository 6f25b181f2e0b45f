"""The registry of architectures (``model.arch``).

Every architecture is built from the ``model`` config and is called the same way::

    features = model(images, camids=None, modalities=None)

``images`` ``(B, 3, H, W)`` float, ``camids`` / ``modalities`` ``(B,) int64`` (camera-based BN reads
the cameras of the call; a two-stream model picks its stem by modality). In train mode the output is
the feature ``(B, d)`` float32 the method's losses take (``reid``: L2-normalised, then dropout, as
Cluster Contrast's ``norm=True`` model), in eval mode the L2-normalised retrieval feature.

Built in: ``"reid"`` (:class:`unreid.models.reid.ReIDModel`: backbone -> pooling -> BNNeck, Cluster
Contrast's ``clustercontrast/models/resnet.py``) and ``"two_stream"``
(:class:`unreid.models.two_stream.TwoStreamModel`: one stem per modality, the rest shared; MBCCM / AGW).
A new architecture is one decorated builder::

    @register_architecture("my_arch")
    def build_my_arch(cfg: ModelConfig, init_weights: bool = True) -> nn.Module: ...
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from unreid.config import ModelConfig

#: ``model.arch`` name -> builder ``(cfg: ModelConfig, init_weights: bool) -> nn.Module``
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_architecture(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder to :data:`ARCHITECTURES` under ``name``.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in ARCHITECTURES and ARCHITECTURES[name] is not fn:
            raise ValueError(f"architecture {name!r} is already registered")
        ARCHITECTURES[name] = fn
        return fn

    return deco


def build_architecture(cfg: ModelConfig, init_weights: bool = True) -> nn.Module:
    """Build ``cfg.arch`` (see :func:`unreid.models.reid.build_model` for the arguments).

    Raises:
        ValueError: an unknown ``model.arch`` (the message lists the registered ones), or whatever the
            builder raises for a bad ``model`` config.
    """
    _register_builtins()
    if cfg.arch not in ARCHITECTURES:
        raise ValueError(f"model.arch={cfg.arch!r} is not a known architecture; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[cfg.arch](cfg, init_weights=init_weights)


def _register_builtins() -> None:
    from unreid.models.reid import build_reid_model
    from unreid.models.two_stream import build_two_stream_model

    register_architecture("reid")(build_reid_model)
    register_architecture("two_stream")(build_two_stream_model)


def takes_ids(module: nn.Module) -> bool:
    """Whether ``module.forward`` accepts ``camids`` and ``modalities`` keywords (the architecture contract);
    for a ``DistributedDataParallel`` wrapper, whether the wrapped module does (DDP passes keywords on)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    if isinstance(module, DistributedDataParallel):
        module = module.module
    cls = type(module)
    if cls not in _TAKES_IDS:
        params = inspect.signature(cls.forward).parameters
        _TAKES_IDS[cls] = "camids" in params and "modalities" in params
    return _TAKES_IDS[cls]


_TAKES_IDS: dict[type, bool] = {}
