"""Latents from seeds, truncation, class vectors and batched synthesis: the pure part of "Generate".

Truncation pulls latents towards the generator's mean with strength psi (1 = untouched, 0 = the mean image).
What "mean" means depends on the family:
- DCGAN and FastGAN draw z ~ N(0, I), so the mean latent is the zero vector and truncation is `psi * z`;
- the projected-GAN FastGAN normalises z by its second moment (scaling z changes nothing), so it truncates its
  first feature map towards the average first feature map instead (`ProjectedGanGenerator.forward(psi=...)`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from studio.models.noise import NoiseBlend


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


def uses_noise(generator: nn.Module) -> bool:
    """Generators with noise injection (the FastGAN family) take per-image noise generators."""
    return "noise_generator" in inspect.signature(generator.forward).parameters


def noise_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image for its injected noise, derived from (not equal to) the image's latent seed."""
    return [torch.Generator().manual_seed((int(seed) * 0x9E3779B1 + 0x7F4A7C15) % 2**63) for seed in seeds]


def blended_noise(
    start_seeds: Sequence[int], end_seeds: Sequence[int], weights: Sequence[float]
) -> list[torch.Generator | NoiseBlend]:
    """Per image, the noise of the image seeded by start_seeds[i] blended towards end_seeds[i]'s by weights[i]
    (`NoiseBlend`; weight 0 is exactly the start seed's noise, as `noise_generators` gives it). Where both seeds
    are the same, that seed's generator as it is: a blend of a noise with itself would swell it by up to sqrt(2)."""
    sources: list[torch.Generator | NoiseBlend] = []
    for start_seed, end_seed, weight in zip(start_seeds, end_seeds, weights, strict=True):
        start, end = noise_generators([start_seed, end_seed])
        sources.append(start if start_seed == end_seed else NoiseBlend(start=start, end=end, weight=float(weight)))
    return sources


@torch.inference_mode()
def synthesize(
    generator: nn.Module,
    latents: Tensor,
    *,
    labels: Tensor | None = None,
    psi: float = 1.0,
    seeds: Sequence[int] | None = None,
    noise: Sequence[torch.Generator | NoiseBlend] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
) -> Tensor:
    """Images (N, 3, H, W) float32 in [-1, 1] on CPU from (N, z_dim) latents, batched, bf16 autocast on CUDA.

    `seeds` (one per latent) make injected noise reproducible; without them noise models use noise seeded by index.
    `noise` (one source per latent, fresh: generators are used up as they draw) gives the noise itself instead.
    """
    outputs = []
    device = torch.device(device)
    noisy = uses_noise(generator)
    if noisy and noise is None:
        noise = noise_generators(range(latents.shape[0]) if seeds is None else seeds)
    if noisy and len(noise) != latents.shape[0]:
        raise ValueError(f"got {len(noise)} noise sources for {latents.shape[0]} latents; give one per latent")
    for start in range(0, latents.shape[0], batch_size):
        z = latents[start : start + batch_size].to(device)
        y = None if labels is None else labels[start : start + batch_size].to(device)
        extra: dict = {"noise_generator": noise[start : start + batch_size]} if noisy else {}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            images = _forward(generator, z, y, psi, extra)
        outputs.append(images.float().clamp_(-1, 1).cpu())
    return torch.cat(outputs)


def _forward(generator: nn.Module, z: Tensor, labels: Tensor | None, psi: float, extra: dict) -> Tensor:
    if accepts_psi(generator):
        extra = {**extra, "psi": psi}
    else:
        z = z * psi
    return generator(z, **extra) if labels is None else generator(z, labels, **extra)


def early_features_fn(generator: nn.Module, *, num_classes: int = 0) -> Callable[[Tensor], Tensor]:
    """latents -> early activations; conditional generators are probed with uniform (soft) class vectors."""

    def early(z: Tensor) -> Tensor:
        if num_classes:
            labels = torch.full((z.shape[0], num_classes), 1.0 / num_classes, device=z.device)
            return generator.early_features(z, labels)
        return generator.early_features(z)

    return early
