"""Latent direction sliders, the GANSpace idea (Härkönen et al. 2020) for generators without a style space.

Sample many latents, map them through an early generator layer, run PCA on those activations, then regress the
latents onto the principal-component coordinates: each regression column is the latent-space direction that moves
the early features along one principal component. Directions are unit vectors in z, so an amount of 1.0 moves a
latent by one standard deviation of the N(0, I) prior along that direction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

EarlyFeatures = Callable[[Tensor], Tensor]  # (B, z_dim) latents -> (B, ...) activations


@dataclass(frozen=True)
class LatentDirections:
    """`vectors`: (k, z_dim) unit directions, strongest first; `explained`: (k,) share of feature variance."""

    vectors: Tensor
    explained: Tensor

    def __len__(self) -> int:
        return self.vectors.shape[0]


@torch.inference_mode()
def find_directions(
    early_features: EarlyFeatures,
    *,
    z_dim: int,
    count: int = 8,
    samples: int = 3000,
    batch_size: int = 250,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> LatentDirections:
    """Top-`count` principal directions of `early_features`, expressed in latent space."""
    if not 1 <= count <= z_dim:
        raise ValueError(f"count must be between 1 and z_dim={z_dim}, got {count}")
    if samples <= count:
        raise ValueError(f"need more samples ({samples}) than directions ({count})")
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(samples, z_dim, generator=generator)
    features = torch.cat(
        [early_features(chunk.to(device)).flatten(1).float().cpu() for chunk in latents.split(batch_size)]
    )
    centred = features - features.mean(dim=0, keepdim=True)
    # Low-rank PCA: the principal axes of the activations (no need for the full SVD of a 3000 x 16k matrix).
    _, singular_values, axes = torch.pca_lowrank(centred, q=min(count + 8, *centred.shape), center=False, niter=4)
    axes = axes[:, :count]
    coordinates = centred @ axes  # (samples, count)
    coordinates = coordinates / coordinates.std(dim=0, keepdim=True)
    # Least squares z ~ coordinates @ W: row i of W is the latent direction of component i.
    solution = torch.linalg.lstsq(coordinates, latents).solution  # (count, z_dim)
    vectors = solution / solution.norm(dim=1, keepdim=True)
    total_variance = centred.pow(2).sum()
    explained = singular_values[:count].pow(2) / total_variance
    return LatentDirections(vectors=vectors, explained=explained)


def apply_directions(latents: Tensor, directions: LatentDirections, amounts: Mapping[int, float]) -> Tensor:
    """latents (B, z_dim) moved by `amount` standard deviations along each chosen direction."""
    if not amounts:
        return latents
    offset = torch.zeros(latents.shape[1], dtype=latents.dtype)
    for index, amount in amounts.items():
        if not 0 <= index < len(directions):
            raise ValueError(f"direction {index} does not exist; this model has directions 0..{len(directions) - 1}")
        offset += float(amount) * directions.vectors[index].to(latents.dtype)
    return latents + offset.to(latents.device)
