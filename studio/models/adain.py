"""The AdaIN decoder (Huang & Belongie 2017): relu4_1 features -> RGB image.

Mirrors the encoder up to relu4_1: every 3x3 conv is preceded by reflection padding, nearest x2 upsampling between
blocks. `layers` keeps the official module order, so keys are `layers.{i}.*` for the official `{i}.*`.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from studio.models.fast_conv import FrozenConv3x3, run_conv3x3
from studio.models.vgg import ReflectionPad1


def _conv(in_channels: int, out_channels: int, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [ReflectionPad1(), nn.Conv2d(in_channels, out_channels, 3)]
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
        # "auto": on the CPU, frozen float32 weights run through studio.models.fast_conv (each layer's fastest
        # convolution algorithm, measured on first use); "direct": always torch's.
        self.convolution: Literal["auto", "direct"] = "auto"
        self._tuned: dict[str, FrozenConv3x3] = {}

    def forward(self, features: Tensor) -> Tensor:
        x = features
        for index, layer in enumerate(self.layers):
            if isinstance(layer, nn.Conv2d) and self.convolution == "auto":  # its reflection padding has run
                x = run_conv3x3(self._tuned, str(index), layer, x, padding=0)
            else:
                x = layer(x)
        return x
