"""Process-group helpers for DistributedDataParallel training under ``torchrun`` (issue 33, docs/DISTRIBUTED.md).

Every helper is a no-op (it returns its input, or does nothing) when no process group is initialised, so
single-process code paths stay bit-identical to a run without this module.

What the engine does with them (:mod:`unreid.engine.trainer`):

* :func:`setup` initialises the process group from torchrun's environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR`` / ``MASTER_PORT``): NCCL on CUDA, gloo on CPU;
* :class:`ShardedBatchSampler` gives rank ``r`` the ``r``-th contiguous share of every global P x K
  batch (the same cut ``nn.DataParallel`` makes along the batch dimension), so the global index stream
  is the single-process one;
* :func:`gather_step` all-gathers every per-sample tensor of a step (first dimension = the local batch)
  and concatenates them in rank order: the memories see the global batch, in single-process order;
* :func:`shard_range` / :func:`all_gather_cat` shard feature extraction and gather it back in order;
* :func:`run_on_main` runs pseudo-labelling (and other one-off work) on rank 0 and broadcasts the result,
  or the exception, to every rank.

Collectives follow the process group's backend: CUDA tensors under NCCL, CPU tensors under gloo; the
helpers move tensors there and back.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Sampler

log = logging.getLogger("unreid")
T = TypeVar("T")

#: batch keys that are never gathered across ranks: the images (large; no memory reads them)
NOT_GATHERED = frozenset({"img"})


# ---------------------------------------------------------------------------------------------- state
def is_dist() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """The rank within this machine (torchrun's ``LOCAL_RANK``; 0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """Whether this is rank 0 (always true when not distributed): the process that writes and logs."""
    return rank() == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when unset)."""
    return int(os.environ.get("WORLD_SIZE", 1))


def setup(device: str = "auto", timeout_min: float = 30.0) -> bool:
    """Initialise the default process group from torchrun's environment, once.

    Nothing happens when ``WORLD_SIZE`` is unset or 1 (``torchrun --nproc_per_node 1`` is the plain
    single-process run), or when a group is already initialised (a test or a user script made it). The backend is NCCL when ``device`` resolves to CUDA, gloo otherwise; under NCCL
    this process's CUDA device becomes ``cuda:LOCAL_RANK``.

    Args:
        device: the config's ``device`` (``auto`` / ``cpu`` / ``cuda`` / ``cuda:N``).
        timeout_min: collective timeout in minutes (rank 0 clusters alone while the others wait in a
            broadcast: on MSMT17-sized sets that takes minutes).

    Returns:
        whether this process is now part of a group of more than one process.

    Raises:
        RuntimeError: ``WORLD_SIZE > 1`` but ``MASTER_ADDR`` / ``MASTER_PORT`` are missing (not launched
            by torchrun).
    """
    if dist.is_available() and dist.is_initialized():
        return is_dist()
    if env_world_size() <= 1:
        return False
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT", "RANK") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={env_world_size()} but {', '.join(missing)} unset: launch with "
                           "torchrun (docs/DISTRIBUTED.md)")
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=timeout_min))
    return is_dist()


def cleanup() -> None:
    """Destroy the default process group if one is initialised (end of ``unreid train``)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: torch.device) -> torch.device:
    """When distributed, a CUDA device becomes ``cuda:LOCAL_RANK`` (one GPU per process, as torchrun lays them
    out; an explicit ``cuda:N`` is overridden with a warning); anything else is returned as it is."""
    if not (is_dist() and device.type == "cuda"):
        return device
    mine = torch.device("cuda", local_rank())
    if device.index is not None and device.index != mine.index:
        log.warning("device=%s ignored under torchrun: process %d uses %s (LOCAL_RANK)", device, rank(), mine)
    return mine


def _comm_device() -> torch.device:
    """Where collectives' tensors must live: the current CUDA device under NCCL, else CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------- collectives
def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_dist():
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` of rank ``src`` on every rank (pickled; ``broadcast_object_list``). Returns ``obj`` itself when
    not distributed."""
    if not is_dist():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` when not distributed)."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def run_on_main(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0 only; its result (or the exception it raised) on every rank.

    The result must be picklable. An exception raised on rank 0 is re-raised on every rank (the other ranks
    raise the unpickled copy), so that all of them stop together instead of waiting forever in the next
    collective. Not distributed: ``fn()``.
    """
    if not is_dist():
        return fn()
    result: Any = None
    error: BaseException | None = None
    if is_main():
        try:
            result = fn()
        except Exception as err:  # sent to the other ranks, then re-raised here too
            error = err
    payload = broadcast_object((result, None if error is None else _picklable(error)))
    if error is not None:
        raise error
    if payload[1] is not None:
        raise payload[1]
    return payload[0]


def _picklable(err: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        return RuntimeError(f"on rank 0: {type(err).__name__}: {err}")


def all_gather_cat(t: Tensor) -> Tensor:
    """Concatenate every rank's ``t`` along dimension 0, in rank order (no autograd).

    Sizes along dimension 0 may differ between ranks (padded for the collective, then cut); the other
    dimensions and the dtype must agree. The result lives on ``t``'s device. Not distributed: ``t``.

    Args:
        t: ``(n_r, ...)`` tensor of this rank.

    Returns:
        ``(sum_r n_r, ...)`` tensor: rank 0's rows, then rank 1's, ...
    """
    if not is_dist():
        return t
    dev = _comm_device()
    x = t.detach().to(dev).contiguous()
    sizes = torch.tensor([x.shape[0]], dtype=torch.long, device=dev)
    all_sizes = [torch.zeros_like(sizes) for _ in range(world_size())]
    dist.all_gather(all_sizes, sizes)
    counts = [int(s.item()) for s in all_sizes]
    top = max(counts)
    if x.shape[0] < top:
        pad = torch.zeros((top - x.shape[0], *x.shape[1:]), dtype=x.dtype, device=dev)
        x = torch.cat([x, pad])
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x)
    return torch.cat([p[:n] for p, n in zip(parts, counts)]).to(t.device)


def segment_order(world: int, local_batch: int, segments: int = 1) -> Tensor:
    """Row permutation from rank-major gathered rows to the single-process batch order.

    With ``segments = S`` the global batch is S equal consecutive segments (e.g. MBCCM's visible half, then its
    infrared half) and rank ``r`` holds the ``r``-th contiguous share of each segment
    (:class:`ShardedBatchSampler`), so its local batch is ``[seg 0 share r, ..., seg S-1 share r]``. Rows
    gathered in rank order are ``[rank 0's local batch, rank 1's, ...]``; ``gathered[segment_order(...)]`` is
    ``[seg 0 share 0, seg 0 share 1, ..., seg 1 share 0, ...]``, the single-process batch. ``S = 1``: the
    identity.

    Returns:
        ``(world * local_batch,) int64``.
    """
    share = local_batch // segments
    idx = torch.arange(world * local_batch).view(world, segments, share)  # [rank, segment, position]
    return idx.transpose(0, 1).reshape(-1)


def gather_step(batch: dict[str, Any], outputs: dict[str, Any], local_batch: int, segments: int = 1
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The global batch of a step, as a single process with the whole batch would hold it.

    Every tensor of ``batch`` and ``outputs`` whose first dimension is ``local_batch`` (a per-sample tensor:
    ``index``, ``camid``, ``modality``, ``features``, ``targets``, TCL's ``part_features``, ...) is
    all-gathered and put in single-process order (:func:`segment_order`); with ``segments > 1``, a tensor whose
    first dimension is one segment's share (``local_batch / segments``: e.g. MBCCM's per-modality
    ``visible_1``) is gathered in rank order, which is that segment's single-process order. Gathered tensors are
    detached (memory updates never run in autograd); keys of :data:`NOT_GATHERED` (the images) are dropped from
    the gathered batch; any other value (scalars, tensors of another size) is kept as it is. Not distributed:
    the inputs, untouched.

    Args:
        batch: the loader's batch of this rank.
        outputs: ``StepOutput.outputs`` of this rank.
        local_batch: this rank's batch size (``len(batch["index"])``).
        segments: the method's batch segments (:meth:`unreid.methods.Method.batch_segments`).

    Returns:
        ``(batch, outputs)`` of the global batch.
    """
    if not is_dist():
        return batch, outputs
    order = segment_order(world_size(), local_batch, segments) if segments > 1 else None
    share = local_batch // segments

    def gather(d: dict[str, Any], skip: frozenset[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in sorted(d):  # the same order of collectives on every rank
            v = d[k]
            if k in skip:
                continue
            if isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] == local_batch:
                g = all_gather_cat(v.detach())
                out[k] = g if order is None else g[order.to(g.device)]
            elif segments > 1 and isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] == share:
                out[k] = all_gather_cat(v.detach())
            else:
                out[k] = v
        return out

    return gather(batch, NOT_GATHERED), gather(outputs, frozenset())


def shard_range(n: int) -> tuple[int, int]:
    """``[start, end)`` of this rank's contiguous share of ``n`` items (sizes differ by at most one; rank
    order = item order, so :func:`all_gather_cat` of the shares restores the original order)."""
    w, r = world_size(), rank()
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers (batch-norm running statistics) into ``module`` on every rank.

    DDP broadcasts rank 0's buffers at the start of each forward, so after the last step of an epoch the
    ranks' running statistics differ (each saw its own share); this makes them rank 0's before features
    are extracted, as ``nn.DataParallel`` keeps replica 0's. No-op when not distributed.
    """
    if not is_dist():
        return
    dev = _comm_device()
    for t in list(module.parameters()) + list(module.buffers()):
        x = t.data.to(dev)
        dist.broadcast(x, src)
        if x is not t.data:
            t.data.copy_(x)


# ---------------------------------------------------------------------------------------------- sampling
class ShardedBatchSampler(Sampler[int]):
    """Rank ``rank``'s share of a global sampler's batches.

    The wrapped sampler (every rank builds it with the same seed, so every rank sees the same global index
    stream as a single process) is cut into global batches of ``global_batch`` indices (an incomplete last
    batch is dropped, as the training loader does); rank ``r`` yields indices
    ``[r * b, (r + 1) * b)`` of each, ``b = global_batch / world``: the contiguous cut ``nn.DataParallel``
    makes. With a P x K sampler and ``b`` a multiple of K, each rank gets ``b / K`` whole identities of the
    step and the ranks' identities are disjoint.

    With ``segments = S > 1`` (a batch laid out as S equal consecutive parts, e.g. MBCCM's visible then
    infrared images) rank ``r`` yields the ``r``-th contiguous share of each segment, one segment after the
    other, so its local batch keeps the layout (as DataParallel scatters each of MBCCM's two inputs);
    :func:`gather_step` undoes the interleaving (:func:`segment_order`).

    Args:
        sampler: the global sampler (``len`` exact, as :mod:`unreid.data.samplers` guarantees).
        global_batch: the global batch (``data.batch_size``, or the method's ``train_batch_size()``).
        rank: this rank.
        world: number of ranks.
        segments: S (default 1).

    Raises:
        ValueError: ``global_batch`` is not a multiple of ``world * segments``.
    """

    def __init__(self, sampler: Sampler[int], global_batch: int, rank: int, world: int, segments: int = 1) -> None:
        super().__init__()
        if global_batch % (world * segments):
            what = "" if segments == 1 else f" x {segments} batch segments"
            raise ValueError(f"the global batch of {global_batch} images is not divisible by the {world} "
                             f"processes{what}; choose data.batch_size (or the method's batch) as a multiple of "
                             "--nproc_per_node x --nnodes")
        self.sampler = sampler
        self.global_batch = int(global_batch)
        self.rank = int(rank)
        self.world = int(world)
        self.segments = int(segments)
        self.local_batch = self.global_batch // self.world

    def __iter__(self) -> Iterator[int]:
        order = list(iter(self.sampler))
        seg = self.global_batch // self.segments  # one segment of the global batch
        share = seg // self.world  # this rank's part of a segment
        for start in range(0, len(order) - self.global_batch + 1, self.global_batch):
            for s in range(self.segments):
                lo = start + s * seg + self.rank * share
                yield from order[lo:lo + share]

    def __len__(self) -> int:
        return (len(self.sampler) // self.global_batch) * self.local_batch
