"""The AdaIN decoder (Huang & Belongie 2017): relu4_1 features -> RGB image.

Mirrors the encoder up to relu4_1: every 3x3 conv is preceded by reflection padding, nearest x2 upsampling between
blocks. `layers` keeps the official module order, so keys are `layers.{i}.*` for the official `{i}.*`.
"""

from __future__ import annotations

from torch import Tensor, nn

from studio.models.fast_conv import TunedConv2d
from studio.models.vgg import ReflectionPad1


def _conv(in_channels: int, out_channels: int, relu: bool = True) -> list[nn.Module]:
    # TunedConv2d: an nn.Conv2d that on the CPU, frozen, runs the fastest algorithm (studio.models.fast_conv)
    layers: list[nn.Module] = [ReflectionPad1(), TunedConv2d(in_channels, out_channels)]
    return layers + [nn.ReLU()] if relu else layers


def _upsample() -> nn.Module:
    return nn.Upsample(scale_factor=2, mode="nearest")


class AdaINDecoder(nn.Module):
    """(N, 512, H/8, W/8) relu4_1-like features -> (N, 3, H, W) RGB, nominally [0, 1] (not clamped)."""

    def __init__(self) -> None:
        super().__init__()
        # fmt: off
        self.layers = nn.Sequential(
            *_conv(512, 256), _upsample(),  # relu4_1 -> relu3_1 resolution
            *_conv(256, 256), *_conv(256, 256), *_conv(256, 256), *_conv(256, 128), _upsample(),  # -> relu2_1
            *_conv(128, 128), *_conv(128, 64), _upsample(),  # -> relu1_1
            *_conv(64, 64), *_conv(64, 3, relu=False),
        )
        # fmt: on

    def forward(self, features: Tensor) -> Tensor:
        return self.layers(features)
