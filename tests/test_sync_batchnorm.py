"""goodfit.nn.SyncBatchNorm on CPU/gloo equals nn.BatchNorm on the combined batch (outputs, running statistics,
input gradients, all-reduce-summed parameter gradients); alone it is BatchNorm; convert_sync_batchnorm swaps
every batch norm of a model in place of its parameters."""
from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from goodfit.models.convnet import ConvNet
from goodfit.models.mlp import MLP
from goodfit.nn import SyncBatchNorm, convert_sync_batchnorm
from goodfit.nn.sync_batchnorm import _SyncBatchNormFunction

# input layout -> (per-sample shape, the BatchNorm it must equal)
CASES = {"(N,C)": ((3,), nn.BatchNorm1d), "(N,C,L)": ((4, 5), nn.BatchNorm1d), "(N,C,H,W)": ((3, 4, 4), nn.BatchNorm2d)}
# (samples on rank 0, samples on rank 1): even, uneven, one sample against many, an empty process
SPLITS = [(6, 6), (3, 8), (1, 9), (0, 7)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _close(a, b, what, atol=1e-5, rtol=1e-4):
    assert torch.allclose(a, b, atol=atol, rtol=rtol), f"{what}: max |diff| {(a - b).abs().max().item():.3g}"


def _randomize(bn: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=g))


def _check_layer(rank: int, layout: str, split: tuple[int, int], momentum, calls: dict) -> None:
    """Three training steps of SyncBatchNorm on this rank's share vs BatchNorm on the whole batch, then eval."""
    shape, bn = CASES[layout]
    c = shape[0]
    sync, ref = SyncBatchNorm(c, momentum=momentum), bn(c, momentum=momentum)
    _randomize(sync, 1)
    ref.load_state_dict(sync.state_dict())
    lo, hi = (0, split[0]) if rank == 0 else (split[0], sum(split))
    what = f"input {layout}, split {split}, momentum {momentum}"
    for step in range(3):
        g = torch.Generator().manual_seed(100 * step + len(shape))
        x = torch.randn(sum(split), *shape, generator=g) * 3 + 2
        w = torch.randn(sum(split), *shape, generator=g)  # a loss Σ w·y with an uneven gradient
        xs = x[lo:hi].clone().requires_grad_()
        xr = x.clone().requires_grad_()
        calls["calls"] = 0
        y = sync(xs)
        assert calls["calls"] == 1, f"{what}: forward used {calls['calls']} all-reduces, expected one packed one"
        (w[lo:hi] * y).sum().backward()
        assert calls["calls"] == 2, f"{what}: backward should all-reduce once"
        yr = ref(xr)
        (w * yr).sum().backward()
        _close(y, yr[lo:hi], f"{what}: output")
        _close(xs.grad, xr.grad[lo:hi], f"{what}: input gradient")
        grads = torch.cat([sync.weight.grad, sync.bias.grad])
        dist.all_reduce(grads)  # what DDP would do (up to its 1/world averaging)
        _close(grads, torch.cat([ref.weight.grad, ref.bias.grad]), f"{what}: summed parameter gradients", atol=1e-4)
        sync.zero_grad(), ref.zero_grad()
        _close(sync.running_mean, ref.running_mean, f"{what}: running mean")
        _close(sync.running_var, ref.running_var, f"{what}: running var")
        assert sync.num_batches_tracked.item() == ref.num_batches_tracked.item() == step + 1
    sync.eval(), ref.eval()
    calls["calls"] = 0
    x = torch.randn(5, *shape)
    _close(sync(x), ref(x), f"{what}: eval output")
    assert calls["calls"] == 0, "eval mode must not communicate"


def _check_converted_model(rank: int) -> None:
    """A goodfit CNN converted with convert_sync_batchnorm, split 5 / 11, equals the original on all 16."""
    torch.manual_seed(0)
    model = ConvNet((1, 8, 8), 10, dim=2, width=6, depth=2, norm="batch")
    for i, m in enumerate(m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        _randomize(m, 10 + i)
    twin = ConvNet((1, 8, 8), 10, dim=2, width=6, depth=2, norm="batch")
    twin.load_state_dict(model.state_dict())
    synced = convert_sync_batchnorm(model)
    assert not any(type(m) is nn.BatchNorm2d for m in synced.modules())
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
    part = slice(0, 5) if rank == 0 else slice(5, 16)
    xs, xr = x[part].clone().requires_grad_(), x.clone().requires_grad_()
    # a loss summed over samples, so the per-process losses add up to the whole batch's
    out_sync, out_ref = synced(xs), twin(xr)
    nn.functional.cross_entropy(out_sync, y[part], reduction="sum").backward()
    nn.functional.cross_entropy(out_ref, y, reduction="sum").backward()
    _close(out_sync, out_ref[part], "converted model: output")
    _close(xs.grad, xr.grad[part], "converted model: input gradient")
    for (name, p), q in zip(synced.named_parameters(), twin.parameters()):
        grad = p.grad.clone()
        dist.all_reduce(grad)
        _close(grad, q.grad, f"converted model: summed gradient of {name}", atol=1e-4)
    for (name, b), c in zip(synced.named_buffers(), twin.buffers()):
        _close(b.float(), c.float(), f"converted model: buffer {name}")
    synced.eval(), twin.eval()
    _close(synced(x[part]), twin(x[part]), "converted model: eval output")


def _worker(rank: int, world: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    calls = {"calls": 0}
    original = dist.all_reduce

    def counted(*args, **kwargs):  # counts the layer's communication
        calls["calls"] += 1
        return original(*args, **kwargs)

    try:
        dist.all_reduce = counted
        for layout in CASES:
            for split in SPLITS:
                _check_layer(rank, layout, split, 0.1, calls)
        _check_layer(rank, "(N,C,H,W)", (3, 8), None, calls)  # momentum None: the cumulative average
        dist.all_reduce = original
        _check_converted_model(rank)
    finally:
        dist.all_reduce = original
        dist.destroy_process_group()


def test_two_gloo_processes_equal_batchnorm_on_the_combined_batch():
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    mp.spawn(_worker, args=(2, _free_port()), nprocs=2, join=True)


@pytest.mark.parametrize("layout", list(CASES))
def test_without_distributed_it_is_batchnorm(layout):
    shape, bn = CASES[layout]
    sync, ref = SyncBatchNorm(shape[0]), bn(shape[0])
    _randomize(sync, 3)
    ref.load_state_dict(sync.state_dict())
    for _ in range(2):
        x = torch.randn(8, *shape)
        xs, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
        ys, yr = sync(xs), ref(xr)
        assert torch.equal(ys, yr)
        ys.pow(2).sum().backward(), yr.pow(2).sum().backward()
        assert torch.equal(xs.grad, xr.grad) and torch.equal(sync.weight.grad, ref.weight.grad)
    assert all(torch.equal(a, b) for a, b in zip(sync.buffers(), ref.buffers()))
    sync.eval(), ref.eval()
    x = torch.randn(1, *shape)
    assert torch.equal(sync(x), ref(x))
    with pytest.raises(ValueError, match="more than 1 value"):
        SyncBatchNorm(shape[0]).train()(torch.randn(1, shape[0]))


def test_world_of_one_is_batchnorm_and_the_sync_gradient_passes_gradcheck():
    if not dist.is_available() or not dist.is_gloo_available() or dist.is_initialized():
        pytest.skip("needs gloo and no process group already in this process")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        sync, ref = SyncBatchNorm(4), nn.BatchNorm2d(4)
        _randomize(sync, 5)
        ref.load_state_dict(sync.state_dict())
        x = torch.randn(6, 4, 3, 3)
        assert torch.equal(sync(x), ref(x))  # a group of one: torch's BatchNorm kernel, no communication
        # the CPU sync path itself, against finite differences (float64)
        group = dist.group.WORLD
        x = torch.randn(5, 3, 2, dtype=torch.float64, requires_grad=True)
        w = torch.rand(3, dtype=torch.float64, requires_grad=True)
        b = torch.randn(3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x, w, b: _SyncBatchNormFunction.apply(x, w, b, 1e-5, group)[0],
                                        (x, w, b))
        y, mean, var = _SyncBatchNormFunction.apply(x, w, b, 1e-5, group)
        reduce = [0, 2]
        assert torch.allclose(mean, x.mean(reduce)) and torch.allclose(var, x.var(reduce, unbiased=True))
        ref64 = nn.functional.batch_norm(x, None, None, w, b, True, 0.0, 1e-5)
        assert torch.allclose(y, ref64)
    finally:
        dist.destroy_process_group()


def test_convert_sync_batchnorm_swaps_every_batchnorm_and_keeps_its_state():
    torch.manual_seed(0)
    model = nn.Sequential(MLP((6,), 3, width=8, depth=2, norm="batch"), nn.Unflatten(1, (1, 3)),
                          nn.BatchNorm1d(1), nn.Unflatten(2, (1, 3, 1)), nn.BatchNorm3d(1, momentum=None))
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 4
    model(torch.randn(4, 6))  # running statistics away from their initial values
    bns[0].weight.requires_grad_(False)
    bns[1].eval()
    params = [(id(m.weight), id(m.bias), id(m.running_mean), id(m.running_var)) for m in bns]
    modes = [m.training for m in bns]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = convert_sync_batchnorm(model)
    assert out is model
    new = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(new) == 4 and all(type(m) is SyncBatchNorm for m in new)
    assert [(id(m.weight), id(m.bias), id(m.running_mean), id(m.running_var)) for m in new] == params
    assert [m.training for m in new] == modes
    assert not new[0].weight.requires_grad and new[1].weight.requires_grad
    assert new[3].momentum is None and new[3].eps == bns[3].eps
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    # a batch norm given directly comes back as a new module; a converted one is left as it is
    single = convert_sync_batchnorm(nn.BatchNorm2d(5, affine=False))
    assert type(single) is SyncBatchNorm and single.weight is None
    assert convert_sync_batchnorm(single) is single
    assert SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm1d(2)).__class__ is SyncBatchNorm
    with pytest.raises(ValueError, match="forward pass first"):
        convert_sync_batchnorm(nn.LazyBatchNorm1d())
