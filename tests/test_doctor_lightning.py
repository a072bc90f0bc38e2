"""The Lightning adapter, driven through Lightning's callback hooks by a stand-in trainer (Lightning itself is
not a dependency and is not installed in CI): the hooks it implements are the ones Lightning calls, with
Lightning's arguments, in Lightning's order (fit start, train batch end per step, train epoch end after
validation, fit end)."""
import sys
import types

import pytest
import torch
from torch import nn

from goodfit.errors import UserError


@pytest.fixture
def fake_lightning(monkeypatch):
    pkg, sub = types.ModuleType("lightning"), types.ModuleType("lightning.pytorch")
    sub.Callback = type("Callback", (), {})
    pkg.pytorch = sub
    monkeypatch.setitem(sys.modules, "lightning", pkg)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", sub)


def test_without_lightning_it_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)
    from goodfit.doctor.lightning import lightning_doctor

    with pytest.raises(UserError, match="Lightning"):
        lightning_doctor()


def _fit(callback, lr, softmax=False):
    torch.manual_seed(0)
    x, y = torch.randn(512, 10), torch.randint(0, 3, (512,))
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    layers = [nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3)] + ([nn.Softmax(dim=1)] if softmax else [])
    module = nn.Sequential(*layers)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    trainer = types.SimpleNamespace(optimizers=[opt], callback_metrics={}, should_stop=False)
    callback.on_fit_start(trainer, module)
    for _epoch in range(6):
        for i in range(0, 448, 32):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(module(x[i:i + 32]), y[i:i + 32])
            loss.backward()
            opt.step()
            callback.on_train_batch_end(trainer, module, {"loss": loss.detach()}, None, i // 32)
        with torch.no_grad():
            trainer.callback_metrics = {"val_loss": torch.tensor(nn.functional.cross_entropy(module(x[448:]), y[448:]).item())}
        callback.on_train_epoch_end(trainer, module)
    callback.on_fit_end(trainer, module)
    return callback.diagnosis


def test_the_callback_diagnoses_through_lightnings_hooks(fake_lightning):
    from goodfit.doctor.lightning import lightning_doctor

    healthy = _fit(lightning_doctor(num_classes=3, every=5), lr=1e-2)
    assert healthy.verdict == "good_fit" and not healthy.warnings()
    faulty = _fit(lightning_doctor(num_classes=3, every=5), lr=1e-2, softmax=True)
    assert "softmax_before_loss" in {f.id for f in faulty.warnings()}
