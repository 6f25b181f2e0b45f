"""Which images a batch-norm layer's training statistics come from: the multi-GPU recipes (issue 33).

The published Cluster Contrast and HHCL numbers were trained with ``nn.DataParallel`` on 4 GPUs:
DataParallel cuts every batch of 256 into 4 contiguous shares of 64 and each GPU's replica normalises its
share with **that share's** mean and variance; the running statistics kept are replica 0's (the replica on
the first GPU shares its buffers with the module). The results depend on it (alibaba/cluster-contrast-reid
issue #16: one GPU 59.1 vs 4 GPUs 82.6 mAP; bupt-ai-cz/HHCL-ReID issue #9). ``dist.batch_norm`` and
``dist.bn_group_size`` choose the statistics (docs/DISTRIBUTED.md, "Batch norm"):

* ``local`` (default): each process normalises its own share of the global batch, as DataParallel's
  GPUs do; with DDP, rank 0's running statistics are broadcast at every forward (DDP's
  ``broadcast_buffers``), which again keeps "replica 0's" statistics;
* ``local`` with ``bn_group_size = g`` (:func:`convert_group_bn`): inside a process, statistics per
  consecutive group of ``g`` images of the batch (a "ghost batch norm", Hoffer et al., "Train longer,
  generalize better", NeurIPS 2017, Sec. 4), the running statistics updated from the **first** group only,
  as DataParallel keeps replica 0's. ``g = 64`` reproduces the 4-GPU batch-256 recipes on 1, 2 or 4 GPUs;
* ``sync``: ``torch.nn.SyncBatchNorm``, statistics over the whole global batch (CUDA only, torch's
  restriction); the one-GPU behaviour, on any number of GPUs.

Layers are converted in place (parameter and buffer names unchanged), so checkpoints load into a plain
model.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger("unreid")

BATCH_NORM_MODES = ("local", "sync")


class GroupBatchNormMixin:
    """Batch statistics per consecutive group of :attr:`group_size` images (mixed in by :func:`convert_group_bn`).

    In train mode with a batch ``(B, C)`` or ``(B, C, H, W)`` of more than :attr:`group_size` rows, rows
    ``[0, g)``, ``[g, 2g)``, ... are each normalised with their own mean and biased variance (as
    ``F.batch_norm`` does for a whole batch); the running statistics (and ``num_batches_tracked``, once) are
    updated from the first group only, as ``nn.DataParallel`` keeps the statistics of its first replica.
    Otherwise (eval mode, a batch of at most ``g`` rows) the layer is the plain BN layer.

    Raises:
        ValueError: ``B`` is not a multiple of :attr:`group_size` (a last group of one row has no variance).
    """

    group_size: int = 0

    def forward(self, x: Tensor) -> Tensor:
        g = int(self.group_size)
        if not self.training or g <= 0 or x.shape[0] <= g:
            return super().forward(x)
        if x.shape[0] % g:
            raise ValueError(f"dist.bn_group_size={g} does not divide the batch of {x.shape[0]} images a process "
                             "trains on; choose a group size that divides data.batch_size / processes")
        self._check_input_dim(x)
        momentum = self.momentum
        track = self.track_running_stats
        if track:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # cumulative average, as torch's _BatchNorm
                momentum = 1.0 / float(self.num_batches_tracked)
        outs = [F.batch_norm(chunk, self.running_mean if i == 0 and track else None,
                             self.running_var if i == 0 and track else None, self.weight, self.bias, True,
                             momentum or 0.0, self.eps)
                for i, chunk in enumerate(x.split(g))]
        return torch.cat(outs)


_CLASSES: dict[type, type] = {}


def _group_class(cls: type) -> type:
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Group{cls.__name__}", (GroupBatchNormMixin, cls), {"__module__": __name__})
    return _CLASSES[cls]


def convert_group_bn(model: nn.Module, group_size: int) -> nn.Module:
    """Make every ``nn.BatchNorm1d`` / ``nn.BatchNorm2d`` (and subclasses such as ``BNNeck``) of ``model`` a
    group batch norm (:class:`GroupBatchNormMixin`) of ``group_size`` images, in place; returns ``model``.

    Parameters, buffers and their names are kept. Converting again only changes the group size.

    Raises:
        ValueError: ``group_size < 1``, or a layer that is already a camera BN layer (``model.camera_bn``:
            both split the batch; choose one).
    """
    from unreid.models.camera_bn import CameraBatchNormMixin

    if group_size < 1:
        raise ValueError(f"dist.bn_group_size must be >= 1 to convert batch norm, got {group_size}")
    for name, m in model.named_modules():
        if not isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            continue
        if isinstance(m, CameraBatchNormMixin):
            raise ValueError(f"dist.bn_group_size: layer {name!r} is a camera BN layer (model.camera_bn=true); "
                             "camera BN already splits the batch by camera: set dist.bn_group_size=0")
        if not isinstance(m, GroupBatchNormMixin):
            m.__class__ = _group_class(type(m))
        m.group_size = int(group_size)
    return model


def apply_batch_norm(model: nn.Module, mode: str, group_size: int, distributed: bool,
                     device: torch.device) -> nn.Module:
    """Set up ``model``'s batch norm for ``dist.batch_norm`` = ``mode`` and ``dist.bn_group_size`` = ``group_size``
    (module docstring); returns the model (the same object).

    Args:
        model: the module to convert (before its optimiser is built; parameters are kept either way).
        mode: ``"local"`` or ``"sync"``.
        group_size: images per BN group within a process (0 = the whole local batch).
        distributed: whether several processes train (``sync`` is a no-op in one process).
        device: the training device (``sync`` needs CUDA).

    Raises:
        ValueError: an unknown ``mode``; ``sync`` with ``group_size > 0``; ``sync`` across processes on a
            device other than CUDA; ``sync`` or a group size with camera BN (``model.camera_bn``).
    """
    from unreid.models.camera_bn import camera_bn_layers

    if mode not in BATCH_NORM_MODES:
        raise ValueError(f"dist.batch_norm={mode!r} is not one of {list(BATCH_NORM_MODES)}")
    if mode == "sync":
        if group_size > 0:
            raise ValueError("dist.batch_norm=sync normalises over the whole global batch; dist.bn_group_size "
                             f"={group_size} asks for groups: set one of them only")
        if not distributed:
            return model  # one process: the whole batch is already one group
        if camera_bn_layers(model):
            raise ValueError("dist.batch_norm=sync cannot be combined with model.camera_bn=true; use "
                             "dist.batch_norm=local")
        if device.type != "cuda":
            raise ValueError("dist.batch_norm=sync uses torch.nn.SyncBatchNorm, which runs on CUDA only; on "
                             f"{device.type} use dist.batch_norm=local (optionally with dist.bn_group_size)")
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if group_size > 0:
        convert_group_bn(model, group_size)
    return model
