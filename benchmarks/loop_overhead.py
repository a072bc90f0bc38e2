"""goodfit's `fit` loop vs a hand-written PyTorch loop: same model, data, order, seed and steps.

Both loops train with AdamW, validate once per epoch (loss + accuracy) and shuffle with the
same per-epoch permutation; goodfit's fit additionally runs what it runs for every user:
the LR schedule hook and validation metrics from a confusion matrix ("fit"); then also
early stopping with best-weight tracking and metrics.jsonl logging (step events every 50
steps with loss and gradient norm) as `goodfit train` runs them ("callbacks"); and, for one
case, atomic fsynced checkpoints at the default cadence ("checkpoints").

torch threads = 1; implementations interleaved, repeated; ratio = goodfit / hand (median
time of each, and the min–max of per-repeat ratios). Before timing, one run of each records
every step's loss: the two loops must agree to 1e-6.

    python benchmarks/loop_overhead.py [--repeats 7] [--quick]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from goodfit.data import TensorLoader, load_data
from goodfit.data.loader import epoch_seed
from goodfit.engine import EarlyStopping, Trainer
from goodfit.engine.callbacks import Checkpointer, MetricsLog
from goodfit.metrics import make_metrics
from goodfit.models import build_model
from goodfit.recipe import load_recipe

CASES = [("digits-mlp", 32), ("digits-mlp", 128), ("digits-mlp", 512), ("mnist1d-cnn", 128)]


DEVICE = torch.device("cpu")


def setup(recipe_name: str, batch_size: int, target_steps: int):
    recipe = load_recipe(recipe_name)
    data = load_data(recipe.data, recipe.task, recipe.seed)
    for name in ("x_train", "y_train", "x_val", "y_val"):
        setattr(data, name, getattr(data, name).to(DEVICE))
    torch.manual_seed(0)
    model = build_model(recipe.model.model_copy(update={"dropout": 0.0}), data.input_shape, data.num_outputs)
    steps_per_epoch = -(-len(data.x_train) // batch_size)
    epochs = max(2, round(target_steps / steps_per_epoch))
    return data, model.state_dict(), model, epochs


def hand_loop(model, data, batch_size, epochs, seed=0, record=None):
    """What a careful engineer writes by hand."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    x, y, n = data.x_train, data.y_train, len(data.x_train)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch))).to(x.device)
        xs, ys = x[perm], y[perm]
        losses = []
        for i in range(0, n, batch_size):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xs[i:i + batch_size]), ys[i:i + batch_size])
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            if record is not None:
                record.append(loss.item())
        train_loss = torch.stack(losses).mean().item()
        model.eval()
        with torch.no_grad():
            total, correct = 0.0, 0
            for i in range(0, len(data.x_val), 1024):
                out = model(data.x_val[i:i + 1024])
                total += F.cross_entropy(out, data.y_val[i:i + 1024], reduction="sum").item()
                correct += (out.argmax(1) == data.y_val[i:i + 1024]).sum().item()
        _ = (train_loss, total / len(data.x_val), correct / len(data.x_val))


class _Record:
    def __init__(self, into):
        self.into = into

    def on_step_end(self, trainer, state, loss):
        self.into.append(loss.item())


def goodfit_loop(model, data, batch_size, epochs, seed=0, record=None, variant="fit", workdir=None):
    """variant: 'fit' (the loop and validation metrics only, like the hand loop), 'callbacks'
    (+ early stopping with best weights and metrics.jsonl, as `goodfit train` runs it), or
    'checkpoints' (+ atomic checkpoints at the default cadence)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    callbacks, log = [], None
    if variant in ("callbacks", "checkpoints"):
        log = MetricsLog(Path(workdir) / "metrics.jsonl", log_every=50)
        es = EarlyStopping("val_loss", patience=None, restore_best=True)
        callbacks = [es, log]
    if variant == "checkpoints":
        callbacks.append(Checkpointer(Path(workdir) / "checkpoints", tracker=es, log=log))
    if record is not None:
        callbacks.append(_Record(record))
    trainer = Trainer(model=model, loss_fn=F.cross_entropy, optimizer=opt,
                      train_loader=TensorLoader(data.x_train, data.y_train, batch_size, seed=seed),
                      val_loader=TensorLoader(data.x_val, data.y_val, 1024, shuffle=False), epochs=epochs,
                      make_metrics=lambda: make_metrics("classification", ["accuracy", "macro_f1"],
                                                        num_classes=data.num_classes),
                      callbacks=callbacks, device=DEVICE)
    trainer.fit()
    if log is not None:
        log.close()


def fresh(model, init_state):
    m = copy.deepcopy(model).to(DEVICE)
    m.load_state_dict(init_state)
    return m


def measure(case, repeats, target_steps, variants):
    """Rows (one per goodfit variant) of interleaved timings against the hand loop."""
    name, bs = case
    data, init, model, epochs = setup(name, bs, target_steps)
    # correctness first: identical per-step losses
    a, b = [], []
    with tempfile.TemporaryDirectory() as wd:
        hand_loop(fresh(model, init), data, bs, epochs, record=a)
        goodfit_loop(fresh(model, init), data, bs, epochs, record=b, variant=variants[-1], workdir=wd)
    max_diff = max(abs(u - v) for u, v in zip(a, b)) if len(a) == len(b) else float("inf")
    impls = ["hand", *variants]
    times = {impl: [] for impl in impls}
    for r in range(repeats):
        for impl in impls[r % len(impls):] + impls[:r % len(impls)]:  # rotate the order each repeat
            m = fresh(model, init)
            with tempfile.TemporaryDirectory() as wd:
                start = time.perf_counter()
                if impl == "hand":
                    hand_loop(m, data, bs, epochs)
                else:
                    goodfit_loop(m, data, bs, epochs, variant=impl, workdir=wd)
                times[impl].append(time.perf_counter() - start)
    steps = epochs * -(-len(data.x_train) // bs)
    rows = []
    for v in variants:
        ratios = [g / h for g, h in zip(times[v], times["hand"])]
        rows.append({"case": f"{name} @ {bs}", "variant": v, "steps": steps, "hand": statistics.median(times["hand"]),
                     "goodfit": statistics.median(times[v]),
                     "ratio": statistics.median(times[v]) / statistics.median(times["hand"]),
                     "ratio_min": min(ratios), "ratio_max": max(ratios), "max_loss_diff": max_diff})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps", type=int, default=1500, help="training steps per run (rounded to whole epochs)")
    p.add_argument("--quick", action="store_true", help="3 repeats, 300 steps: a smoke run")
    p.add_argument("--only", default=None, help="run only cases whose label contains this text, e.g. '@ 512'")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the epoch-end .item() calls synchronize both loops)")
    args = p.parse_args()
    if args.quick:
        args.repeats, args.steps = 3, 300
    torch.set_num_threads(1)
    global DEVICE
    DEVICE = torch.device(args.device)
    cases = [c for c in CASES if not args.only or args.only in f"{c[0]} @ {c[1]}"]
    rows = []
    for i, c in enumerate(cases):
        print(f"[{i + 1}/{len(cases)}] {c[0]} @ {c[1]} ...", file=sys.stderr, flush=True)
        variants = ["fit", "callbacks", "checkpoints"] if c == ("digits-mlp", 128) else ["fit", "callbacks"]
        rows += measure(c, args.repeats, args.steps, variants)
    print(f"torch {torch.__version__}, device {DEVICE}, threads 1, {args.repeats} interleaved repeats, "
          f"~{args.steps} steps per run\n")
    print("| case | goodfit | steps | hand loop (s) | goodfit (s) | ratio (median) | ratio min–max | max abs. loss diff |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['variant']} | {r['steps']} | {r['hand']:.3f} | {r['goodfit']:.3f} | {r['ratio']:.3f} | "
              f"{r['ratio_min']:.3f}–{r['ratio_max']:.3f} | {r['max_loss_diff']:.1e} |")
    bad = sorted({r["case"] for r in rows if r["max_loss_diff"] > 1e-6})
    if bad:
        print(f"\nlosses differ by more than 1e-6 in: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
