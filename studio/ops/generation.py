"""Latents from seeds, truncation, class vectors and batched synthesis: the pure part of "Generate".

Truncation pulls latents towards the generator's mean with strength psi (1 = untouched, 0 = the mean image).
What "mean" means depends on the family:
- DCGAN and FastGAN draw z ~ N(0, I), so the mean latent is the zero vector and truncation is `psi * z`;
- the projected-GAN FastGAN normalises z by its second moment (scaling z changes nothing), so it truncates its
  first feature map towards the average first feature map instead (`ProjectedGanGenerator.forward(psi=...)`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn


def seeded_latents(seeds: Sequence[int], *, z_dim: int) -> Tensor:
    """(N, z_dim) float32 on CPU; row i depends only on seeds[i], so a seed gives the same image in any batch
    and on any device."""
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(int(seed))) for seed in seeds])


def one_hot(index: int, num_classes: int, *, count: int) -> Tensor:
    """(count, num_classes) one-hot class vectors."""
    labels = torch.zeros(count, num_classes)
    labels[:, index] = 1.0
    return labels


def accepts_psi(generator: nn.Module) -> bool:
    return bool(getattr(generator, "truncates_features", False))


@torch.inference_mode()
def synthesize(
    generator: nn.Module,
    latents: Tensor,
    *,
    labels: Tensor | None = None,
    psi: float = 1.0,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
) -> Tensor:
    """Images (N, 3, H, W) float32 in [-1, 1] on CPU from (N, z_dim) latents, batched, bf16 autocast on CUDA."""
    outputs = []
    device = torch.device(device)
    for start in range(0, latents.shape[0], batch_size):
        z = latents[start : start + batch_size].to(device)
        y = None if labels is None else labels[start : start + batch_size].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            images = _forward(generator, z, y, psi)
        outputs.append(images.float().clamp_(-1, 1).cpu())
    return torch.cat(outputs)


def _forward(generator: nn.Module, z: Tensor, labels: Tensor | None, psi: float) -> Tensor:
    if accepts_psi(generator):
        return generator(z, psi=psi) if labels is None else generator(z, labels, psi=psi)
    z = z * psi
    return generator(z) if labels is None else generator(z, labels)


def early_features_fn(generator: nn.Module, *, num_classes: int = 0) -> Callable[[Tensor], Tensor]:
    """latents -> early activations; conditional generators are probed with uniform (soft) class vectors."""

    def early(z: Tensor) -> Tensor:
        if num_classes:
            labels = torch.full((z.shape[0], num_classes), 1.0 / num_classes, device=z.device)
            return generator.early_features(z, labels)
        return generator.early_features(z)

    return early
