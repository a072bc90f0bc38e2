"""Overfit one batch: passes on a sound set-up, fails on broken ones, and leaves the model as it was."""
import torch
from torch import nn

from goodfit.doctor import overfit_one_batch


def _setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 5))
    x, y = torch.randn(32, 20), torch.randint(0, 5, (32,))
    return model, x, y


def test_a_sound_setup_memorizes_one_batch():
    model, x, y = _setup()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    r = overfit_one_batch(model, nn.functional.cross_entropy, opt, x, y)
    assert r.passed and r.final_loss <= 0.05 * r.initial_loss and r.steps < 300
    assert len(r.losses) == r.steps


def test_broken_setups_fail():
    # a frozen network (all parameters missing from the optimizer but the last bias) cannot memorize
    model, x, y = _setup()
    opt = torch.optim.Adam([model[4].bias], lr=1e-2)
    assert not overfit_one_batch(model, nn.functional.cross_entropy, opt, x, y, steps=150).passed
    # softmax fed to cross-entropy (probabilities as logits): the loss cannot fall far below ln K
    model, x, y = _setup()
    soft = nn.Sequential(model, nn.Softmax(dim=1))
    opt = torch.optim.Adam(soft.parameters(), lr=1e-2)
    r = overfit_one_batch(soft, nn.functional.cross_entropy, opt, x, y, steps=150)
    # logits confined to [0, 1]: the loss cannot fall below ln(1 + (K-1)/e) = 0.90 for K = 5 (ln 5 = 1.61 at start)
    assert not r.passed and r.final_loss > 0.85


def test_the_probe_restores_the_model_and_optimizer():
    model, x, y = _setup()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    overfit_one_batch(model, nn.functional.cross_entropy, opt, x, y)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not opt.state and not model.training and not model[3].training
