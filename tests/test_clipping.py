"""Gradient clipping: norm / value (torch's), AGC and AutoClip against formulas written out here."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from goodfit.optim.clipping import AutoClip, agc, build_clip, clip_by_norm, clip_by_value
from goodfit.recipe import GradClip


def _params(seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(6, 5), (6,), (4, 3, 3, 3), (3, 6), ()]
    ps = []
    for s in shapes:
        p = torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64))
        p.grad = torch.randn(s, generator=g, dtype=torch.float64) * scale
        ps.append(p)
    return ps


def _np_total_norm(grads):
    return np.sqrt(sum((g ** 2).sum() for g in grads))


def test_clip_by_norm_returns_pre_clip_norm_and_flag():
    ps = _params(0)
    before = [p.grad.numpy().copy() for p in ps]
    norm = _np_total_norm(before)
    out_norm, clipped = clip_by_norm(ps, max_norm=norm / 2)
    assert isinstance(out_norm, torch.Tensor) and isinstance(clipped, torch.Tensor) and clipped.dtype == torch.bool
    assert out_norm.item() == pytest.approx(norm) and bool(clipped)
    assert _np_total_norm([p.grad.numpy() for p in ps]) == pytest.approx(norm / 2, rel=1e-5)
    out_norm, clipped = clip_by_norm(ps, max_norm=norm)  # now at norm/2: untouched
    assert not bool(clipped) and out_norm.item() == pytest.approx(norm / 2, rel=1e-5)


def test_clip_by_value_returns_pre_clip_norm_and_flag():
    ps = _params(1)
    before = [p.grad.numpy().copy() for p in ps]
    out_norm, clipped = clip_by_value(ps, clip_value=0.5)
    assert out_norm.item() == pytest.approx(_np_total_norm(before)) and bool(clipped)
    for p, b in zip(ps, before):
        np.testing.assert_allclose(p.grad.numpy(), np.clip(b, -0.5, 0.5))
    assert not bool(clip_by_value(ps, clip_value=10.0)[1])


def _np_agc(weights, grads, lam, eps):
    """Brock et al. 2021, unit-wise: per row of a weight, the whole tensor for 0-/1-D parameters."""
    out, any_clipped = [], False
    for w, g in zip(weights, grads):
        w2 = w.reshape(w.shape[0], -1) if w.ndim > 1 else w.reshape(1, -1)
        g2 = g.reshape(w2.shape).copy()
        for i in range(w2.shape[0]):
            wn = max(np.sqrt((w2[i] ** 2).sum()), eps)
            gn = np.sqrt((g2[i] ** 2).sum())
            if gn / wn > lam:
                g2[i] = lam * wn / gn * g2[i]
                any_clipped = True
        out.append(g2.reshape(g.shape))
    return out, any_clipped


@pytest.mark.parametrize("seed,lam,scale", [(0, 0.01, 1.0), (1, 0.5, 1.0), (2, 1.0, 0.3), (3, 100.0, 1.0)])
def test_agc_equals_the_formula(seed, lam, scale):
    ps = _params(seed, scale)
    ps[0].data[2] = 0.0  # a dead unit: eps takes over
    weights = [p.detach().numpy().copy() for p in ps]
    grads = [p.grad.numpy().copy() for p in ps]
    want, want_clipped = _np_agc(weights, grads, lam, 1e-3)
    norm, clipped = agc(ps, clipping=lam, eps=1e-3)
    assert norm.item() == pytest.approx(_np_total_norm(grads))
    assert bool(clipped) == want_clipped
    for p, w in zip(ps, want):
        np.testing.assert_allclose(p.grad.numpy(), w, rtol=1e-12, atol=1e-15)


def test_autoclip_equals_the_formula_over_a_run():
    p_, window = 25.0, 5
    clip = AutoClip(percentile=p_, history=window)
    history = []
    flags = []
    for step in range(12):
        ps = _params(step, scale=float(1 + (step % 4)))
        grads = [p.grad.numpy().copy() for p in ps]
        n = _np_total_norm(grads)
        history.append(n)
        threshold = np.percentile(history[-window:], p_)
        coef = min(1.0, threshold / (n + 1e-6))
        norm, clipped = clip(ps)
        assert norm.item() == pytest.approx(n)
        assert bool(clipped) == (n > threshold)
        flags.append(bool(clipped))
        for p, g in zip(ps, grads):
            np.testing.assert_allclose(p.grad.numpy(), g * coef, rtol=1e-6)
    assert any(flags) and not all(flags)  # the test saw both cases


def test_autoclip_state_is_json_and_round_trips():
    clip = AutoClip(percentile=10)
    for step in range(5):
        clip(_params(step, scale=step + 1.0))
    state = json.loads(json.dumps(clip.state_dict()))
    other = AutoClip(percentile=90, history=3)
    other.load_state_dict(state)
    assert other.percentile == 10 and other.history is None and other.state_dict() == clip.state_dict()
    a, b = _params(9), _params(9)
    na, ca = clip(a)
    nb, cb = other(b)
    assert torch.equal(na, nb) and bool(ca) == bool(cb)
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad)


def test_autoclip_keeps_non_finite_norms_out_of_the_percentile():
    clip = AutoClip(percentile=50)
    clip(_params(0))
    bad = _params(1)
    bad[0].grad[0, 0] = float("inf")
    clip(bad)
    state = clip.state_dict()
    assert state["norms"][1] is None
    json.dumps(state)
    ps = _params(2)
    n = _np_total_norm([p.grad.numpy() for p in ps])
    clip(ps)
    want = np.percentile([state["norms"][0], n], 50)
    assert _np_total_norm([p.grad.numpy() for p in ps]) == pytest.approx(min(n, want), rel=1e-5)


def test_build_clip_from_recipe_and_new_keys():
    assert build_clip(None) is None
    ps = _params(0)
    n = _np_total_norm([p.grad.numpy() for p in ps])
    norm, clipped = build_clip(GradClip(norm=1.0))(ps)
    assert norm.item() == pytest.approx(n) and bool(clipped)
    norm, clipped = build_clip(GradClip(value=0.1))(_params(0))
    assert norm.item() == pytest.approx(n) and bool(clipped)
    ps = _params(0)
    grads = [p.grad.numpy().copy() for p in ps]
    want, _ = _np_agc([p.detach().numpy() for p in ps], grads, 0.05, 1e-3)
    build_clip(SimpleNamespace(norm=None, value=None, agc=0.05))(ps)
    for p, w in zip(ps, want):
        np.testing.assert_allclose(p.grad.numpy(), w)
    auto = build_clip(SimpleNamespace(norm=None, value=None, agc=None, auto=10.0))
    assert isinstance(auto, AutoClip) and auto.percentile == 10.0
    with pytest.raises(ValueError):
        build_clip(SimpleNamespace(norm=None, value=None))


def test_no_gradients_is_a_no_op():
    p = torch.nn.Parameter(torch.ones(3))
    for fn in (lambda ps: clip_by_norm(ps, 1.0), lambda ps: clip_by_value(ps, 1.0), agc, AutoClip()):
        norm, clipped = fn([p])
        assert norm.item() == 0.0 and not bool(clipped)
