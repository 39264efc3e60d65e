"""DCGAN generator (Radford et al. 2016): ConvTranspose + BatchNorm + ReLU blocks, Tanh out.

The module keeps its layers in one `nn.Sequential` called `main`, so the state-dict keys are `main.{i}.*` exactly
like the omniart eye generator's checkpoint. Channels halve at every doubling of resolution:

    resolution 128, base_channels 64:  z+c -> 1024@4 -> 512@8 -> 256@16 -> 128@32 -> 64@64 -> 3@128
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
        for in_channels, out_channels in zip(channels, channels[1:]):
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
