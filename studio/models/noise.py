"""Reproducible noise injection for the FastGAN-family generators."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import torch
from torch import Tensor


@dataclass(frozen=True)
class NoiseBlend:
    """One sample's noise part of the way from one image's noise to another's, for walks between seeds: every map is
    cos(a) n_start + sin(a) n_end with a = weight * pi / 2, each drawn from its own generator in layer order. The
    blend keeps unit variance all along (a plain mix would fade the noise halfway) and is exactly the start's noise
    at weight 0 and the end's at weight 1, so a walk passes through the very images its keyframe seeds generate."""

    start: torch.Generator
    end: torch.Generator
    weight: float

    def draw(self, height: int, width: int) -> Tensor:
        """A (1, 1, height, width) float32 map on the generators' device."""
        start = torch.randn(1, 1, height, width, generator=self.start, device=self.start.device)
        end = torch.randn(1, 1, height, width, generator=self.end, device=self.end.device).to(start.device)
        if self.weight == 0.0:
            return start
        if self.weight == 1.0:
            return end
        angle = self.weight * math.pi / 2
        return math.cos(angle) * start + math.sin(angle) * end


NoiseSource: TypeAlias = torch.Generator | Sequence[torch.Generator | NoiseBlend] | None
"""Where the noise-injection layers draw their Gaussian noise from.

- `None`: torch's global RNG (what the reference code does). Not reproducible unless the caller seeds it.
- one `torch.Generator`: every noise map of the whole batch is drawn from it in layer order.
- a sequence of B generators, one per sample: sample i's noise comes only from generator i, so an image depends on its
  own latent and its own generator, not on the batch it was rendered in. An entry may be a `NoiseBlend` of two
  generators instead (a frame between two keyframes of a walk).

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
        noise = torch.cat([_draw_one(entry, height, width).cpu() for entry in source])
    return noise.to(device=like.device, dtype=like.dtype)


def _draw_one(entry: torch.Generator | NoiseBlend, height: int, width: int) -> Tensor:
    if isinstance(entry, NoiseBlend):
        return entry.draw(height, width)
    return torch.randn(1, 1, height, width, generator=entry, device=entry.device)
