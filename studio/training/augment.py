"""Differentiable augmentation for data-efficient GAN training (after Zhao et al. 2020, "DiffAugment").

The same random transforms are applied to real and to generated images right before the discriminator, and the
gradient flows through them to the generator, so D cannot overfit a few hundred images and G is never taught to
draw the augmentations. Every function takes (B, 3, H, W) images in [-1, 1] and a CPU `torch.Generator`; the random
numbers are drawn on CPU and moved to the images' device, so a seed augments identically on every device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

AUGMENTATIONS = ("color", "translation", "cutout")


def _uniform(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    return torch.rand(shape, generator=generator).to(device=like.device, dtype=like.dtype)


def random_color(images: Tensor, generator: torch.Generator) -> Tensor:
    """Per-image brightness shift in [-0.5, 0.5), saturation x[0, 2), contrast x[0.5, 1.5)."""
    batch = images.shape[0]
    brightness = _uniform((batch, 1, 1, 1), generator, images) - 0.5
    saturation = _uniform((batch, 1, 1, 1), generator, images) * 2.0
    contrast = _uniform((batch, 1, 1, 1), generator, images) + 0.5
    images = images + brightness
    grey = images.mean(dim=1, keepdim=True)
    images = (images - grey) * saturation + grey
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * contrast + mean


def random_translation(images: Tensor, generator: torch.Generator, ratio: float = 0.125) -> Tensor:
    """Shift each image by a whole number of pixels, up to `ratio` of its size each way; the gap is 0 (mid-grey)."""
    batch, _, height, width = images.shape
    max_y, max_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    if max_y == 0 and max_x == 0:
        return images
    shift_y = torch.randint(-max_y, max_y + 1, (batch, 1, 1), generator=generator).to(images.device)
    shift_x = torch.randint(-max_x, max_x + 1, (batch, 1, 1), generator=generator).to(images.device)
    rows = torch.arange(height, device=images.device).view(1, height, 1) + shift_y + max_y  # in padded coordinates
    columns = torch.arange(width, device=images.device).view(1, 1, width) + shift_x + max_x
    padded = torch.nn.functional.pad(images, (max_x, max_x, max_y, max_y))
    batch_index = torch.arange(batch, device=images.device).view(batch, 1, 1)
    shifted = padded.permute(0, 2, 3, 1)[batch_index, rows, columns].permute(0, 3, 1, 2)  # (B, 3, H, W)
    keep = torch.channels_last if images.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return shifted.contiguous(memory_format=keep)


def random_cutout(images: Tensor, generator: torch.Generator, ratio: float = 0.5) -> Tensor:
    """Zero (mid-grey) a square of `ratio` of the image size at a random centre of each image."""
    batch, _, height, width = images.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    centre_y = torch.randint(0, height, (batch, 1, 1), generator=generator).to(images.device)
    centre_x = torch.randint(0, width, (batch, 1, 1), generator=generator).to(images.device)
    rows = torch.arange(height, device=images.device).view(1, height, 1)
    columns = torch.arange(width, device=images.device).view(1, 1, width)
    top, left = centre_y - size_y // 2, centre_x - size_x // 2
    inside = (rows >= top) & (rows < top + size_y) & (columns >= left) & (columns < left + size_x)  # (B, H, W)
    return images * (~inside).unsqueeze(1).to(images.dtype)


_FUNCTIONS: dict[str, Callable[[Tensor, torch.Generator], Tensor]] = {
    "color": random_color,
    "translation": random_translation,
    "cutout": random_cutout,
}


def parse_policy(policy: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """Validated augmentation names from "color,translation,cutout" (or a tuple; "", "none" or None: none)."""
    if not policy or policy == "none":
        return ()
    names = tuple(part.strip() for part in policy.split(",")) if isinstance(policy, str) else tuple(policy)
    names = tuple(name for name in names if name)
    unknown = [name for name in names if name not in _FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown}; choose from {AUGMENTATIONS} (comma separated)")
    return names


def diff_augment(images: Tensor, policy: tuple[str, ...], generator: torch.Generator) -> Tensor:
    """Apply the policy's transforms in order. (B, 3, H, W) in [-1, 1] -> same shape; differentiable w.r.t. images."""
    for name in policy:
        images = _FUNCTIONS[name](images, generator)
    return images
