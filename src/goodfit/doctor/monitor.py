"""In-flight measurements, sampled: on steps 1, 10 and 25 (a run changes fastest at its start)
and then one optimizer step in `every` (default 100), forward hooks on the activation modules and a
look at every layer's gradient and weight change.

Between samples nothing is attached, so an unsampled step costs nothing. A sample costs about
half a step of a tiny MLP (some 40 small tensor operations and their Python), which sets the
default cadence: ≤ 3% of the step time even for 0.6 ms steps. A sample records,
per layer (each module with a weight of 2+ dimensions: Linear, Conv, that the optimizer owns),
the gradient norm, the weight norm, the scale of a unit's weights and the update-to-weight
ratio ‖Δw‖/‖w‖ of that step; per activation module,
the fraction of dead units (ReLU-like: zero for every example of the batch) and of
saturated outputs (sigmoid/tanh within 1% of their bounds). Values are read with one host
transfer per sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

RELU_LIKE = (nn.ReLU, nn.ReLU6)          # exact zeros: a unit can die
SATURATING = (nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardsigmoid)
# a run changes fastest at its start, where most faults show (the initialization, an LR too high): sample it densely
EARLY = frozenset((1, 10, 25))
# bugs in the training code are there from the first step: probe for them on the first samples, then one in four
PROBE_FIRST, PROBE_EVERY = 4, 4


@dataclass
class Sample:
    """The measurements of one sampled optimizer step."""

    step: int
    epoch: int
    grad_norm: dict[str, float] = field(default_factory=dict)     # per layer (its weight)
    weight_norm: dict[str, float] = field(default_factory=dict)
    update_ratio: dict[str, float] = field(default_factory=dict)  # ‖Δw‖/‖w‖ of this step
    weight_scale: dict[str, float] = field(default_factory=dict)  # RMS norm of a unit's weight vector (default init ~0.58)
    dead_fraction: dict[str, float] = field(default_factory=dict)  # per ReLU-like module
    saturation: dict[str, float] = field(default_factory=dict)     # per sigmoid/tanh module
    total_grad_norm: float = 0.0
    outputs_are_probabilities: bool = False  # the model's output rows lie in [0, 1] and sum to 1 (a softmax)
    stale_grad: float = 0.0    # share of the probed weight's .grad not along this step's fresh gradient (0: zeroed)
    untrained: list[str] = field(default_factory=list)  # weights that get no update: frozen or not in the optimizer
    probed: bool = True  # the code-fault probes (the three fields above) ran on this sample

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in _FIELDS}

    @classmethod
    def from_json(cls, d: dict) -> "Sample":
        return cls(**{k: d[k] for k in _FIELDS if k in d})


_FIELDS = ("step", "epoch", "grad_norm", "weight_norm", "update_ratio", "weight_scale", "dead_fraction", "saturation",
           "total_grad_norm", "outputs_are_probabilities", "stale_grad", "untrained", "probed")


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(module name, weight) of every module whose weight has 2+ dimensions, in registration order
    (= forward order for the sequential models this tool builds)."""
    out = []
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if isinstance(w, nn.Parameter) and w.ndim >= 2 and w.requires_grad:
            out.append((name or type(module).__name__, w))
    return out


def _unit_alive(out: torch.Tensor) -> torch.Tensor:
    """Per unit (dim 1, or the only dim of a 1-D output): positive for at least one example and position."""
    if out.ndim == 1:
        return out > 0
    return out.amax(dim=[d for d in range(out.ndim) if d != 1]) > 0  # one reduction: the hook runs inside the step


class Monitor:
    """Sample a model's training every `every` optimizer steps (and the first)."""

    def __init__(self, model: nn.Module, every: int = 100, optimizer: torch.optim.Optimizer | None = None):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.model, self.every, self.optimizer = model, every, optimizer
        # a weight the optimizer does not own keeps its .grad growing: it would fake an exploding first layer
        owned = {id(p) for g in optimizer.param_groups for p in g["params"]} if optimizer is not None else None
        self.layers = [(n, w) for n, w in weighted_layers(model) if owned is None or id(w) in owned]
        self.activations = [(n, m) for n, m in model.named_modules() if isinstance(m, RELU_LIKE + SATURATING)]
        self._relu = {n for n, m in self.activations if isinstance(m, RELU_LIKE)}
        self._weighted = [(name or type(m).__name__, m) for name, m in model.named_modules()
                          if isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.ndim >= 2]
        self._hooks: list = []
        self._acts: dict[str, torch.Tensor] = {}
        self._before: list[torch.Tensor] = []  # the weights before the sampled step, in self.layers' order
        self._fresh: torch.Tensor | None = None   # the probed weight's gradients from this step's backward passes
        self._probs: list[torch.Tensor] = []  # min and max of the model's outputs and of their row sums
        self.armed = False
        self.count = 0  # samples read so far
        self._probe = True  # whether the sample being taken runs the code-fault probes

    def due(self, step: int) -> bool:
        """Whether optimizer step number `step` (1-based) is sampled: the early steps in EARLY, then every `every`."""
        return step in EARLY or step % self.every == 0

    def arm(self) -> None:
        """Attach the hooks and remember the weights, for the next step's forward and update."""
        if self.armed:
            return
        self._acts.clear()
        for name, module in self.activations:
            self._hooks.append(module.register_forward_hook(self._hook(name, module)))
        self._fresh, self._probs = None, []
        self._probe = self.count < PROBE_FIRST or self.count % PROBE_EVERY == 0
        if self._probe:
            self._hooks.append(self.model.register_forward_hook(self._output_hook))
            if self.layers:  # the last layer's weight: were its gradients zeroed before this step's backward?
                self._hooks.append(self.layers[-1][1].register_hook(self._grad_hook))
        with torch.no_grad():  # one foreach kernel copies them all
            self._before = list(torch._foreach_mul([w.detach() for _, w in self.layers], 1.0)) if self.layers else []
        self.armed = True

    def _grad_hook(self, grad: torch.Tensor) -> None:
        g = grad.detach()
        self._fresh = g.clone() if self._fresh is None else self._fresh + g

    def _output_hook(self, _module, _inputs, out) -> None:
        if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[1] > 1 and out.is_floating_point():
            with torch.no_grad():  # the outputs' and the row sums' (min, max): read with the sample, no sync here
                o = out.detach().float()
                self._probs = [*torch.aminmax(o), *torch.aminmax(o.sum(1))]

    def _hook(self, name: str, module: nn.Module):
        relu = isinstance(module, RELU_LIKE)

        def hook(_module, _inputs, out):
            if not isinstance(out, torch.Tensor) or not out.numel():
                return
            with torch.no_grad():
                if relu:
                    alive = _unit_alive(out)
                    prev = self._acts.get(name)  # accumulated micro-batches: a unit alive in any of them is alive
                    self._acts[name] = alive if prev is None or prev.shape != alive.shape else prev | alive
                else:
                    lo, hi = (-1.0, 1.0) if isinstance(module, (nn.Tanh, nn.Hardtanh)) else (0.0, 1.0)
                    margin = 0.01 * (hi - lo)
                    self._acts[name] = ((out <= lo + margin) | (out >= hi - margin)).float().mean()
        return hook

    def disarm(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self.armed = False

    @torch.no_grad()
    def read(self, step: int, epoch: int) -> Sample:
        """The sample of the step just taken (the gradients are still in .grad); disarms the hooks."""
        names = [n for n, _ in self.layers]
        device = self.layers[0][1].device if self.layers else torch.device("cpu")
        zero = torch.zeros((), device=device)

        def f32(t):  # most weights are float32 already: skip the call (a sample is some 40 small operations)
            return t if t.dtype == torch.float32 else t.float()

        weights = [f32(w.detach()) for _, w in self.layers]
        grads = [f32(w.grad.detach()) if w.grad is not None else zero for _, w in self.layers]
        deltas = (list(torch._foreach_sub(weights, [f32(b) for b in self._before])) if len(self._before) == len(weights)
                  else [zero for _ in weights])
        norms = torch._foreach_norm(grads + weights + deltas) if self.layers else []  # one kernel per list, not per layer
        acts = [v.float().mean() for v in self._acts.values()]  # alive share (ReLU-like) or saturated share
        stale = []
        w = self.layers[-1][1] if self.layers else None
        if w is not None and w.grad is not None and self._fresh is not None:
            # the part of .grad not along this step's fresh gradient f: 0 when zeroed (clipping and loss scaling
            # only rescale .grad), large when last step's gradient is still in it; from three dot products:
            # along = g·f/f·f, |g − along·f|² = g·g − (g·f)²/f·f
            f, g = self._fresh.float().flatten(), w.grad.detach().float().flatten()
            stale = [g @ f, f @ f, g @ g]  # float32 is enough: a zeroed .grad gives ~1e-3 against the 0.1 threshold
        probs = self._probs
        parts = [*norms, *acts, *stale, *probs]
        if device.type != "cpu":  # activations and outputs may live elsewhere in a model split across devices
            parts = [t.to(device) for t in parts]
        values = torch.stack(parts).double().cpu().tolist() if parts else []  # the one host transfer of the sample
        k = len(names)
        g, wn, u, a = values[:k], values[k:2 * k], values[2 * k:3 * k], values[3 * k:3 * k + len(acts)]
        sample = Sample(step=step, epoch=epoch, grad_norm=dict(zip(names, g)), weight_norm=dict(zip(names, wn)),
                        update_ratio={n: (uu / ww if ww > 0 else 0.0) for n, uu, ww in zip(names, u, wn)},
                        # ‖W‖/√(units): torch's default init gives 1/√3, He √2, whatever the fan-in
                        weight_scale={n: ww / p.shape[0] ** 0.5 for (n, p), ww in zip(self.layers, wn)},
                        total_grad_norm=sum(x * x for x in g) ** 0.5)
        for name, value in zip(self._acts, a):
            if name in self._relu:
                sample.dead_fraction[name] = 1.0 - value
            else:
                sample.saturation[name] = value
        if stale:
            gf, ff, gg = values[3 * k + len(acts):3 * k + len(acts) + 3]
            along = gf / max(ff, 1e-30)
            across = math.sqrt(max(gg - gf * along, 0.0)) / max(math.sqrt(gg), 1e-30)
            sample.stale_grad = max(across, along - 1.0, 0.0)
        if probs:
            lo, hi, row_lo, row_hi = values[-4:]
            sample.outputs_are_probabilities = lo >= 0 and hi <= 1 and abs(row_lo - 1) < 1e-3 and abs(row_hi - 1) < 1e-3
        sample.probed = self._probe
        if self._probe:
            sample.untrained = self.untrained()
        self.count += 1
        self.disarm()
        self._before = []
        return sample

    def untrained(self) -> list[str]:
        """Names of weights (2+ dims) that cannot change: requires_grad off, or not in the optimizer."""
        in_opt = {id(p) for g in self.optimizer.param_groups for p in g["params"]} if self.optimizer else None
        out = []
        for name, module in self._weighted:
            w = module.weight  # looked up now: a weight may be replaced or frozen during the run
            if not w.requires_grad:
                out.append(f"{name} (frozen)")
            elif in_opt is not None and id(w) not in in_opt:
                out.append(f"{name} (not in the optimizer)")
        return out
