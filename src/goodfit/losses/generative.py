"""Generative losses: token cross-entropy and perplexity, the VAE's ELBO, GAN losses, the WGAN-GP penalty.

None of these has a recipe task: use them as functions, or as modules through `LOSSES[name](**options)`.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from goodfit.losses._checks import (check_classes, check_float, check_integer, check_number, check_reduction,
                                    check_unit_interval, reduce, shape, working_dtype)

__all__ = ["token_cross_entropy", "perplexity", "vae_elbo", "gan_generator", "gan_discriminator",
           "gradient_penalty", "GAN_KINDS"]

GAN_KINDS = ("non_saturating", "hinge", "wasserstein")


def _check_tokens(name: str, logits: Tensor, targets: Tensor, ignore_index: int) -> None:
    check_float(name, "logits", logits)
    if logits.ndim != 3:
        raise ValueError(f"{name}: logits must have shape (N, T, V) (batch, time, vocabulary), got {shape(logits)}")
    check_integer(name, "targets", targets)
    if tuple(targets.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"{name}: logits of shape {shape(logits)} need integer token targets of shape "
                         f"{tuple(logits.shape[:2])}, got {shape(targets)}")
    check_classes(name, targets, logits.shape[2], ignore_index)


def token_cross_entropy(logits: Tensor, targets: Tensor, *, ignore_index: int = -100,
                        label_smoothing: float = 0.0, reduction: str = "mean") -> Tensor:
    """Next-token cross-entropy of logits (N, T, V) against token ids (N, T).

    `mean` is the mean negative log-likelihood over the tokens whose id is not `ignore_index`
    (padding); `sum` their sum; `none` the per-token losses (N, T), 0 where ignored. A batch with
    every token ignored has mean NaN (0/0), as in torch.
    """
    check_number("token_cross_entropy", "label_smoothing", label_smoothing, 0, 1)
    check_reduction("token_cross_entropy", reduction)
    _check_tokens("token_cross_entropy", logits, targets, ignore_index)
    n, t, v = logits.shape
    loss = F.cross_entropy(logits.reshape(n * t, v), targets.reshape(-1).long(), ignore_index=ignore_index,
                           label_smoothing=label_smoothing, reduction=reduction)
    return loss.reshape(n, t) if reduction == "none" else loss


def perplexity(logits: Tensor, targets: Tensor, *, ignore_index: int = -100) -> Tensor:
    """exp(mean token NLL over non-ignored tokens) of logits (N, T, V) and token ids (N, T); a scalar.

    Over a dataset, accumulate the NLL sum and token count across batches and take exp at the end;
    the mean of per-batch perplexities is not the perplexity.
    """
    return token_cross_entropy(logits, targets, ignore_index=ignore_index).exp()


def vae_elbo(recon: Tensor, x: Tensor, mu: Tensor, logvar: Tensor, *, beta: float = 1.0,
             reconstruction: str = "bce", reduction: str = "mean", return_terms: bool = False):
    """The VAE loss, the negative ELBO: reconstruction + β·KL(N(μ, diag σ²) ‖ N(0, I)) per sample.

    recon, x: (N, *) of the same shape. reconstruction="bce": `recon` holds decoder *logits* and x
    values in [0, 1], the term is Σ BCE-with-logits over the features; "mse": `recon` holds decoder
    means, the term is Σ (x − recon)² over the features. mu, logvar (log σ²): (N, D).
    KL = −½ Σ_d (1 + logvar − μ² − exp(logvar)). β = 1 is the ELBO, β > 1 the β-VAE.
    `mean` averages the per-sample losses over the batch, `sum` adds them, `none` gives them (N,).
    Returns the loss tensor, or with return_terms=True a dict {"loss", "reconstruction", "kl"}, each
    reduced the same way.
    """
    name = "vae_elbo"
    check_number(name, "beta", beta, 0)
    check_reduction(name, reduction)
    if reconstruction not in ("bce", "mse"):
        raise ValueError(f"{name}: reconstruction must be 'bce' or 'mse', got {reconstruction!r}")
    for what, t in (("recon", recon), ("x", x), ("mu", mu), ("logvar", logvar)):
        check_float(name, what, t)
    if recon.shape != x.shape or x.ndim < 2:
        raise ValueError(f"{name}: recon must have x's shape (N, *) with N samples, got recon {shape(recon)} "
                         f"and x {shape(x)}")
    if mu.ndim != 2 or logvar.shape != mu.shape or mu.shape[0] != x.shape[0]:
        raise ValueError(f"{name}: mu and logvar must both have shape (N, D) with N = {x.shape[0]}, "
                         f"got mu {shape(mu)} and logvar {shape(logvar)}")
    r, target = working_dtype(recon), working_dtype(x).to(working_dtype(recon).dtype)
    if reconstruction == "bce":
        check_unit_interval(name, "x (with reconstruction='bce')", x)
        rec = F.binary_cross_entropy_with_logits(r, target, reduction="none")
    else:
        rec = (target - r) ** 2
    rec = rec.flatten(1).sum(1)
    m, lv = working_dtype(mu), working_dtype(logvar)
    kl = -0.5 * (1 + lv - m ** 2 - lv.exp()).sum(1)
    loss = rec + beta * kl
    if not return_terms:
        return reduce(name, loss, reduction)
    return {k: reduce(name, v, reduction) for k, v in
            (("loss", loss), ("reconstruction", rec), ("kl", kl))}


def _check_kind(name: str, kind: str) -> None:
    if kind not in GAN_KINDS:
        raise ValueError(f"{name}: kind must be one of {', '.join(GAN_KINDS)}, got {kind!r}")


def gan_generator(fake_logits: Tensor, *, kind: str = "non_saturating") -> Tensor:
    """The generator's loss from the critic's outputs D(G(z)) on generated samples (any shape, e.g. (N,)).

    non_saturating (Goodfellow et al. 2014): mean −log σ(D(G(z))) = mean softplus(−D(G(z)));
    hinge (Lim & Ye 2017) and wasserstein (Arjovsky et al. 2017): −mean D(G(z)).
    """
    _check_kind("gan_generator", kind)
    check_float("gan_generator", "fake_logits", fake_logits)
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()
    return -fake_logits.mean()


def gan_discriminator(real_logits: Tensor, fake_logits: Tensor, *, kind: str = "non_saturating") -> Tensor:
    """The discriminator's (critic's) loss from its outputs on real and generated samples (any shapes).

    non_saturating: mean −log σ(D(x)) + mean −log(1 − σ(D(G(z)))), i.e. BCE with real → 1, fake → 0;
    hinge: mean max(0, 1 − D(x)) + mean max(0, 1 + D(G(z)));
    wasserstein: mean D(G(z)) − mean D(x) (add gradient_penalty for WGAN-GP).
    """
    _check_kind("gan_discriminator", kind)
    check_float("gan_discriminator", "real_logits", real_logits)
    check_float("gan_discriminator", "fake_logits", fake_logits)
    if kind == "non_saturating":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return fake_logits.mean() - real_logits.mean()


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, *, lambda_gp: float = 10.0,
                     eps: Tensor | None = None) -> Tensor:
    """WGAN-GP's penalty (Gulrajani et al. 2017): λ·mean_i (‖∇_x̂ D(x̂_i)‖₂ − 1)².

    x̂ = ε·real + (1 − ε)·fake with ε ~ U[0, 1] per sample (or `eps`, shape (N,)); real and fake
    (N, *) of the same shape, both detached (the penalty trains the critic). The gradient is taken
    with create_graph=True so the penalty backpropagates into the critic's parameters. The norm is
    over all non-batch dimensions, as sqrt(Σ g² + 1e-12) so it is differentiable at 0.
    """
    name = "gradient_penalty"
    check_number(name, "lambda_gp", lambda_gp, 0)
    if not callable(critic):
        raise ValueError(f"{name}: critic must be a callable (an nn.Module) mapping (N, *) to scores, "
                         f"got {type(critic).__name__}")
    check_float(name, "real", real)
    check_float(name, "fake", fake)
    if real.shape != fake.shape or real.ndim < 2:
        raise ValueError(f"{name}: real and fake must have the same shape (N, *), got {shape(real)} and {shape(fake)}")
    n = real.shape[0]
    if eps is None:
        eps = torch.rand(n, device=real.device, dtype=real.dtype)
    eps = torch.as_tensor(eps, dtype=real.dtype, device=real.device)
    if eps.shape != (n,):
        raise ValueError(f"{name}: eps must have shape ({n},), one mixing weight per sample, got {shape(eps)}")
    e = eps.reshape(n, *([1] * (real.ndim - 1)))
    mixed = (e * real.detach() + (1 - e) * fake.detach()).requires_grad_(True)
    scores = critic(mixed)
    if not isinstance(scores, Tensor) or scores.shape not in ((n,), (n, 1)):
        raise ValueError(f"{name}: critic must return one score per sample, shape ({n},) or ({n}, 1), "
                         f"got {shape(scores) if isinstance(scores, Tensor) else type(scores).__name__}")
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    norm = (grad.flatten(1) ** 2).sum(1).add(1e-12).sqrt()
    return lambda_gp * ((norm - 1) ** 2).mean()
