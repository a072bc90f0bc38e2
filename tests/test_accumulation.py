"""Gradient accumulation and clipping statistics in the loop."""
import json

import torch
import torch.nn.functional as F

import goodfit
from goodfit.data import TensorLoader
from goodfit.engine import Trainer


def _fit(batch_size, accumulate, epochs=3):
    torch.manual_seed(0)
    x, y = torch.randn(512, 10, dtype=torch.float64), torch.randint(0, 3, (512,))
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    Trainer(model, F.cross_entropy, opt, TensorLoader(x, y, batch_size, seed=1), epochs=epochs,
            accumulate=accumulate).fit()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_four_micro_batches_of_32_equal_one_batch_of_128():
    # same permutation per epoch whatever the batch size, so 4 consecutive 32s are the 128
    assert torch.allclose(_fit(32, 4), _fit(128, 1), rtol=0, atol=1e-6)
    assert not torch.allclose(_fit(32, 1), _fit(128, 1), rtol=0, atol=1e-6)  # the test can fail


def test_accumulation_from_a_recipe_counts_optimizer_steps(tmp_path):
    r = goodfit.run("wine-mlp", ["train.epochs=2", "train.batch_size=16", "train.accumulate=3"], out=tmp_path,
                    progress=False)
    batches = -(-r.data.info["sizes"]["train"] // 16)
    assert r.state.step == 2 * -(-batches // 3)


def test_clipped_fraction_and_pre_clip_norm_are_logged(tmp_path):
    r = goodfit.run("digits-mlp", ["train.epochs=2", "train.grad_clip={norm: 0.01}", "train.log_every=5"],
                    out=tmp_path, progress=False)
    events = [json.loads(line) for line in (r.dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in events if e["kind"] == "epoch"]
    assert all(e["clipped_fraction"] == 1.0 for e in epochs)  # a 0.01 norm cap clips every step
    steps = [e for e in events if e["kind"] == "step"]
    assert all(e["grad_norm"] > 0.01 for e in steps)  # the norm before clipping, not after
