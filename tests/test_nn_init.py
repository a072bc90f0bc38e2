"""goodfit.nn.init against torch.nn.init (same RNG, same tensors), the variance formulas, LSUV, and depth."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from goodfit.errors import UserError
from goodfit.models.mlp import MLP
from goodfit.models.resnet import ResNet
from goodfit.models.convnet import ConvNet
from goodfit.nn import init


def _digits(n=256):
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().data[:n], dtype=torch.float32)
    return (x - x.mean(0)) / (x.std(0) + 1e-6)


def _net(act=nn.ReLU):
    return nn.Sequential(nn.Conv2d(3, 8, 3), act(), nn.Flatten(), nn.Linear(8 * 4 * 4, 16), act(), nn.Linear(16, 5))


# ---------------------------------------------------------------- parsing

@pytest.mark.parametrize("spec, expected", [
    ("he", ("he", {})), ("default", ("default", {})), ("constant(value=0.1)", ("constant", {"value": 0.1})),
    ("normal(std=2e-2)", ("normal", {"std": 0.02})), ("uniform( a = 0.05 )", ("uniform", {"a": 0.05})),
    ("he(mode=fan_out, distribution=uniform)", ("he", {"mode": "fan_out", "distribution": "uniform"})),
    ("lsuv(tol=0.01, max_iter=3)", ("lsuv", {"tol": 0.01, "max_iter": 3.0})),
])
def test_parse_reads_names_numbers_and_words(spec, expected):
    assert init.parse(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("he(", "cannot read"), ("normal(std=__import__)", "non-negative number"), ("normal(std=os.system(1))", "cannot read"), ("normal(std=1..2)", "not a number"),
    ("xavir", "did you mean 'xavier'"), ("normal(sd=0.1)", "takes ['std']"), ("zeros(value=1)", "no arguments"),
    ("he(mode=fan_middle)", "fan_in, fan_out"), ("xavier(distribution=cauchy)", "uniform, normal"),
    ("normal(std=-1)", "non-negative"), ("lsuv(tol=0)", "tol > 0"),
])
def test_bad_specs_are_user_errors(spec, message):
    with pytest.raises(UserError) as err:
        init.apply(_net(), spec, x=torch.zeros(2, 3, 6, 6))
    assert message in f"{err.value} {err.value.hint}", str(err.value)


def test_lsuv_without_a_batch_says_what_it_needs():
    with pytest.raises(UserError, match="needs a batch"):
        init.apply(_net(), "lsuv")


# ---------------------------------------------------------------- equal to torch.nn.init under the same RNG

def _reference(model, fill_weight, bias_value=0.0):
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            fill_weight(m.weight)
            nn.init.constant_(m.bias, bias_value)
    return model


@pytest.mark.parametrize("spec, act, fill, bias", [
    ("he", nn.ReLU, lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"), 0.0),
    ("kaiming(mode=fan_out, distribution=uniform)", nn.ReLU,
     lambda w: nn.init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu"), 0.0),
    ("he", lambda: nn.LeakyReLU(0.2), lambda w: nn.init.kaiming_normal_(w, a=0.2, nonlinearity="leaky_relu"), 0.0),
    ("he", nn.Tanh, lambda w: nn.init.kaiming_normal_(w, nonlinearity="tanh"), 0.0),
    ("he", nn.SELU, lambda w: nn.init.kaiming_normal_(w, nonlinearity="linear"), 0.0),  # LeCun normal for SNNs
    ("he", nn.GELU, lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"), 0.0),
    ("xavier", nn.Tanh, lambda w: nn.init.xavier_uniform_(w, gain=5 / 3), 0.0),
    ("xavier(distribution=normal)", nn.ReLU, lambda w: nn.init.xavier_normal_(w, gain=1.0), 0.0),
    ("xavier(gain=2)", nn.ReLU, lambda w: nn.init.xavier_uniform_(w, gain=2.0), 0.0),
    ("orthogonal", nn.ReLU, lambda w: nn.init.orthogonal_(w, gain=math.sqrt(2)), 0.0),
    ("orthogonal", nn.Sigmoid, lambda w: nn.init.orthogonal_(w, gain=1.0), 0.0),
    ("normal(std=0.3)", nn.ReLU, lambda w: nn.init.normal_(w, 0.0, 0.3), 0.0),
    ("normal", nn.ReLU, lambda w: nn.init.normal_(w, 0.0, 0.02), 0.0),
    ("uniform(a=0.2)", nn.ReLU, lambda w: nn.init.uniform_(w, -0.2, 0.2), 0.0),
    ("zeros", nn.ReLU, nn.init.zeros_, 0.0),
    ("constant(value=0.25)", nn.ReLU, lambda w: nn.init.constant_(w, 0.25), 0.25),
])
def test_same_rng_gives_the_same_tensors_as_torch(spec, act, fill, bias):
    torch.manual_seed(1)
    ours, ref = _net(act), _net(act)
    torch.manual_seed(7)
    init.apply(ours, spec)
    torch.manual_seed(7)
    _reference(ref, fill, bias)  # torch's own calls, layer by layer in module order
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name


def test_default_leaves_torch_s_initialization_untouched():
    torch.manual_seed(0)
    a = _net()
    torch.manual_seed(0)
    b = init.apply(_net(), "default")
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)


def test_norm_layers_reset_to_identity_and_biases_zeroed():
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.LayerNorm(6), nn.GroupNorm(2, 6))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    init.apply(model, "he")
    assert torch.all(model[0].bias == 0)
    for norm in model[1:]:
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)


def test_activation_and_its_slope_are_read_from_the_model():
    assert init.find_activation(MLP((4,), 2, activation="leaky_relu")) == ("leaky_relu", 0.01)
    assert init.find_activation(nn.Sequential(nn.Linear(2, 2), nn.LeakyReLU(0.3))) == ("leaky_relu", 0.3)
    assert init.find_activation(MLP((4,), 2, activation="tanh")) == ("tanh", None)
    assert init.find_activation(nn.Linear(2, 2)) == ("linear", None)
    assert init.gain("leaky_relu", 0.3) == pytest.approx(math.sqrt(2 / (1 + 0.3 ** 2)))
    with pytest.raises(UserError, match="no gain known"):
        init.apply(nn.Linear(2, 2), "he", activation="swish2")


# ---------------------------------------------------------------- the variance formulas, statistically

@pytest.mark.parametrize("spec, act, expected_std", [
    ("he", nn.ReLU, math.sqrt(2 / 1200)),                                  # gain/√fan_in, gain √2
    ("he(mode=fan_out)", nn.ReLU, math.sqrt(2 / 600)),                     # gain/√fan_out
    ("he(distribution=uniform)", lambda: nn.LeakyReLU(0.5), math.sqrt(2 / 1.25 / 1200)),
    ("xavier", nn.Tanh, 5 / 3 * math.sqrt(2 / 1800)),                       # gain·√(2/(fan_in+fan_out))
    ("xavier(distribution=normal)", nn.ReLU, math.sqrt(2 / 1800)),
    ("orthogonal", nn.ReLU, math.sqrt(2) / math.sqrt(1200)),                # rows orthonormal: each entry² averages 1/fan_in
    ("uniform(a=0.1)", nn.ReLU, 0.1 / math.sqrt(3)),
])
def test_weight_std_follows_the_formula(spec, act, expected_std):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1200, 600), act())
    init.apply(model, spec)
    w = model[0].weight
    # 720,000 draws: the sample std's relative standard error is below 0.1%, so 1% is > 10 standard errors
    assert w.std().item() == pytest.approx(expected_std, rel=0.01)
    assert abs(w.mean().item()) < 5 * expected_std / math.sqrt(w.numel())


def test_conv_fan_in_counts_the_kernel():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(64, 128, 5), nn.ReLU())
    init.apply(conv, "he")
    assert conv[0].weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 25)), rel=0.01)


# ---------------------------------------------------------------- LSUV

@pytest.mark.parametrize("make", [
    lambda: MLP((64,), 10, width=64, depth=4, activation="relu", norm="none"),
    lambda: MLP((64,), 10, width=64, depth=3, activation="tanh", norm="layer"),
    lambda: ConvNet((1, 8, 8), 10, dim=2, width=8, depth=3, norm="batch"),
    lambda: ResNet((1, 8, 8), 10, width=8, depth=4, norm="group", residual="post"),
    lambda: ResNet((1, 8, 8), 10, width=8, depth=4, norm="none", dropout=0.3),
])
def test_lsuv_gives_every_layer_unit_output_variance_on_digits(make):
    torch.manual_seed(0)
    x = _digits()
    model = make()
    if not isinstance(model, MLP):
        x = x.view(-1, 1, 8, 8)
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    init.apply(model, "lsuv", x=x)
    layers = init.forward_order(model, x)
    assert len(layers) == sum(isinstance(m, (nn.Linear, nn.Conv2d)) for m in model.modules())
    for name, layer in layers:  # measured afresh, after every layer was set
        assert init.output_variance(model, layer, x) == pytest.approx(1.0, abs=0.05), name
        assert layer.bias is None or torch.all(layer.bias == 0)
    assert model.training  # modes restored; running statistics untouched by the measuring passes
    for m in bn:
        assert torch.all(m.running_mean == 0) and torch.all(m.running_var == 1) and m.num_batches_tracked == 0


def test_lsuv_changes_only_the_scale_of_orthogonal_weights():
    torch.manual_seed(0)
    model = MLP((64,), 10, width=32, depth=2, norm="none")
    variances = init.lsuv(model, _digits(), tol=1e-3)
    assert all(abs(v - 1) < 1e-3 for v in variances.values())
    w = model[1].weight  # 32 x 64: orthonormal rows up to one scale
    gram = w @ w.T
    assert torch.allclose(gram, gram[0, 0] * torch.eye(32), atol=1e-4 * gram[0, 0].item())


# ---------------------------------------------------------------- depth: which init keeps which activation stable

def _activation_stds(activation: str, spec: str, seed: int, depth: int = 20, width: int = 256):
    torch.manual_seed(seed)
    model = MLP((64,), 10, width=width, depth=depth, activation=activation, norm="none")
    init.apply(model, spec)
    stds, hooks = [], [m.register_forward_hook(lambda mod, i, o: stds.append(o.std().item()))
                       for m in model if isinstance(m, (nn.ReLU, nn.Tanh))]
    with torch.no_grad():
        model(_digits(512))
    for h in hooks:
        h.remove()
    return torch.tensor(stds) / stds[0]


@pytest.mark.parametrize("activation, spec", [("relu", "he"), ("tanh", "xavier")])
def test_matched_init_keeps_activation_std_within_a_factor_of_two_over_20_layers(activation, spec):
    for seed in range(3):
        ratio = _activation_stds(activation, spec, seed)
        assert len(ratio) == 20
        assert ratio.min() >= 0.5 and ratio.max() <= 2.0, (seed, ratio)


@pytest.mark.parametrize("activation, spec, direction", [
    ("relu", "xavier", "vanishes"),           # Glorot's gain 1 ignores ReLU's halving: std × 1/√2 per layer
    ("relu", "normal(std=0.1)", "explodes"),  # 0.1·√256 = 1.6 > √2: std × 1.13 per layer
    ("tanh", "normal(std=0.01)", "vanishes"),  # 0.01·√256 = 0.16: tanh is linear there, std × 0.16 per layer
])
def test_mismatched_init_drifts_beyond_a_factor_of_two(activation, spec, direction):
    ratio = _activation_stds(activation, spec, seed=0)
    assert (ratio[-1] < 0.5) if direction == "vanishes" else (ratio[-1] > 2.0), ratio


def test_too_large_a_normal_std_saturates_tanh():
    def saturated(spec):
        torch.manual_seed(0)
        model = MLP((64,), 10, width=256, depth=20, activation="tanh", norm="none")
        init.apply(model, spec)
        with torch.no_grad():
            h = nn.Sequential(*list(model)[:-1])(_digits(512))  # the last hidden layer's activations
        return (h.abs() > 0.99).float().mean().item()

    assert saturated("normal(std=0.3)") > 0.5  # 0.3·√256 = 4.8: most units pinned at ±1, gradients ≈ 0
    assert saturated("xavier") < 0.1
