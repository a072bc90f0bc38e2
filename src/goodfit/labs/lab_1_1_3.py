"""1.1.3 Forward and backward propagation: the chain rule by hand equals autograd equals finite differences."""
from __future__ import annotations

import torch

from goodfit.labs import Lab, LabContext

ANSWER = r"""
**Forward propagation** evaluates the network layer by layer and keeps the intermediate
values: for a 2-layer MLP, z₁ = xW₁ + b₁, h = relu(z₁), z₂ = hW₂ + b₂, and the loss
L = CE(softmax(z₂), y). **Backward propagation** applies the chain rule in the reverse
order, reusing those stored values: ∂L/∂z₂ = (softmax(z₂) − onehot(y))/N,
∂L/∂W₂ = hᵀ·∂L/∂z₂, ∂L/∂h = ∂L/∂z₂·W₂ᵀ, ∂L/∂z₁ = ∂L/∂h ⊙ 1[z₁ > 0], ∂L/∂W₁ = xᵀ·∂L/∂z₁.

They are two halves of one computation: the forward pass produces the loss and the
activations the backward pass needs; the backward pass turns the loss into a gradient for
every parameter at about the cost of one more forward pass (reverse-mode differentiation).
Autograd records the forward graph and runs exactly this backward sweep for you. Finite
differences, (L(θ+ε) − L(θ−ε))/2ε, need two forward passes *per parameter*: useless for
training, perfect for checking.
"""


def manual_backward(x, y, w1, b1, w2, b2):
    """Loss and gradients of a 2-layer ReLU MLP with mean cross-entropy, by the chain rule."""
    n = x.shape[0]
    z1 = x @ w1 + b1
    h = z1.clamp_min(0)
    z2 = h @ w2 + b2
    p = torch.softmax(z2, dim=1)
    loss = -torch.log(p[torch.arange(n), y]).mean()
    dz2 = p.clone()
    dz2[torch.arange(n), y] -= 1
    dz2 /= n
    grads = {"w2": h.T @ dz2, "b2": dz2.sum(0)}
    dz1 = (dz2 @ w2.T) * (z1 > 0).to(x.dtype)
    grads.update({"w1": x.T @ dz1, "b1": dz1.sum(0)})
    return loss, grads


def run(ctx: LabContext) -> None:
    import matplotlib.pyplot as plt
    from sklearn.datasets import load_digits

    gen = torch.Generator().manual_seed(0)
    digits = load_digits()
    n = 32 if ctx.quick else 128
    x = torch.tensor(digits.data[:n] / 16.0, dtype=torch.float64)
    y = torch.tensor(digits.target[:n], dtype=torch.long)
    hidden = 16
    params = {
        "w1": torch.randn(64, hidden, generator=gen, dtype=torch.float64) * (2 / 64) ** 0.5,
        "b1": torch.randn(hidden, generator=gen, dtype=torch.float64) * 0.1,
        "w2": torch.randn(hidden, 10, generator=gen, dtype=torch.float64) * (2 / hidden) ** 0.5,
        "b2": torch.zeros(10, dtype=torch.float64),
    }
    args = [params[k] for k in ("w1", "b1", "w2", "b2")]
    loss_manual, manual = manual_backward(x, y, *args)

    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    z = torch.relu(x @ leaves["w1"] + leaves["b1"]) @ leaves["w2"] + leaves["b2"]
    loss_auto = torch.nn.functional.cross_entropy(z, y)
    loss_auto.backward()
    auto = {k: v.grad for k, v in leaves.items()}

    # central finite differences on a sample of coordinates of each parameter
    eps = 1e-6
    per_param = 20 if ctx.quick else 80
    rel_auto, rel_fd, worst_fd = [], [], 0.0
    rows = []
    for name, value in params.items():
        flat = value.view(-1)
        idx = torch.randperm(flat.numel(), generator=gen)[:per_param]
        fd = torch.empty(len(idx), dtype=torch.float64)
        for j, i in enumerate(idx.tolist()):
            old = flat[i].item()
            flat[i] = old + eps
            plus = manual_backward(x, y, *args)[0]
            flat[i] = old - eps
            minus = manual_backward(x, y, *args)[0]
            flat[i] = old
            fd[j] = (plus - minus) / (2 * eps)
        m, a = manual[name].reshape(-1)[idx], auto[name].reshape(-1)[idx]
        scale = torch.maximum(a.abs(), torch.full_like(a, 1e-8)).max()
        err_auto = ((manual[name] - auto[name]).abs().max() / auto[name].abs().max()).item()
        err_fd = ((fd - a).abs().max() / scale).item()
        rel_auto.append(err_auto)
        rel_fd.append(err_fd)
        worst_fd = max(worst_fd, err_fd)
        rows.append([name, tuple(value.shape), err_auto, err_fd])
        if name == "w1":
            sample_fd, sample_auto = fd, a
    ctx.table("relative error per parameter (max |diff| / max |grad|)", ["param", "shape", "manual vs autograd",
                                                                        "finite diff vs autograd"], rows)
    ctx.measure("loss (manual forward)", loss_manual.item())
    ctx.measure("loss (autograd forward)", loss_auto.item())
    ctx.measure("max rel. error manual vs autograd", max(rel_auto))
    ctx.measure("max rel. error finite differences vs autograd", worst_fd)
    ctx.check(abs(loss_manual.item() - loss_auto.item()) < 1e-12, "the hand-written forward pass gives autograd's loss")
    ctx.check(max(rel_auto) < 1e-6, "hand-written backward pass equals autograd (rel. error < 1e-6)",
              f"{max(rel_auto):.2e}")
    ctx.check(worst_fd < 1e-6, "autograd equals central finite differences (float64, rel. error < 1e-6)",
              f"{worst_fd:.2e}")

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.scatter(sample_auto.numpy(), sample_fd.numpy(), s=12)
    lim = float(max(sample_auto.abs().max(), sample_fd.abs().max())) * 1.1
    ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
    ax.set_xlabel("autograd ∂L/∂W₁")
    ax.set_ylabel("finite-difference ∂L/∂W₁")
    ax.set_title("Backprop = finite differences")
    ctx.figure(fig, "gradcheck")


LAB = Lab(id="1.1.3", title="Forward and backward propagation",
          question="模型训练过程中，“前向传播”和“反向传播”的核心逻辑是什么？二者的关系是怎样的？ — Core logic of "
                   "forward and backward propagation, and how they relate.",
          answer=ANSWER, run=run, uses="models, autograd")
