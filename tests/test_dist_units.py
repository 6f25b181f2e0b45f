"""The pieces of DDP training that need no second process (issue 33): the sharded P x K batches, the
single-process no-ops, group batch norm against a hand computation, the batch-norm settings' errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import Sampler

from unreid.config import ConfigError, load_config
from unreid.engine import dist
from unreid.models.batch_norm import apply_batch_norm, convert_group_bn


class ListSampler(Sampler[int]):
    def __init__(self, order: list[int]) -> None:
        self.order = order

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def test_sharded_batches_are_contiguous_shares_of_each_global_batch():
    stream = list(range(100, 114))  # 14 indices: two global batches of 6, then 2 left over (dropped)
    shares = [list(dist.ShardedBatchSampler(ListSampler(stream), 6, r, 3)) for r in range(3)]
    assert shares == [[100, 101, 106, 107], [102, 103, 108, 109], [104, 105, 110, 111]]
    assert [len(dist.ShardedBatchSampler(ListSampler(stream), 6, r, 3)) for r in range(3)] == [4, 4, 4]
    # the ranks' step-b shares, concatenated in rank order, are the single-process batch b
    for b in range(2):
        assert sum((s[2 * b:2 * b + 2] for s in shares), []) == stream[6 * b:6 * b + 6]


def test_segmented_batches_keep_the_layout_and_gathering_restores_the_order():
    # MBCCM-style global batch of 8: visible 0..3 then infrared 4..7, aligned position by position
    stream = [10, 11, 12, 13, 20, 21, 22, 23]
    shares = [list(dist.ShardedBatchSampler(ListSampler(stream), 8, r, 2, segments=2)) for r in range(2)]
    assert shares == [[10, 11, 20, 21], [12, 13, 22, 23]]  # each rank: its visible share, then the paired infrared
    gathered = torch.tensor(shares[0] + shares[1])  # all_gather_cat: rank order
    assert gathered[dist.segment_order(2, 4, 2)].tolist() == stream
    assert dist.segment_order(3, 2, 1).tolist() == list(range(6))  # one segment: rank order is the order
    with pytest.raises(ValueError, match="2 batch segments"):
        dist.ShardedBatchSampler(ListSampler(stream), 6, 0, 2, segments=2)


def test_sharded_batches_need_a_divisible_global_batch():
    with pytest.raises(ValueError, match="not divisible by the 4 processes"):
        dist.ShardedBatchSampler(ListSampler(list(range(10))), 6, 0, 4)


def test_helpers_are_no_ops_in_one_process():
    assert not dist.is_dist() and dist.is_main() and dist.rank() == 0 and dist.world_size() == 1
    batch = {"img": torch.zeros(2, 3, 4, 4), "index": torch.tensor([3, 1])}
    outputs = {"features": torch.ones(2, 5, requires_grad=True)}
    b, o = dist.gather_step(batch, outputs, 2)
    assert b is batch and o is outputs  # untouched: the single-process path is unchanged
    t = torch.arange(3)
    assert dist.all_gather_cat(t) is t
    obj = {"a": 1}
    assert dist.broadcast_object(obj) is obj
    assert dist.run_on_main(lambda: 7) == 7
    assert dist.shard_range(5) == (0, 5)
    assert dist.setup("cpu") is False  # no WORLD_SIZE: nothing initialised


def _manual_bn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    dims = [0] + list(range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    mean = x.mean(dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dims, keepdim=True)  # biased, as batch norm normalises
    return (x - mean) / torch.sqrt(var + eps) * weight.view(shape) + bias.view(shape)


@pytest.mark.parametrize("shape", [(8, 3, 5, 4), (8, 6)])
def test_group_batch_norm_matches_a_hand_computation(shape):
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(shape[1]) if len(shape) == 4 else nn.BatchNorm1d(shape[1])
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    keys = list(bn.state_dict())
    convert_group_bn(bn, 4)
    assert list(bn.state_dict()) == keys  # checkpoints load into a plain model
    x = torch.randn(*shape) * 3 + 1
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y = bn(xa)
    ref = torch.cat([_manual_bn(xb[:4], bn.weight, bn.bias, bn.eps), _manual_bn(xb[4:], bn.weight, bn.bias, bn.eps)])
    assert torch.allclose(y, ref, atol=1e-5)
    g = torch.randn(*shape)
    (y * g).sum().backward()
    grad_y = xa.grad.clone()
    bn.zero_grad()
    (ref * g).sum().backward()
    assert torch.allclose(grad_y, xb.grad, atol=1e-5)
    # running statistics: one momentum step from the FIRST group only (DataParallel keeps replica 0's)
    dims = [0] + list(range(2, len(shape)))
    first = x[:4]
    n = first.numel() // shape[1]
    assert torch.allclose(bn.running_mean, 0.1 * first.mean(dims), atol=1e-6)
    assert torch.allclose(bn.running_var, 0.9 + 0.1 * first.var(dims, unbiased=False) * n / (n - 1), atol=1e-5)
    assert int(bn.num_batches_tracked) == 1
    # eval mode: the plain layer with its running statistics
    bn.eval()
    plain = nn.BatchNorm2d(shape[1]) if len(shape) == 4 else nn.BatchNorm1d(shape[1])
    plain.load_state_dict(bn.state_dict())
    plain.eval()
    assert torch.equal(bn(x), plain(x))


def test_group_batch_norm_refuses_a_batch_it_cannot_split():
    bn = convert_group_bn(nn.BatchNorm1d(3), 4)
    with pytest.raises(ValueError, match="does not divide the batch of 6"):
        bn(torch.randn(6, 3))


def test_group_batch_norm_converts_every_layer_of_the_reid_model():
    from unreid.models import build_model

    cfg = load_config(None, ["model.backbone=resnet18", "model.pretrained=false"])
    model = build_model(cfg.model)
    keys = list(model.state_dict())
    apply_batch_norm(model, "local", 4, distributed=False, device=torch.device("cpu"))
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(getattr(m, "group_size", 0) == 4 for m in bns)
    assert list(model.state_dict()) == keys


def test_sync_batch_norm_settings():
    cpu = torch.device("cpu")
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    assert apply_batch_norm(model, "sync", 0, distributed=False, device=cpu) is model
    assert type(model[1]) is nn.BatchNorm2d  # one process: nothing to synchronise
    with pytest.raises(ValueError, match="CUDA only"):
        apply_batch_norm(model, "sync", 0, distributed=True, device=cpu)
    with pytest.raises(ValueError, match="set one of them only"):
        apply_batch_norm(model, "sync", 4, distributed=True, device=cpu)
    with pytest.raises(ConfigError, match="set one of them only"):
        load_config(None, ["dist.batch_norm=sync", "dist.bn_group_size=64"])
    with pytest.raises(ConfigError, match="dist.batch_norm"):
        load_config(None, ["dist.batch_norm=ghost"])
    with pytest.raises(ConfigError, match="camera_bn"):
        load_config(None, ["dist.bn_group_size=64", "model.camera_bn=true"])


def test_ddp_wrapper_passes_camera_ids(tmp_path):
    """``Method.forward`` hands camids / modalities to a DDP-wrapped model as to the model itself."""
    import torch.distributed as tdist
    from torch.nn.parallel import DistributedDataParallel

    from unreid.methods.base import takes_ids
    from unreid.models import build_model

    model = build_model(load_config(None, ["model.backbone=resnet18", "model.pretrained=false"]).model)
    assert takes_ids(model)
    tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert takes_ids(DistributedDataParallel(model))
    finally:
        tdist.destroy_process_group()


def test_python_dash_m_runs_the_cli():
    res = subprocess.run([sys.executable, "-m", "unreid", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "train" in res.stdout
