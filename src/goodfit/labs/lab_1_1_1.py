"""1.1.1 The training workflow: every stage of one goodfit run, timed, counted and checked in order."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from goodfit.labs import Lab, LabContext

ANSWER = r"""
A complete training run is a fixed sequence; each step exists to protect the one number you
will finally report.

1. **Load** the data and check it (shapes, missing values, labels): garbage in is caught before
   it costs compute.
2. **Split** into train / validation / test, once, seeded, stratified for classes. Train fits the
   weights, validation chooses among settings and epochs, test is the untouched final exam.
3. **Fit preprocessing on train only** (e.g. standardization x' = (x − μ_train)/σ_train, then
   apply the same μ, σ to val and test). Statistics taken from val/test would leak them into the model.
4. **Build the model** (the hypothesis class: architecture, width, depth) and
5. **initialize** it (He/Xavier scales keep activations and gradients at a usable size; random
   values break the symmetry between units).
6. **Loss**: what "wrong" means, e.g. cross-entropy L = −(1/N) Σᵢ log p_θ(yᵢ | xᵢ).
7. **Optimizer** (and LR schedule): how the gradient becomes a step, θ ← θ − η·g (plus momentum,
   Adam's moments, weight decay).
8. **Training loop**: for each mini-batch, forward → loss → backward → optimizer step.
9. **Validate** after every epoch on the validation split (eval mode, no gradients): the only
   honest signal of generalization during training; it drives early stopping and model choice.
10. **Checkpoint** at epoch ends (goodfit: `last` after the first epoch, then at most every
    `train.checkpoint_interval` seconds, and after the final one; `best` with it when validation
    improved), so a crash loses little and the best epoch's weights can be delivered.
11. **Final test**, once, on the delivered model: an unbiased estimate of performance on new data.
    Looking at it more often turns it into a second validation set (see 1.1.2).

The lab runs goodfit's pipeline with an extra callback that timestamps the loop's events, and checks
that every stage ran exactly once and in this order. Stage times depend on the machine; the order
and counts do not.
"""

QUICK_EPOCHS = 4


class EventRecorder:
    """A loop callback that records every event with a timestamp, and at each epoch's end what the
    run directory holds (this callback runs after goodfit's own checkpoint writer)."""

    def __init__(self, runs_root: Path):
        self.runs_root = runs_root
        self.events: list[dict] = []
        self.run_dir: Path | None = None
        self.checkpoint_epochs: list[int | None] = []   # epoch recorded in checkpoints/last at each epoch end
        self.recipe_written_before_fit = False
        self.no_checkpoint_before_fit = False

    def _add(self, kind: str, **info) -> None:
        self.events.append({"kind": kind, "t": time.perf_counter(), "wall": time.time(), **info})

    def on_fit_start(self, trainer, state) -> None:
        self._add("fit_start", epoch=state.epoch, step=state.step)
        dirs = [p for p in self.runs_root.glob("*/*") if p.is_dir()]
        self.run_dir = dirs[0] if len(dirs) == 1 else None
        if self.run_dir is not None:
            self.recipe_written_before_fit = (self.run_dir / "recipe.yaml").is_file()
            self.no_checkpoint_before_fit = not (self.run_dir / "checkpoints").exists()

    def on_step_end(self, trainer, state, loss) -> None:
        self._add("step", epoch=state.epoch + 1, step=state.step)

    def on_validation_end(self, trainer, state, metrics) -> None:
        self._add("validate", epoch=state.epoch + 1, step=state.step)

    def on_epoch_end(self, trainer, state, summary) -> None:
        self._add("epoch_end", epoch=summary["epoch"], step=state.step)
        saved = None
        if self.run_dir is not None:
            path = self.run_dir / "checkpoints" / "last" / "state.json"
            if path.is_file():
                saved = json.loads(path.read_text())["fit"]["epoch"]
        self.checkpoint_epochs.append(saved)

    def on_fit_end(self, trainer, state) -> None:
        self._add("fit_end", epoch=state.epoch, step=state.step)


# the stages goodfit's runner reports, in the order they must run (prefixes of Run.stages names)
STAGE_ORDER = ["data: load", "data: split", "data: normalize", "data: perturb", "model: build", "loss and optimizer",
               "run directory", "training loop", "final test"]


def _warm_up() -> None:
    """Pay one-time import costs (scikit-learn's datasets, torch.optim's first construction) before timing,
    so that the stage times below are the pipeline's own and not Python's module loading."""
    import sklearn.datasets  # noqa: F401

    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt

    import goodfit

    threads = torch.get_num_threads()
    try:
        _run(ctx, goodfit, plt)
    finally:
        torch.set_num_threads(threads)  # the recipe below sets 1 thread for this tiny model; give the process its own back


def _run(ctx: LabContext, goodfit, plt) -> None:
    warm = time.perf_counter()
    _warm_up()
    ctx.measure("one-time imports paid before timing (scikit-learn datasets, torch.optim), s", time.perf_counter() - warm)
    runs_root = ctx.out / "runs"
    shutil.rmtree(runs_root, ignore_errors=True)  # this lab's own scratch folder: exactly one run directory inside
    runs_root.mkdir(parents=True)
    recorder = EventRecorder(runs_root)
    overrides = ["train.threads=1"]  # a tiny MLP: one thread is fastest and immune to a busy machine
    if ctx.quick:
        overrides.append(f"train.epochs={QUICK_EPOCHS}")
    ctx.log("goodfit.run('digits-mlp', " + repr(overrides) + ") with an event-recording callback")
    started = time.perf_counter()
    result = goodfit.run("digits-mlp", overrides, out=runs_root, progress=False, callbacks=[recorder])
    returned = time.perf_counter()
    history, data = result.history, result.data
    epochs = len(history)
    ctx.measure("epochs run", epochs)
    ctx.measure("stopped because", result.state.stop_reason or "all epochs done")
    ctx.measure("best epoch (delivered)", result.best_epoch)
    ctx.measure("train / val / test samples", f"{len(data.y_train)} / {len(data.y_val)} / {len(data.y_test)}")

    # ---------------------------------------------------------------- the stage table
    names = [name for name, _ in result.stages]

    def took(prefix: str) -> float:
        return sum(sec for name, sec in result.stages if name.startswith(prefix))

    loop_time = took("training loop")
    train_time = sum(h["train_time"] for h in history)
    val_time = sum(h["val_time"] for h in history)
    ev = recorder.events
    # measured directly: from the end of validation to the end of the epoch = early stopping bookkeeping,
    # metrics log and the checkpoint writes (goodfit's writers run before this callback)
    val_ends = [e["t"] for e in ev if e["kind"] == "validate"]
    epoch_ends = [e["t"] for e in ev if e["kind"] == "epoch_end"]
    ckpt_measured = sum(b - a for a, b in zip(val_ends, epoch_ends))
    rows = []

    def stage(label: str, seconds: float, source: str) -> None:
        rows.append([label, seconds * 1000, source])

    stage("1 load (read + check)", took("data: load"), "Run.stages")
    stage("2 split train/val/test", took("data: split"), "Run.stages")
    stage("3 fit normalization on train, apply to all", took("data: normalize"), "Run.stages")
    stage("4+5 build model and initialize", took("model: build"), "Run.stages")
    stage("6+7 loss and optimizer", took("loss and optimizer"), "Run.stages")
    stage("  run directory (recipe.yaml)", took("run directory"), "Run.stages")
    stage("8 loop: train steps", train_time, "Σ history train_time")
    stage("9 loop: validate", val_time, "Σ history val_time")
    stage("10 loop: checkpoint (+ bookkeeping)", loop_time - train_time - val_time, "loop − train − val")
    stage("11 final test (once)", took("final test"), "Run.stages")
    ctx.table("stages of one run, in the order they ran", ["stage", "ms", "source"], rows)
    ctx.measure("checkpoint time measured by the callback (validation end → epoch end), ms", ckpt_measured * 1000)
    ctx.measure("whole goodfit.run call, s", returned - started)

    # ---------------------------------------------------------------- stages once, in order
    positions = []
    for prefix in STAGE_ORDER:
        hits = [i for i, n in enumerate(names) if n.startswith(prefix)]
        positions.append(hits[0] if len(hits) == 1 else None)
    ctx.check(all(p is not None for p in positions) and positions == sorted(positions) and len(names) == len(STAGE_ORDER),
              "the runner's stages each ran exactly once, data → model → loss/optimizer → run dir → loop → test",
              " → ".join(names))

    # ---------------------------------------------------------------- the loop's events
    steps_per_epoch = -(-len(data.y_train) // result.recipe.train.batch_size)
    expected = ["fit_start"] + (["step"] * steps_per_epoch + ["validate", "epoch_end"]) * epochs + ["fit_end"]
    kinds = [e["kind"] for e in ev]
    ctx.measure("loop events recorded", len(kinds))
    ctx.check(kinds == expected,
              "loop events: fit start once first; each epoch = its steps, then one validation, then epoch end; "
              "fit end once last",
              f"{epochs} epochs × ({steps_per_epoch} steps + validate + epoch end) + 2")
    ordered = (all(a["t"] <= b["t"] for a, b in zip(ev, ev[1:]))
               and [e["step"] for e in ev if e["kind"] == "step"] == list(range(1, epochs * steps_per_epoch + 1))
               and all(e["epoch"] == (i // steps_per_epoch) + 1 for i, e in enumerate(x for x in ev if x["kind"] == "step"))
               and [e["epoch"] for e in ev if e["kind"] == "validate"] == list(range(1, epochs + 1)))
    ctx.check(ordered, "timestamps never go back; step counter runs 1, 2, …; validation k follows epoch k's steps")

    # ---------------------------------------------------------------- run directory and checkpoints
    run_dir = result.dir
    ctx.check(recorder.run_dir == run_dir and recorder.recipe_written_before_fit and recorder.no_checkpoint_before_fit,
              "the run directory (with recipe.yaml) exists before the loop starts, and no checkpoint yet")
    seen = recorder.checkpoint_epochs
    writes = [k for k, (a, b) in enumerate(zip([None, *seen], seen), start=1) if b is not None and b != a]
    ctx.measure("epochs whose end wrote checkpoints/last", writes)
    ctx.check(len(seen) == epochs and seen[0] == 1 and seen[-1] == epochs
              and all(b is not None and b <= k for k, b in enumerate(seen, start=1))
              and all(a <= b for a, b in zip(seen, seen[1:])) and writes == sorted(set(seen)),
              "checkpoints/last is written at the end of an epoch, never ahead of the loop: after the first epoch, "
              "at most every train.checkpoint_interval seconds, and after the final epoch", f"last held {seen}")
    best_state = run_dir / "checkpoints" / "best" / "state.json"
    files_ok = all((run_dir / "checkpoints" / c / f).is_file()
                   for c in ("last", "best") for f in ("model.safetensors", "optimizer.safetensors", "state.json"))
    best_epoch_saved = json.loads(best_state.read_text())["fit"]["epoch"] if best_state.is_file() else None
    ctx.check(files_ok and best_epoch_saved == result.best_epoch,
              "after the loop checkpoints/last and checkpoints/best exist; best holds the delivered (best) epoch",
              f"best = epoch {best_epoch_saved}")

    # ---------------------------------------------------------------- the final test, once, after training
    test_doc = json.loads((run_dir / "test.json").read_text())
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    test_lines = [i for i, d in enumerate(lines) if d.get("split") == "test"]
    last_epoch_line = max(i for i, d in enumerate(lines) if d.get("kind") == "epoch")
    fit_end_wall = next(e["wall"] for e in ev if e["kind"] == "fit_end")
    ctx.measure("test accuracy (delivered model, evaluated once)", result.test["accuracy"])
    ctx.check(len(test_doc["evaluations"]) == 1 and not test_doc["evaluations"][0]["forced"]
              and test_doc["metrics"] == result.test,
              "test.json records exactly one (unforced) test evaluation, the one Run.test reports")
    ctx.check(len(test_lines) == 1 and test_lines[0] > last_epoch_line
              and (run_dir / "test.json").stat().st_mtime >= fit_end_wall - 1e-3,
              "the test split was evaluated after training ended (metrics.jsonl: one test line, after the last epoch)")

    # ---------------------------------------------------------------- normalization fitted on train only
    def channel_stats(x: torch.Tensor) -> tuple[float, float]:
        x = x.double().transpose(0, 1).reshape(x.shape[1], -1)  # (channels, everything else)
        return x.mean(1).abs().max().item(), (x.std(1, unbiased=False) - 1).abs().max().item()

    (tr_m, tr_s), (va_m, va_s), (te_m, te_s) = (channel_stats(data.x_train), channel_stats(data.x_val),
                                                 channel_stats(data.x_test))
    ctx.table("per-channel statistics after normalization", ["split", "largest abs(mean)", "largest abs(std − 1)"],
              [["train", tr_m, tr_s], ["val", va_m, va_s], ["test", te_m, te_s]])
    tol = 1e-4
    ctx.check(tr_m < tol and tr_s < tol and (va_m > 10 * tol or va_s > 10 * tol) and (te_m > 10 * tol or te_s > 10 * tol),
              f"normalization was fitted on train only: train has mean 0 / std 1 (within {tol:g}), val and test do not "
              f"(off by > {10 * tol:g})", f"val abs(mean) {va_m:.3g}, test abs(mean) {te_m:.3g}")

    # ---------------------------------------------------------------- figure
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [r[0].strip() for r in rows][::-1]
    values = [max(r[1], 1e-3) for r in rows][::-1]
    groups = ["tab:blue"] * 3 + ["tab:purple"] * 3 + ["tab:green"] * 3 + ["tab:red"]  # data, set-up, loop, test
    colors = groups[::-1]
    ax.barh(labels, values, color=colors)
    ax.set_xscale("log")
    ax.set_xlim(right=max(values) * 8)  # room for the labels
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.3g} ms", va="center", fontsize=8)
    ax.set_xlabel("time (ms, log scale)")
    ax.set_title(f"digits-mlp: stages of one run ({epochs} epochs)")
    ctx.figure(fig, "stage_times")


LAB = Lab(id="1.1.1", title="The training workflow",
          question="深度学习模型完整的训练流程包含哪些核心步骤？每个步骤的核心目的是什么？ — What are the core steps of a "
                   "complete training workflow, and the purpose of each?",
          answer=ANSWER, run=run, uses="goodfit.run, run directory")
