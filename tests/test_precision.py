"""Device choice and mixed precision: logic covered on CPU (the GPU check is a separate script)."""
import pytest
import torch

import goodfit
from goodfit.engine.loop import autocast
from goodfit.errors import UserError
from goodfit.runner import pick_device


def test_auto_picks_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto").type == "cuda"


def test_auto_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto").type == "cpu"


def test_asking_for_missing_cuda_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError):
        pick_device("cuda")


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_runs_matmuls_in_low_precision(precision, dtype):
    lin = torch.nn.Linear(8, 8)
    with autocast(torch.device("cpu"), precision):
        out = lin(torch.randn(4, 8))
    assert out.dtype == dtype
    with autocast(torch.device("cpu"), "fp32"):
        assert lin(torch.randn(4, 8)).dtype == torch.float32


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_run_trains(tmp_path, precision):
    r = goodfit.run("digits-mlp", [f"train.precision={precision}", "train.epochs=4"], out=tmp_path, progress=False)
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    assert r.test["accuracy"] > 0.85
    # weights stay float32 (autocast changes the compute dtype, not the parameters)
    assert all(p.dtype == torch.float32 for p in r.model.parameters())
