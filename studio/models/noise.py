"""Reproducible noise injection for the FastGAN-family generators."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import torch
from torch import Tensor

NoiseSource: TypeAlias = torch.Generator | Sequence[torch.Generator] | None
"""Where the noise-injection layers draw their Gaussian noise from.

- `None`: torch's global RNG (what the reference code does). Not reproducible unless the caller seeds it.
- one `torch.Generator`: every noise map of the whole batch is drawn from it in layer order.
- a sequence of B generators, one per sample: sample i's noise comes only from generator i, so an image depends on its
  own latent and its own generator, not on the batch it was rendered in.

Pass CPU generators (`torch.Generator().manual_seed(seed)`): noise is drawn on the generator's device in float32 and
then moved to the activations' device and dtype, so a seed gives the same image on every device.
"""


def draw_noise(like: Tensor, source: NoiseSource, *, global_rng_on_cpu: bool) -> Tensor:
    """A (B, 1, H, W) standard-normal map for (B, C, H, W) activations `like`, on their device and dtype.

    global_rng_on_cpu: with `source=None`, draw from the global CPU RNG (projected_gan's reference) rather than the
    activations' device (the FastGAN reference).
    """
    batch, _, height, width = like.shape
    if source is None:
        noise = torch.randn(batch, 1, height, width, device="cpu" if global_rng_on_cpu else like.device)
    elif isinstance(source, torch.Generator):
        noise = torch.randn(batch, 1, height, width, generator=source, device=source.device)
    else:
        if len(source) != batch:
            raise ValueError(f"got {len(source)} noise generators for a batch of {batch}; pass one per sample")
        noise = torch.cat([torch.randn(1, 1, height, width, generator=g, device=g.device).cpu() for g in source])
    return noise.to(device=like.device, dtype=like.dtype)
