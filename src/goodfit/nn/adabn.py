"""AdaBN (Li et al. 2016, "Revisiting Batch Normalization for Practical Domain Adaptation"): re-estimate every
batch norm's running statistics on data from the new domain; no label, no gradient, no weight changes."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

_BatchNorm = nn.modules.batchnorm._BatchNorm


class _Reached(Exception):
    """Stops a forward pass once the layer being estimated has seen its input."""


def _inputs(batches: Iterable, device) -> Iterable[Tensor]:
    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        yield x.to(device)


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, batches: Iterable, *, exact: bool = False, device=None) -> nn.Module:
    """Replace the running mean/var of every BatchNorm in `model` by statistics of `batches` (tensors, or
    (x, ...) tuples such as a loader's): the rest of the model runs in eval mode (no dropout), nothing is trained.

    exact=False: one pass; each BN averages its per-batch statistics (momentum=None, cumulative), as BN does
    in training. Equal to the whole data's statistics when `batches` is one batch; close for large batches.
    exact=True: one (truncated) pass per BN; every BN gets the statistics it would compute on all the data as
    a single batch, however the data is batched (each BN must be called once per forward).
    Momentum, train/eval modes and the statistics of a BN the data never reaches are restored. Returns `model`.
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        raise ValueError("adapt_batchnorm: the model has no BatchNorm layer with running statistics to adapt")
    if device is None:
        device = next(iter(model.parameters()), bns[0].running_mean).device
    modes = [(m, m.training) for m in model.modules()]
    saved = {m: (m.momentum, [b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)])
             for m in bns}
    model.eval()
    reached: set = set()  # on an error every BN gets its old statistics back
    try:
        if exact:
            reached = _adapt_exact(model, bns, batches, device)
        else:
            reached = _adapt_cumulative(model, bns, batches, device)
    finally:
        for m, training in modes:
            m.training = training
        for m, (momentum, buffers) in saved.items():
            m.momentum = momentum
            if m not in reached:  # never saw data: keeps what it had
                for b, old in zip((m.running_mean, m.running_var, m.num_batches_tracked), buffers):
                    b.copy_(old)
    return model


def _adapt_cumulative(model: nn.Module, bns: list[_BatchNorm], batches: Iterable, device) -> set:
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # running stat = mean over batches of the batch statistic
        m.train()
    seen = 0
    for x in _inputs(batches, device):
        model(x)
        seen += 1
    if not seen:
        raise ValueError("adapt_batchnorm: no batches given")
    return {m for m in bns if m.num_batches_tracked > 0}


def _adapt_exact(model: nn.Module, bns: list[_BatchNorm], batches, device) -> set:
    """Layer by layer in call order: accumulate (n, Σx, Σx²) of a BN's input over all batches, with the BNs before
    it already normalizing by the whole data's (biased) statistics, exactly as one batch of all data would."""
    if iter(batches) is batches:  # a one-shot iterator cannot be read once per layer
        batches = list(batches)
    order = _call_order(model, bns, batches, device)
    done = []
    for m in order:
        stats = {"n": 0, "sum": 0.0, "sq": 0.0, "batches": 0}

        def accumulate(_module, args, stats=stats):
            x = args[0].detach().to(torch.float64)
            dims = [d for d in range(x.dim()) if d != 1]
            stats["n"] += x.numel() // x.shape[1]
            stats["sum"] = stats["sum"] + x.sum(dims)
            stats["sq"] = stats["sq"] + (x * x).sum(dims)
            stats["batches"] += 1
            raise _Reached

        handle = m.register_forward_pre_hook(accumulate)
        try:
            for x in _inputs(batches, device):
                try:
                    model(x)
                except _Reached:
                    pass
        finally:
            handle.remove()
        n = stats["n"]
        if n < 2:
            raise ValueError(f"adapt_batchnorm: a BatchNorm saw {n} value per channel; "
                             "exact statistics need at least 2")
        mean = stats["sum"] / n
        var = (stats["sq"] / n - mean * mean).clamp_min(0)
        # until the end the running variance holds the biased one: eval mode then normalizes as train mode would
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
        m.num_batches_tracked.fill_(stats["batches"])
        done.append((m, n))
    for m, n in done:  # BatchNorm stores the unbiased variance
        m.running_var.mul_(n / (n - 1))
    return set(order)


def _call_order(model: nn.Module, bns: list[_BatchNorm], batches, device) -> list[_BatchNorm]:
    """The BNs in the order the first batch calls them (not always the order they were registered in)."""
    order: list[_BatchNorm] = []
    handles = [m.register_forward_pre_hook(lambda mod, _args: order.append(mod) if mod not in order else None)
               for m in bns]
    try:
        first = next(iter(_inputs(batches, device)), None)
        if first is None:
            raise ValueError("adapt_batchnorm: no batches given")
        model(first)
    finally:
        for h in handles:
            h.remove()
    return order
