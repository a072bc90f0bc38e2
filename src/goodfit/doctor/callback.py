"""The doctor as a callback of the training loop: it listens to the five events (the engine
knows nothing of it), samples the model through `Monitor`, judges with `rules`, repairs in
flight when asked, and writes diagnosis.json and doctor.jsonl into the run directory."""
from __future__ import annotations

import bisect
import copy
import json
import math
from functools import partial
from pathlib import Path
from typing import Any

import torch

from goodfit.doctor import rules
from goodfit.doctor.findings import Diagnosis, Finding, verdict
from goodfit.doctor.monitor import Monitor, Sample

MAX_REPAIRS = 3
REINIT_ABOVE = 1.2  # re-initialize an exploding net whose weights start above this multiple of the default scale


def _flat(history: list[dict]) -> bool:
    """The training loss changed by less than plateau_change (relative) over these epochs."""
    losses = [h["train_loss"] for h in history]
    return bool(losses) and all(math.isfinite(v) for v in losses) and (
        max(losses) - min(losses) <= rules.THRESHOLDS["plateau_change"] * max(abs(losses[0]), 1e-12))


class DoctorCallback:
    """Watch a fit. `preflight` are findings known before step 0 (data checks); `every` is the
    sampling period in optimizer steps; with `auto_repair`, divergence (or units killed by oversized
    steps) rolls back to the last good state with a lower LR; gradients exploding from the
    initialization re-initialize the weights by the scheme matched to the activation, and those
    exploding later turn on clipping at the p90 of the healthy norms; a plateau lowers the LR, or
    re-initializes the weights when they sit at the saddle around zero (at most MAX_REPAIRS
    repairs, each recorded)."""

    def __init__(self, ctx: rules.Context, *, every: int = 100, auto_repair: bool = False,
                 preflight: list[Finding] | None = None, run_dir: str | Path | None = None):
        self.ctx, self.every, self.auto_repair = ctx, every, auto_repair
        self.preflight = list(preflight or [])
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.monitor: Monitor | None = None
        self.samples: list[Sample] = []
        self.losses: list[float] = []
        self.steps: list[int] = []
        self._pending: list[tuple[int, torch.Tensor]] = []
        self.first_seen: dict[str, tuple[int | None, int | None]] = {}  # id -> (epoch, step) of first detection
        self.repairs: list[dict[str, Any]] = []
        self.diagnosis: Diagnosis | None = None
        self._good: tuple | None = None  # (step, model state, optimizer state): the last state with a finite loss
        self._cpu = True
        self.divergence: Finding | None = None
        self._since = 0  # samples before this index predate the last repair
        self._since_step = 0  # ... and the losses up to this step
        self._healthy_norms: list[float] = []
        self._lr_scale = 1.0  # product of the LR changes the repairs made

    # ------------------------------------------------------------ events
    def on_fit_start(self, trainer, state) -> None:
        self.monitor = Monitor(trainer.model, self.every, trainer.optimizer)
        self._cpu = trainer.device.type == "cpu"
        if self.ctx.steps_per_epoch is None:
            self.ctx.steps_per_epoch = -(-len(trainer.train_loader) // max(1, trainer.accumulate))
        if self.ctx.weight_decay is None:
            self.ctx.weight_decay = max((g.get("weight_decay", 0.0) for g in trainer.optimizer.param_groups), default=0.0)
        if self.monitor.due(state.step + 1):
            self.monitor.arm()
        for f in self.preflight:
            self.first_seen.setdefault(f.id, (0, 0))
        if self.auto_repair:
            self._snapshot(trainer, state)

    def on_step_end(self, trainer, state, loss) -> None:
        if self._cpu:  # reading the loss costs nothing here, so divergence is caught at its step
            value = float(loss)
            self.steps.append(state.step)
            self.losses.append(value)
            if not math.isfinite(value) and self._diverged(trainer, state):
                return
        else:  # on an accelerator the losses are read in one transfer at each sample and epoch end
            self._pending.append((state.step, loss))
            if self.monitor.armed and not math.isfinite(float(loss)):
                self._flush()
                if self._diverged(trainer, state):
                    return
        if self.monitor.armed:
            self._flush()
            sample = self.monitor.read(state.step, state.epoch + 1)  # the epoch in progress, 1-based
            self.samples.append(sample)
            self._after_sample(trainer, state, sample)
        if self.monitor.due(state.step + 1):
            self.monitor.arm()

    def on_epoch_end(self, trainer, state, summary) -> None:
        self._flush()
        if self.divergence is None and not math.isfinite(summary["train_loss"]):
            self._record_divergence(state)
        if not self.auto_repair:
            return  # nothing to act on now: when each finding was first seen is replayed at the end (diagnose)
        findings = self._inflight(state.epoch)
        if not any(f.id == "plateau" for f in findings):
            return
        if rules.weight_scale(self.samples) < rules.THRESHOLDS["tiny_weights"]:
            # the weights sit at the saddle around zero: no LR change escapes it, so no reason to wait
            self._repair(trainer, state, "plateau", lambda: self._reinitialize(trainer),
                         "re-initialized the weights (they sat at the saddle around zero)")
            return
        flat_for = int(rules.THRESHOLDS["plateau_epochs"])
        if state.epoch >= flat_for and _flat(state.history[-flat_for:]):
            self._repair(trainer, state, "plateau", lambda: self._scale_lr(trainer, 0.3), "lowered the LR 3x")

    def on_fit_end(self, trainer, state) -> None:
        self._flush()
        if self.monitor is not None:
            self.monitor.disarm()
        best = None
        for cb in trainer.callbacks:
            best = getattr(cb, "best_epoch", best) if hasattr(cb, "best_epoch") else best
        self.diagnosis = self.diagnose(state.history, best)
        if self.run_dir is not None:
            self.write(self.run_dir)

    # ------------------------------------------------------------ judging
    def _inflight(self, epoch: int, upto: int | None = None) -> list[Finding]:
        """The in-flight findings at the end of `epoch`, from the evidence up to step `upto` (default: all)."""
        # after a repair the run is judged on its own evidence; what came before is in first_seen (and repairs)
        samples, losses, steps = self.samples[self._since:], self.losses, self.steps
        if self._since_step or upto is not None:
            # steps only grow (a rollback restores weights, not the step counter): slice, don't scan; the replay
            # does this once per epoch
            lo = bisect.bisect_right(self.steps, self._since_step)
            hi = len(self.steps) if upto is None else bisect.bisect_right(self.steps, upto)
            losses, steps = self.losses[lo:hi], self.steps[lo:hi]
            if upto is not None:
                samples = samples[:bisect.bisect_right([x.step for x in samples], upto)]
        structural = (rules.gradient_findings(samples, self.ctx) + rules.activation_findings(samples, self.ctx)
                      + rules.code_findings(samples, self.ctx))
        found = structural + rules.loss_findings(losses, steps, samples, self.ctx, structural, epoch)
        first = rules.initial_loss_finding(self.losses[0], self.ctx) if self.losses else None
        if first is not None:
            found.append(first)
        for f in found:
            self.first_seen.setdefault(f.id, (f.epoch, f.step))
        return found

    def _replay(self, history: list[dict[str, Any]]) -> None:
        """When each finding was first seen, judged at every epoch end on the evidence up to then. Without
        repairs nothing acts on findings mid-run, so this runs once at the end, in one warm loop, instead of
        at each epoch end of the training loop (where it cost about 1% of a small model's training time)."""
        for epoch, h in enumerate(history[:-1], 1):  # the last epoch is judged by diagnose() itself
            if isinstance(h.get("step"), int):
                self._inflight(epoch, upto=h["step"])

    def diagnose(self, history: list[dict[str, Any]], best_epoch: int | None) -> Diagnosis:
        """All findings over the whole run, then the verdict. Findings seen during the run but gone by its
        end are kept as `info` (e.g. dead units that recovered)."""
        if not self.repairs:  # with repairs the findings were judged live, on the evidence since the last one
            self._replay(history)
        final = self._inflight(len(history))
        known = {f.id for f in self.preflight} | {f.id for f in final if f.severity != "info"}
        final += rules.curve_findings(history, self.ctx, best_epoch, known)
        if self.divergence is not None and not self.repairs:
            final.append(self.divergence)
        final = self.preflight + final
        repaired = {r["id"] for r in self.repairs} | ({"dead_units", "lr_too_high"} if any(
            r["id"] in ("lr_too_high", "divergence") for r in self.repairs) else set())
        for f in final:  # what a repair fixed is history, not a problem of the delivered model
            if f.id in repaired and f.severity == "warning" and f.id not in ("overfitting", "underfitting"):
                f.severity = "info"
                f.message = "Repaired in flight (see repairs). " + f.message
        ids = {f.id for f in final}
        for fid, (epoch, step) in self.first_seen.items():
            # transient structural problems are worth knowing; a loss-trend verdict is only the whole run's
            if fid not in ids and fid not in ("divergence", "plateau", "lr_too_low"):
                final.append(Finding(fid, "info", epoch=epoch, step=step,
                                     message=f"Seen at epoch {epoch} (step {step}) but gone by the end of the run."))
        for f in final:  # report where each problem was first seen
            epoch, step = self.first_seen.get(f.id, (f.epoch, f.step))
            if f.step is None or (step is not None and step < f.step):
                f.epoch, f.step = epoch, step
        if not any(f.severity in ("warning", "error") for f in final):
            final.append(Finding("good_fit", "info", epoch=len(history),
                                 message="No warning-level problem found: the run trained and generalized as expected."))
        return Diagnosis(verdict(final), final, self.repairs)

    def write(self, run_dir: Path) -> None:
        self.diagnosis.write(run_dir / "diagnosis.json")
        with open(run_dir / "doctor.jsonl", "w") as fh:
            fh.write(json.dumps({"kind": "context", **self.ctx.__dict__}) + "\n")
            for step, value in zip(self.steps, self.losses):
                fh.write(json.dumps({"kind": "loss", "step": step, "loss": value if math.isfinite(value) else str(value)})
                         + "\n")
            for s in self.samples:
                fh.write(json.dumps({"kind": "sample", **s.to_json()}) + "\n")
            for f in self.preflight:
                fh.write(json.dumps({"kind": "preflight", **f.to_json()}) + "\n")

    # ------------------------------------------------------------ checkpointed state
    def state_dict(self) -> dict[str, Any]:
        """What the doctor has seen so far, as JSON (saved in each checkpoint's state.json, so that a resumed run
        is judged on all of its evidence: its first loss, its early samples, the repairs already made)."""
        self._flush()
        return {"steps": list(self.steps), "losses": [v if math.isfinite(v) else str(v) for v in self.losses],
                "samples": [s.to_json() for s in self.samples],
                "first_seen": {k: list(v) for k, v in self.first_seen.items()}, "repairs": list(self.repairs),
                "since": self._since, "since_step": self._since_step, "healthy_norms": list(self._healthy_norms),
                "lr_scale": self._lr_scale, "divergence": self.divergence.to_json() if self.divergence else None}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Continue from `state_dict()`'s output; a malformed document raises KeyError/TypeError/ValueError."""
        steps, losses = [int(x) for x in d["steps"]], [float(x) for x in d["losses"]]
        if len(steps) != len(losses):
            raise ValueError("the doctor's steps and losses differ in length")
        samples = [Sample.from_json(x) for x in d["samples"]]
        first_seen = {str(k): (v[0], v[1]) for k, v in d["first_seen"].items()}
        repairs = [dict(r) for r in d["repairs"]]
        divergence = Finding.from_json(d["divergence"]) if d.get("divergence") else None
        self.steps, self.losses, self.samples, self.first_seen, self.repairs = steps, losses, samples, first_seen, repairs
        self._since, self._since_step = int(d["since"]), int(d["since_step"])
        self._healthy_norms, self._lr_scale = [float(x) for x in d["healthy_norms"]], float(d["lr_scale"])
        self.divergence = divergence

    # ------------------------------------------------------------ helpers
    def _flush(self) -> None:
        if not self._pending:
            return
        values = torch.stack([v.detach().float().reshape(()) for _, v in self._pending]).cpu().tolist()
        self.steps += [s for s, _ in self._pending]
        self.losses += values
        self._pending.clear()

    def _record_divergence(self, state, epoch: int | None = None) -> None:
        bad = next((s for s, v in zip(self.steps, self.losses) if not math.isfinite(v)), state.step)
        epoch = state.epoch if epoch is None else epoch
        self.divergence = Finding(
            "divergence", "error", epoch=epoch, step=bad,
            evidence={"loss": "nan/inf", "lr": self.ctx.lr or float("nan")},
            message=f"The training loss became non-finite at step {bad}; the run stopped and the checkpoints hold the "
                    "last finite state.",
            prescription=[{"action": "lower the learning rate tenfold", "recipe_patch": self.ctx.lr_patch(0.1)},
                          {"action": "clip gradients by norm", "recipe_patch": {"train.grad_clip": {"norm": 1.0}}},
                          {"action": "let the doctor repair it in flight", "recipe_patch": {"doctor.auto_repair": True}}])
        self.first_seen.setdefault("divergence", (epoch, bad))

    def _diverged(self, trainer, state) -> bool:
        """A non-finite loss at this step: roll back when repairing, else stop the run now."""
        if self.auto_repair and self._good is not None and len(self.repairs) < MAX_REPAIRS:
            step = self._rollback(trainer, state, 0.1)
            state.epoch_losses[:] = [v for v in state.epoch_losses if torch.isfinite(v)]
            self.repairs.append({"id": "divergence", "step": state.step, "epoch": state.epoch + 1,
                                 "action": f"rolled back to step {step} and lowered the LR 10x"})
            self.first_seen.setdefault("divergence", (state.epoch + 1, state.step))
            return True
        self._record_divergence(state, epoch=state.epoch + 1)
        state.should_stop, state.stop_reason = True, "diverged"
        return True

    def _snapshot(self, trainer, state) -> None:
        self._good = (state.step, {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
                      copy.deepcopy(trainer.optimizer.state_dict()), self._lr_scale)

    def _rollback(self, trainer, state, factor: float) -> int:
        """Restore the last healthy snapshot and scale the LR (cumulatively over repairs); returns its step."""
        step, model_sd, opt_sd, scale_then = self._good
        trainer.model.load_state_dict(model_sd)
        trainer.optimizer.load_state_dict(copy.deepcopy(opt_sd))  # brings back that moment's LRs too
        self._lr_scale *= factor
        for g in trainer.optimizer.param_groups:
            g["initial_lr"] = g.get("initial_lr", g["lr"]) * self._lr_scale / scale_then
            g["lr"] *= self._lr_scale / scale_then
        self._since, self._since_step = len(self.samples), state.step  # judge the repaired run on its own evidence
        return step

    def _after_sample(self, trainer, state, sample: Sample) -> None:
        if not self.auto_repair:
            return
        recent = self.samples[self._since:]
        structural = rules.gradient_findings(recent, self.ctx) + rules.activation_findings(recent, self.ctx)
        ids = {f.id for f in structural}
        # units alive at the start and dead now were killed by the updates: the LR is too high
        thr = rules.THRESHOLDS["dead_fraction"]
        wrecked = ("dead_units" in ids and self.samples and max(self.samples[0].dead_fraction.values(), default=0) < thr
                   # one sample is enough evidence to act on: units alive at the start, dead after oversized steps
                   or rules.killed_units(recent) is not None)
        if (wrecked or "exploding_gradients" in ids and trainer.clip is not None) and self._good is not None:
            step = self._good[0]
            self._repair(trainer, state, "lr_too_high", lambda: self._rollback(trainer, state, 0.1),
                         f"rolled back to step {step} and lowered the LR 10x")
            return
        if "exploding_gradients" in ids and rules.exploding_at_start(recent) and \
                rules.weight_scale(recent[:1]) > REINIT_ABOVE * rules.DEFAULT_WEIGHT_SCALE:
            # exploding from the first step, with weights larger than the default init's: the initialization is the
            # cause (a chaotic regime that clipping only slows down); start again from the default scale
            self._repair(trainer, state, "exploding_gradients", lambda: self._reinitialize(trainer),
                         "re-initialized the weights (the gradients exploded from the initialization: weight scale "
                         f"{rules.weight_scale(recent[:1]):.2g}, torch's default {rules.DEFAULT_WEIGHT_SCALE:.2g})")
            return
        if "exploding_gradients" in ids and trainer.clip is None:
            norms = sorted(self._healthy_norms[-20:])  # norms of healthy steps: the explosion's own are no guide
            if not norms and self._good is not None:  # no healthy step to take a clip level from: smaller steps
                step = self._good[0]
                self._repair(trainer, state, "lr_too_high", lambda: self._rollback(trainer, state, 0.1),
                             f"rolled back to step {step} and lowered the LR 10x (the gradients exploded before any "
                             "healthy step)")
                return
            if norms and self._good is not None:
                p90 = norms[math.ceil(0.9 * len(norms)) - 1]  # nearest rank
                step = self._good[0]

                def clip_from_good():  # the explosion already moved the weights: undo it, then bound the steps
                    from goodfit.optim.clipping import clip_by_norm

                    self._rollback(trainer, state, 1.0)
                    trainer.clip = partial(clip_by_norm, max_norm=p90)

                self._repair(trainer, state, "exploding_gradients", clip_from_good,
                             f"rolled back to step {step} and clipped gradients at norm {p90:.3g} (p90 of healthy norms)")
            return
        if not ids and self.losses and math.isfinite(self.losses[-1]) and self._healthy(sample):
            self._snapshot(trainer, state)  # healthy so far: the state to come back to
            if math.isfinite(sample.total_grad_norm):
                self._healthy_norms.append(sample.total_grad_norm)

    def _healthy(self, sample: Sample) -> bool:
        """A state worth coming back to: the step that led to it was of ordinary size and no units are dying
        (a state after one huge step, or with a quarter of the ReLUs freshly dead, is already damaged)."""
        t = rules.THRESHOLDS
        step_size = rules._median(sample.update_ratio.values()) if sample.update_ratio else 0.0
        start = max(self.samples[0].dead_fraction.values(), default=0.0)
        return (not step_size > t["update_ratio_high"]
                and max(sample.dead_fraction.values(), default=0.0) <= start + t["dying_rise"])

    def _reinitialize(self, trainer) -> str:
        """Every layer re-initialized by the scheme matched to the model's activation (He for ReLU-like, Xavier for
        tanh/sigmoid, else torch's default); the optimizer's state is dropped. Returns the scheme's name."""
        from goodfit.nn import init

        scheme = init.matched(trainer.model)
        if scheme == "default":
            for module in trainer.model.modules():
                if module is not trainer.model and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        else:
            init.apply(trainer.model, scheme)
        trainer.optimizer.state.clear()  # moments of the old weights would steer the new ones
        return scheme

    def _scale_lr(self, trainer, factor: float) -> None:
        self._lr_scale *= factor
        for g in trainer.optimizer.param_groups:
            g["initial_lr"] = g.get("initial_lr", g["lr"]) * factor
            g["lr"] *= factor

    def _repair(self, trainer, state, fid: str, action, text: str) -> None:
        epoch = state.epoch if state.batch_in_epoch == 0 else state.epoch + 1  # at an epoch end / mid-epoch
        if len(self.repairs) >= MAX_REPAIRS or any(r["id"] == fid and r["epoch"] == epoch for r in self.repairs):
            return
        scheme = action()
        if isinstance(scheme, str):  # a re-initialization names the scheme it used
            text = text.replace("re-initialized the weights", f"re-initialized the weights ({scheme} init)", 1)
        self._since, self._since_step = len(self.samples), state.step  # judge the repaired run on its own evidence
        self.repairs.append({"id": fid, "step": state.step, "epoch": epoch, "action": text})
        self.first_seen.setdefault(fid, (epoch, state.step))
