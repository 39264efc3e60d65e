"""The FastGAN generator as trained by Projected GAN (Sauer et al. 2021), e.g. `huggan/projected_gan_*`.

Written from the description of autonomousvision/projected_gan (`pg_modules/networks_fastgan.py` and
`pg_modules/blocks.py`, MIT): the attribute names and `nn.Sequential` indices below are chosen so that
`state_dict()` has exactly the keys of a checkpoint saved from that code's `Generator` (`synthesis.*`; its
`mapping` is a parameter-free stand-in and adds no keys).

Data flow (full, not "lite"; channels for ngf=128, resolution 256):

    z (B, 256) -> normalise by second moment
      init      ConvT 4x4 -> BN -> GLU                       2048 @   4 px   (synthesis.init.init.*)
      feat_8    up, [conv3 -> noise -> BN -> GLU] x 2        1024 @   8 px   (synthesis.feat_8.*)
      feat_16                                                 512 @  16 px
      feat_32                                                 256 @  32 px
      feat_64   ... gated by se_64(feat_4)                    256 @  64 px
      feat_128  ... gated by se_128(feat_8)                   128 @ 128 px
      feat_256  ... gated by se_256(feat_16)                   64 @ 256 px
      to_big    conv3 with bias, no tanh                        3 @ 256 px

Every convolution carries old-style spectral normalisation (`torch.nn.utils.spectral_norm`), so the checkpoint holds
`weight_orig`, `weight_u` and `weight_v`; in eval mode the stored `u`/`v` are used as they are (no power iteration).

Noise: each up-block adds one learned-strength (B, 1, H, W) Gaussian noise map after each of its two convolutions
(12 maps at 256 px). See `NoiseSource` for how to make them reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

from studio.models.noise import NoiseSource, draw_noise

# Channels per resolution as multiples of ngf (reference `nfc_multi`); the init layer uses the entry for 2.
CHANNEL_MULTIPLIERS: dict[int, float] = {
    2: 16, 4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125,
}  # fmt: skip
SUPPORTED_RESOLUTIONS = (256, 512, 1024)
# Skip-layer excitation: the block at resolution r is gated by the features at r // 16.
EXCITED_RESOLUTIONS = (64, 128, 256, 512)


@dataclass(frozen=True)
class ProjectedGanConfig:
    """Hyper-parameters of the reference `Generator(z_dim, img_resolution, img_channels, ngf)` (cond=0, lite=False).

    The `huggan/projected_gan_*` checkpoints use the defaults. Smaller `ngf` builds a narrow model for fast tests.
    """

    z_dim: int = 256
    ngf: int = 128
    resolution: int = 256
    img_channels: int = 3

    def __post_init__(self) -> None:
        if self.resolution not in SUPPORTED_RESOLUTIONS:
            raise ValueError(f"Projected GAN resolution must be one of {SUPPORTED_RESOLUTIONS}, got {self.resolution}")
        if self.ngf < 8 or self.ngf % 8:
            raise ValueError(f"ngf must be a positive multiple of 8 (channels at 1024 px are ngf/8), got {self.ngf}")
        if self.z_dim < 1 or self.img_channels < 1:
            raise ValueError("z_dim and img_channels must be positive")

    def channels(self, resolution: int) -> int:
        """Feature channels at `resolution` px (after the GLU of that block)."""
        return int(CHANNEL_MULTIPLIERS[resolution] * self.ngf)

    @property
    def block_resolutions(self) -> tuple[int, ...]:
        """Resolutions of the up-blocks, 8 ... resolution."""
        return tuple(2**i for i in range(3, self.resolution.bit_length()))


def normalize_2nd_moment(z: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale each row of (B, D) `z` to unit root-mean-square (PGGAN's "map to the hypersphere")."""
    return z * (z.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def _sn_conv(in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = False) -> nn.Conv2d:
    """Spectral-normalised conv, stride 1, 'same' padding for odd kernels and none for the 4x4 excitation kernel."""
    padding = kernel_size // 2 if kernel_size % 2 else 0
    return spectral_norm(nn.Conv2d(in_channels, out_channels, kernel_size, 1, padding, bias=bias))


class NoiseInjection(nn.Module):
    """x + weight * noise, one noise value per pixel shared by all channels. Key: `.weight` (1,)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise_generator: NoiseSource = None) -> Tensor:
        return x + self.weight * draw_noise(x, noise_generator, global_rng_on_cpu=True)


class InitLayer(nn.Module):
    """(B, z_dim) -> (B, C, 4, 4): transposed 4x4 conv to 2C channels, BatchNorm, GLU. Keys `init.{0,1}.*`."""

    def __init__(self, z_dim: int, channels: int) -> None:
        super().__init__()
        self.init = nn.Sequential(
            spectral_norm(nn.ConvTranspose2d(z_dim, 2 * channels, 4, 1, 0, bias=False)),
            nn.BatchNorm2d(2 * channels),
            nn.GLU(dim=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.init(z[:, :, None, None])


class UpBlock(nn.Sequential):
    """(B, C_in, H, W) -> (B, C_out, 2H, 2W): nearest x2, then twice conv3 -> noise -> BN -> GLU.

    Reference `UpBlockBig`; indices 1 and 5 are the convs, 2 and 6 the noise, 3 and 7 the BatchNorms.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            _sn_conv(in_channels, 2 * out_channels, 3),
            NoiseInjection(),
            nn.BatchNorm2d(2 * out_channels),
            nn.GLU(dim=1),
            _sn_conv(out_channels, 2 * out_channels, 3),
            NoiseInjection(),
            nn.BatchNorm2d(2 * out_channels),
            nn.GLU(dim=1),
        )

    def forward(self, x: Tensor, noise_generator: NoiseSource = None) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, noise_generator) if isinstance(layer, NoiseInjection) else layer(x)
        return x


class SkipExcitation(nn.Module):
    """Skip-layer excitation (reference `SEBlock`): channel gates in (0, 1) computed from a low-resolution map.

    forward(small (B, C_small, h, w), big (B, C_big, H, W)) -> big * gate, gate (B, C_big, 1, 1).
    """

    def __init__(self, small_channels: int, big_channels: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            _sn_conv(small_channels, big_channels, 4),  # 4x4 -> 1x1
            nn.SiLU(),  # reference `Swish`
            _sn_conv(big_channels, big_channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, small: Tensor, big: Tensor) -> Tensor:
        return big * self.main(small)


class FastganSynthesis(nn.Module):
    """Normalised (B, z_dim) latents -> (B, img_channels, R, R) images. Attribute names follow the reference."""

    def __init__(self, config: ProjectedGanConfig) -> None:
        super().__init__()
        self.config = config
        self.init = InitLayer(config.z_dim, config.channels(2))
        for res in config.block_resolutions:
            self.add_module(f"feat_{res}", UpBlock(config.channels(res // 2), config.channels(res)))
        for res in EXCITED_RESOLUTIONS:
            if res <= config.resolution:
                self.add_module(f"se_{res}", SkipExcitation(config.channels(res // 16), config.channels(res)))
        self.to_big = _sn_conv(config.channels(config.resolution), config.img_channels, 3, bias=True)

    def forward(self, w: Tensor, noise_generator: NoiseSource = None) -> Tensor:
        return self.render(self.init(w), noise_generator)

    def render(self, init_features: Tensor, noise_generator: NoiseSource = None) -> Tensor:
        """The synthesis after the init layer: (B, C, 4, 4) first feature map -> image."""
        features = {4: init_features}
        for res in self.config.block_resolutions:
            x = self.get_submodule(f"feat_{res}")(features[res // 2], noise_generator)
            if res in EXCITED_RESOLUTIONS:
                x = self.get_submodule(f"se_{res}")(features[res // 16], x)
            features[res] = x
        return self.to_big(features[self.config.resolution])


class ProjectedGanGenerator(nn.Module):
    """Unconditional Projected GAN generator: (B, z_dim) latents -> (B, 3, R, R) images.

    Output convention: no tanh; nominally in [-1, 1] but not bounded (values a little outside are normal). Convert
    to uint8 with `(x * 127.5 + 128).clamp(0, 255)` (in studio.imaging). Call `.eval()` before sampling: BatchNorm then
    uses its running statistics and spectral norm its stored vectors.
    """

    output_range: ClassVar[tuple[float, float]] = (-1.0, 1.0)
    output_is_bounded: ClassVar[bool] = False  # no tanh: clamp when converting

    def __init__(self, config: ProjectedGanConfig | None = None) -> None:
        super().__init__()
        self.config = config or ProjectedGanConfig()
        self.z_dim = self.config.z_dim
        self.resolution = self.config.resolution
        self.synthesis = FastganSynthesis(self.config)  # the reference `mapping` has no parameters: nothing to keep
        self.register_buffer("init_mean", None, persistent=False)

    def _check_latents(self, z: Tensor) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"expected latents of shape (B, {self.z_dim}), got {tuple(z.shape)}")
        return normalize_2nd_moment(z)

    # z is normalised by its second moment, so scaling z cannot truncate: psi acts on the first feature map instead.
    truncates_features: ClassVar[bool] = True
    TRUNCATION_SAMPLES: ClassVar[int] = 2048

    def forward(self, z: Tensor, *, psi: float = 1.0, noise_generator: NoiseSource = None) -> Tensor:
        """z: (B, z_dim) float, any scale (normalised here). Returns (B, 3, R, R) float, nominally [-1, 1].

        `psi` < 1 pulls the first feature map towards its average over the latent prior (psi = 0: the mean image).
        `noise_generator`: see `NoiseSource`; pass CPU generators for device-independent, reproducible images.
        """
        features = self.early_features(z)
        if psi != 1.0:
            mean = self.mean_early_features().to(features.dtype)
            features = mean + psi * (features - mean)
        return self.synthesis.render(features, noise_generator)

    def mean_early_features(self) -> Tensor:
        """The average init-layer output over 2048 latents drawn with a fixed seed, computed once per module."""
        if self.init_mean is None:
            latents = torch.randn(self.TRUNCATION_SAMPLES, self.z_dim, generator=torch.Generator().manual_seed(0))
            device = next(self.parameters()).device
            with torch.no_grad():
                total = sum(self.early_features(chunk.to(device)).float().sum(0) for chunk in latents.split(256))
            self.init_mean = (total / self.TRUNCATION_SAMPLES).unsqueeze(0)
        return self.init_mean

    def early_features(self, z: Tensor) -> Tensor:
        """Activations after the first block (the init layer), (B, 16*ngf, 4, 4); no noise is involved yet."""
        return self.synthesis.init(self._check_latents(z))
