"""TensorLoader (order, resume, sampling) and batch augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from goodfit.data import TensorLoader, build_augment
from goodfit.data.balance import sampler_weights
from goodfit.errors import UserError


def rows(n: int = 103):
    x = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 3)
    return x, torch.arange(n) * 2


def order_of(loader: TensorLoader, epoch: int, start: int = 0) -> list[int]:
    out = []
    for xb, yb in loader.epoch(epoch, start):
        assert torch.equal(yb, xb[:, 0].long() * 2)  # x and y rows stay paired
        out += xb[:, 0].long().tolist()
    return out


# ------------------------------------------------------------------ loader

def test_each_epoch_is_a_permutation_and_a_function_of_seed_and_epoch():
    x, y = rows()
    loader = TensorLoader(x, y, 10, seed=4)
    e0, e1 = order_of(loader, 0), order_of(loader, 1)
    assert sorted(e0) == sorted(e1) == list(range(103))
    assert e0 != e1 and e0 != list(range(103))
    assert order_of(TensorLoader(x, y, 10, seed=4), 1) == e1  # a new loader (a resumed run) agrees
    assert order_of(TensorLoader(x, y, 10, seed=5), 1) != e1
    assert len(loader) == 11 and [len(b[0]) for b in loader.epoch(0)] == [10] * 10 + [3]


def test_start_yields_exactly_the_tail_of_the_same_epoch():
    x, y = rows()
    loader = TensorLoader(x, y, 8, seed=1)
    batches = [b[0][:, 0].long().tolist() for b in loader.epoch(3)]
    for k in (0, 1, 5, 12, 13):
        assert [b[0][:, 0].long().tolist() for b in loader.epoch(3, start=k)] == batches[k:]


def test_drop_last_and_natural_order():
    x, y = rows()
    loader = TensorLoader(x, y, 10, drop_last=True)
    assert len(loader) == 10 and sum(len(b[0]) for b in loader.epoch(0)) == 100
    plain = TensorLoader(x, y, 10, shuffle=False)
    assert order_of(plain, 0) == order_of(plain, 7) == list(range(103))
    assert order_of(plain, 0, start=10) == [100, 101, 102]


def test_sampler_weights_skew_class_frequencies_as_expected():
    y = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    x = torch.arange(1000, dtype=torch.float32)[:, None]
    w = torch.from_numpy(sampler_weights(y.numpy(), 3))
    loader = TensorLoader(x, y, 100, seed=0, sample_weights=w)
    drawn = torch.cat([yb for e in range(20) for _, yb in loader.epoch(e)])
    freq = torch.bincount(drawn, minlength=3).double() / len(drawn)
    assert torch.allclose(freq, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02)
    # arbitrary weights: a class is drawn with probability (its total weight) / (all weight)
    w2 = torch.where(y == 0, 1.0, 5.0)
    drawn = torch.cat([yb for e in range(20) for _, yb in TensorLoader(x, y, 100, sample_weights=w2).epoch(e)])
    expected = torch.tensor([900.0, 450.0, 50.0]) / 1400
    assert torch.allclose(torch.bincount(drawn, minlength=3).float() / len(drawn), expected, atol=0.02)
    assert [b[1].tolist() for b in loader.epoch(2)] == [b[1].tolist() for b in loader.epoch(2)]


# ------------------------------------------------------------------ augmentation

def test_empty_spec_is_none():
    assert build_augment([], (1, 8, 8)) is None


def test_hflip_flips_about_half_of_the_images():
    torch.manual_seed(0)
    x = torch.randn(400, 1, 5, 5)
    out = build_augment(["hflip"], (1, 5, 5))(x)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert (flipped | same).all() and 150 < flipped.sum() < 250


def _windows(x: torch.Tensor, p: int) -> list[torch.Tensor]:
    """Every crop of the zero-padded sample: the reference the vectorized crop must pick from."""
    padded = F.pad(x, [p, p] * (x.dim() - 1))
    if x.dim() == 2:
        return [padded[:, i:i + x.shape[1]] for i in range(2 * p + 1)]
    h, w = x.shape[1:]
    return [padded[:, i:i + h, j:j + w] for i in range(2 * p + 1) for j in range(2 * p + 1)]


@pytest.mark.parametrize("shape,spec", [((2, 6, 7), [{"random_crop": {"padding": 2}}]), ((1, 12), [{"random_crop": 3}])])
def test_random_crop_is_a_window_of_the_padded_sample_with_varied_offsets(shape, spec):
    torch.manual_seed(1)
    x = torch.randn(64, *shape)
    p = 2 if len(shape) == 3 else 3
    out = build_augment(spec, shape)(x)
    assert out.shape == x.shape
    chosen = []
    for xi, oi in zip(x, out):
        matches = [k for k, wnd in enumerate(_windows(xi, p)) if torch.equal(wnd, oi)]
        assert matches, "a crop that is no window of the padded input"
        chosen.append(matches[0])
    assert len(set(chosen)) > 3  # offsets differ per sample


def test_noise_adds_gaussian_noise_of_the_given_std():
    torch.manual_seed(2)
    x = torch.zeros(20000, 4)
    out = build_augment([{"noise": 0.05}], (4,))(x)
    assert out.std().item() == pytest.approx(0.05, rel=0.03)
    out = build_augment([{"noise": {"std": 0.2}}], (4,))(x)
    assert out.std().item() == pytest.approx(0.2, rel=0.03)


@pytest.mark.parametrize("spec,shape,text", [
    (["hfilp"], (1, 8, 8), "did you mean 'hflip'"),
    ([{"mixup": 0.2}], (1, 8, 8), "mixes whole batches"),
    (["hflip"], (30,), "needs images"),
    ([{"random_crop": {"pad": 1}}], (1, 8, 8), "unknown option 'pad'"),
    ([{"noise": -1}], (4,), "non-negative"),
    ([{"a": 1, "b": 2}], (4,), "one-key mapping"),
])
def test_augment_errors_name_the_problem(spec, shape, text):
    with pytest.raises(UserError) as e:
        build_augment(spec, shape)
    assert text in str(e.value)
