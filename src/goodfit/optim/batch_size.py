"""Batch size: LR scaling rules, mini-batch gradient noise, the gradient noise scale and critical batch
(McCandlish et al. 2018, "An Empirical Model of Large-Batch Training"), the largest batch that fits in
memory, and a batch size + LR recommendation for a recipe.

Notation: G the full-batch gradient, G_B the mean gradient of a mini-batch of B examples, Σ the
per-example gradient covariance. Sampling with replacement gives E|G_B − G|² = tr Σ / B and
E|G_B|² = |G|² + tr Σ / B exactly.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from goodfit.errors import UserError

MIN_STEPS_PER_EPOCH = 8      # a recommended batch leaves at least this many optimizer steps per epoch
RAM_FRACTION = 0.25          # default CPU budget: this fraction of the available RAM
# optimizers whose update is normalized by a running gradient scale: the sqrt rule (see `scaling_rule`)
ADAPTIVE = ("adam", "adamw", "nadam", "radam", "rmsprop", "adagrad")


# ---------------------------------------------------------------- scaling rules

def _check_batches(*batches: int) -> None:
    if any(b < 1 for b in batches):
        raise ValueError(f"batch sizes must be >= 1, got {batches}")


def linear_scaled_lr(base_lr: float, base_batch: int, batch: int) -> float:
    """lr·B/B₀ (Goyal et al. 2017): keeps SGD's noise temperature lr/B, and the distance moved per epoch, fixed."""
    _check_batches(base_batch, batch)
    return base_lr * batch / base_batch


def sqrt_scaled_lr(base_lr: float, base_batch: int, batch: int) -> float:
    """lr·√(B/B₀) (Krizhevsky 2014; Hoffer et al. 2017): keeps the update's noise variance lr²·tr Σ/B fixed."""
    _check_batches(base_batch, batch)
    return base_lr * math.sqrt(batch / base_batch)


def scaling_rule(optimizer: str) -> tuple[str, str]:
    """(rule, why) for an optimizer name: linear for SGD, sqrt for adaptive optimizers."""
    if optimizer in ADAPTIVE:
        return "sqrt", (f"{optimizer} divides each step by a running gradient scale, so its step noise falls as "
                        "1/√B, and the square-root rule keeps it constant (Hoffer et al. 2017; Malladi et al. 2022)")
    return "linear", (f"{optimizer}'s gradient noise has variance tr Σ/B, and the linear rule keeps lr/B, its noise "
                      "temperature, constant (Goyal et al. 2017)")


def scaled_lr(optimizer: str, base_lr: float, base_batch: int, batch: int) -> float:
    """The base LR moved from base_batch to batch with the optimizer's rule (`scaling_rule`)."""
    rule, _ = scaling_rule(optimizer)
    return (sqrt_scaled_lr if rule == "sqrt" else linear_scaled_lr)(base_lr, base_batch, batch)


# ---------------------------------------------------------------- mini-batch gradients

def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


@contextlib.contextmanager
def _measuring(model: nn.Module):
    """Eval mode while measuring gradients: dropout masks would add variance that example sampling does not
    cause, and batch norm would update its running statistics (and couple the examples of a batch)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def flat_gradient(model: nn.Module, loss_fn: Callable, x: Tensor, y: Tensor, params=None) -> Tensor:
    """∇θ loss_fn(model(x), y) flattened to one float64 vector. Through `torch.autograd.grad`, so the
    parameters' `.grad` are never touched."""
    params = _trainable(model) if params is None else params
    grads = torch.autograd.grad(loss_fn(model(x), y), params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1).double() for p, g in zip(params, grads)])


def full_gradient(model: nn.Module, loss_fn: Callable, x: Tensor, y: Tensor, chunk: int = 4096) -> Tensor:
    """G over all of x, y in chunks, each weighted by its share of the rows (loss_fn must average over the batch)."""
    params = _trainable(model)
    with _measuring(model):
        total = None
        for i in range(0, len(x), chunk):
            share = min(chunk, len(x) - i) / len(x)
            g = flat_gradient(model, loss_fn, x[i:i + chunk], y[i:i + chunk], params) * share
            total = g if total is None else total + g
    return total


def _draw(n: int, batch: int, generator: torch.Generator, replacement: bool) -> Tensor:
    if replacement:
        return torch.randint(n, (batch,), generator=generator)
    return torch.randperm(n, generator=generator)[:batch]


def _sq_norms(model, loss_fn, x, y, batch: int, draws: int, generator, replacement: bool,
              ref: Tensor | None = None) -> tuple[list[float], list[float]]:
    """|G_B|² for each of `draws` mini-batches, and |G_B − ref|² when a reference gradient is given."""
    n = len(x)
    _check_batches(batch)
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    if not replacement and batch > n:
        raise ValueError(f"batch {batch} > {n} rows: sampling without replacement needs B <= N")
    params = _trainable(model)
    sq, dev = [], []
    with _measuring(model):
        for _ in range(draws):
            idx = _draw(n, batch, generator, replacement).to(x.device)
            g = flat_gradient(model, loss_fn, x[idx], y[idx.to(y.device)], params)
            sq.append(g.dot(g).item())
            if ref is not None:
                dev.append((g - ref).pow(2).sum().item())
    return sq, dev


@dataclass
class GradientStats:
    """Mini-batch gradients G_B against the full-batch gradient G, over `draws` draws of B rows."""

    batch_size: int
    draws: int
    mean_sq_norm: float      # E|G_B|²
    variance: float          # E|G_B − G|² = tr Cov(G_B): tr Σ/B with replacement
    full_sq_norm: float      # |G|²
    replacement: bool


def gradient_stats(model: nn.Module, loss_fn: Callable, x: Tensor, y: Tensor, batch_size: int, draws: int,
                   generator: torch.Generator, *, replacement: bool = True,
                   full: Tensor | None = None) -> GradientStats:
    """E|G_B|² and the mini-batch gradient variance E|G_B − G|² (tr Σ/B with replacement; without it
    tr Σ/B·(N − B)/(N − 1)), measured in eval mode. `full`: G if already computed."""
    full = full_gradient(model, loss_fn, x, y) if full is None else full
    sq, dev = _sq_norms(model, loss_fn, x, y, batch_size, draws, generator, replacement, ref=full)
    return GradientStats(batch_size, draws, float(np.mean(sq)), float(np.mean(dev)), full.dot(full).item(), replacement)


# ---------------------------------------------------------------- noise scale and critical batch

@dataclass
class NoiseScale:
    """The simple noise scale B_simple = tr Σ / |G|² (McCandlish et al. 2018) and what it was estimated from."""

    grad_sq: float           # |G|² estimate
    trace_cov: float         # S, the tr Σ estimate (per-example gradient covariance)
    b_simple: float          # S/|G|²; inf when the |G|² estimate is <= 0 (noise swamps the signal)
    b_small: int
    b_big: int
    sq_small: float          # E|G_B|² at b_small
    sq_big: float            # E|G_B|² at b_big
    draws: int


def noise_scale_from_norms(b_small: int, sq_small: float, b_big: int, sq_big: float, draws: int = 0) -> NoiseScale:
    """McCandlish et al. 2018, app. A.1: |G|² ≈ (B_big|G_big|² − B_small|G_small|²)/(B_big − B_small),
    S ≈ (|G_small|² − |G_big|²)/(1/B_small − 1/B_big), B_simple = S/|G|²."""
    _check_batches(b_small, b_big)
    if not b_small < b_big:
        raise ValueError(f"need b_small < b_big, got {b_small} and {b_big}")
    grad_sq = (b_big * sq_big - b_small * sq_small) / (b_big - b_small)
    trace = (sq_small - sq_big) / (1 / b_small - 1 / b_big)
    b_simple = trace / grad_sq if grad_sq > 0 else math.inf
    return NoiseScale(grad_sq, trace, b_simple, b_small, b_big, sq_small, sq_big, draws)


def gradient_noise_scale(model: nn.Module, loss_fn: Callable, x: Tensor, y: Tensor, b_small: int, b_big: int,
                         draws: int, generator: torch.Generator) -> NoiseScale:
    """B_simple from E|G_B|² at b_small < b_big, each averaged over `draws` independent draws with replacement
    (so both estimates are unbiased; the ratio is consistent). Needs no full-batch gradient."""
    small, _ = _sq_norms(model, loss_fn, x, y, b_small, draws, generator, True)
    big, _ = _sq_norms(model, loss_fn, x, y, b_big, draws, generator, True)
    return noise_scale_from_norms(b_small, float(np.mean(small)), b_big, float(np.mean(big)), draws)


def critical_batch_size(noise: NoiseScale) -> float:
    """B_crit ≈ B_noise, estimated by B_simple (McCandlish et al. 2018, §2.2-2.3).

    Below B_crit a larger batch cuts the optimizer steps almost proportionally; above it, steps fall little
    and samples (compute) grow. B_simple equals B_noise = tr(HΣ)/(GᵀHG) only when the Hessian H is ∝ I; the
    paper finds the two within an order of magnitude, so read this as a scale, not a sharp threshold. It is
    measured at one point of training, and it grows as the loss falls."""
    return noise.b_simple


# ---------------------------------------------------------------- memory: the largest batch that fits

def optimizer_slots(name: str, momentum: float = 0.0, centered: bool = False) -> int:
    """Tensors of parameter size an optimizer keeps per parameter (Adam: m and v)."""
    if name == "sgd":
        return 1 if momentum else 0
    if name == "rmsprop":
        return 1 + (momentum > 0) + bool(centered)
    return 1 if name == "adagrad" else 2


def _storages(tensors) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in tensors}


@contextlib.contextmanager
def _untouched(model: nn.Module, device: torch.device):
    """Train mode for a memory probe (dropout masks and batch-norm statistics are saved in training), with the
    mode, the buffers (batch norm's running statistics) and the RNG states restored afterwards."""
    was_training = model.training
    buffers = [b.detach().clone() for b in model.buffers()]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model.train()
        try:
            yield
        finally:
            model.train(was_training)
            with torch.no_grad():
                for b, saved in zip(model.buffers(), buffers):
                    b.copy_(saved)


def saved_activation_bytes(model: nn.Module, x: Tensor) -> int:
    """Bytes autograd keeps for backward after the forward of x in train mode: each saved tensor's storage
    counted once (views share it), the model's own parameters and buffers left out."""
    device = x.device
    own = _storages([*model.parameters(), *model.buffers()])
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with _untouched(model, device), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
        del out  # frees the graph: nothing is kept
    return sum(seen.values())


def parameter_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in _trainable(model))


@dataclass
class BatchFit:
    """The largest training batch within a memory budget, and how it was found."""

    batch_size: int          # refined when asked, else the power of two
    power_of_two: int        # the largest power of two that fits
    bytes_at_batch: int      # training bytes at batch_size (measured at that batch)
    budget_bytes: int
    fixed_bytes: int         # parameters + gradients + optimizer state
    bytes_per_sample: float  # activation bytes per example (saved-tensor estimate; nan on CUDA)
    method: str              # "saved tensors" (CPU and other devices) | "cuda peak"
    capped: bool             # stopped at max_batch, not at the budget


def _too_small(budget: int, need: int) -> UserError:
    return UserError(f"a memory budget of {budget / 2**20:.3g} MB does not fit one training example "
                     f"(batch 1 needs about {need / 2**20:.3g} MB)", "raise --budget-mb, or use a smaller model")


def largest_batch(model: nn.Module, input_shape, budget_bytes: int, device: str | torch.device = "cpu", *,
                  slots: int = 2, max_batch: int = 2**16, refine: bool = True,
                  dtype: torch.dtype = torch.float32) -> BatchFit:
    """The largest batch whose forward + backward (+ `slots` optimizer tensors per parameter; Adam: 2) fits.

    CUDA: doubling then bisection on torch.cuda.max_memory_allocated, an out-of-memory error counting as
    "does not fit". Elsewhere: parameters·(2 + slots) + the activations saved for backward, which are linear
    in B: measured at two batch sizes, solved for the budget, then checked by measuring at the answer.
    Transient buffers (one layer's gradient at a time during backward) are not counted: keep a margin."""
    device = torch.device(device)
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    fixed = parameter_bytes(model) * (2 + slots)
    if device.type == "cuda":
        return _largest_batch_cuda(model, tuple(input_shape), budget_bytes, device, fixed - 2 * parameter_bytes(model),
                                   max_batch, refine, dtype)

    def need(b: int) -> int:
        return fixed + saved_activation_bytes(model, torch.zeros(b, *input_shape, device=device, dtype=dtype))

    b1, b2 = 2, 8  # batch 1 is a special case for some layers (batch norm refuses it in training)
    a1, a2 = need(b1) - fixed, need(b2) - fixed
    per_sample = (a2 - a1) / (b2 - b1)
    at_one = fixed + a1 - per_sample
    if at_one > budget_bytes:
        raise _too_small(budget_bytes, at_one)
    solved = max_batch if per_sample <= 0 else int((budget_bytes - fixed - (a1 - per_sample * b1)) // per_sample)
    batch = max(1, min(solved, max_batch))
    measured = need(batch)
    while measured > budget_bytes and batch > 1:  # the linear model was optimistic: step down and check again
        batch = max(1, min(batch - 1, int(batch * budget_bytes / measured)))
        measured = need(batch)
    if measured > budget_bytes:
        raise _too_small(budget_bytes, measured)
    pow2 = 1 << (batch.bit_length() - 1)
    chosen = batch if refine else pow2
    return BatchFit(chosen, pow2, measured if refine else need(pow2), budget_bytes, fixed, per_sample,
                    "saved tensors", batch >= max_batch)


def search_largest(fits: Callable[[int], bool], max_batch: int, refine: bool = True) -> tuple[int, int]:
    """(largest fitting batch, largest fitting power of two) for a monotone `fits`: doubling from 1 up to
    max_batch, then bisection between the last batch that fit and the first that did not. (0, 0) if 1 does not."""
    if not fits(1):
        return 0, 0
    good = 1
    while good * 2 <= max_batch and fits(good * 2):
        good *= 2
    pow2 = good
    bad = min(good * 2, max_batch + 1)  # the first batch known not to fit (or one past the cap)
    while refine and bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good, pow2


def _largest_batch_cuda(model, input_shape, budget, device, state_bytes, max_batch, refine, dtype) -> BatchFit:
    params = _trainable(model)
    peaks: dict[int, int | None] = {}

    def peak(b: int) -> int | None:
        """Peak bytes allocated by one forward + backward at batch b plus the optimizer state; None on OOM."""
        if b not in peaks:
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            try:
                with _untouched(model, device):
                    x = torch.randn(b, *input_shape, device=device, dtype=dtype)
                    grads = torch.autograd.grad(model(x).float().sum(), params, allow_unused=True)
                    del x, grads
                torch.cuda.synchronize(device)
                peaks[b] = torch.cuda.max_memory_allocated(device) + state_bytes
            except torch.OutOfMemoryError:
                peaks[b] = None
            finally:
                torch.cuda.empty_cache()
        return peaks[b]

    def fits(b: int) -> bool:
        p = peak(b)
        return p is not None and p <= budget

    batch, pow2 = search_largest(fits, max_batch, refine)
    if batch == 0:
        raise _too_small(budget, peak(1) or budget + 1)
    chosen = batch if refine else pow2
    return BatchFit(chosen, pow2, peak(chosen), budget, parameter_bytes(model) * 2 + state_bytes, math.nan,
                    "cuda peak", chosen >= max_batch)


def default_budget_bytes(device: str | torch.device = "cpu") -> int:
    """CUDA: the device's free memory. Elsewhere: RAM_FRACTION of the available RAM (/proc/meminfo's
    MemAvailable, else sysconf's available pages)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 4 * 2**30  # an unknown machine: assume 4 GiB
    return int(available * RAM_FRACTION)


# ---------------------------------------------------------------- the recommendation

@dataclass
class Recommendation:
    """A batch size and LR for a recipe, with the measurements behind them."""

    batch_size: int
    lr: float
    rule: str                # "linear" | "sqrt": how lr was scaled from the recipe's (base_lr, base_batch)
    rule_reason: str
    base_batch: int          # the recipe's batch per optimizer step: train.batch_size × train.accumulate
    base_lr: float
    optimizer: str
    noise: NoiseScale        # at the model's initialization
    noise_warm: NoiseScale | None  # after `warmup_steps` steps of training (on a copy), if asked
    warmup_steps: int
    critical_batch: float    # from noise_warm when measured, else noise
    fit: BatchFit
    max_by_steps: int        # train_size // MIN_STEPS_PER_EPOCH
    train_size: int
    reason: str
    accumulate: int = 1      # the recipe's train.accumulate; the recommended batch fits, so it becomes 1

    @property
    def recipe_patch(self) -> dict[str, float]:
        """The recommendation as `--set` overrides (LR to 3 significant digits)."""
        patch = {"train.batch_size": self.batch_size, "optimizer.lr": float(f"{self.lr:.3g}")}
        return patch if self.accumulate == 1 else {**patch, "train.accumulate": 1}


def apply_recommendation(recipe, overrides, rec: Recommendation, path) -> Path:
    """Write the recipe document (with its --set overrides) with the recommended batch size and LR to `path`."""
    from goodfit.recipe import write_patched_recipe

    return write_patched_recipe(recipe, overrides, rec.recipe_patch, path,
                                f"train.batch_size and optimizer.lr set by `goodfit batch-size` ({rec.reason})")


@contextlib.contextmanager
def _global_state_kept():
    """Restore torch's thread count and the Python, NumPy and torch RNG states (a recipe build seeds them)."""
    threads = torch.get_num_threads()
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def nearest_power_of_two(x: float) -> int:
    """2^round(log2 x), at least 1."""
    return 1 << max(0, round(math.log2(x))) if x > 0 else 1


def _warm_copy(parts, steps: int) -> nn.Module:
    """A copy of the model after `steps` optimizer steps at the recipe's batch and (constant) LR."""
    from goodfit.data import TensorLoader
    from goodfit.optim.optimizers import build_optimizer

    t = parts.trainer
    model = copy.deepcopy(t.model).train()
    optimizer = build_optimizer(model, parts.recipe.optimizer)
    loader = TensorLoader(parts.data.x_train.to(t.device), parts.data.y_train.to(t.device),
                          parts.recipe.train.batch_size, shuffle=True, seed=parts.recipe.seed)
    done, epoch = 0, 0
    while done < steps:
        for x, y in loader.epoch(epoch):
            optimizer.zero_grad(set_to_none=True)
            t.loss_fn(model(x), y).backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
        epoch += 1
    return model


def recommend(recipe, overrides=None, *, budget_mb: float | None = None, draws: int = 64, seed: int = 0,
              warmup_steps: int = 200) -> Recommendation:
    """Measure a recipe's gradient noise scale and memory, and recommend a batch size and scaled LR.

    B_simple is measured at the recipe's batch B₀ and max(8·B₀, 1024) (capped at the train set), at the model's
    initialization; B_noise grows as the loss falls (McCandlish et al. 2018, §3), so the initial value is a
    lower bound on the critical batch later in training. With `warmup_steps` > 0 (default) it is measured
    again after that many steps at the recipe's batch and LR, on a copy of the model, and that value sets
    the critical batch. The batch is
    min(largest that fits, the power of two nearest B_crit, N/MIN_STEPS_PER_EPOCH), at least 1; the LR is
    the recipe's, scaled by `scaling_rule`. Global RNG states and torch's threads are left as they were."""
    from goodfit.recipe import load_recipe
    from goodfit.runner import build, resolve

    if budget_mb is not None and budget_mb <= 0:
        raise UserError(f"--budget-mb must be positive, got {budget_mb:g}")
    if draws < 1 or warmup_steps < 0:
        raise UserError(f"draws must be >= 1 and warmup steps >= 0, got {draws} and {warmup_steps}")
    recipe = resolve(load_recipe(recipe, overrides))
    with _global_state_kept():
        parts = build(recipe, progress=False)
        t, data = parts.trainer, parts.data
        x, y = data.x_train.to(t.device), data.y_train.to(t.device)
        n = len(x)
        base_batch, opt = recipe.train.batch_size * recipe.train.accumulate, recipe.optimizer
        b_small = max(1, min(base_batch, n // 8))
        # |G|²'s estimate is only as good as B_big is large next to B_simple, which grows to hundreds in training
        b_big = max(b_small + 1, min(max(8 * b_small, 1024), n))
        noise = gradient_noise_scale(t.model, t.loss_fn, x, y, b_small, b_big, draws,
                                     torch.Generator().manual_seed(seed))
        noise_warm = None
        if warmup_steps:
            warm = _warm_copy(parts, warmup_steps)
            noise_warm = gradient_noise_scale(warm, t.loss_fn, x, y, b_small, b_big, draws,
                                              torch.Generator().manual_seed(seed))
        budget = int(budget_mb * 2**20) if budget_mb is not None else default_budget_bytes(t.device)
        fit = largest_batch(t.model, data.input_shape, budget, t.device,
                            slots=optimizer_slots(opt.name, opt.momentum), max_batch=n)
    b_crit = critical_batch_size(noise_warm or noise)
    by_steps = max(1, n // MIN_STEPS_PER_EPOCH)
    near_crit = nearest_power_of_two(b_crit) if math.isfinite(b_crit) else n
    limits = [(near_crit, f"the power of two nearest the critical batch B_crit ≈ {b_crit:.3g} (beyond it a bigger "
                          "batch buys few fewer steps for many more samples)"),
              (by_steps, f"{n} training examples leave at least {MIN_STEPS_PER_EPOCH} optimizer steps per epoch "
                         f"at this batch"),
              (fit.batch_size, f"it is the largest batch that fits in {budget / 2**20:.4g} MB")]
    batch, why = min(limits, key=lambda item: item[0])
    batch = max(1, batch)
    rule, rule_reason = scaling_rule(opt.name)
    lr = scaled_lr(opt.name, opt.lr, base_batch, batch)
    reason = (f"batch {batch}: {why}; LR {lr:.3g} = the recipe's {opt.lr:g} at batch {base_batch} scaled by the "
              f"{rule} rule.")
    return Recommendation(batch, lr, rule, rule_reason, base_batch, opt.lr, opt.name, noise, noise_warm,
                          warmup_steps, b_crit, fit, by_steps, n, reason, recipe.train.accumulate)
