"""Segmentation losses (Dice, Jaccard, Tversky, focal Tversky, CE+Dice, BCE+Dice) against float64 NumPy
loops over classes and pixels, their identities (Tversky ½/½ = Dice, 1/1 = Jaccard), and gradcheck."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from goodfit import losses as gl

SEEDS = range(16)


def probabilities(x: np.ndarray) -> np.ndarray:
    """Softmax over the class axis, or the sigmoid for one channel."""
    if x.shape[1] == 1:
        return 1 / (1 + np.exp(-x))
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def soft_counts(x, mask, ignore):
    """(TP, FP, FN) per class, accumulated pixel by pixel."""
    p = probabilities(x)
    c = x.shape[1]
    tp, fp, fn = np.zeros(c), np.zeros(c), np.zeros(c)
    mask = mask.reshape(x.shape[0], *x.shape[2:])
    for idx in np.ndindex(mask.shape):
        m = mask[idx]
        if not isinstance(m, np.floating) and m == ignore:
            continue
        for k in range(c):
            prob = p[(idx[0], k, *idx[1:])]
            g = float(m) if c == 1 else float(m == k)
            tp[k] += prob * g
            fp[k] += prob * (1 - g)
            fn[k] += (1 - prob) * g
    return tp, fp, fn


def random_case(rng, seed):
    n, c = int(rng.integers(1, 4)), [1, 2, 3, 5][seed % 4]
    spatial = [(4, 5), (3, 3, 2), (6,)][seed % 3]
    x = rng.normal(size=(n, c, *spatial)) * 2
    ignore = [-100, 255][seed % 2]
    if c == 1:
        mask = rng.integers(0, 2, size=(n, *spatial))
        if seed % 3 == 0:
            mask = mask.reshape(n, 1, *spatial)
    else:
        mask = rng.integers(0, c, size=(n, *spatial))
    mask.reshape(-1)[rng.random(mask.size) < 0.15] = ignore
    return x, mask, ignore


REFERENCE = {
    "dice": lambda tp, fp, fn, s, o: 1 - (2 * tp + s) / (2 * tp + fp + fn + s),
    "jaccard": lambda tp, fp, fn, s, o: 1 - (tp + s) / (tp + fp + fn + s),
    "tversky": lambda tp, fp, fn, s, o: 1 - (tp + s) / (tp + o["alpha"] * fp + o["beta"] * fn + s),
    "focal_tversky": lambda tp, fp, fn, s, o: (1 - (tp + s) / (tp + o["alpha"] * fp + o["beta"] * fn + s))
    ** o["gamma"],
}


@pytest.mark.parametrize("name", list(REFERENCE))
@pytest.mark.parametrize("seed", SEEDS)
def test_overlap_losses_match_formula(name, seed):
    rng = np.random.default_rng(seed)
    x, mask, ignore = random_case(rng, seed)
    smooth = [1.0, 0.0, 1e-3][seed % 3]
    options = {"tversky": {"alpha": [0.3, 0.5, 0.9][seed % 3], "beta": [0.7, 0.5, 0.2][seed % 3]},
               "focal_tversky": {"alpha": 0.3, "beta": 0.7, "gamma": [0.75, 1.0, 2.0][seed % 3]}}.get(name, {})
    per_class = REFERENCE[name](*soft_counts(x, mask, ignore), smooth, options)
    fn = getattr(gl, name)
    xt, mt = torch.from_numpy(x), torch.from_numpy(mask)
    got = fn(xt, mt, smooth=smooth, ignore_index=ignore, **options)
    np.testing.assert_allclose(got.item(), per_class.mean(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fn(xt, mt, smooth=smooth, ignore_index=ignore, reduction="none", **options).numpy(),
                               per_class, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fn(xt, mt, smooth=smooth, ignore_index=ignore, reduction="sum", **options).item(),
                               per_class.sum(), rtol=1e-10, atol=1e-12)


def test_binary_masks_may_be_float_bool_or_integer():
    rng = np.random.default_rng(1)
    x, m = rng.normal(size=(2, 1, 5, 5)), rng.integers(0, 2, size=(2, 5, 5))
    expected = REFERENCE["dice"](*soft_counts(x, m, -100), 1.0, {}).mean()
    for mask in (torch.from_numpy(m), torch.from_numpy(m).bool(), torch.from_numpy(m).float(),
                 torch.from_numpy(m).to(torch.uint8).unsqueeze(1)):
        np.testing.assert_allclose(gl.dice(torch.from_numpy(x), mask).item(), expected, rtol=1e-10)


@pytest.mark.parametrize("seed", range(8))
def test_loss_identities(seed):
    rng = np.random.default_rng(100 + seed)
    x, mask, ignore = random_case(rng, seed)
    xt, mt = torch.from_numpy(x), torch.from_numpy(mask)
    kw = {"ignore_index": ignore}
    dice0 = gl.dice(xt, mt, smooth=0.0, **kw)
    assert torch.allclose(gl.tversky(xt, mt, alpha=0.5, beta=0.5, smooth=0.0, **kw), dice0, rtol=1e-12)
    for s in (0.0, 1.0):
        assert torch.allclose(gl.tversky(xt, mt, alpha=1.0, beta=1.0, smooth=s, **kw),
                              gl.jaccard(xt, mt, smooth=s, **kw), rtol=1e-12)
        assert torch.allclose(gl.focal_tversky(xt, mt, gamma=1.0, smooth=s, **kw),
                              gl.tversky(xt, mt, smooth=s, **kw), rtol=1e-12)


@pytest.mark.parametrize("c", [1, 2, 4])
def test_perfect_prediction_has_near_zero_loss(c):
    rng = np.random.default_rng(c)
    mask = torch.from_numpy(rng.integers(0, max(c, 2), size=(2, 8, 8)))
    onehot = mask.unsqueeze(1).double() if c == 1 else torch.nn.functional.one_hot(mask, c).movedim(-1, 1).double()
    logits = 30 * (2 * onehot - 1)
    for name in ("dice", "jaccard", "tversky", "focal_tversky"):
        assert getattr(gl, name)(logits, mask).item() < 1e-6, name
    wrong = -logits
    assert gl.dice(wrong, mask, smooth=0.0).item() > 0.99


@pytest.mark.parametrize("seed", range(8))
def test_ce_dice_and_bce_dice_match_formula(seed):
    rng = np.random.default_rng(200 + seed)
    lam = [1.0, 0.5, 2.0][seed % 3]
    x, m = rng.normal(size=(2, 3, 4, 4)), rng.integers(0, 3, size=(2, 4, 4))
    m[0, 0, :2] = -100
    w = rng.uniform(0.5, 2, size=3)
    p = probabilities(x)
    keep = m != -100
    idx = np.nonzero(keep)
    logp = np.log(p[idx[0], m[keep], idx[1], idx[2]])
    ce = -(w[m[keep]] * logp).sum() / w[m[keep]].sum()
    expected = ce + lam * REFERENCE["dice"](*soft_counts(x, m, -100), 1.0, {}).mean()
    got = gl.ce_dice(torch.from_numpy(x), torch.from_numpy(m), dice_weight=lam, weight=torch.from_numpy(w))
    np.testing.assert_allclose(got.item(), expected, rtol=1e-10)

    xb, mb = rng.normal(size=(2, 1, 4, 4)), rng.integers(0, 2, size=(2, 4, 4))
    mb[1, 1] = 255
    pw = [1.0, 3.0][seed % 2]
    keep = mb != 255
    xs = xb[:, 0][keep]
    bce = np.mean(-(pw * mb[keep] * -np.logaddexp(0, -xs) + (1 - mb[keep]) * -np.logaddexp(0, xs)))
    expected = bce + lam * REFERENCE["dice"](*soft_counts(xb, mb, 255), 1.0, {}).mean()
    got = gl.bce_dice(torch.from_numpy(xb), torch.from_numpy(mb), dice_weight=lam, ignore_index=255,
                      pos_weight=torch.tensor(pw, dtype=torch.float64))
    np.testing.assert_allclose(got.item(), expected, rtol=1e-10)


@pytest.mark.parametrize("name,c", [(name, c) for name in ("dice", "jaccard", "tversky", "focal_tversky")
                                    for c in (1, 3)] + [("ce_dice", 3), ("bce_dice", 1)])
def test_segmentation_losses_pass_gradcheck(name, c):
    torch.manual_seed(c)
    logits = torch.randn(2, c, 3, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.randint(0, max(c, 2), (2, 3, 3))
    mask[0, 0, 0] = -100
    assert torch.autograd.gradcheck(lambda x: getattr(gl, name)(x, mask), (logits,))


@pytest.mark.parametrize("call,match", [
    (lambda: gl.dice(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long)), r"shape \(2, 4, 4\)"),
    (lambda: gl.dice(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4)), "integer tensor"),
    (lambda: gl.dice(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)), r"\(N, C, H, W\)"),
    (lambda: gl.jaccard(torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), 3)), r"\[0, 2\]"),
    (lambda: gl.tversky(torch.zeros(1, 1, 2, 2), torch.full((1, 2, 2), 2)), r"\[0, 1\]"),
    (lambda: gl.tversky(torch.zeros(1, 1, 2, 2), torch.zeros(1, 3, 2)), r"\(1, 2, 2\) or \(1, 1, 2, 2\)"),
    (lambda: gl.tversky(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2), alpha=-1.0), ">= 0"),
    (lambda: gl.focal_tversky(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2), gamma=0.0), "> 0"),
    (lambda: gl.ce_dice(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long)), "use bce_dice"),
    (lambda: gl.bce_dice(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long)), "use ce_dice"),
    (lambda: gl.dice(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), smooth=-1.0), ">= 0"),
])
def test_bad_inputs_raise_value_errors_naming_what_is_expected(call, match):
    with pytest.raises(ValueError, match=match):
        call()
