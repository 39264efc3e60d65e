"""VGG19 convolutional features with named taps, for style transfer.

One module serves three weight sources (see studio.loader for the key mappings):
- "caffe":    the original Oxford/Caffe weights (Gatys et al.), zero padding, max pooling;
- "imagenet": torchvision's ImageNet weights, zero padding, max pooling;
- "adain":    AdaIN's normalised VGG: a leading 1x1 conv absorbs the preprocessing, reflection padding,
              max pooling with ceil_mode.
Inputs are always RGB (N, 3, H, W) in [0, 1]; `studio.imaging.vgg_preprocess` applies each convention.
Only the layers up to the deepest requested tap are run. On the CPU, frozen float32 weights run through
`studio.models.fast_conv` (each layer's fastest convolution algorithm, measured on first use) unless `convolution` is
set to "direct".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.imaging import vgg_preprocess
from studio.models.fast_conv import TunedConv2d

# (block, convs per block, channels): VGG19 configuration "E".
VGG19_BLOCKS: tuple[tuple[int, int, int], ...] = ((1, 2, 64), (2, 2, 128), (3, 4, 256), (4, 4, 512), (5, 4, 512))
CONV_NAMES: tuple[str, ...] = tuple(f"conv{b}_{c}" for b, n, _ in VGG19_BLOCKS for c in range(1, n + 1))
TAP_NAMES: tuple[str, ...] = tuple(name for conv in CONV_NAMES for name in (conv, "relu" + conv[4:]))
PREPROCESSINGS = ("caffe", "imagenet", "adain")


class VGG19Features(nn.Module):
    def __init__(self, preprocessing: str = "caffe") -> None:
        super().__init__()
        if preprocessing not in PREPROCESSINGS:
            raise ValueError(f"preprocessing must be one of {PREPROCESSINGS}, got {preprocessing!r}")
        self.preprocessing = preprocessing
        self.reflect = preprocessing == "adain"
        self.input_conv = nn.Conv2d(3, 3, 1) if preprocessing == "adain" else None
        self.convs = nn.ModuleDict()
        # "auto": tuned CPU convolutions where allowed (see the module docstring); "direct": always torch's.
        self.convolution: Literal["auto", "direct"] = "auto"
        padding = 0 if self.reflect else 1  # reflection padding is done beforehand, zero padding by the convolution
        in_channels = 3
        for block, count, channels in VGG19_BLOCKS:
            for index in range(1, count + 1):
                self.convs[f"conv{block}_{index}"] = TunedConv2d(in_channels, channels, padding=padding)
                in_channels = channels

    def min_side(self, taps: Iterable[str]) -> int:
        """The smallest picture side (px) that still leaves the deepest of `taps` at least one position (two with
        reflection padding, which needs a neighbour to mirror)."""
        pools = max(int(tap[4]) for tap in _checked_taps(taps)) - 1  # "relu5_1" -> block 5, after 4 pools
        if self.reflect:  # ceil_mode pooling: s -> ceil(s / 2) per pool
            return 2**pools + 1
        return 2**pools

    def forward(self, images: Tensor, taps: Iterable[str]) -> dict[str, Tensor]:
        """images: (N, 3, H, W) RGB in [0, 1]. Returns {tap: activation} for each requested tap."""
        wanted = _checked_taps(taps)
        deepest = max(TAP_NAMES.index(tap) for tap in wanted)
        height, width = images.shape[-2:]
        needed = self.min_side(wanted)
        if min(height, width) < needed:
            raise ValueError(
                f"a {width}x{height} px picture is too small for VGG19 up to {TAP_NAMES[deepest]}: both sides need "
                f"at least {needed} px; use a larger size, or a picture closer to square"
            )
        x = vgg_preprocess(images, self.preprocessing)
        if self.input_conv is not None:
            x = self.input_conv(x)
        found: dict[str, Tensor] = {}
        position = 0
        for block, count, _ in VGG19_BLOCKS:
            if block > 1:
                x = max_pool_2x2(x, ceil_mode=self.reflect)
            for index in range(1, count + 1):
                name = f"{block}_{index}"
                x = self._conv("conv" + name, x)
                if "conv" + name in wanted:
                    found["conv" + name] = x
                x = F.relu(x)
                if "relu" + name in wanted:
                    found["relu" + name] = x
                position += 2
                if position > deepest:
                    return found
        return found

    def _conv(self, name: str, x: Tensor) -> Tensor:
        conv = self.convs[name]
        if self.reflect:
            x = reflection_pad_1(x)
        if self.convolution == "auto":
            return conv(x)
        return F.conv2d(x, conv.weight, conv.bias, padding=conv.padding)


def _checked_taps(taps: Iterable[str]) -> set[str]:
    wanted = set(taps)
    unknown = wanted - set(TAP_NAMES)
    if unknown or not wanted:
        raise ValueError(f"unknown VGG taps {sorted(unknown)}; choose from {TAP_NAMES}")
    return wanted


def max_pool_2x2(x: Tensor, *, ceil_mode: bool) -> Tensor:
    """`F.max_pool2d(x, 2, 2, ceil_mode=ceil_mode)`, the same values; on the CPU without autograd, as the larger of
    pairwise maxima of the four strided quarters.

    torch's CPU max-pooling of NCHW activations is slow: at 512 px the three pools of AdaIN's encoder took 96 ms that
    way and 27 ms this way (a full 512 px AdaIN run: 1.37-1.43 s instead of 1.46-1.49 s, three A/B rounds). With
    autograd the gradient needs torch's own pooling, which records where each maximum was (Gatys' steps).
    """
    if x.device.type != "cpu" or (torch.is_grad_enabled() and x.requires_grad):
        return F.max_pool2d(x, 2, 2, ceil_mode=ceil_mode)
    height, width = x.shape[-2:]
    if ceil_mode and (height % 2 or width % 2):  # the last window is cut short: pad it with -inf, which never wins
        x = F.pad(x, (0, width % 2, 0, height % 2), value=float("-inf"))
    else:
        x = x[..., : height // 2 * 2, : width // 2 * 2]
    top = torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2])
    bottom = torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2])
    return torch.maximum(top, bottom)


def reflection_pad_1(x: Tensor) -> Tensor:
    """`F.pad(x, (1, 1, 1, 1), mode="reflect")` for (N, C, H, W) with H, W >= 2, in x's memory format.

    torch's reflection padding always writes NCHW; on channels_last activations cuDNN then converts every padded
    tensor back to NHWC, and on an H100 (AdaIN, fp16, batch 16 at 512 px) those conversions took longer than the
    convolutions themselves. Here the interior is one strided copy and the border rows and columns are tiny ones.
    """
    height, width = x.shape[-2:]
    if height < 2 or width < 2:
        raise ValueError(f"reflection padding needs at least 2x2 pixels, got {height}x{width}")
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    shape = (*x.shape[:-2], height + 2, width + 2)
    padded = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=layout)
    padded[..., 1:-1, 1:-1] = x
    padded[..., 0, 1:-1] = x[..., 1, :]
    padded[..., -1, 1:-1] = x[..., -2, :]
    padded[..., :, 0] = padded[..., :, 2]
    padded[..., :, -1] = padded[..., :, -3]
    return padded


class ReflectionPad1(nn.Module):
    """`nn.ReflectionPad2d(1)` that keeps channels_last activations channels_last (see `reflection_pad_1`)."""

    def forward(self, x: Tensor) -> Tensor:
        return reflection_pad_1(x)
