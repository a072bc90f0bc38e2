"""Synchronized batch norm that also works on CPU (gloo): statistics over the whole distributed batch.

torch's nn.SyncBatchNorm refuses CPU tensors; this subclass keeps torch's path where torch has one
(CUDA, XPU, HPU) and adds a CPU/gloo path with one all-reduce forward and one backward.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

_TORCH_SYNC_DEVICES = ("cuda", "hpu", "xpu")  # where torch's own SyncBatchNorm synchronizes


def _reduce_dims(x: Tensor) -> list[int]:
    return [d for d in range(x.dim()) if d != 1]


def _channel_view(t: Tensor, x: Tensor) -> Tensor:
    """(C,) -> (1, C, 1, ...) to broadcast against x (N, C, *)."""
    return t.view(1, -1, *([1] * (x.dim() - 2)))


class _SyncBatchNormFunction(torch.autograd.Function):
    """y = γ·x̂ + β, x̂ = (x − μ)/√(σ² + ε), μ and σ² (biased) over every process's batch.

    Backward (Ioffe & Szegedy 2015, eq. for ∂ℓ/∂x over the whole batch of n values per channel):
    ∂ℓ/∂x = γ/√(σ² + ε) · (dy − Σdy/n − x̂ · Σ(dy·x̂)/n), the two sums all-reduced.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps, group):
        dims = _reduce_dims(x)
        local_n = x.numel() // x.shape[1]
        # float64 sums: the variance as E[x²] − E[x]² would lose digits in float32
        x64 = x.detach().to(torch.float64)
        packed = torch.cat([x64.new_tensor([float(local_n)]), x64.sum(dims), (x64 * x64).sum(dims)])
        dist.all_reduce(packed, dist.ReduceOp.SUM, group=group)
        n = packed[0]
        if n < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got {int(n)} over all processes")
        mean64, sq64 = packed[1:].chunk(2)
        mean64 = mean64 / n
        var64 = (sq64 / n - mean64 * mean64).clamp_min(0)
        mean, invstd = mean64.to(x.dtype), torch.rsqrt(var64 + eps).to(x.dtype)
        x_hat = (x - _channel_view(mean, x)) * _channel_view(invstd, x)
        y = x_hat
        if weight is not None:
            y = y * _channel_view(weight, x)
        if bias is not None:
            y = y + _channel_view(bias, x)
        ctx.save_for_backward(x_hat, weight, invstd)
        ctx.n, ctx.group = n.item(), group
        # for the module's running statistics (not differentiated): the mean and the unbiased variance
        unbiased = (var64 * (n / (n - 1))).to(x.dtype)
        ctx.mark_non_differentiable(mean, unbiased)
        return y, mean, unbiased

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        x_hat, weight, invstd = ctx.saved_tensors
        dims = _reduce_dims(dy)
        sum_dy, sum_dy_xhat = dy.sum(dims), (dy * x_hat).sum(dims)
        # parameter gradients stay local sums: DDP (or the caller) all-reduces them like any other gradient
        grad_weight = sum_dy_xhat.clone() if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = sum_dy.clone() if ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            sums = torch.cat([sum_dy, sum_dy_xhat])
            dist.all_reduce(sums, dist.ReduceOp.SUM, group=ctx.group)
            sum_dy, sum_dy_xhat = (sums / ctx.n).chunk(2)
            scale = invstd if weight is None else weight * invstd
            grad_x = _channel_view(scale, dy) * (dy - _channel_view(sum_dy, dy)
                                                 - x_hat * _channel_view(sum_dy_xhat, dy))
        return grad_x, grad_weight, grad_bias, None, None


class SyncBatchNorm(nn.SyncBatchNorm):
    """nn.SyncBatchNorm that synchronizes on any device: torch's kernels on CUDA/XPU/HPU, an all-reduce of
    (count, Σx, Σx²) elsewhere (CPU with gloo). Outside torch.distributed, or alone in its group, it is
    exactly BatchNorm. Inputs (N, C), (N, C, L), (N, C, H, W), ...; per-process batch sizes may differ.

    Parameter gradients are each process's own share (local sums); DDP averages them across processes, so
    with equal per-process batches the update equals BN's on the combined batch under the loss averaged over
    it. (To compare with BN on the combined batch directly, all-reduce-sum them under a summed loss.)
    """

    def forward(self, input: Tensor) -> Tensor:
        if input.device.type in (*_TORCH_SYNC_DEVICES, torch._C._get_privateuse1_backend_name()):
            return super().forward(input)
        if not self._synchronizes():
            # torch's SyncBatchNorm would raise on CPU even in a group of one; this is plain BatchNorm
            return nn.modules.batchnorm._BatchNorm.forward(self, input)
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        group = self.process_group or dist.group.WORLD
        y, mean, unbiased_var = _SyncBatchNormFunction.apply(input, self.weight, self.bias, self.eps, group)
        if self.track_running_stats:
            self._update_running_stats(mean, unbiased_var)
        return y

    def _synchronizes(self) -> bool:
        """Training inside torch.distributed with more than one process (eval mode uses running statistics)."""
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return False
        return dist.get_world_size(self.process_group or dist.group.WORLD) > 1

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, unbiased_var: Tensor) -> None:
        """BatchNorm's rule: r ← (1 − m)·r + m·stat with the unbiased variance; m = 1/t when momentum is None."""
        self.num_batches_tracked.add_(1)
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), m)

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group=None) -> nn.Module:
        return convert_sync_batchnorm(module, process_group)


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """Replace every BatchNorm1d/2d/3d in `module` by a goodfit SyncBatchNorm sharing its parameters and buffers
    (so requires_grad, values and an optimizer built before stay as they were) and its train/eval mode.
    Returns the module (a new one when `module` itself is a batch norm)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        if isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params():
            raise ValueError("convert_sync_batchnorm: a lazy batch norm has no size yet; run one forward pass first")
        sync = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                             module.track_running_stats, process_group, bias=module.bias is not None)
        if module.affine:
            sync.weight = module.weight
            sync.bias = module.bias
        sync.running_mean = module.running_mean
        sync.running_var = module.running_var
        sync.num_batches_tracked = module.num_batches_tracked
        sync.train(module.training)
        if hasattr(module, "qconfig"):
            sync.qconfig = module.qconfig
        return sync
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, process_group))
    return module

