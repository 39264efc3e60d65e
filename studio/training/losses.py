"""GAN objectives and regularisers as pure functions of logits, images and modules.

Logits are (B,) float tensors: the discriminator's raw scores (higher = "real").

- "bce":     the original GAN loss in its non-saturating form (Goodfellow et al. 2014; DCGAN):
             D: softplus(-D(x)) + softplus(D(G(z)));  G: softplus(-D(G(z))).
- "hinge":   D: relu(1 - D(x)) + relu(1 + D(G(z)));  G: -D(G(z))  (Lim & Ye 2017; SNGAN, BigGAN).
- "wgan-gp": D: D(G(z)) - D(x) + lambda * GP;  G: -D(G(z))  (Gulrajani et al. 2017).
Regularisers: the WGAN-GP gradient penalty E[(||grad_x D(x_hat)||_2 - 1)^2] on random mixes x_hat of real and fake,
and the R1 penalty E[||grad_x D(x)||^2] on reals (Mescheder et al. 2018; scaled by gamma / 2 by the caller).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOSSES = ("bce", "hinge", "wgan-gp")


def _check(kind: str) -> None:
    if kind not in LOSSES:
        raise ValueError(f"unknown GAN loss {kind!r}; choose from {LOSSES}")


def discriminator_loss(kind: str, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Scalar loss the discriminator minimises (without penalties)."""
    _check(kind)
    if kind == "bce":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return fake_logits.mean() - real_logits.mean()


def generator_loss(kind: str, fake_logits: Tensor) -> Tensor:
    """Scalar loss the generator minimises."""
    _check(kind)
    if kind == "bce":
        return F.softplus(-fake_logits).mean()
    return -fake_logits.mean()


def input_gradients(outputs: Tensor, inputs: Tensor) -> Tensor:
    """d(sum outputs)/d inputs, kept in the graph (create_graph) so a penalty on it can be trained through."""
    (gradients,) = torch.autograd.grad(outputs.sum(), inputs, create_graph=True)
    return gradients


def r1_penalty(real_logits: Tensor, real_inputs: Tensor) -> Tensor:
    """E_x ||grad_x D(x)||^2 over the batch. `real_inputs` must require grad and be what produced `real_logits`."""
    gradients = input_gradients(real_logits, real_inputs)
    return gradients.pow(2).flatten(1).sum(1).mean()


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, *, mix: Tensor) -> Tensor:
    """WGAN-GP: E[(||grad D(x_hat)||_2 - 1)^2] with x_hat = mix * real + (1 - mix) * fake.

    critic: images -> (B,) logits (close over labels for a conditional critic); mix: (B,) weights in [0, 1].
    """
    mix = mix.to(device=real.device, dtype=real.dtype).view(-1, *([1] * (real.dim() - 1)))
    mixed = (mix * real.detach() + (1.0 - mix) * fake.detach()).requires_grad_(True)
    gradients = input_gradients(critic(mixed), mixed)
    return (gradients.flatten(1).norm(2, dim=1) - 1.0).pow(2).mean()


@torch.no_grad()
def ema_update(average: nn.Module, model: nn.Module, *, decay: float) -> None:
    """average <- decay * average + (1 - decay) * model for parameters; buffers (BatchNorm statistics) are copied."""
    for target, source in zip(average.parameters(), model.parameters(), strict=True):
        target.lerp_(source.detach().to(target.dtype), 1.0 - decay)
    for target, source in zip(average.buffers(), model.buffers(), strict=True):
        target.copy_(source)


def ema_decay_at(step: int, *, decay: float) -> float:
    """The EMA decay with a warm-up, min(decay, (1 + step) / (10 + step)), so short runs are not stuck at init."""
    return min(decay, (1.0 + step) / (10.0 + step))
