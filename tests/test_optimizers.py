"""Optimizers: registry, convergence, checkpoint round trip, L2 vs weight decay, LR groups."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from goodfit.engine.checkpoint import load_checkpoint, save_checkpoint
from goodfit.nn.penalty import WeightPenalty
from goodfit.optim.optimizers import OPTIMIZERS, build_optimizer, param_groups
from goodfit.recipe import Optimizer as OptimizerSection


def cfg(name, lr, **kw):
    base = dict(name=name, lr=lr, weight_decay=0.0, decay_norm_and_bias=False)
    return SimpleNamespace(**{**base, **kw})


# (label, name, lr, steps, tolerance on ||x - (1, 1)|| from (-1.5, 2), whose distance is 2.69, extra options)
ROSENBROCK = [
    ("sgd", "sgd", 1e-3, 2000, 1e-3, dict(momentum=0.9, nesterov=False)),
    ("sgd-nesterov", "sgd", 1e-3, 2000, 1e-3, dict(momentum=0.9, nesterov=True)),
    ("adam", "adam", 0.03, 2000, 5e-3, {}),
    ("adamw", "adamw", 0.03, 2000, 5e-3, {}),
    ("rmsprop-centered-momentum", "rmsprop", 1e-3, 2000, 1e-3, dict(momentum=0.9, centered=True)),
    ("rmsprop", "rmsprop", 5e-3, 5000, 0.05, dict(momentum=0.0)),
    ("adagrad", "adagrad", 1.0, 10000, 0.02, {}),
    ("nadam", "nadam", 0.01, 5000, 0.01, {}),
    ("radam", "radam", 0.01, 5000, 5e-3, dict(betas=(0.9, 0.99))),
]


def test_registry_has_the_named_optimizers():
    assert set(OPTIMIZERS) == {"sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam", "radam"}
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(nn.Linear(2, 2), cfg("lion", 0.1))


@pytest.mark.parametrize("label,name,lr,steps,tol,extra", ROSENBROCK, ids=[r[0] for r in ROSENBROCK])
def test_converges_on_rosenbrock(label, name, lr, steps, tol, extra):
    m = nn.Module()
    m.w = nn.Parameter(torch.tensor([-1.5, 2.0], dtype=torch.float64))
    opt = build_optimizer(m, cfg(name, lr, **extra))
    for _ in range(steps):
        opt.zero_grad()
        x, y = m.w
        ((1 - x) ** 2 + 100 * (y - x * x) ** 2).backward()
        opt.step()
    assert torch.linalg.vector_norm(m.w.detach() - 1).item() < tol


LOGISTIC_LR = {"sgd": 0.5, "adam": 0.05, "adamw": 0.05, "rmsprop": 0.01, "adagrad": 0.5, "nadam": 0.05, "radam": 0.05}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_logistic_regression_reaches_sklearn_level_accuracy(name):
    from sklearn.datasets import make_classification
    X, y = make_classification(n_samples=600, n_features=10, n_informative=5, random_state=0)
    X = torch.tensor(X, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.float32)
    Xtr, ytr, Xte, yte = X[:400], y[:400], X[400:], y[400:]
    torch.manual_seed(0)
    model = nn.Linear(10, 1)
    opt = build_optimizer(model, cfg(name, LOGISTIC_LR[name], momentum=0.9, weight_decay=1e-4))
    for _ in range(300):
        opt.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(Xtr).squeeze(1), ytr).backward()
        opt.step()
    acc = ((model(Xte).squeeze(1) > 0).float() == yte).float().mean().item()
    assert acc >= 0.85


def _mlp(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3))


def _train(model, opt, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_round_trips_through_checkpoint_exactly(name, tmp_path):
    extra = dict(momentum=0.9, nesterov=True, centered=True, weight_decay=0.01)
    model = _mlp(0)
    opt = build_optimizer(model, cfg(name, 0.01, **extra), lr_multipliers=[("0", 0.1)], layer_decay=0.5)
    _train(model, opt, 3)
    save_checkpoint(tmp_path / "ck", model, opt, {"fit": {"step": 3}})
    model2 = _mlp(1)
    opt2 = build_optimizer(model2, cfg(name, 0.01, **extra), lr_multipliers=[("0", 0.1)], layer_decay=0.5)
    load_checkpoint(tmp_path / "ck", model2, opt2)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    assert s1["state"].keys() == s2["state"].keys()
    for k in s1["state"]:
        assert s1["state"][k].keys() == s2["state"][k].keys()
        for key, v in s1["state"][k].items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, s2["state"][k][key]), (k, key)
            else:
                assert v == s2["state"][k][key]
    # and training continues identically
    _train(model, opt, 2, seed=5)
    _train(model2, opt2, 2, seed=5)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


def test_sgd_with_l2_penalty_equals_sgd_with_weight_decay():
    lam = 0.1
    m1, m2 = _mlp(0), _mlp(0)
    # decay everything, so the penalty and the decay cover the same parameters
    o1 = build_optimizer(m1, cfg("sgd", 0.05, momentum=0.9, weight_decay=0.0, decay_norm_and_bias=True))
    o2 = build_optimizer(m2, cfg("sgd", 0.05, momentum=0.9, weight_decay=lam, decay_norm_and_bias=True))
    penalty = WeightPenalty(m1.parameters(), l2=lam)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
        for m, o, pen in ((m1, o1, penalty), (m2, o2, None)):
            o.zero_grad()
            loss = nn.functional.cross_entropy(m(x), y)
            (loss + pen() if pen else loss).backward()
            o.step()
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_adam_with_l2_is_not_adamw():
    """Handbook 1.4.5: in Adam an L2 term is rescaled by the adaptive denominator; AdamW decays decoupled."""
    lam = 0.1
    m1, m2, m3 = _mlp(0), _mlp(0), _mlp(0)
    o1 = build_optimizer(m1, cfg("adam", 0.01, decay_norm_and_bias=True))
    o2 = build_optimizer(m2, cfg("adamw", 0.01, weight_decay=lam, decay_norm_and_bias=True))
    o3 = build_optimizer(m3, cfg("adam", 0.01, weight_decay=lam, decay_norm_and_bias=True))
    penalty = WeightPenalty(m1.parameters(), l2=lam)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
        for m, o, pen in ((m1, o1, penalty), (m2, o2, None), (m3, o3, None)):
            o.zero_grad()
            loss = nn.functional.cross_entropy(m(x), y)
            (loss + pen() if pen else loss).backward()
            o.step()
    diff = max((a - b).abs().max().item() for a, b in zip(m1.parameters(), m2.parameters()))
    assert diff > 1e-3
    # torch's Adam weight_decay *is* the coupled L2 penalty
    for a, b in zip(m1.parameters(), m3.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 8)
        self.norm = nn.LayerNorm(8)
        self.body = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
        self.head = nn.Linear(8, 2)


def _lr_of(opt):
    return {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}


def test_discriminative_lr_by_pattern_first_match_wins():
    net = Net()
    opt = build_optimizer(net, cfg("adamw", 0.1, weight_decay=0.05),
                          lr_multipliers=[("body.1*", 0.5), ("body", 0.1), ("*.bias", 0.01)])
    lr = _lr_of(opt)
    expect = {"stem.weight": (0.1, 0.05), "stem.bias": (0.1 * 0.01, 0.0), "norm.weight": (0.1, 0.0),
              "norm.bias": (0.1 * 0.01, 0.0), "body.0.weight": (0.1 * 0.1, 0.05), "body.0.bias": (0.1 * 0.1, 0.0),
              "body.1.weight": (0.1 * 0.5, 0.05), "body.1.bias": (0.1 * 0.5, 0.0),
              "head.weight": (0.1, 0.05), "head.bias": (0.1 * 0.01, 0.0)}
    names = dict(net.named_parameters())
    assert set(expect) == set(names)
    for n, (want_lr, want_wd) in expect.items():
        got_lr, got_wd = lr[id(names[n])]
        assert got_lr == pytest.approx(want_lr) and got_wd == want_wd, n
    # each group is homogeneous and no parameter is in two groups
    assert sum(len(g["params"]) for g in opt.param_groups) == len(names)


def test_layer_decay_by_top_level_depth_and_combines_with_patterns():
    net = Net()
    opt = build_optimizer(net, cfg("sgd", 1.0, momentum=0.0, weight_decay=0.1), layer_decay=0.5,
                          lr_multipliers=[("body.0", 3.0)])
    lr = _lr_of(opt)
    depth = {"stem": 0.5 ** 3, "norm": 0.5 ** 2, "body": 0.5, "head": 1.0}
    for n, p in net.named_parameters():
        want = depth[n.split(".")[0]] * (3.0 if n.startswith("body.0.") else 1.0)
        assert lr[id(p)][0] == pytest.approx(want), n
        assert lr[id(p)][1] == (0.0 if n.endswith("bias") or n.startswith("norm") else 0.1), n
    with pytest.raises(ValueError):
        build_optimizer(net, cfg("sgd", 1.0, momentum=0.0), layer_decay=0.0)


def test_current_recipe_section_still_builds_the_same_groups():
    net = Net()
    for name in ("sgd", "adam", "adamw"):
        section = OptimizerSection(name=name, lr=0.02, weight_decay=0.01)
        opt = build_optimizer(net, section)
        ref = param_groups(net, 0.01)
        assert [g["name"] for g in opt.param_groups] == [g["name"] for g in ref] == ["decay", "no_decay"]
        for g, r in zip(opt.param_groups, ref):
            assert [id(p) for p in g["params"]] == [id(p) for p in r["params"]] and g["lr"] == 0.02
    assert isinstance(build_optimizer(net, OptimizerSection(name="sgd", nesterov=True)), torch.optim.SGD)
    # options the section does not have fall back to torch's defaults
    rms = build_optimizer(net, SimpleNamespace(name="rmsprop", lr=0.01, weight_decay=0.0, decay_norm_and_bias=False))
    assert rms.defaults["alpha"] == 0.99 and rms.defaults["centered"] is False and rms.defaults["momentum"] == 0.0
