"""Gradient clipping: by global norm or by value (torch's), adaptive gradient clipping (AGC,
Brock et al. 2021) and AutoClip (Seetharaman et al. 2020).

Every clip takes an iterable of parameters, modifies their `.grad` in place and returns
(pre-clip total 2-norm, whether it clipped) as device tensors: no host sync, so the engine
can log the pre-clip norm and the fraction of clipped steps at its logging interval."""
from __future__ import annotations

from functools import partial

import torch

_TINY = 1e-6


def _grads(params) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    if isinstance(params, torch.Tensor):
        params = [params]
    ps = [p for p in params if p.grad is not None]
    return ps, [p.grad for p in ps]


def _empty():
    return torch.tensor(0.0), torch.tensor(False)


def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The global 2-norm of a list of gradient tensors (fp32 or wider)."""
    return torch.nn.utils.get_total_norm(grads, 2.0)


def clip_by_norm(params, max_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale all gradients together so their global 2-norm is at most `max_norm` (torch's)."""
    ps, grads = _grads(params)
    if not grads:
        return _empty()
    norm = torch.nn.utils.clip_grad_norm_(ps, max_norm)
    return norm, norm > max_norm


def clip_by_value(params, clip_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Clamp each gradient entry to [-clip_value, clip_value] (torch's)."""
    ps, grads = _grads(params)
    if not grads:
        return _empty()
    norm = total_norm(grads)
    clipped = torch.stack([g.abs().amax() for g in grads]).amax() > clip_value
    torch.nn.utils.clip_grad_value_(ps, clip_value)
    return norm, clipped


def unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    """2-norm per output unit: per row (first dim) of a weight, kept broadcastable; the whole tensor if 0-/1-D."""
    if x.ndim <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)), keepdim=True)


@torch.no_grad()
def agc(params, clipping: float = 0.01, eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive gradient clipping, unit-wise: where ||G_i|| / max(||W_i||, eps) > clipping,
    G_i <- clipping·max(||W_i||, eps) / ||G_i|| · G_i. (Brock et al. leave the final linear
    layer unclipped; pass only the parameters to clip.)"""
    ps, grads = _grads(params)
    if not grads:
        return _empty()
    norm = total_norm(grads)
    flags = []
    for p, g in zip(ps, grads):
        max_norm = unitwise_norm(p.detach()).clamp(min=eps) * clipping
        g_norm = unitwise_norm(g)
        trigger = g_norm > max_norm
        g.copy_(torch.where(trigger, g * (max_norm / g_norm.clamp(min=_TINY)), g))
        flags.append(trigger.any())
    return norm, torch.stack(flags).any()


class AutoClip:
    """Clip the global gradient norm to the `percentile`-th percentile (linear interpolation, as
    numpy's default) of all total norms observed so far, the current one included; `history`
    keeps only the last N norms (None: all). Non-finite norms are kept out of the percentile."""

    def __init__(self, percentile: float = 10.0, history: int | None = None):
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {percentile}")
        if history is not None and history < 1:
            raise ValueError(f"history must be >= 1 or None, got {history}")
        self.percentile = float(percentile)
        self.history = history
        self.norms = torch.empty(0, dtype=torch.float64)  # observed total norms (NaN where non-finite), on the gradients' device

    @torch.no_grad()
    def __call__(self, params) -> tuple[torch.Tensor, torch.Tensor]:
        _, grads = _grads(params)
        if not grads:
            return _empty()
        norm = total_norm(grads)
        dtype = torch.float32 if norm.device.type == "mps" else torch.float64  # mps has no float64
        seen = torch.where(torch.isfinite(norm), norm, torch.full_like(norm, float("nan"))).to(dtype)
        self.norms = torch.cat([self.norms.to(seen.device, dtype), seen.reshape(1)])
        if self.history is not None:
            self.norms = self.norms[-self.history:]
        threshold = torch.nanquantile(self.norms, self.percentile / 100.0)
        coef = (threshold / (norm + _TINY)).clamp(max=1.0)
        torch._foreach_mul_(grads, coef.to(grads[0].device, grads[0].dtype))
        return norm, norm > threshold

    def state_dict(self) -> dict:
        return {"percentile": self.percentile, "history": self.history,
                "norms": [None if v != v else v for v in self.norms.double().cpu().tolist()]}

    def load_state_dict(self, state: dict) -> None:
        self.percentile = float(state["percentile"])
        self.history = state["history"]
        self.norms = torch.tensor([float("nan") if v is None else v for v in state["norms"]], dtype=torch.float64)


def build_clip(cfg):
    """The recipe's `train.grad_clip` -> a callable(params) -> (pre-clip norm, clipped), or None.
    One of {norm: X} | {value: X} | {agc: λ} | {auto: percentile, history: N}."""
    if cfg is None:
        return None
    if getattr(cfg, "norm", None) is not None:
        return partial(clip_by_norm, max_norm=cfg.norm)
    if getattr(cfg, "value", None) is not None:
        return partial(clip_by_value, clip_value=cfg.value)
    if getattr(cfg, "agc", None) is not None:
        return partial(agc, clipping=cfg.agc, eps=getattr(cfg, "agc_eps", 1e-3))
    if getattr(cfg, "auto", None) is not None:
        return AutoClip(percentile=cfg.auto, history=getattr(cfg, "history", None))
    raise ValueError("grad_clip needs one of norm, value, agc, auto")
