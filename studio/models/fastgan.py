"""FastGAN few-shot generator (Liu et al., ICLR 2021), laid out like the `huggan/fastgan-few-shot-*` checkpoints.

Those checkpoints were trained with a third-party port whose code we do not use; this module is written from the
architecture description (paper + checkpoint layout) and reproduces the state-dict keys of that port:

    _init._layers.{0,1}                      ConvT 4x4 (spectral norm) -> BN -> GLU
    _upsample_{8,...,1024}._layers.*         nearest x2 then conv blocks (see `UpBlock`)
    _sle_{64,128,256,512}._layers.{1,3}      skip-layer excitation convs
    _out_128.0, _out_1024.0                  image heads (conv, tanh)

Spectral-normalised convs sit one level down, under `._conv` (`._conv.weight_orig`, `._conv.weight_u`,
`._conv.weight_v`); noise strengths are `._weight` (1,).

Channels (ngf=64, the published model; channel c(r) = multiplier(r) * ngf):

    res   4     8    16   32   64   128  256  512  1024
    ch  1024  512  256  128  128   64   32   16     8
    up-block at 8, 32, 128, 512: two convs, each followed by noise ("double");
    up-block at 16, 64, 256, 1024: one conv, no noise ("single").
    Block r is gated by skip-layer excitation from the features at r / 16 for r in 64..512.

Inputs are (B, 256) or (B, 256, 1, 1) standard-normal latents used as they are (no normalisation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

from studio.models.noise import NoiseSource, draw_noise

RESOLUTION = 1024
# Feature channels at each resolution as multiples of ngf (the paper's table, ngf=64 in the published models).
CHANNEL_MULTIPLIERS: dict[int, float] = {
    4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125,
}  # fmt: skip
# Up-blocks with two convs and noise injection; the others have a single conv and no noise.
DOUBLE_BLOCKS = (8, 32, 128, 512)
# Skip-layer excitation: features at r are gated by features at r // 16.
EXCITED_RESOLUTIONS = (64, 128, 256, 512)


@dataclass(frozen=True)
class FastGanConfig:
    """`ngf=64` is the published 1024 px model (about 29.2M parameters). Smaller `ngf` builds a narrow test model."""

    z_dim: int = 256
    ngf: int = 64
    img_channels: int = 3

    def __post_init__(self) -> None:
        if self.ngf < 8 or self.ngf % 8:
            raise ValueError(f"ngf must be a positive multiple of 8 (channels at 1024 px are ngf/8), got {self.ngf}")
        if self.z_dim < 1 or self.img_channels < 1:
            raise ValueError("z_dim and img_channels must be positive")

    @property
    def resolution(self) -> int:
        return RESOLUTION

    def channels(self, resolution: int) -> int:
        """Feature channels at `resolution` px."""
        return int(CHANNEL_MULTIPLIERS[resolution] * self.ngf)


class SpectralConv(nn.Module):
    """A spectral-normalised `nn.Conv2d` / `nn.ConvTranspose2d` kept under `._conv` (hence `._conv.weight_orig`)."""

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d) -> None:
        super().__init__()
        self._conv = spectral_norm(conv)

    @classmethod
    def same(cls, in_channels: int, out_channels: int, kernel_size: int) -> SpectralConv:
        """Bias-free conv, stride 1, output size = input size (odd kernel)."""
        return cls(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self._conv(x)


class Noise(nn.Module):
    """x + _weight * noise, one noise value per pixel shared by all channels."""

    def __init__(self) -> None:
        super().__init__()
        self._weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise_generator: NoiseSource = None) -> Tensor:
        return x + self._weight * draw_noise(x, noise_generator, global_rng_on_cpu=False)


class _Layers(nn.Module):
    """Base for blocks that keep their layers in `self._layers` and pass the noise source to `Noise` layers."""

    _layers: nn.Sequential

    def forward(self, x: Tensor, noise_generator: NoiseSource = None) -> Tensor:
        for layer in self._layers:
            x = layer(x, noise_generator) if isinstance(layer, Noise) else layer(x)
        return x


class InitBlock(_Layers):
    """(B, z_dim, 1, 1) -> (B, C, 4, 4): transposed 4x4 conv to 2C channels, BatchNorm, GLU."""

    def __init__(self, z_dim: int, channels: int) -> None:
        super().__init__()
        self._layers = nn.Sequential(
            SpectralConv(nn.ConvTranspose2d(z_dim, 2 * channels, 4, 1, 0, bias=False)),
            nn.BatchNorm2d(2 * channels),
            nn.GLU(dim=1),
        )


class UpBlock(_Layers):
    """(B, C_in, H, W) -> (B, C_out, 2H, 2W): nearest x2, then conv3 [-> noise] -> BN -> GLU, once or twice.

    single: [up, conv, BN, GLU]; double: [up, conv, noise, BN, GLU, conv, noise, BN, GLU].
    """

    def __init__(self, in_channels: int, out_channels: int, *, double: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest")]
        for step_in in (in_channels, out_channels) if double else (in_channels,):
            layers.append(SpectralConv.same(step_in, 2 * out_channels, 3))
            if double:
                layers.append(Noise())
            layers += [nn.BatchNorm2d(2 * out_channels), nn.GLU(dim=1)]
        self._layers = nn.Sequential(*layers)


class SkipExcitation(nn.Module):
    """Skip-layer excitation: channel gates in (0, 1) for a high-resolution map, computed from a low-resolution one.

    forward(small (B, C_small, h, w), big (B, C_big, H, W)) -> big * gate, gate (B, C_big, 1, 1).
    """

    def __init__(self, small_channels: int, big_channels: int) -> None:
        super().__init__()
        self._layers = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            SpectralConv(nn.Conv2d(small_channels, big_channels, 4, bias=False)),  # 4x4 -> 1x1
            nn.SiLU(),
            SpectralConv.same(big_channels, big_channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, small: Tensor, big: Tensor) -> Tensor:
        return big * self._layers(small)


class FastGanGenerator(nn.Module):
    """FastGAN generator: (B, z_dim) latents -> (B, 3, 1024, 1024) images in [-1, 1] (tanh).

    `forward` returns only the main 1024 px image, like every studio generator; `forward_with_preview` also returns
    the auxiliary 128 px head the model was trained with. Call `.eval()` before sampling.
    """

    output_range: ClassVar[tuple[float, float]] = (-1.0, 1.0)
    output_is_bounded: ClassVar[bool] = True  # tanh

    def __init__(self, config: FastGanConfig | None = None) -> None:
        super().__init__()
        self.config = config or FastGanConfig()
        self.z_dim = self.config.z_dim
        self.resolution = self.config.resolution
        ch = self.config.channels
        self._init = InitBlock(self.config.z_dim, ch(4))
        self._block_resolutions = tuple(2**i for i in range(3, RESOLUTION.bit_length()))  # 8 ... 1024
        for res in self._block_resolutions:
            self.add_module(f"_upsample_{res}", UpBlock(ch(res // 2), ch(res), double=res in DOUBLE_BLOCKS))
        for res in EXCITED_RESOLUTIONS:
            self.add_module(f"_sle_{res}", SkipExcitation(ch(res // 16), ch(res)))
        self._out_128 = nn.Sequential(SpectralConv.same(ch(128), self.config.img_channels, 1), nn.Tanh())
        self._out_1024 = nn.Sequential(SpectralConv.same(ch(1024), self.config.img_channels, 3), nn.Tanh())

    def _latents(self, z: Tensor) -> Tensor:
        if z.ndim == 2:
            z = z[:, :, None, None]
        if z.ndim != 4 or z.shape[1:] != (self.z_dim, 1, 1):
            expected = f"(B, {self.z_dim}) or (B, {self.z_dim}, 1, 1)"
            raise ValueError(f"expected latents of shape {expected}, got {tuple(z.shape)}")
        return z

    def _features(self, z: Tensor, noise_generator: NoiseSource) -> dict[int, Tensor]:
        features = {4: self._init(self._latents(z))}
        for res in self._block_resolutions:
            x = self.get_submodule(f"_upsample_{res}")(features[res // 2], noise_generator)
            if res in EXCITED_RESOLUTIONS:
                x = self.get_submodule(f"_sle_{res}")(features[res // 16], x)
            features[res] = x
        return features

    def forward(self, z: Tensor, *, noise_generator: NoiseSource = None) -> Tensor:
        """z: (B, z_dim) or (B, z_dim, 1, 1) standard normal. Returns (B, 3, 1024, 1024) float in [-1, 1].

        `noise_generator`: see `NoiseSource`; pass CPU generators for device-independent, reproducible images.
        """
        return self._out_1024(self._features(z, noise_generator)[1024])

    def forward_with_preview(self, z: Tensor, *, noise_generator: NoiseSource = None) -> tuple[Tensor, Tensor]:
        """Like `forward`, plus the 128 px head: ((B, 3, 1024, 1024), (B, 3, 128, 128)), both in [-1, 1]."""
        features = self._features(z, noise_generator)
        return self._out_1024(features[1024]), self._out_128(features[128])

    def early_features(self, z: Tensor) -> Tensor:
        """Activations after the first block (the init layer), (B, 16*ngf, 4, 4); no noise is involved yet."""
        return self._init(self._latents(z))
