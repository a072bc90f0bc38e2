"""The training loop: one `fit` function, readable top to bottom.

Five events are the only extension point, each a plain method call on every callback
that defines it: on_fit_start, on_step_end, on_validation_end, on_epoch_end, on_fit_end.
A callback may ask the loop to stop by setting `state.should_stop`; nothing else about
control flow is hidden. Per step there is no host sync: losses stay on the device and
are reduced once per epoch.

Each optimizer step's LR is group["initial_lr"] × schedule(position) × plateau multiplier, the
position being the step (interval "step") or the epoch (interval "epoch"); a momentum schedule
(1cycle) sets each group's momentum / beta1 at the same position. The plateau multiplier moves
only at epoch ends, from the monitored value; it and the clip are the only stateful parts
(Trainer.extra_state), everything else is a pure function of the counters.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from goodfit.engine.evaluate import evaluate

EVENTS = ("on_fit_start", "on_step_end", "on_validation_end", "on_epoch_end", "on_fit_end")


@dataclass
class FitState:
    """Counters and history of a fit; everything needed to resume it, with the RNGs and the files."""

    epoch: int = 0                 # epochs completed
    step: int = 0                  # optimizer steps taken
    batch_in_epoch: int = 0        # batches done in the current epoch (mid-epoch resume)
    should_stop: bool = False
    stop_reason: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)   # one summary per epoch
    epoch_losses: list[torch.Tensor] = field(default_factory=list)  # this epoch's detached step losses
    loss_carry: tuple[float, int] = (0.0, 0)  # (sum, count) of this epoch's losses before a mid-epoch resume
    last_eval: dict[str, float] = field(default_factory=dict)
    grad_norm: torch.Tensor | None = None  # this step's pre-clip gradient norm, when a clip computed it
    epoch_clipped: list[torch.Tensor] = field(default_factory=list)  # this epoch's "was clipped" flags
    clip_carry: tuple[int, int] = (0, 0)  # (clipped, count) of this epoch's steps before a mid-epoch resume

    def to_json(self) -> dict[str, Any]:
        done = torch.stack(self.epoch_losses).double().sum().item() if self.epoch_losses else 0.0
        clipped = int(torch.stack(self.epoch_clipped).sum().item()) if self.epoch_clipped else 0
        return {"epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
                "should_stop": self.should_stop, "stop_reason": self.stop_reason, "history": self.history,
                "loss_carry": [self.loss_carry[0] + done, self.loss_carry[1] + len(self.epoch_losses)],
                "clip_carry": [self.clip_carry[0] + clipped, self.clip_carry[1] + len(self.epoch_clipped)],
                "last_eval": self.last_eval}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "FitState":
        return cls(epoch=d["epoch"], step=d["step"], batch_in_epoch=d["batch_in_epoch"],
                   should_stop=d["should_stop"], stop_reason=d.get("stop_reason"), history=d["history"],
                   loss_carry=tuple(d["loss_carry"]), clip_carry=tuple(d.get("clip_carry", (0, 0))),
                   last_eval=d.get("last_eval", {}))


def emit(callbacks, event: str, *args) -> None:
    for cb in callbacks:
        fn = getattr(cb, event, None)
        if fn is not None:
            fn(*args)


def autocast(device: torch.device, precision: str):
    """bf16/fp16 mixed precision through torch.autocast; fp32 is a no-op context."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_momentum(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Each group's momentum: Adam-family beta1, else SGD/RMSprop `momentum` (torch OneCycleLR's rule)."""
    for group in optimizer.param_groups:
        if "betas" in group:
            group["betas"] = (value, *group["betas"][1:])
        elif "momentum" in group:
            group["momentum"] = value
        else:
            raise ValueError(f"{type(optimizer).__name__} has neither momentum nor betas to cycle")


def fit(trainer, state: FitState | None = None) -> FitState:
    """Train `trainer.model` for `trainer.epochs` epochs (or until a callback stops it)."""
    t = trainer
    state = state or FitState()
    model, optimizer, loss_fn = t.model, t.optimizer, t.loss_fn
    batches = len(t.train_loader)
    accumulate = max(1, t.accumulate)
    steps_per_epoch = -(-batches // accumulate)  # optimizer steps; a last partial group still steps
    if t.interval == "step":
        total, warmup = t.epochs * steps_per_epoch, round(t.warmup_epochs * steps_per_epoch)
    elif t.interval == "epoch":  # the schedule counts epochs: held within each, as a torch scheduler stepped per epoch
        total, warmup = t.epochs, round(t.warmup_epochs)
    else:
        raise ValueError(f"interval must be 'step' or 'epoch', got {t.interval!r}")
    for g in optimizer.param_groups:
        g.setdefault("initial_lr", g["lr"])
    step_callbacks = [cb for cb in t.callbacks if hasattr(cb, "on_step_end")]
    scaler = torch.amp.GradScaler(t.device.type) if t.precision == "fp16" else None

    emit(t.callbacks, "on_fit_start", t, state)
    while state.epoch < t.epochs and not state.should_stop:
        if not model.training:  # evaluate() restores the mode; don't walk the module tree for nothing
            model.train()
        epoch_start = time.perf_counter()
        for x, y in t.train_loader.epoch(state.epoch, start=state.batch_in_epoch):
            if state.batch_in_epoch % accumulate == 0:  # the first micro-batch of an optimizer step
                at = state.step if t.interval == "step" else state.epoch
                factor = t.schedule(at, total, warmup=warmup, min_lr=t.min_lr)
                if t.plateau is not None:
                    factor *= t.plateau.multiplier
                for group in optimizer.param_groups:  # initial_lr is read each step: a repair may lower it
                    group["lr"] = group["initial_lr"] * factor
                if t.momentum is not None:
                    set_momentum(optimizer, t.momentum(at, total, warmup=warmup, min_lr=t.min_lr))
                optimizer.zero_grad(set_to_none=True)
            if t.augment is not None:
                x = t.augment(x)
            if t.mix is not None:  # mixup / cutmix: inputs mixed in pairs, targets become mixed probabilities
                x, y = t.mix(x, y)
            with autocast(t.device, t.precision):
                loss = loss_fn(model(x), y)
            if t.penalty is not None:
                loss = loss + t.penalty(model)
            scaled = loss if accumulate == 1 else loss / accumulate  # the mean over the whole group
            if scaler is None:
                scaled.backward()
            else:
                scaler.scale(scaled).backward()
            loss = loss.detach()
            state.epoch_losses.append(loss)
            state.batch_in_epoch += 1
            if state.batch_in_epoch % accumulate and state.batch_in_epoch < batches:
                continue  # keep accumulating gradients
            if scaler is not None:
                scaler.unscale_(optimizer)
            if t.clip is not None:
                state.grad_norm, clipped = t.clip(model.parameters())
                state.epoch_clipped.append(clipped)
            if scaler is None:
                optimizer.step()
            else:
                scaler.step(optimizer)
                scaler.update()
            state.step += 1
            for cb in step_callbacks:
                cb.on_step_end(t, state, loss)
            if state.should_stop:  # a step callback stopped the run (e.g. the doctor saw a non-finite loss)
                break

        # one host sync per epoch for the training loss
        carry_sum, carry_n = state.loss_carry
        epoch_sum = torch.stack(state.epoch_losses).double().sum().item() if state.epoch_losses else 0.0
        n = carry_n + len(state.epoch_losses)
        train_loss = (carry_sum + epoch_sum) / max(1, n)
        state.epoch_losses, state.loss_carry = [], (0.0, 0)
        train_time = time.perf_counter() - epoch_start

        summary: dict[str, Any] = {"epoch": state.epoch + 1, "step": state.step, "train_loss": train_loss,
                                   "lr": optimizer.param_groups[0]["lr"], "train_time": train_time}
        clip_n = state.clip_carry[1] + len(state.epoch_clipped)
        if clip_n:
            now = torch.stack(state.epoch_clipped).sum().item() if state.epoch_clipped else 0
            clipped = state.clip_carry[0] + now
            summary["clipped_fraction"] = clipped / clip_n
            state.epoch_clipped, state.clip_carry = [], (0, 0)
        if t.val_loader is not None:
            val_start = time.perf_counter()
            val = evaluate(model, loss_fn, t.val_loader, t.make_metrics(), t.device, t.precision)
            state.last_eval = val
            summary.update({f"val_{k}": v for k, v in val.items()})
            summary["val_time"] = time.perf_counter() - val_start
            emit(t.callbacks, "on_validation_end", t, state, val)
        if t.plateau is not None:  # metric-driven decay: sets the multiplier of the next epoch's steps
            t.plateau.step(summary[t.plateau.monitor])
        state.epoch += 1
        state.batch_in_epoch = 0
        state.history.append(summary)
        if not math.isfinite(train_loss):
            state.should_stop, state.stop_reason = True, "diverged"
        emit(t.callbacks, "on_epoch_end", t, state, summary)
    emit(t.callbacks, "on_fit_end", t, state)
    return state
