"""A run: recipe -> data, model, loss, optimizer -> Trainer -> run directory (DESIGN §1.4).

(Named runner.py, not run.py, so that the module never shadows the function `goodfit.run`.)

`run()` trains from a recipe, `resume()` continues a run directory from its last
checkpoint, `evaluate_run()` scores a saved model under the test lock (DESIGN §1.5).
"""
from __future__ import annotations

import difflib
import functools
import json
import re
import random
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from goodfit.data import DataSplits, TensorLoader, build_augment, load_data
from goodfit.engine import EarlyStopping, FitState, Trainer, determinism, evaluate
from goodfit.engine.callbacks import Checkpointer, MetricsLog
from goodfit.engine.checkpoint import CorruptCheckpoint, atomic_write_text, load_checkpoint
from goodfit.engine.divergence import DivergenceGuard
from goodfit.engine.early_stopping import resolve_mode
from goodfit.engine.progress import Progress
from goodfit.engine.recovery import check_run_dir, read_test_record, restore
from goodfit.errors import TrainingFailed, UserError
from goodfit.losses import TASK_DEFAULT_LOSS, build_loss
from goodfit.metrics import DEFAULT_METRICS, make_metrics
from goodfit.models import build_model
from goodfit.nn.mixup import build_mix, split_mix
from goodfit.nn.penalty import WeightPenalty
from goodfit.optim import SCHEDULES, build_optimizer
from goodfit.optim.clipping import build_clip
from goodfit.optim.optimizers import pattern_matches
from goodfit.optim.schedules import build_plateau, build_schedule, constant, one_cycle_momentum
from goodfit.recipe import Recipe, load_recipe

SUPPORTED_TASKS = ("classification", "binary", "regression")


@dataclass
class Run:
    """What a run produced: its folder, resolved recipe, final state, test metrics and stage timings."""

    dir: Path
    recipe: Recipe
    state: FitState
    test: dict[str, float] | None
    model: torch.nn.Module
    data: DataSplits
    best_epoch: int | None = None
    stages: list[tuple[str, float]] = field(default_factory=list)
    diagnosis: Any = None  # goodfit.doctor.Diagnosis, when the doctor watched the run

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.state.history


class _Stages:
    """Records (stage, seconds) in the order the stages ran."""

    def __init__(self):
        self.items: list[tuple[str, float]] = []
        self.t = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.items.append((name, now - self.t))
        self.t = now


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device={name} but no CUDA device is available", "use train.device=auto or cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve(recipe: Recipe) -> Recipe:
    """Fill the task-dependent defaults (loss, metrics) and check the combination."""
    if recipe.task not in SUPPORTED_TASKS:
        raise UserError(f"task '{recipe.task}' is not supported by goodfit train yet",
                        "supported tasks: " + ", ".join(SUPPORTED_TASKS))
    updates: dict[str, Any] = {}
    if recipe.loss.name is None:
        updates["loss"] = recipe.loss.model_copy(update={"name": TASK_DEFAULT_LOSS[recipe.task]})
    if recipe.metrics is None:
        updates["metrics"] = list(DEFAULT_METRICS[recipe.task])
    recipe = recipe.model_copy(update=updates)
    monitor = recipe.train.early_stopping.monitor
    allowed = ["val_loss", "train_loss", *(f"val_{m}" for m in recipe.metrics)]
    if monitor not in allowed:
        raise UserError(f"train.early_stopping.monitor: '{monitor}' is not logged by this run",
                        "choose one of: " + ", ".join(allowed))
    if recipe.schedule.name == "reduce_on_plateau":
        monitor = recipe.schedule.options().get("monitor", "val_loss")
        if monitor not in allowed:
            raise UserError(f"schedule.monitor: '{monitor}' is not logged by this run",
                            "choose one of: " + ", ".join(allowed))
    return recipe


@dataclass
class Parts:
    """The plain PyTorch objects a recipe builds."""

    recipe: Recipe
    data: DataSplits
    trainer: Trainer
    early_stopping: EarlyStopping
    stages: _Stages
    doctor: Any = None  # goodfit.doctor.DoctorCallback when recipe.doctor.enabled


def build(recipe: Recipe, *, progress: bool = True, console=None, callbacks: list | None = None) -> Parts:
    """Recipe -> data, model, loss, optimizer, loaders, Trainer (no run directory yet)."""
    recipe = resolve(recipe)
    stages = _Stages()
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    seed_everything(recipe.seed)
    if recipe.train.deterministic:
        determinism.enable()
    device = pick_device(recipe.train.device)
    data = load_data(recipe.data, recipe.task, recipe.seed)
    stages.done("data")
    stages.items[-1:] = [(f"data: {name}", sec) for name, sec in data.timings]
    # LSUV measures variances on real inputs; other schemes ignore the batch
    try:
        model = build_model(recipe.model, data.input_shape, data.num_outputs, batch=data.x_train[:256]).to(device)
    except (MemoryError, OverflowError) as e:
        raise UserError(f"model: cannot build {recipe.model.name} width {recipe.model.width}, depth {recipe.model.depth} "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160]})", "use a smaller model.width / depth") from None
    except RuntimeError as e:
        asked = re.search(r"allocate (\d+) bytes", str(e))
        if asked is None and "out of memory" not in str(e).lower():
            raise
        need = f" (one of its tensors needs {int(asked.group(1)) / 2**30:,.0f} GiB)" if asked else ""
        raise UserError(f"model: {recipe.model.name} width {recipe.model.width}, depth {recipe.model.depth} does not fit "
                        f"in memory{need}", "use a smaller model.width / depth") from None
    stages.done(f"model: build and initialize ({recipe.model.init})")
    loss_options = recipe.loss.options()
    class_weights = data.class_weights.to(device) if data.class_weights is not None else None
    loss_fn = build_loss(recipe.loss.name, recipe.task, class_weights=class_weights, **loss_options)
    optimizer = make_optimizer(model, recipe.optimizer)
    reg = recipe.regularization
    decayed = [p for g in optimizer.param_groups if g["name"].startswith("decay") for p in g["params"]]
    penalty = WeightPenalty(decayed, reg.l1, reg.l2) if (reg.l1 or reg.l2) else None
    schedule = schedule_parts(recipe.schedule, optimizer)
    stages.done("loss and optimizer")

    def to(t):
        return t.to(device) if t is not None else None

    train_loader = TensorLoader(to(data.x_train), to(data.y_train), recipe.train.batch_size, shuffle=True,
                                seed=recipe.seed, sample_weights=data.sample_weights)
    val_loader = (TensorLoader(to(data.x_val), to(data.y_val), recipe.train.eval_batch_size, shuffle=False)
                  if len(data.x_val) else None)
    es_cfg = recipe.train.early_stopping
    if val_loader is None and es_cfg.monitor.startswith("val_"):
        raise UserError("data.split.val is 0, so there is nothing to validate on",
                        "set data.split.val > 0, or train.early_stopping.monitor=train_loss")
    early_stopping = EarlyStopping(es_cfg.monitor, resolve_mode(es_cfg.monitor, es_cfg.mode), es_cfg.patience,
                                   es_cfg.min_delta, es_cfg.restore_best)
    plateau = schedule["plateau"]
    if val_loader is None and plateau is not None and plateau.monitor.startswith("val_"):
        raise UserError("data.split.val is 0, so reduce_on_plateau has nothing to monitor",
                        "set data.split.val > 0, or schedule.monitor=train_loss")

    def make_val_metrics():
        return make_metrics(recipe.task, recipe.metrics, num_classes=data.num_classes, num_outputs=data.num_outputs,
                            device=device, target_scale=to(data.target_scale), target_shift=to(data.target_shift))

    make_val_metrics()  # an unknown metric name fails here, before any training
    transforms, mixes = split_mix(recipe.data.augment)  # mixup/cutmix need the targets: the Trainer's `mix`
    mix = build_mix(mixes, task=recipe.task, input_shape=data.input_shape, num_classes=data.num_classes, loss_fn=loss_fn)
    doctor = None
    if recipe.doctor.enabled:
        from goodfit.doctor.setup import doctor_for

        doctor = doctor_for(recipe, data, model)
    callbacks = [early_stopping, *([doctor] if doctor else []), *(callbacks or [])]
    if progress:
        callbacks.append(Progress(console=console, show_metric=recipe.metrics[0] if recipe.metrics else None))
    trainer = Trainer(model=model, loss_fn=loss_fn, optimizer=optimizer, train_loader=train_loader,
                      val_loader=val_loader, epochs=recipe.train.epochs, **schedule,
                      make_metrics=make_val_metrics, callbacks=callbacks, device=device,
                      precision=recipe.train.precision, clip=build_clip(recipe.train.grad_clip), penalty=penalty,
                      accumulate=recipe.train.accumulate,
                      augment=build_augment(transforms, data.input_shape), mix=mix)
    return Parts(recipe, data, trainer, early_stopping, stages, doctor)


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """The recipe's `optimizer` section -> a torch optimizer, its LR multipliers' patterns checked against the model."""
    multipliers = list(cfg.lr_multipliers.items())
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    for pattern, _ in multipliers:
        if not any(pattern_matches(n, pattern) for n in names):
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise UserError(f"optimizer.lr_multipliers: pattern '{pattern}' matches no trainable parameter",
                            f"globs match a parameter name or a dotted prefix of it; this model's names: {shown}")
    return build_optimizer(model, cfg, lr_multipliers=multipliers or None, layer_decay=cfg.layer_decay)


def make_schedule(cfg):
    """The recipe's `schedule` section -> schedule(step, total, warmup=, min_lr=), options checked now."""
    known = [*SCHEDULES, "reduce_on_plateau"]
    if cfg.name not in known:
        close = difflib.get_close_matches(cfg.name, known, n=1)
        raise UserError(f"schedule.name: unknown schedule '{cfg.name}'",
                        f"did you mean '{close[0]}'?" if close else "available: " + ", ".join(known))
    if cfg.name == "reduce_on_plateau":
        return constant  # the warmup ramp; the plateau's multiplier scales it (schedule_parts)
    try:
        return build_schedule(cfg.name, **cfg.options())
    except (ValueError, TypeError) as e:
        raise UserError(f"schedule: {e}", "see goodfit.optim.schedules.accepted_options(name)") from None


def schedule_parts(cfg, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The recipe's `schedule` section -> the Trainer's schedule, interval, warmup_epochs, min_lr,
    momentum (1cycle with cycle_momentum) and plateau (reduce_on_plateau) arguments."""
    parts: dict[str, Any] = {"schedule": make_schedule(cfg), "interval": cfg.interval, "warmup_epochs": cfg.warmup,
                             "min_lr": cfg.min_lr, "momentum": None, "plateau": None}
    if cfg.interval == "epoch" and cfg.warmup != int(cfg.warmup):
        raise UserError(f"schedule.warmup: {cfg.warmup:g} epochs with interval: epoch",
                        "a per-epoch schedule warms up over whole epochs; give an integer, or interval: step")
    options = cfg.options()
    if cfg.name == "reduce_on_plateau":
        monitor = options.get("monitor", "val_loss")
        options["mode"] = resolve_mode(monitor, options.get("mode", "auto"))
        try:
            parts["plateau"] = build_plateau(min_lr=cfg.min_lr, **options)
        except (ValueError, TypeError) as e:
            raise UserError(f"schedule: {e}", "mode is auto, min or max; see "
                            "goodfit.optim.schedules.accepted_options('reduce_on_plateau')") from None
    if cfg.name == "one_cycle" and options.get("cycle_momentum", True):
        if "betas" not in optimizer.defaults and "momentum" not in optimizer.defaults:
            raise UserError(f"schedule.cycle_momentum: optimizer {type(optimizer).__name__} has no momentum to cycle",
                            "set schedule.cycle_momentum=false, or use sgd, rmsprop or an Adam-family optimizer")
        parts["momentum"] = functools.partial(one_cycle_momentum, **options)
    return parts


def new_run_dir(out: str | Path, name: str) -> Path:
    root = Path(out) / name
    if not root.resolve().is_relative_to(Path(out).resolve()):  # e.g. --out/<name> is a link to elsewhere
        raise UserError(f"{root} leads outside --out {out} (through a symbolic link); refusing to write there",
                        "remove the link or choose another --out")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path, i = root / stamp, 1
    while path.exists() or path.is_symlink():
        i += 1
        path = root / f"{stamp}-{i}"
    path.mkdir(parents=True)
    return path


def _attach_writers(parts: Parts, run_dir: Path, truncate_at=None, time_offset=0.0) -> MetricsLog:
    recipe = parts.recipe
    log = MetricsLog(run_dir / "metrics.jsonl", recipe.train.log_every, truncate_at=truncate_at, time_offset=time_offset)
    doctor = parts.doctor
    ckpt = Checkpointer(run_dir / "checkpoints", tracker=parts.early_stopping, log=log,
                        every_steps=recipe.train.checkpoint_every, interval=recipe.train.checkpoint_interval,
                        extra=(lambda: {"doctor": doctor.state_dict()}) if doctor is not None else None)
    # order matters: early stopping decides `improved`, the doctor repairs (a rollback, a new LR) and records its
    # evidence, the log writes the epoch line, then the checkpoint records all of it
    at = 2 if doctor is not None else 1
    assert parts.trainer.callbacks[at - 1] is (doctor if doctor is not None else parts.early_stopping)
    parts.trainer.callbacks[at:at] = [log, ckpt]
    # last: a callback that repairs a divergence in flight acts before the guard stops the run
    parts.trainer.callbacks.append(DivergenceGuard(recipe.train.log_every))
    if parts.doctor is not None:
        parts.doctor.run_dir = run_dir
    return log


def _finish(parts: Parts, run_dir: Path, state: FitState, log: MetricsLog) -> Run:
    parts.stages.done("training loop: train, validate, checkpoint")
    recipe, trainer = parts.recipe, parts.trainer
    if state.stop_reason == "diverged":
        log.close()
        if parts.doctor is None:  # the doctor wrote its diagnosis at the end of the fit
            _write_divergence(run_dir, state, recipe)
        raise TrainingFailed(f"training diverged at epoch {state.epoch} (non-finite loss); "
                             f"diagnosis written to {run_dir / 'diagnosis.json'}")
    test = None
    if not (run_dir / "test.json").exists():
        test = _evaluate_test(parts, run_dir, checkpoint="best" if recipe.train.early_stopping.restore_best else "last",
                              forced=False)
        log.write(kind="eval", epoch=state.epoch, step=state.step, split="test", **test)
    else:
        test = read_test_record(run_dir / "test.json")["metrics"]
    log.close()
    parts.stages.done("final test (once, locked)")
    return Run(dir=run_dir, recipe=recipe, state=state, test=test, model=trainer.model, data=parts.data,
               best_epoch=parts.early_stopping.best_epoch, stages=parts.stages.items,
               diagnosis=parts.doctor.diagnosis if parts.doctor is not None else None)


def _write_divergence(run_dir: Path, state: FitState, recipe: Recipe) -> None:
    last = state.history[-1] if state.history else {}
    step = last.get("nonfinite_step") or state.step  # the divergence guard's exact step, when it saw it
    finding = {"id": "divergence", "severity": "error", "epoch": state.epoch, "step": step,
               "evidence": {"train_loss": str(last.get("train_loss")), "lr": recipe.optimizer.lr,
                            "stopped_at_step": state.step},
               "message": f"The training loss became non-finite at step {step} (epoch {state.epoch}); the run "
                          "stopped and the checkpoints hold the last finite state.",
               "prescription": [{"action": "lower the learning rate tenfold",
                                 "recipe_patch": {"optimizer.lr": recipe.optimizer.lr / 10}},
                                {"action": "clip gradients by norm", "recipe_patch": {"train.grad_clip": {"norm": 1.0}}}]}
    (run_dir / "diagnosis.json").write_text(json.dumps({"verdict": "failed", "findings": [finding]}, indent=2))


def _evaluate_test(parts: Parts, run_dir: Path, checkpoint: str, forced: bool) -> dict[str, float]:
    """Score the test split and record it in test.json: the one sanctioned read of the test split."""
    data, trainer = parts.data, parts.trainer
    device = trainer.device
    loader = TensorLoader(data.x_test.to(device), data.y_test.to(device), parts.recipe.train.eval_batch_size, shuffle=False)
    metrics = evaluate(trainer.model, trainer.loss_fn, loader, trainer.make_metrics(), device, trainer.precision)
    record = {"split": "test", "checkpoint": checkpoint, "metrics": metrics, "forced": forced,
              "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    path = run_dir / "test.json"
    doc = read_test_record(path) if path.exists() else {**record, "evaluations": []}
    doc["evaluations"].append(record)
    atomic_write_text(path, json.dumps(doc, indent=2))  # a crash here leaves the old record or the new one
    return metrics


class _torch_threads:
    """Restore torch's CPU thread count and deterministic-mode flags after a run that set
    `train.threads` or `train.deterministic` (both process-wide)."""

    def __enter__(self):
        self.saved = torch.get_num_threads()
        self.flags = determinism.settings()

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved)
        determinism.restore(self.flags)


def run(recipe: str | Path | dict | Recipe | None = None, overrides: list[str] | dict | None = None, *,
        out: str | Path = "runs", progress: bool = True, console=None, callbacks: list | None = None) -> Run:
    """Train a recipe end to end and write its run directory; returns the Run.

    `callbacks` are extra objects receiving the loop's five events (after early stopping and
    the run directory's writers)."""
    recipe = resolve(load_recipe(recipe, overrides))
    with _torch_threads():
        parts = build(recipe, progress=progress, console=console, callbacks=callbacks)
        run_dir = new_run_dir(out, recipe.name)
        (run_dir / "recipe.yaml").write_text(recipe.to_yaml())
        log = _attach_writers(parts, run_dir)
        parts.stages.done("run directory")
        state = parts.trainer.fit()
        return _finish(parts, run_dir, state, log)


def load_run_recipe(run_dir: str | Path) -> Recipe:
    run_dir = Path(run_dir)
    path = run_dir / "recipe.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a goodfit run directory (no recipe.yaml)",
                        "give the folder printed by `goodfit train`, e.g. runs/digits-cnn/20260101-120000")
    return resolve(load_recipe(path))


def resume(run_dir: str | Path, *, progress: bool = True, console=None, callbacks: list | None = None) -> Run:
    """Continue a run exactly where its last checkpoint left it."""
    with _torch_threads():
        return _resume(Path(run_dir), progress, console, callbacks)


def _resume(run_dir: Path, progress: bool, console, callbacks) -> Run:
    check_run_dir(run_dir)
    recipe = load_run_recipe(run_dir)
    parts = build(recipe, progress=progress, console=console, callbacks=callbacks)
    # the newest checkpoint that verifies (last, else prev); none yet: from step 0
    state, saved = restore(run_dir, parts.trainer, parts.early_stopping, functools.partial(_warn, console))
    if parts.doctor is not None and isinstance(saved.get("doctor"), dict):
        try:  # the evidence before the interruption: the doctor judges the whole run, not the resumed part
            parts.doctor.load_state_dict(saved["doctor"])
        except (KeyError, TypeError, ValueError, IndexError) as e:
            _warn(console, f"the doctor's saved state is unreadable ({type(e).__name__}); it judges the resumed part only")
    log = _attach_writers(parts, run_dir, truncate_at=saved.get("metrics_offset"), time_offset=saved.get("time") or 0.0)
    state = parts.trainer.fit(state)
    return _finish(parts, run_dir, state, log)


def _warn(console, message: str) -> None:
    if console is not None:
        console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
    else:
        warnings.warn(message, stacklevel=3)


def evaluate_run(run_dir: str | Path, split: str = "val", checkpoint: str = "best", force: bool = False) -> dict[str, float]:
    """Metrics of a saved model on `split`; the test split is locked after its one evaluation."""
    run_dir = Path(run_dir)
    if split not in ("val", "test"):
        raise UserError(f"--split must be val or test, got {split!r}")
    if checkpoint not in ("best", "last"):
        raise UserError(f"--checkpoint must be best or last, got {checkpoint!r}")
    check_run_dir(run_dir)
    recipe = load_run_recipe(run_dir)
    if split == "test" and (run_dir / "test.json").exists() and not force:
        first = read_test_record(run_dir / "test.json")
        raise UserError(f"the test split of {run_dir} was already evaluated ({first.get('time', '?')}): "
                        "it is locked so that it stays an unbiased estimate",
                        "pass --force to evaluate it again; the extra evaluation is recorded in test.json")
    with _torch_threads():
        return _evaluate_saved(run_dir, recipe, split, checkpoint, force)


def _evaluate_saved(run_dir: Path, recipe: Recipe, split: str, checkpoint: str, force: bool) -> dict[str, float]:
    parts = build(recipe, progress=False)
    folder = run_dir / "checkpoints" / checkpoint
    try:
        load_checkpoint(folder, parts.trainer.model)
    except CorruptCheckpoint as e:  # never evaluate garbage, nor silently another checkpoint
        other = "last" if checkpoint == "best" else "best"
        raise UserError(f"cannot evaluate the {checkpoint} checkpoint: {e.message}",
                        f"it has no verified copy; --checkpoint {other} evaluates the other one") from None
    if split == "test":
        return _evaluate_test(parts, run_dir, checkpoint, forced=force)
    t = parts.trainer
    if t.val_loader is None:
        raise UserError("this run has no validation split (data.split.val = 0)")
    return evaluate(t.model, t.loss_fn, t.val_loader, t.make_metrics(), t.device, t.precision)
