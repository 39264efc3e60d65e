"""Images from a generator during and after training: fixed-seed latents, sample grids, standing BatchNorm statistics.

Nothing here touches the global RNGs: every random number comes from a CPU generator seeded by the caller, so
sampling in the middle of a run never changes what the run does next.
"""

from __future__ import annotations

import copy
import math

import torch
from PIL import Image
from torch import Tensor, nn

from studio.imaging import make_grid, signed_to_pil


def fixed_latents(*, count: int, z_dim: int, num_classes: int, seed: int) -> tuple[Tensor, Tensor | None]:
    """(count, z_dim) N(0, I) latents and, for a conditional model, (count, K) one-hot labels with the classes in
    contiguous runs (a grid of `grid_columns(count, K)` columns shows one class per row)."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(count, z_dim, generator=generator)
    if not num_classes:
        return z, None
    per_class = math.ceil(count / num_classes)
    labels = torch.div(torch.arange(count), per_class, rounding_mode="floor").clamp(max=num_classes - 1)
    return z, nn.functional.one_hot(labels, num_classes).float()


def grid_columns(count: int, num_classes: int) -> int:
    return math.ceil(count / num_classes) if num_classes else math.ceil(math.sqrt(count))


def random_labels(count: int, num_classes: int, generator: torch.Generator) -> Tensor | None:
    """(count, K) one-hot labels of uniformly drawn classes, or None for an unconditional model."""
    if not num_classes:
        return None
    classes = torch.randint(0, num_classes, (count,), generator=generator)
    return nn.functional.one_hot(classes, num_classes).float()


@torch.inference_mode()
def generate(model: nn.Module, z: Tensor, labels: Tensor | None, *, batch_size: int = 64) -> Tensor:
    """Run the generator over (N, z_dim) latents in chunks on its device -> (N, 3, R, R) float32 in [-1, 1] on CPU."""
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, len(z), batch_size):
        part_labels = None if labels is None else labels[start : start + batch_size].to(device)
        outputs.append(model(z[start : start + batch_size].to(device), part_labels).float().cpu())
    return torch.cat(outputs)


def sample_grid(model: nn.Module, z: Tensor, labels: Tensor | None) -> Image.Image:
    """One PIL picture of the generator's images for the given latents (one class per row when conditional)."""
    images = generate(model, z, labels)
    num_classes = 0 if labels is None else labels.shape[1]
    return make_grid(signed_to_pil(images), columns=grid_columns(len(z), num_classes))


@torch.no_grad()
def with_standing_stats(
    model: nn.Module, *, z_dim: int, num_classes: int, seed: int, batches: int = 8, batch_size: int = 64
) -> nn.Module:
    """A copy of `model` (eval mode) whose BatchNorm running statistics are re-measured with its own weights.

    An EMA generator's weights never produced the running statistics it carries (those come from the trained
    generator, step by step), which shows as washed-out or blotchy samples; averaging the statistics over a few
    batches of random latents ("standing statistics", BigGAN) fixes that. The input model is left unchanged.
    """
    copied = copy.deepcopy(model).eval()
    norms = [module for module in copied.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return copied
    device = next(copied.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    saved_momentum = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
        norm.train()
    for _ in range(batches):
        z = torch.randn(batch_size, z_dim, generator=generator).to(device)
        labels = random_labels(batch_size, num_classes, generator)
        copied(z, None if labels is None else labels.to(device))
    for norm, momentum in zip(norms, saved_momentum, strict=True):
        norm.momentum = momentum
        norm.eval()
    return copied
