"""Colour maths for style transfer: YIQ luminance/chroma, colour-statistics matching, masks.

All images are RGB (N, 3, H, W) float tensors nominally in [0, 1] (the "unit" range of studio.imaging), on any
device. Two ways to keep the content's colours (Gatys et al. 2017, "Controlling perceptual factors"):
- luminance: stylise luminance only, then put the content's chroma (I, Q) back: `transfer_luminance`;
- histogram: before stylising, recolour the style so its colour mean and covariance match the content's:
  `match_color`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from studio.imaging import mask_band

# NTSC YIQ; Y is the same luma as in YUV (BT.601).
_RGB_TO_YIQ = (
    (0.299, 0.587, 0.114),
    (0.595716, -0.274453, -0.321263),
    (0.211456, -0.522591, 0.311135),
)


def _matrix(images: Tensor) -> Tensor:
    return torch.tensor(_RGB_TO_YIQ, dtype=torch.float64).to(device=images.device, dtype=images.dtype)


def rgb_to_yiq(images: Tensor) -> Tensor:
    """(N, 3, H, W) RGB -> (N, 3, H, W) YIQ (Y in [0, 1], I in about [-0.6, 0.6], Q in about [-0.52, 0.52])."""
    return torch.einsum("ij,njhw->nihw", _matrix(images), images)


def yiq_to_rgb(images: Tensor) -> Tensor:
    """Inverse of `rgb_to_yiq` (not clamped)."""
    inverse = torch.linalg.inv(_matrix(images).double()).to(images.dtype)
    return torch.einsum("ij,njhw->nihw", inverse, images)


def luminance(images: Tensor) -> Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) luma Y."""
    return rgb_to_yiq(images)[:, :1]


def grey(images: Tensor) -> Tensor:
    """RGB -> RGB with every channel equal to the luma (what a network sees in luminance-only transfer)."""
    return luminance(images).expand(-1, 3, -1, -1).contiguous()


def match_luminance(source: Tensor, reference: Tensor, *, eps: float = 1e-5) -> Tensor:
    """Grey version of `source` whose luma has the mean and standard deviation of `reference`'s luma.

    Gatys et al.: the style's luminance is matched to the content's before luminance-only transfer.
    """
    y_source, y_reference = luminance(source), luminance(reference)
    mean_s, std_s = y_source.mean(dim=(2, 3), keepdim=True), y_source.std(dim=(2, 3), keepdim=True)
    mean_r, std_r = y_reference.mean(dim=(2, 3), keepdim=True), y_reference.std(dim=(2, 3), keepdim=True)
    matched = (y_source - mean_s) / (std_s + eps) * std_r + mean_r
    return matched.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


def transfer_luminance(stylised: Tensor, content: Tensor) -> Tensor:
    """Luma of `stylised` (clamped to [0, 1]) with the chroma (I, Q) of `content`, back in RGB, clamped to [0, 1].

    The chroma is kept exactly wherever the combination is inside the RGB cube. `content` is resized (bilinear) when
    its size differs from `stylised`'s.
    """
    if content.shape[-2:] != stylised.shape[-2:]:
        content = F.interpolate(content, size=stylised.shape[-2:], mode="bilinear", align_corners=False)
    yiq = torch.cat([luminance(stylised).clamp(0, 1), rgb_to_yiq(content)[:, 1:]], dim=1)
    return yiq_to_rgb(yiq).clamp(0, 1)


def _symmetric_power(matrix: Tensor, power: float, eps: float) -> Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag_embed(values.clamp_min(eps).pow(power)) @ vectors.transpose(-1, -2)


def colour_moments(images: Tensor, *, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """RGB mean (N, 3, 1) and covariance (N, 3, 3) of each picture (N, 3, H, W), in float64."""
    pixels = images.double().flatten(2)
    mean = pixels.mean(dim=2, keepdim=True)
    centred = pixels - mean
    eye = torch.eye(3, dtype=torch.float64, device=images.device)
    return mean, centred @ centred.transpose(1, 2) / pixels.shape[2] + eps * eye


def blend_colour_moments(moments: Sequence[tuple[Tensor, Tensor]], weights: Sequence[float]) -> tuple[Tensor, Tensor]:
    """Mean and covariance of a mixture of pictures' pixels, picture i drawn with probability weights[i] (sum 1)."""
    mean = sum((w * m for (m, _), w in zip(moments, weights, strict=True)), torch.zeros_like(moments[0][0]))
    second = sum((w * (c + m @ m.transpose(1, 2)) for (m, c), w in zip(moments, weights, strict=True)))
    return mean, second - mean @ mean.transpose(1, 2)


def match_color_moments(source: Tensor, mean: Tensor, covariance: Tensor, *, eps: float = 1e-5) -> Tensor:
    """Recolour `source` (N, 3, H, W) so that its RGB mean and covariance are `mean` (1 or N, 3, 1) and `covariance`
    (1 or N, 3, 3); clamped to [0, 1]. The linear colour transfer of Gatys et al. 2017 (section 5.2):
    x' = C_r^1/2 C_s^-1/2 (x - mu_s) + mu_r, computed in float64."""
    if mean.shape[0] not in (1, source.shape[0]):
        raise ValueError(f"reference batch {mean.shape[0]} does not match source batch {source.shape[0]}")
    source_mean, source_covariance = colour_moments(source, eps=eps)
    transform = _symmetric_power(covariance, 0.5, eps) @ _symmetric_power(source_covariance, -0.5, eps)
    out = transform @ (source.double().flatten(2) - source_mean) + mean
    return out.view_as(source).to(source.dtype).clamp(0, 1)


def match_color(source: Tensor, reference: Tensor, *, eps: float = 1e-5) -> Tensor:
    """Recolour `source` so that its RGB mean and covariance equal `reference`'s; clamped to [0, 1].

    Shapes: (N, 3, H, W) and (1 or N, 3, H', W'); sizes may differ. See `match_color_moments`.
    """
    return match_color_moments(source, *colour_moments(reference, eps=eps), eps=eps)


def mask_to_tensor(mask: Image.Image | Tensor, *, size: tuple[int, int], device=None, dtype=None) -> Tensor:
    """A mask (PIL image of any mode, or a tensor (H, W), (1, H, W) or (1, 1, H, W) in [0, 1]) ->
    (1, 1, height, width) float in [0, 1] resized to `size` = (height, width) (area/bilinear).

    1 marks the inside region: white, or for a PIL mask with transparency opaque (`studio.imaging.mask_band`).
    """
    if isinstance(mask, Image.Image):
        band = mask_band(mask)
        tensor = torch.frombuffer(bytearray(band.tobytes()), dtype=torch.uint8).float().div_(255.0)
        tensor = tensor.view(1, 1, band.size[1], band.size[0])
    elif isinstance(mask, Tensor):
        tensor = mask.detach().float()
        while tensor.dim() < 4:
            tensor = tensor.unsqueeze(0)
        if tensor.shape[:2] != (1, 1):
            raise ValueError(f"mask tensor must be (H, W), (1, H, W) or (1, 1, H, W), got {tuple(mask.shape)}")
        tensor = tensor.cpu()
    else:
        raise ValueError(f"mask must be a PIL image or a tensor, got {type(mask).__name__}")
    if tuple(tensor.shape[-2:]) != tuple(size):
        shrinking = tensor.shape[-2] >= size[0] and tensor.shape[-1] >= size[1]
        mode = "area" if shrinking else "bilinear"
        kwargs = {} if mode == "area" else {"align_corners": False}
        tensor = F.interpolate(tensor, size=size, mode=mode, **kwargs)
    return tensor.clamp(0, 1).to(device=device, dtype=dtype or torch.float32)


def blend_with_mask(inside: Tensor, outside: Tensor, mask: Tensor) -> Tensor:
    """mask * inside + (1 - mask) * outside; `mask` (N|1, 1, H, W) is resized to the inputs' size when needed."""
    if mask.shape[-2:] != inside.shape[-2:]:
        mask = F.interpolate(mask, size=inside.shape[-2:], mode="bilinear", align_corners=False)
    mask = mask.to(dtype=inside.dtype, device=inside.device)
    return torch.lerp(outside, inside, mask)
