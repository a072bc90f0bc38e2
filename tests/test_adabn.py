"""AdaBN: adapt_batchnorm's running statistics equal the per-channel mean and variance of the new data's BN
inputs computed independently (forward hooks, all the data as one batch), and they repair covariate shift."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from goodfit.models.convnet import ConvNet
from goodfit.nn import adapt_batchnorm

BNS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _whole_data_stats(model: nn.Module, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each BN's input over all of x at once (BNs in train mode, everything else eval): mean, unbiased var."""
    seen = []
    bns = [m for m in model.modules() if isinstance(m, BNS)]
    handles = [m.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().double())) for m in bns]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    for m in bns:
        m.train()
    with torch.no_grad():
        model(x)
    model.load_state_dict(state)  # the reference pass must not leave its own running statistics behind
    for h in handles:
        h.remove()
    stats = []
    for t in seen:
        dims = [d for d in range(t.dim()) if d != 1]
        stats.append((t.mean(dims), t.var(dims, unbiased=True)))
    return stats


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = ConvNet((1, 8, 8), 10, dim=2, width=4, depth=3, norm="batch", dropout=0.5)
    model.train()
    with torch.no_grad():  # running statistics of a "source domain"
        for _ in range(3):
            model(torch.randn(32, 1, 8, 8))
    return model


def _target(seed: int = 1, n: int = 150) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g) * 2.5 + 1.0


def _stats_of(model):
    return [(m.running_mean.double(), m.running_var.double()) for m in model.modules() if isinstance(m, BNS)]


def _assert_close(got, expected, rtol=1e-4, atol=1e-5):
    assert len(got) == len(expected)
    for i, ((m1, v1), (m2, v2)) in enumerate(zip(got, expected)):
        assert torch.allclose(m1, m2, rtol=rtol, atol=atol), f"BN {i} mean: {(m1 - m2).abs().max():.3g}"
        assert torch.allclose(v1, v2, rtol=rtol, atol=atol), f"BN {i} var: {(v1 - v2).abs().max():.3g}"


def test_exact_mode_gives_the_whole_data_statistics_however_batched():
    model, x = _model(), _target()
    expected = _whole_data_stats(model, x)
    uneven = [x[:7], x[7:60], (x[60:61], None), x[61:]]  # a (x, y)-style batch of one sample among them
    params = [p.clone() for p in model.parameters()]
    adapt_batchnorm(model, iter(uneven), exact=True)  # a one-shot iterator is read once per layer
    _assert_close(_stats_of(model), expected)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
    assert all(p.grad is None for p in model.parameters())


def test_cumulative_mode_is_exact_on_one_batch_and_close_on_many():
    x = _target()
    model = _model()
    expected = _whole_data_stats(model, x)
    adapt_batchnorm(model, [x])
    _assert_close(_stats_of(model), expected)
    model = _model()
    adapt_batchnorm(model, x.split(30))  # equal batches: the first BN's mean is the mean of means, exactly
    got = _stats_of(model)
    assert torch.allclose(got[0][0], expected[0][0], atol=1e-5)
    _assert_close(got, expected, rtol=0.15, atol=0.05)  # per-batch statistics averaged: close, not equal
    assert all(m.num_batches_tracked.item() == 5 for m in model.modules() if isinstance(m, BNS))


class _WithSpare(nn.Module):
    """A model with a BatchNorm that is registered but never called by forward."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.spare = net, nn.BatchNorm1d(3)
        self.spare.running_mean.fill_(7.0)

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_modes_momentum_and_unreached_layers_are_restored(exact, training):
    model = _WithSpare(_model())
    model.net[1].momentum = 0.3
    model.net[5].momentum = None
    spare = model.spare
    model.train(training)
    modes = [m.training for m in model.modules()]
    adapt_batchnorm(model, _target().split(50), exact=exact)
    assert [m.training for m in model.modules()] == modes
    assert model.net[1].momentum == 0.3 and model.net[5].momentum is None and spare.momentum == 0.1
    assert torch.equal(spare.running_mean, torch.full((3,), 7.0)) and spare.num_batches_tracked.item() == 0
    # dropout stayed off during the estimate: a second run gives the same statistics
    first = _stats_of(model)
    adapt_batchnorm(model, _target().split(50), exact=exact)
    _assert_close(_stats_of(model), first, rtol=0, atol=0)


def test_errors():
    with pytest.raises(ValueError, match="no BatchNorm"):
        adapt_batchnorm(nn.Linear(3, 3), [torch.randn(4, 3)])
    for exact in (False, True):
        with pytest.raises(ValueError, match="no batches"):
            adapt_batchnorm(_model(), [], exact=exact)


def _shift_task(seed: int):
    """Three Gaussian classes in 8-D; the target domain is a clean test set scaled by 0.5 and shifted by a random
    vector: an affine shift a BN after the first linear layer can undo exactly, given the target's statistics."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, 8, generator=g) * 1.2
    y = torch.randint(0, 3, (1200,), generator=g)
    x = centers[y] + torch.randn(1200, 8, generator=g)
    shift = torch.randn(8, generator=g) * 4
    return x[:600], y[:600], x[600:], x[600:] * 0.5 + shift, y[600:]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adabn_repairs_covariate_shift(seed):
    xs, ys, clean, shifted, yt = _shift_task(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xs), ys).backward()
        opt.step()
    model.eval()

    def accuracy(x):
        with torch.no_grad():
            return (model(x).argmax(1) == yt).float().mean().item()

    unshifted, before = accuracy(clean), accuracy(shifted)
    adapt_batchnorm(model, shifted.split(100))  # unlabeled target data only
    after = accuracy(shifted)
    assert not model.training
    # measured over 12 seeds: the shift costs 0.2-0.6 of accuracy; AdaBN lands within 0.012 of the unshifted score
    assert before < unshifted - 0.15, (unshifted, before)
    assert abs(after - unshifted) <= 0.02, (unshifted, before, after)
