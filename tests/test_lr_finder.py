"""The LR range test: the sweep, the suggestion rules, the held-out doubling probes, exact restoration,
the recipe API and `goodfit lr-find`."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

import goodfit
from goodfit.data import TensorLoader
from goodfit.errors import UserError
from goodfit.optim.lr_finder import (DEFAULT_RULE, doubling_crossing, lr_grid, lr_range_test, smooth, suggest_minimum,
                                     suggest_steepest, suggest_valley)
from goodfit.recipe import load_recipe
from goodfit.runner import build, resolve


def test_the_sweep_is_exponential_between_its_ends():
    lrs = lr_grid(1e-6, 1.0, 25)
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0)
    ratios = lrs[1:] / lrs[:-1]
    np.testing.assert_allclose(ratios, 10 ** (6 / 24), rtol=1e-12)


def test_smoothing_keeps_constants_and_removes_noise():
    np.testing.assert_allclose(smooth(np.full(40, 2.5)), 2.5, rtol=1e-12)
    rng = np.random.default_rng(0)
    noisy = 1.0 + 0.1 * rng.standard_normal(200)
    assert np.std(smooth(noisy)) < 0.3 * np.std(noisy)
    # centered: a symmetric bump stays centered (an EMA would move it right)
    x = np.arange(101)
    bump = np.exp(-0.5 * ((x - 50) / 5.0) ** 2)
    assert int(np.argmax(smooth(bump))) == 50


def _curve(lrs):
    """A textbook range-test curve: flat, a fall centered at lr=1e-3 (in log space), a rise after 1e-1."""
    t = np.log10(lrs)
    fall = 1.0 / (1.0 + np.exp(-(t + 3.0) * 3.0))  # 0 -> 1 around 1e-3
    return 2.3 - 2.0 * fall + np.where(t > -1, 20.0 * (t + 1) ** 2, 0.0)


def test_the_rules_on_a_textbook_curve():
    lrs = lr_grid(1e-6, 1.0, 121)
    y = _curve(lrs)
    steepest = suggest_steepest(lrs, y)
    assert steepest == pytest.approx(1e-3, rel=0.13)  # the inflection of the fall, to one grid step
    minimum_lr = lrs[int(np.argmin(y))]
    assert suggest_minimum(lrs, y) == pytest.approx(minimum_lr / 10)
    valley = suggest_valley(lrs, y)
    half = lrs[np.nonzero(y <= y[0] - 0.5 * (y[0] - y.min()))[0][0]]
    assert valley == pytest.approx(math.sqrt(half * minimum_lr))
    assert steepest < valley < minimum_lr


def test_rules_fall_back_to_the_first_lr_without_a_descent():
    lrs = lr_grid(1e-5, 1.0, 30)
    rising = np.linspace(1.0, 5.0, 30)
    for rule in (suggest_valley, suggest_steepest):
        assert rule(lrs, rising) == lrs[0]


def test_the_doubling_crossing_needs_two_steps_in_a_row():
    assert doubling_crossing([0.3, 0.1, -0.2, 0.05, -0.1, 0.0, -0.4]) == 4  # 0 counts as "did not help"
    assert doubling_crossing([0.3, float("nan"), float("nan")]) == 1  # a NaN probe did not help
    assert doubling_crossing([0.3, -0.1, 0.2, -0.1]) is None


def _quadratic(c=1.0, n=256, batch=8):
    """A scalar model w with MSE on inputs all equal to c and targets 0: every batch's loss is
    L(w) = c²w², curvature A = 2c²; SGD starts at w = 1."""
    x = torch.full((n, 1), c, dtype=torch.float64)
    y = torch.zeros(n, 1, dtype=torch.float64)
    model = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(1.0)
    return model, torch.optim.SGD(model.parameters(), lr=0.1), TensorLoader(x, y, batch, seed=0), (x[:32], y[:32])


@pytest.mark.parametrize("use_holdout", [True, False])
def test_the_doubling_probes_on_a_quadratic_match_the_closed_form(use_holdout):
    # SGD on L = ½Aw²: w1 = (1 − ηA)w0 and the doubled step lands at (1 − 2ηA)w0, so the probed gain is
    # log L(w1) − log L(w2) = 2 log|1 − ηA| − 2 log|1 − 2ηA|, whatever w0 is. It is > 0 (doubling helps)
    # exactly when |1 − ηA| > |1 − 2ηA|, i.e. η < 2/(3A); the greedy optimum is η = 1/A.
    c = 1.0
    a = 2 * c * c
    model, opt, loader, holdout = _quadratic(c)
    result = lr_range_test(model, torch.nn.functional.mse_loss, opt, loader, start_lr=1e-3, end_lr=10.0,
                           holdout=holdout if use_holdout else None)
    lrs = np.array(result.lrs)
    expected = 2 * np.log(np.abs(1 - lrs * a)) - 2 * np.log(np.abs(1 - 2 * lrs * a))
    k = int(np.argmax(lrs >= 2 / (3 * a)))  # the first grid LR past the crossing (this grid: 0.381 > 1/3)
    assert lrs[k - 1] < 2 / (3 * a) < lrs[k] and k + 1 < result.steps
    assert len(result.gains) == k + 2  # the probes stop once two steps in a row did not gain
    np.testing.assert_allclose(result.gains, expected[:k + 2], rtol=1e-9, atol=1e-9)
    assert result.crossing == result.suggestions["doubling"] == pytest.approx(lrs[k])
    assert result.suggestions["minimum_capped"] == min(result.suggestions["minimum"], result.suggestions["doubling"])
    assert result.rule == DEFAULT_RULE == "minimum_capped" and result.suggestion == result.suggestions[DEFAULT_RULE]


def _parts(name="digits-cnn", **overrides):
    recipe = resolve(load_recipe(name, {"train.threads": 1, **overrides}))
    return build(recipe, progress=False)


def _train_steps(t, n):
    losses = []
    for i, (x, y) in enumerate(t.train_loader.epoch(3)):
        if i == n:
            break
        t.optimizer.zero_grad()
        loss = t.loss_fn(t.model(x), y)
        loss.backward()
        t.optimizer.step()
        losses.append(loss.item())
    return losses


def _sweep(probes: bool, holdout: str | None):
    """A digits-cnn sweep (batch norm, dropout, Adam), with the model's weights, buffers and the RNG
    recorded as each optimizer step begins: after the previous step's probes."""
    parts = _parts("digits-cnn")
    t = parts.trainer
    seen = []
    step = t.optimizer.step

    def spy(*a, **k):
        seen.append(({k: v.clone() for k, v in t.model.state_dict().items()}, torch.get_rng_state()))
        return step(*a, **k)

    t.optimizer.step = spy
    result = lr_range_test(t.model, t.loss_fn, t.optimizer, t.train_loader, probes=probes,
                           rule=DEFAULT_RULE if probes else "minimum",
                           holdout=(parts.data.x_val, parts.data.y_val) if holdout == "val" else None)
    return result, seen


@pytest.mark.parametrize("holdout", ["val", None])
def test_the_probes_leave_the_sweep_trajectory_unchanged(holdout):
    plain, plain_states = _sweep(probes=False, holdout=None)
    probed, probed_states = _sweep(probes=True, holdout=holdout)
    assert "doubling" not in plain.suggestions and plain.gains == [] and 0 < len(probed.gains) <= probed.steps
    assert probed.losses == plain.losses
    for rule in ("minimum", "steepest", "valley"):
        assert probed.suggestions[rule] == plain.suggestions[rule], rule
    assert len(probed_states) == len(plain_states) == plain.steps
    for (state_a, rng_a), (state_b, rng_b) in zip(plain_states, probed_states):
        assert torch.equal(rng_a, rng_b)
        for k, v in state_a.items():  # weights bit-exact, batch-norm running statistics untouched
            assert torch.equal(v, state_b[k]), k


@pytest.mark.parametrize("holdout", ["val", None])
def test_the_finder_restores_model_optimizer_and_rngs_bit_exactly(holdout):
    # a CNN with batch norm (running statistics) and dropout (RNG), with Adam moments already built up
    parts = _parts("digits-cnn")
    t = parts.trainer
    _train_steps(t, 3)
    model_before = {k: v.clone() for k, v in t.model.state_dict().items()}
    opt_before = {i: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}
                  for i, s in enumerate(t.optimizer.state.values())}
    groups_before = [{k: v for k, v in g.items() if k != "params"} for g in t.optimizer.param_groups]
    rng_before = torch.get_rng_state()

    result = lr_range_test(t.model, t.loss_fn, t.optimizer, t.train_loader, end_lr=10.0,
                           holdout=(parts.data.x_val, parts.data.y_val) if holdout == "val" else None)
    assert result.steps >= 5 and 0 < len(result.gains) <= result.steps

    for k, v in t.model.state_dict().items():
        assert torch.equal(v, model_before[k]), k
    for i, s in enumerate(t.optimizer.state.values()):
        for k, v in s.items():
            assert torch.equal(v, opt_before[i][k]) if torch.is_tensor(v) else v == opt_before[i][k], k
    assert [{k: v for k, v in g.items() if k != "params"} for g in t.optimizer.param_groups] == groups_before
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert all(p.grad is None for p in t.model.parameters())


def test_training_after_the_finder_equals_training_without_it():
    a, b = _parts("digits-mlp"), _parts("digits-mlp")
    lr_range_test(b.trainer.model, b.trainer.loss_fn, b.trainer.optimizer, b.trainer.train_loader)
    torch.manual_seed(7)
    losses_a = _train_steps(a.trainer, 10)
    torch.manual_seed(7)
    losses_b = _train_steps(b.trainer, 10)
    assert losses_a == losses_b


def test_the_finder_costs_at_most_one_epoch_and_stops_at_divergence():
    torch.manual_seed(0)
    x = torch.randn(512, 5)
    y = x @ torch.randn(5, 1) + 0.1 * torch.randn(512, 1)
    loader = TensorLoader(x, y, 16, seed=0)
    model = torch.nn.Linear(5, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    result = lr_range_test(model, torch.nn.functional.mse_loss, opt, loader, start_lr=1e-4, end_lr=1e3)
    assert result.steps_per_epoch == len(loader) == 32
    assert result.stopped_early and result.steps < 32  # SGD on this quadratic diverges long before lr=1e3
    assert result.lrs == pytest.approx(list(lr_grid(1e-4, 1e3, 32)[: result.steps]))
    # the suggestion is below the LR where it blew up, and inside the swept range
    assert 1e-4 <= result.suggestion < result.lrs[-1]
    # for SGD on least squares the stability limit is lr < 2/λmax of the Hessian 2XᵀX/n
    lam = torch.linalg.eigvalsh(2 * x.T @ x / len(x)).max().item()
    assert result.suggestion < 2 / lam


def test_param_groups_keep_their_lr_ratios_during_the_sweep():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.1},
                           {"params": model[2].parameters(), "lr": 0.01}], lr=0.1)
    seen = []
    step = opt.step

    def spy(*a, **k):
        seen.append([g["lr"] for g in opt.param_groups])
        return step(*a, **k)

    opt.step = spy
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    lr_range_test(model, torch.nn.functional.cross_entropy, opt, TensorLoader(x, y, 8), start_lr=1e-4, end_lr=1e-2)
    assert all(lo == pytest.approx(hi / 10) for hi, lo in seen)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]


def test_bad_arguments_are_clear_errors():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = TensorLoader(torch.randn(64, 2), torch.randn(64, 1), 8)
    with pytest.raises(ValueError, match="rule"):
        lr_range_test(model, torch.nn.functional.mse_loss, opt, loader, rule="median")
    with pytest.raises(ValueError, match="probes"):
        lr_range_test(model, torch.nn.functional.mse_loss, opt, loader, probes=False)  # the default rule needs them
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        lr_range_test(model, torch.nn.functional.mse_loss, opt, loader, start_lr=1.0, end_lr=0.1)
    with pytest.raises(UserError, match="rule"):
        goodfit.lr_find("digits-mlp", rule="median")
    with pytest.raises(UserError, match="one epoch"):
        goodfit.lr_find("digits-mlp", {"train.threads": 1}, steps=10_000)


def test_lr_find_on_a_recipe(tmp_path):
    result = goodfit.lr_find("digits-mlp", {"train.threads": 1}, plot=tmp_path / "curve.png")
    assert result.steps <= result.steps_per_epoch
    assert set(result.suggestions) == {"minimum_capped", "minimum", "steepest", "valley", "doubling"}
    assert result.rule == "minimum_capped"
    assert result.suggestion == min(result.suggestions["minimum"], result.suggestions["doubling"])
    assert 1e-6 <= result.suggestion <= 1.0
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lr_find_without_a_val_split_probes_the_next_batch():
    overrides = {"train.threads": 1, "data.split.val": 0, "train.early_stopping.monitor": "train_loss"}
    found = goodfit.lr_find("digits-mlp", overrides)
    t = _parts("digits-mlp", **overrides).trainer
    direct = lr_range_test(t.model, t.loss_fn, t.optimizer, t.train_loader, holdout=None)
    assert found.gains == direct.gains and found.suggestions == direct.suggestions


def test_cli_lr_find_plots_and_applies(cli, tmp_path):
    plot, written = tmp_path / "lr.png", tmp_path / "tuned.yaml"
    code, output = cli("lr-find", "digits-mlp", "--set", "train.threads=1", "--set", "train.epochs=7",
                       "--plot", plot, "--apply", "-o", written)
    assert code == 0, output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = yaml.safe_load(written.read_text())
    suggested = float(output.split("suggested optimizer.lr:")[1].split()[0])
    assert doc["optimizer"]["lr"] == pytest.approx(suggested, rel=1e-2)
    recipe = load_recipe(written)  # a valid recipe that keeps the rest of the document and the --set overrides
    assert recipe.name == "digits-mlp" and recipe.train.epochs == 7 and recipe.model.name == "mlp"


def test_cli_apply_rewrites_a_recipe_file_in_place(cli, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ndata: {source: digits}\nmodel: {name: mlp, depth: 1}\ntrain: {threads: 1}\n")
    code, output = cli("lr-find", path, "--plot", tmp_path / "lr.png", "--apply")
    assert code == 0, output
    suggested = float(output.split("suggested optimizer.lr:")[1].split()[0])
    recipe = load_recipe(path)
    assert f"wrote {path}" in output.replace("\n", "")
    assert recipe.name == "mine" and recipe.model.depth == 1
    assert recipe.optimizer.lr == pytest.approx(suggested, rel=1e-2)


def test_cli_lr_find_bad_input_exits_2(cli, tmp_path):
    for args in (["no-such-recipe"], ["digits-mlp", "--steps", "100000"], ["digits-mlp", "--rule", "median"],
                 ["digits-mlp", "--start-lr", "1", "--end-lr", "0.1"]):
        code, output = cli("lr-find", *args, "--plot", tmp_path / "x.png")
        assert code == 2, (args, output)
        assert "Traceback" not in output


def test_the_classic_rules_skip_the_held_out_probes():
    """`rule=minimum` (or steepest, valley) costs one epoch: no probes, and the same curve-rule suggestion."""
    base = {"train.threads": 1, "train.epochs": 1}
    full = goodfit.lr_find("digits-mlp", base)
    classic = goodfit.lr_find("digits-mlp", base, rule="minimum")
    assert full.gains and not classic.gains and classic.crossing is None
    assert classic.suggestion == full.suggestions["minimum"]
    assert "doubling" not in classic.suggestions
