"""Hand-written PyTorch training loops watched by `goodfit.Doctor`: the code faults no recipe can
express (a softmax before cross-entropy, a missing zero_grad, weights that never train), and a
correct loop as their healthy control. The data are the same splits `goodfit.run` would use."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

import goodfit
from goodfit.data import load_data
from goodfit.recipe import load_recipe

LOOP_FAULTS = ("none", "softmax", "no_zero_grad", "frozen", "not_in_optimizer")
BATCH, LR = 64, 3e-3


def _model(dataset: str) -> nn.Sequential:
    """A small ReLU MLP for digits (8x8 -> 64 features); a small 1-D CNN for MNIST-1D (40 steps)."""
    if dataset == "digits":
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                             nn.Linear(128, 10))
    return nn.Sequential(nn.Conv1d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
                         nn.Conv1d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(),
                         nn.Linear(64 * 10, 10))


def train_loop(dataset: str, seed: int, fault: str, epochs: int) -> dict:
    """Train with `fault` in the code; returns the Diagnosis, the per-epoch history and the budget in steps."""
    if fault not in LOOP_FAULTS:
        raise ValueError(f"unknown loop fault {fault!r}")
    recipe = load_recipe("digits-mlp" if dataset == "digits" else "mnist1d-cnn")
    data = load_data(recipe.data, "classification", seed)
    torch.manual_seed(seed)
    model = _model(dataset)
    if fault == "softmax":
        model.append(nn.Softmax(dim=1))
    first = next(m for m in model if isinstance(m, (nn.Linear, nn.Conv1d)))
    if fault == "frozen":
        first.requires_grad_(False)
    params = [p for p in model.parameters() if not (fault == "not_in_optimizer" and any(p is q for q in first.parameters()))]
    optimizer = torch.optim.Adam([p for p in params if p.requires_grad], lr=LR)
    x, y, n = data.x_train, data.y_train, len(data.x_train)
    steps_per_epoch = -(-n // BATCH)
    doctor = goodfit.Doctor(model, optimizer, num_classes=data.num_classes, steps_per_epoch=steps_per_epoch)
    history = []
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, BATCH):
            idx = order[i:i + BATCH]
            if fault != "no_zero_grad":
                optimizer.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            doctor.step(loss)
        model.eval()
        with torch.no_grad():
            out = model(data.x_val)
            val_loss = F.cross_entropy(out, data.y_val).item()
            accuracy = (out.argmax(1) == data.y_val).double().mean().item()
        doctor.epoch(val_loss=val_loss, accuracy=accuracy)
        history.append({"epoch": _epoch + 1, "val_loss": val_loss, "val_accuracy": accuracy})
    diagnosis = doctor.report()
    doctor.close()
    return {"diagnosis": diagnosis, "history": history, "budget": epochs * steps_per_epoch,
            "steps_per_epoch": steps_per_epoch, "seconds": time.perf_counter() - start}
