"""Mixup and CutMix: the mixtures, the soft-target loss identity, the recipe spelling and the loop hook."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import goodfit
from goodfit.data import TensorLoader
from goodfit.errors import UserError
from goodfit.losses import build_loss, cross_entropy
from goodfit.nn.mixup import BatchMix, build_mix, cutmix, cutmix_box, mixup, soft_targets, split_mix

from crash_helpers import Crash, CrashAt


def test_mixup_is_the_convex_combination_of_pairs():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 4, 4), soft_targets(torch.arange(8) % 5, 5)
    perm = torch.randperm(8)
    xm, ym = mixup(x, y, 0.3, perm)
    for i in range(8):
        assert torch.allclose(xm[i], 0.3 * x[i] + 0.7 * x[perm[i]])
        assert torch.allclose(ym[i], 0.3 * y[i] + 0.7 * y[perm[i]])
    assert torch.allclose(ym.sum(1), torch.ones(8))
    xi, yi = mixup(x, y, 1.0, perm)
    assert torch.equal(xi, x) and torch.equal(yi, y)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_ce_on_mixed_targets_equals_the_mix_of_the_two_ces(label_smoothing):
    """CE(logits, λ·onehot(a) + (1 − λ)·onehot(b)) = λ·CE(logits, a) + (1 − λ)·CE(logits, b)."""
    torch.manual_seed(0)
    logits, y = torch.randn(32, 10, dtype=torch.float64), torch.randint(10, (32,))
    perm = torch.randperm(32)
    for lam in (0.0, 0.2, 0.77, 1.0):
        _, soft = mixup(torch.zeros(32, 1), soft_targets(y, 10).double(), lam, perm)
        mixed = cross_entropy(logits, soft, label_smoothing=label_smoothing)
        pair = (lam * cross_entropy(logits, y, label_smoothing=label_smoothing)
                + (1 - lam) * cross_entropy(logits, y[perm], label_smoothing=label_smoothing))
        assert torch.allclose(mixed, pair, rtol=1e-12, atol=1e-12)
        assert torch.allclose(mixed, F.cross_entropy(logits, soft, label_smoothing=label_smoothing))


def test_cutmix_pastes_one_box_and_mixes_targets_by_its_area():
    torch.manual_seed(0)
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 2, 16, 12).clone()  # sample i is filled with i
    y = soft_targets(torch.arange(4), 4)
    perm = torch.tensor([1, 2, 3, 0])
    for lam in (0.1, 0.5, 0.9):
        xm, ym, used = cutmix(x, y, lam, perm)
        from_b = (xm == x[perm]).all(1).float()  # (N, H, W): pixels taken from the partner
        area = from_b[0].sum().item()
        assert torch.all(from_b.sum((1, 2)) == area)  # the same box for the whole batch
        rows, cols = from_b[0].nonzero().unbind(1)
        assert area == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a rectangle
        assert used == pytest.approx(1 - area / (16 * 12))
        assert torch.allclose(ym, used * y + (1 - used) * y[perm])
        logits = torch.randn(4, 4, dtype=torch.float64)
        assert torch.allclose(cross_entropy(logits, ym.double()),
                              used * cross_entropy(logits, torch.arange(4))
                              + (1 - used) * cross_entropy(logits, perm))


def test_cutmix_box_has_the_requested_area_before_clipping():
    torch.manual_seed(0)
    areas = []
    for _ in range(2000):
        (r0, r1), (c0, c1) = cutmix_box((64, 64), 0.75)
        assert 0 <= r0 <= r1 <= 64 and 0 <= c0 <= c1 <= 64
        areas.append((r1 - r0) * (c1 - c0) / 64 ** 2)
    assert max(areas) == pytest.approx(0.25)  # a box inside the image: side √(1 − λ) of each axis
    (a, b), = cutmix_box((100,), 0.6)  # sequences: a segment of length (1 − λ)·L
    assert b - a <= 40


def test_batch_mix_draws_lambda_from_beta_alpha_alpha():
    torch.manual_seed(0)
    mix = BatchMix({"mixup": 0.4}, num_classes=2)
    x, y = torch.zeros(2, 1), torch.tensor([0, 1])
    lams = torch.tensor([mix(x, y)[1][0, 0].item() for _ in range(4000)])  # ỹ_0 = λ·onehot(0) + ...: P(0) = λ or 1
    lams = lams[lams < 1]  # rows mixed with the other sample: P(class 0) = λ
    var = 1 / (4 * (2 * 0.4 + 1))  # Beta(α, α): mean 1/2, variance 1/(4(2α + 1))
    assert abs(lams.mean().item() - 0.5) < 4 * math.sqrt(var / len(lams))
    assert lams.var().item() == pytest.approx(var, rel=0.1)


def test_both_methods_alternate_per_batch():
    torch.manual_seed(0)
    mix = BatchMix({"mixup": 1.0, "cutmix": 1.0}, num_classes=3)
    x, y = torch.randn(6, 1, 8, 8), torch.arange(6) % 3
    # cutmix leaves every pixel equal to some sample's pixel at that place; mixup blends them
    cut = [bool((mix(x, y)[0][:1] == x).any(0).all()) for _ in range(300)]
    assert 0.3 < sum(cut) / len(cut) < 0.85, sum(cut)  # ≈ 1/2 + 1/12 (mixup pairing a sample with itself)


def test_recipe_items_split_and_validate():
    assert split_mix(["hflip", {"mixup": 0.2}, {"noise": 0.1}, "cutmix"]) == (
        ["hflip", {"noise": 0.1}], [{"mixup": 0.2}, "cutmix"])
    mix = build_mix([{"mixup": {"alpha": 0.4}}, "cutmix"], task="classification", input_shape=(1, 8, 8), num_classes=10)
    assert mix.alphas == {"mixup": 0.4, "cutmix": 1.0}
    assert build_mix([], task="classification", input_shape=(64,), num_classes=10) is None
    bad = [
        (dict(task="regression"), [{"mixup": 0.2}], "has none"),
        (dict(input_shape=(64,)), ["cutmix"], "use mixup for tabular"),
        ({}, [{"mixup": -1}], "positive number"),
        ({}, [{"mixup": {"beta": 1}}], "unknown option"),
        ({}, ["mixup", {"mixup": 0.3}], "listed twice"),
        (dict(loss_fn=build_loss("multi_margin", "classification")), ["mixup"], "probability targets"),
    ]
    for kwargs, items, message in bad:
        opts = {"task": "classification", "input_shape": (1, 8, 8), "num_classes": 10, **kwargs}
        with pytest.raises(UserError, match=message):
            build_mix(items, **opts)


def test_the_loop_feeds_the_loss_mixed_soft_targets():
    torch.manual_seed(0)
    x, y = torch.randn(32, 5), torch.randint(3, (32,))
    seen = []

    def loss_fn(out, target):
        seen.append(target)
        return cross_entropy(out, target)

    model = torch.nn.Linear(5, 3)
    trainer = goodfit.Trainer(model=model, loss_fn=loss_fn, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                              train_loader=TensorLoader(x, y, 8, seed=0), epochs=1,
                              mix=BatchMix({"mixup": 1.0}, num_classes=3))
    trainer.fit()
    assert len(seen) == 4
    for t in seen:
        assert t.shape == (8, 3) and t.is_floating_point() and torch.allclose(t.sum(1), torch.ones(8))
    assert any(((t > 0) & (t < 1)).any() for t in seen)


@pytest.mark.parametrize("augment", ["[{mixup: 0.2}]", "[hflip, {cutmix: 1.0}, {mixup: 0.4}]"])
def test_a_recipe_trains_with_mixup_and_cutmix(augment, tmp_path):
    run = goodfit.run("digits-cnn", [f"data.augment={augment}", "model.width=8", "model.depth=2",
                                     "train.threads=1", "train.epochs=4", "schedule.warmup=0"], out=tmp_path, progress=False)
    assert all(math.isfinite(h["train_loss"]) for h in run.history)
    assert run.history[-1]["val_accuracy"] > 0.3


def test_a_mixup_run_resumes_bit_identically(tmp_path):
    """λ, the pairing and the boxes come from torch's global RNG, which checkpoints save and resume restores."""
    from safetensors.torch import load_file

    from goodfit.runner import resume

    overrides = ["data.augment=[{mixup: 0.4}, {cutmix: 1.0}]", "model.width=8", "model.depth=2", "train.epochs=3",
                 "train.threads=1", "train.checkpoint_interval=0", "train.checkpoint_every=7",
                 "train.early_stopping.patience=null", "doctor.enabled=false"]
    ref = goodfit.run("digits-cnn", overrides, out=tmp_path / "ref", progress=False)
    with pytest.raises(Crash):
        goodfit.run("digits-cnn", overrides, out=tmp_path / "cut", progress=False, callbacks=[CrashAt(30)])
    (cut,) = [p for p in (tmp_path / "cut" / "digits-cnn").iterdir() if p.is_dir()]
    resumed = resume(cut, progress=False)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in ref.history]
    a, b = (load_file(str(d / "checkpoints" / "last" / "model.safetensors")) for d in (ref.dir, cut))
    assert all(torch.equal(a[k], b[k]) for k in a)
