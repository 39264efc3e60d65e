"""Arbitrary style transfer in one pass: AdaIN (Huang & Belongie 2017).

encoder (VGG19 up to relu4_1) -> adaptive instance normalisation -> alpha blend with the content features -> decoder.

The maths are plain functions (`channel_stats`, `adaptive_instance_norm`, `blend_styles`, `adain_stylize`);
`AdaINStylizer` adds what an interactive app needs: a small LRU of encoded images so that moving `alpha` or the blend
weights re-runs only AdaIN and the decoder, and a low-resolution preview for slider drags.

Shapes and ranges: images RGB (N, 3, H, W) in [0, 1]; relu4_1 features (N, 512, ceil(H/8), ceil(W/8));
channel statistics (N, 512, 1, 1). Decoder outputs are nominally [0, 1] and are clamped only when turned into images.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor, nn

from studio.imaging import (
    ImageSource,
    image_sources,
    load_image,
    long_side_size,
    max_side_from_env,
    pil_to_unit,
    resize_long_side,
    unit_to_pil,
)
from studio.ops.color import mask_to_tensor, match_color, transfer_luminance
from studio.ops.common import (
    PreserveColor,
    StylizeResult,
    check_mask_styles,
    check_output_side,
    check_picture_side,
    check_preserve_color,
    image_digest,
    normalise_weights,
)

__all__ = [
    "AdaINSettings",
    "AdaINStylizer",
    "StylizeResult",
    "adain_stylize",
    "adaptive_instance_norm",
    "blend_styles",
    "channel_stats",
    "masked_adain",
]

EPS = 1e-5
ENCODER_TAP = "relu4_1"

# --- the maths ------------------------------------------------------------------------------------------------------


def channel_stats(features: Tensor, *, eps: float = EPS) -> tuple[Tensor, Tensor]:
    """(N, C, H, W) -> per-channel mean and std over H, W, each (N, C, 1, 1); std = sqrt(unbiased var + eps).

    Computed in float32 whatever the input dtype.
    """
    n, c = features.shape[:2]
    flat = features.float().reshape(n, c, -1)
    if flat.shape[-1] < 2:
        raise ValueError("features need at least 2 positions for channel statistics; use a bigger image")
    mean = flat.mean(dim=2).view(n, c, 1, 1)
    std = (flat.var(dim=2) + eps).sqrt().view(n, c, 1, 1)
    return mean, std


def adaptive_instance_norm(
    content: Tensor, style_mean: Tensor, style_std: Tensor, *, content_stats: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """AdaIN(x, y) = std(y) * (x - mean(x)) / std(x) + mean(y), in float32.

    content (N, C, H, W); style_mean and style_std (N or 1, C, 1, 1), e.g. from `channel_stats(style_features)`.
    """
    mean, std = content_stats if content_stats is not None else channel_stats(content)
    return (content.float() - mean) / std * style_std + style_mean


def blend_styles(
    content: Tensor, stats: Sequence[tuple[Tensor, Tensor]], weights: Sequence[float], *, alpha: float
) -> Tensor:
    """Several styles with interpolation weights, then the content/style trade-off (AdaIN paper, section 7).

    t = sum_k w_k AdaIN(c, s_k);  result = alpha * t + (1 - alpha) * c.  weights are used as given (normalise first).
    content: (N, C, H, W) features; stats: one (mean, std) pair per style. Returns float32 features.
    """
    content_stats = channel_stats(content)
    target = sum(
        (
            w * adaptive_instance_norm(content, m, s, content_stats=content_stats)
            for (m, s), w in zip(stats, weights, strict=True)
        ),
        torch.zeros((), device=content.device),
    )
    return alpha * target + (1.0 - alpha) * content.float()


def masked_adain(
    content: Tensor, inside: tuple[Tensor, Tensor], outside: tuple[Tensor, Tensor], mask: Tensor, *, eps: float = EPS
) -> Tensor:
    """Spatial control: style `inside` where mask is 1, style `outside` where it is 0 (AdaIN paper, section 7).

    Each region is normalised by the content statistics of that region (weighted by the mask) and given the style's
    statistics; the two results are blended by the mask. content (N, C, h, w); mask (N or 1, 1, h, w) in [0, 1];
    inside/outside: (mean, std) pairs (N or 1, C, 1, 1). Returns float32 features (N, C, h, w).
    """
    x = content.float()
    mask = mask.to(device=x.device, dtype=torch.float32)
    result = torch.zeros_like(x)
    for weights, (style_mean, style_std) in ((mask, inside), (1.0 - mask, outside)):
        total = weights.sum(dim=(2, 3), keepdim=True)
        mean = (x * weights).sum(dim=(2, 3), keepdim=True) / total.clamp_min(eps)
        var = ((x - mean).pow(2) * weights).sum(dim=(2, 3), keepdim=True) / (total - 1.0).clamp_min(eps)
        region = (x - mean) / (var + eps).sqrt() * style_std + style_mean
        result = result + weights * region
    return result


def adain_stylize(
    *, encoder: nn.Module, decoder: nn.Module, content: Tensor, style: Tensor, alpha: float = 1.0
) -> Tensor:
    """The original AdaIN formulation on batches: decoder(alpha * AdaIN(f(c), f(s)) + (1 - alpha) * f(c)).

    content and style: (N, 3, H, W) and (N or 1, 3, H', W') in [0, 1], on the modules' device.
    Returns (N, 3, 8 ceil(H/8), 8 ceil(W/8)) in the decoder's dtype, unclamped.
    """
    dtype = next(decoder.parameters()).dtype
    content = content.to(dtype=dtype, memory_format=torch.channels_last)
    style = style.to(dtype=dtype, memory_format=torch.channels_last)
    content_features = encoder(content, [ENCODER_TAP])[ENCODER_TAP]
    style_features = encoder(style, [ENCODER_TAP])[ENCODER_TAP]
    features = blend_styles(content_features, [channel_stats(style_features)], [1.0], alpha=alpha)
    return decoder(features.to(dtype))


# --- settings ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdaINSettings:
    """alpha: 0 keeps the content, 1 is full style. content_size / style_size: long sides (px) the images are encoded
    at (the output has the content's size). style_weights: interpolation weights of several styles (normalised;
    None = equal). preserve_color: "none", "luminance" (keep the content's chroma) or "histogram" (recolour the
    styles to the content's colour statistics first). preview_size: long side of `AdaINStylizer.preview`.
    """

    alpha: float = 1.0
    content_size: int = 512
    style_size: int = 512
    style_weights: tuple[float, ...] | None = None
    preserve_color: PreserveColor = "none"
    preview_size: int = 256

    def __post_init__(self) -> None:
        if not (0.0 <= self.alpha <= 1.0):
            raise ValueError(f"alpha must be between 0 and 1, got {self.alpha}")
        check_preserve_color(self.preserve_color)
        for name in ("content_size", "style_size", "preview_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 16:
                raise ValueError(f"{name} must be a whole number of pixels, at least 16, got {value!r}")
        if self.style_weights is not None:
            normalise_weights(self.style_weights, len(self.style_weights), what="style")


# --- the stylizer --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Loaded:
    image: Image.Image
    digest: str


class AdaINStylizer:
    """An AdaIN encoder + decoder with a small cache of encoded images.

    encoder: VGG19Features(preprocessing="adain"); decoder: AdaINDecoder; both on one device, in eval mode, float32
    (or float16 on CUDA for speed: statistics are computed in float32 either way). The modules are not modified.
    Cache entries are keyed by the image's content digest and the encoded size (and for recoloured styles the
    content's digest), so re-sending the same picture costs a hash, not an encoder pass.
    """

    def __init__(self, *, encoder: nn.Module, decoder: nn.Module, cache_size: int = 16) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        parameter = next(encoder.parameters())
        self.encoder = encoder
        self.decoder = decoder
        self.device = parameter.device
        self.dtype = parameter.dtype
        self.cache_size = cache_size
        self.encoder_calls = 0
        self._cache: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()  # the UI may render from several threads; encoding itself runs unlocked

    # cache ----------------------------------------------------------------------------------------------------------

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def _cached(self, key: Hashable, compute):
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = compute()
        if self.cache_size:
            with self._lock:
                self._cache[key] = value
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return value

    def _encode(self, picture: Tensor) -> Tensor:
        self.encoder_calls += 1
        # channels_last lets oneDNN / cuDNN skip layout reorders (about 20% faster on CPU); values are unchanged.
        x = picture.to(device=self.device, dtype=self.dtype, memory_format=torch.channels_last)
        return self.encoder(x, [ENCODER_TAP])[ENCODER_TAP]

    # pieces ---------------------------------------------------------------------------------------------------------

    def _picture(self, image: Image.Image, size: int, *, what: str) -> Tensor:
        picture = pil_to_unit(resize_long_side(image, size))
        check_picture_side(picture.shape, self.encoder.min_side([ENCODER_TAP]), what=what)
        return picture

    def content_features(self, content: ImageSource, *, size: int) -> Tensor:
        """relu4_1 features (1, 512, ceil(h/8), ceil(w/8)) of the content at long side `size` (cached)."""
        return self._content_features(_load(content, "content image"), size)

    def style_stats(
        self, style: ImageSource, *, size: int, recolour_to: ImageSource | None = None, recolour_size: int = 512
    ) -> tuple[Tensor, Tensor]:
        """Channel mean and std (1, 512, 1, 1) float32 of a style's relu4_1 features at long side `size` (cached).

        recolour_to: a content image whose colour statistics (at long side `recolour_size`) the style takes first,
        the "histogram" colour preservation.
        """
        target = None if recolour_to is None else _load(recolour_to, "content image")
        return self._style_stats(_load(style, "style image"), size, target, recolour_size)

    def _content_features(self, content: _Loaded, size: int) -> Tensor:
        def compute() -> Tensor:
            with torch.inference_mode():
                return self._encode(self._content_picture(content, size))

        return self._cached(("content", content.digest, size), compute)

    def _content_picture(self, content: _Loaded, size: int) -> Tensor:
        """The content at long side `size` as a unit tensor (cached: resizing a camera photo takes 0.1 s)."""
        return self._cached(
            ("content picture", content.digest, size), lambda: self._picture(content.image, size, what="content image")
        )

    def _style_stats(
        self, style: _Loaded, size: int, recolour_to: _Loaded | None, recolour_size: int
    ) -> tuple[Tensor, Tensor]:
        key = ("style", style.digest, size, recolour_to.digest if recolour_to else "", recolour_size)

        def compute() -> tuple[Tensor, Tensor]:
            picture = self._picture(style.image, size, what="style image")
            if recolour_to is not None:
                picture = match_color(picture, self._picture(recolour_to.image, recolour_size, what="content image"))
            with torch.inference_mode():
                return channel_stats(self._encode(picture))

        return self._cached(key, compute)

    # rendering ------------------------------------------------------------------------------------------------------

    def render(
        self,
        *,
        content: ImageSource,
        styles: Sequence[ImageSource] | ImageSource,
        settings: AdaINSettings = AdaINSettings(),
        mask: Image.Image | Tensor | None = None,
        size: int | None = None,
    ) -> Tensor:
        """Stylised content as a tensor (1, 3, H, W) float32, nominally [0, 1], unclamped (colour step aside).

        size: long side of the content pass (default settings.content_size). mask: with exactly two styles, style 1
        goes where the mask is white and style 2 where it is black (PIL image or tensor in [0, 1], any size).
        """
        content_image, style_images, weights = self._prepare(content, styles, settings, mask)
        side = settings.content_size if size is None else size
        check_output_side(side, max_side_from_env(), what="content size")
        recolour = content_image if settings.preserve_color == "histogram" else None
        if mask is None:  # styles with weight 0 are not encoded at all
            kept = [index for index, weight in enumerate(weights) if weight > 0.0]
            style_images, weights = [style_images[i] for i in kept], tuple(weights[i] for i in kept)
        stats = [
            self._style_stats(style, settings.style_size, recolour, settings.content_size) for style in style_images
        ]
        with torch.inference_mode():
            features = self._content_features(content_image, side)
            if mask is not None:
                grid = mask_to_tensor(mask, size=tuple(features.shape[-2:]), device=features.device)
                target = masked_adain(features, stats[0], stats[1], grid)
                target = settings.alpha * target + (1.0 - settings.alpha) * features.float()
            else:
                target = blend_styles(features, stats, weights, alpha=settings.alpha)
            dtype = next(self.decoder.parameters()).dtype
            output = self.decoder(target.to(dtype)).float()
            width, height = long_side_size(content_image.image.size, side)
            output = output[:, :, :height, :width]
            if settings.preserve_color == "luminance":
                output = transfer_luminance(output, self._content_picture(content_image, side).to(output.device))
        return output

    def stylize(
        self,
        *,
        content: ImageSource,
        styles: Sequence[ImageSource] | ImageSource,
        settings: AdaINSettings = AdaINSettings(),
        mask: Image.Image | Tensor | None = None,
    ) -> StylizeResult:
        """Full-size rendering: StylizeResult(image with long side settings.content_size, settings, seconds)."""
        return self._result(content, styles, settings, mask, settings.content_size)

    def preview(
        self,
        *,
        content: ImageSource,
        styles: Sequence[ImageSource] | ImageSource,
        settings: AdaINSettings = AdaINSettings(),
        mask: Image.Image | Tensor | None = None,
    ) -> StylizeResult:
        """Quick rendering for slider drags at long side min(preview_size, content_size); styles use their cached
        statistics at style_size, so a preview looks like the full rendering, only smaller."""
        return self._result(content, styles, settings, mask, min(settings.preview_size, settings.content_size))

    def _result(self, content, styles, settings, mask, side: int) -> StylizeResult:
        started = time.perf_counter()
        output = self.render(content=content, styles=styles, settings=settings, mask=mask, size=side)
        image = unit_to_pil(output)[0]
        return StylizeResult(image=image, settings=settings, seconds=time.perf_counter() - started)

    def _prepare(
        self, content: ImageSource, styles, settings: AdaINSettings, mask
    ) -> tuple[_Loaded, list[_Loaded], tuple[float, ...]]:
        limit = max_side_from_env()
        check_output_side(settings.content_size, limit, what="content size")
        check_output_side(settings.style_size, limit, what="style size")
        styles = image_sources(styles)
        if len(styles) == 0:
            raise ValueError("give at least one style image")
        content_image = _load(content, "content image")
        style_images = [_load(style, f"style image {i + 1}") for i, style in enumerate(styles)]
        if mask is not None:
            check_mask_styles(len(style_images))
            if settings.style_weights is not None:
                raise ValueError("style_weights do not apply with a mask: the mask decides where each style goes")
        weights = normalise_weights(settings.style_weights, len(style_images), what="style")
        return content_image, style_images, weights


def _load(source: ImageSource, name: str) -> _Loaded:
    image = load_image(source, name=name)
    return _Loaded(image=image, digest=image_digest(image))
