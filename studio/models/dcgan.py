"""DCGAN generator (Radford et al. 2016): ConvTranspose + BatchNorm + ReLU blocks, Tanh out.

The module keeps its layers in one `nn.Sequential` called `main`, so the state-dict keys are `main.{i}.*` exactly
like the omniart eye generator's checkpoint. Channels halve at every doubling of resolution:

    resolution 128, base_channels 64:  z+c -> 1024@4 -> 512@8 -> 256@16 -> 128@32 -> 64@64 -> 3@128
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class DCGANConfig:
    z_dim: int = 100
    num_classes: int = 0  # > 0: one-hot class vector concatenated to z
    resolution: int = 64  # power of two, >= 8
    base_channels: int = 64  # channels of the last hidden block
    dropout: float = 0.0  # after the first block (the eye generator uses 0.2; inactive in eval mode)

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ValueError(f"DCGAN resolution must be a power of two >= 8, got {self.resolution}")

    @property
    def hidden_channels(self) -> list[int]:
        """Channels of the hidden feature maps at 4, 8, ..., resolution/2 px."""
        levels = int(math.log2(self.resolution)) - 2
        return [self.base_channels * 2 ** (levels - 1 - i) for i in range(levels)]


class DCGANGenerator(nn.Module):
    """(B, z_dim) latents [+ (B, num_classes) one-hot] -> (B, 3, R, R) images in [-1, 1]."""

    def __init__(self, config: DCGANConfig) -> None:
        super().__init__()
        self.config = config
        self.z_dim = config.z_dim
        self.num_classes = config.num_classes
        channels = config.hidden_channels
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(config.z_dim + config.num_classes, channels[0], 4, 1, 0, bias=False),  # 1 -> 4 px
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
        ]
        self.first_block_end = len(layers)
        for in_channels, out_channels in pairwise(channels):
            layers += [
                nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=False),  # doubles the resolution
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ConvTranspose2d(channels[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def _input(self, z: Tensor, labels: Tensor | None) -> Tensor:
        if self.num_classes:
            if labels is None:
                raise ValueError("this generator is conditional: pass a (B, num_classes) class vector")
            z = torch.cat([z, labels.to(z.dtype)], dim=1)
        return z[:, :, None, None]

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """z: (B, z_dim); labels: (B, num_classes) one-hot or soft weights. Returns (B, 3, R, R) in [-1, 1]."""
        return self.main(self._input(z, labels))

    def early_features(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Activations after the first block, (B, C, 4, 4): the space where latent directions are found."""
        return self.main[: self.first_block_end](self._input(z, labels))


# --- discriminator (for training) ------------------------------------------------------------------------------------

DISCRIMINATOR_NORMS = ("batch", "none")


@dataclass(frozen=True)
class DCGANDiscriminatorConfig:
    """The classic DCGAN critic, mirrored from the generator: channels double at every halving of resolution.

    resolution 64, base_channels 64:  3@64 -> 64@32 -> 128@16 -> 256@8 -> 512@4 -> 1 logit
    """

    resolution: int = 64  # power of two, >= 8
    base_channels: int = 64  # channels of the first (highest-resolution) block
    max_channels: int = 512  # cap for the deep blocks (keeps 256 px critics a sensible size)
    num_classes: int = 0  # > 0: conditional through a projection term (Miyato & Koyama 2018)
    norm: str = "batch"  # "batch" | "none" (use "none" for WGAN-GP: its penalty assumes per-sample gradients)
    spectral_norm: bool = False  # spectral normalisation on every conv and on the class embedding

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ValueError(f"DCGAN resolution must be a power of two >= 8, got {self.resolution}")
        if self.norm not in DISCRIMINATOR_NORMS:
            raise ValueError(f"discriminator norm must be one of {DISCRIMINATOR_NORMS}, got {self.norm!r}")

    @property
    def hidden_channels(self) -> list[int]:
        """Channels of the feature maps at R/2, R/4, ..., 4 px."""
        levels = int(math.log2(self.resolution)) - 2
        return [min(self.base_channels * 2**i, self.max_channels) for i in range(levels)]


class DCGANDiscriminator(nn.Module):
    """(B, 3, R, R) images in [-1, 1] [+ (B, num_classes) one-hot] -> (B,) real-vs-fake logits (float).

    Blocks are Conv(4, 2, 1) [+ BatchNorm from the second block on] + LeakyReLU(0.2); the last 4x4 map is read by a
    4x4 valid conv. A conditional critic adds the projection term <embed(y), sum-pooled features>.
    """

    def __init__(self, config: DCGANDiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        wrap = nn.utils.parametrizations.spectral_norm if config.spectral_norm else (lambda module: module)
        channels = config.hidden_channels
        layers: list[nn.Module] = []
        in_channels = 3
        for index, out_channels in enumerate(channels):
            layers.append(wrap(nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=config.norm == "none")))
            if config.norm == "batch" and index > 0:  # no norm on the input block (Radford et al.)
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_channels = out_channels
        self.main = nn.Sequential(*layers)  # (B, 3, R, R) -> (B, C, 4, 4)
        self.head = wrap(nn.Conv2d(channels[-1], 1, 4, 1, 0))  # (B, C, 4, 4) -> (B, 1, 1, 1)
        self.embed = wrap(nn.Linear(config.num_classes, channels[-1], bias=False)) if config.num_classes else None

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        """images: (B, 3, R, R) in [-1, 1]; labels: (B, num_classes) one-hot or soft. Returns (B,) logits."""
        features = self.main(images)
        logits = self.head(features).flatten(1).sum(1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this discriminator is conditional: pass a (B, num_classes) class vector")
            projection = (self.embed(labels.to(features.dtype)) * features.sum(dim=(2, 3))).sum(1)
            logits = logits + projection
        return logits.float()


def dcgan_init_(module: nn.Module, *, generator: torch.Generator) -> nn.Module:
    """DCGAN initialisation in place, from a seeded CPU generator: conv weights N(0, 0.02), BatchNorm scale
    N(1, 0.02) and shift 0, biases 0. Spectral-norm parametrised weights are initialised through their original."""
    with torch.no_grad():
        for child in module.modules():
            if isinstance(child, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                weight = child.parametrizations.weight.original if hasattr(child, "parametrizations") else child.weight
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.02)
                if child.bias is not None:
                    child.bias.zero_()
                if hasattr(child, "parametrizations"):  # spectral norm: fresh power-iteration vectors
                    for parametrization in child.parametrizations.weight:
                        for name in ("_u", "_v"):
                            vector = getattr(parametrization, name)
                            vector.copy_(
                                nn.functional.normalize(torch.randn(vector.shape, generator=generator), dim=0)
                            )
            elif isinstance(child, nn.BatchNorm2d):
                child.weight.copy_(1.0 + torch.randn(child.weight.shape, generator=generator) * 0.02)
                child.bias.zero_()
    return module
