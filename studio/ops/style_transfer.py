"""Neural style transfer by optimisation (Gatys, Ecker & Bethge 2016), preconditioned, optionally coarse-to-fine.

The picture is optimised so that its VGG19 activations match the content image's at the content layers and its Gram
matrices match the style images' at the style layers, plus a small total-variation term. Losses are relative
(squared error divided by the target's squared norm), so one set of weights suits every VGG weight set.

Speed, measured on 2 CPU cores with the real VGG19 (benchmarks/bench_stylize.py: seconds to reach the loss that 60
textbook L-BFGS steps reach: pixels, torch's first step, torch's convolutions; chelsea + Matisse):
- Spectral parametrisation (`SpectralPicture`, on by default): L-BFGS steps on Fourier coefficients scaled by
  1/f^0.5 instead of on pixels: 1.6x fewer steps at 256 px, 2.2x at 512 px.
- A first L-BFGS step of a fixed size (`GatysSettings.first_step`) instead of torch's pixel-count-dependent one: 0-5
  fewer evaluations.
- A start recoloured to the styles' colours (`GatysSettings.init`): no change on chelsea, 57 -> 54, 30 -> 27 and
  20 -> 3 evaluations on three other pairs at 256 px.
- Not used: a start blended with the style picture itself (resized to the content's shape) reached that loss in
  23 instead of 35 evaluations at 256 px with half and half, but only by painting the style picture's subject (the
  woman's face and hat on chelsea) into the result, a trade the loss allows (content up from 1.35 to 1.69, style down).
  Blending in a structure-free version (the style with its Fourier phases randomised) saved 0-4 evaluations, within
  the spread between seeds. Two starts that keep the content's layout did no better: each 5x5 patch replaced by its
  nearest style patch (35 -> 33 evaluations although the starting loss fell from 60 to 36, and 2.4 s to build), and
  each Laplacian-pyramid band given the style's histogram (33-35).
- Not used: the spectral correction in a decorrelated colour basis (Lucid's ImageNet colour square root, scaled to
  the same gain) took 50 instead of 35 evaluations on chelsea, 47 instead of 53 on astronaut, 25 instead of 27 on
  coffee.
- Not used: a shorter L-BFGS memory (3, 8 or 16 pairs instead of 50): 37, 36 and 34 evaluations instead of 35.
- Not used: every quasi-Newton step scaled by 0.8, 1.2 or 1.5 (34, 31 and 32 evaluations instead of 32 with the
  banded start below; one evaluation either way is what a change of rounding alone can make), or capped at 2, 3 or
  5 times the previous step's length (33 each; uncapped, the third step overshoots, 20.9 -> 36.6, and the fourth
  recovers to 13.2).
- L-BFGS's initial inverse Hessian as a diagonal (`GatysSettings.hessian_bands`), one secant scale s.y / y.y per
  band of spatial frequency (24 log-spaced bands per colour channel, within 10x of the usual scalar, averaged half
  and half with the previous one) instead of one scalar. To the loss the scalar reaches in 35 evaluations (on
  chelsea + Matisse, the textbook 60-step loss): 32 on chelsea + Matisse, 31 on astronaut + Mondrian, 34 on
  coffee + Scene de rue, 31 on rocket + En campo gris (with 3 bands, not per channel: 32-34; with the newest
  pair's scales alone, not averaged: 34-35). In the benchmark: 32 instead of 35 full-size steps at 256 px and 21
  instead of 22 at 512 px. With the pairs stored sorted by band (`studio.ops.lbfgs`), it costs about 5 ms (256 px)
  and 12 ms (512 px) a step more than gamma I once the memory holds 50 pairs; computing Y^T H0 Y afresh each step
  cost 12 and 60 ms more (a 512 px step with a full memory: 1.05 s instead of 1.12 s).
- Not used: other layer weights for the first 12-20 evaluations, then the true loss with a fresh L-BFGS memory
  (relu5_1 x3; relu4_1 and relu5_1 x2; content x0.5; relu1_1, relu2_1 and TV x0.3): 40-43 evaluations instead of
  36. The spectral decay is not critical near 0.5: 0.35, 0.5, 0.65, 0.8 and 1.0 took 35, 36, 34, 42 and 50.
- Where the loss is: the textbook 60-step picture at 256 px scores 4.47, of which 2.13 is relu5_1's Gram term and
  1.43 the content term (relu1_1 0.30, relu2_1 0.08, relu3_1 0.19, relu4_1 0.23, TV 0.12); the studio's run spends
  its last 25 evaluations taking relu5_1 from 5.2 to 2.4 while the content term settles at 1.4.
- Where a step's time goes (256 px, 0.23-0.26 s on 2 cores): about three quarters in the 3x3 convolutions, then
  the Gram products (22 ms), max-pooling (15-17 ms) and ReLU (9 ms). Measured ways to trim the rest (the Gram
  gradient computed transposed, pooling by pairwise maxima with a hand-written backward, conv1_1's backward as a
  matrix product) add up to about 5%; not done. Pooling alone: torch's max-pooling with indices on these NCHW
  activations took 16-24 ms a step (forward; two measurements) where pairwise maxima took 3-5 ms, but every
  backward without torch's indices that was tried (masks or argmax codes over stride-2 views) cost more than that
  saved.
- With all of these the textbook 60-step loss takes 32-33 evaluations at 256 px and 21 at 512 px. VGG19's
  convolutions tuned to the CPU (studio.models.fast_conv: NNPACK's Winograd and Fourier convolutions with the weights
  transformed once) make each evaluation 1.8x cheaper than the textbook's: 3.0-3.3x faster in all at 256 px,
  4.9-6.8x at 512 px (medians of five benchmark runs; with torch's own NNPACK call, 2.2-2.7x and 4.2-5.5x).
- Coarse-to-fine (`GatysSettings.scales > 1`): each level starts from the upsampled result of the level below. On
  pixels it is 1.1-1.4x faster at 256 px and 1.5-1.75x at 512 px (three runs). On top of the spectral
  parametrisation it still saves full-size steps (27 -> 23 at 512 px), but its coarse levels cost more time than
  those steps below 1024 px. The reason is that the full-size loss is dominated by fine detail: the finished 60-step
  picture at 256 px, shrunk to 128 px and enlarged back, scores 19.8 instead of 4.5, a loss plain L-BFGS passes
  after about 12 of its 60 steps. No start enlarged from a coarser level can save more than that.

Shapes and ranges: images are RGB (N, 3, H, W) float32 in [0, 1] on the VGG's device; features (N, C, h, w);
Gram matrices (N, C, C).
"""

from __future__ import annotations

import math
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from studio.imaging import (
    ImageSource,
    image_sources,
    load_image,
    max_side_from_env,
    pil_to_unit,
    resize_long_side,
    unit_to_pil,
)
from studio.models.vgg import TAP_NAMES
from studio.ops.color import (
    blend_colour_moments,
    colour_moments,
    grey,
    match_color,
    match_color_moments,
    match_luminance,
    transfer_luminance,
)
from studio.ops.common import (
    Cancelled,
    PictureCallback,
    PreserveColor,
    StepCallback,
    StylizeResult,
    check_output_side,
    check_picture_side,
    check_preserve_color,
    image_digest,
    normalise_weights,
)
from studio.ops.lbfgs import minimize_lbfgs

__all__ = [
    "Cancelled",
    "GatysSettings",
    "SpectralPicture",
    "StyleTargetCache",
    "StylizeResult",
    "content_loss",
    "evaluate_gatys_loss",
    "gram_matrix",
    "level_sizes",
    "level_steps",
    "style_loss",
    "stylize_gatys",
    "total_variation",
]

LayerWeights = tuple[tuple[str, float], ...]

# Gatys et al.: content at conv4_2 (we take its ReLU), style at the first layer of each block, equal weights.
DEFAULT_CONTENT_LAYERS: LayerWeights = (("relu4_2", 1.0),)
DEFAULT_STYLE_LAYERS: LayerWeights = (
    ("relu1_1", 1.0),
    ("relu2_1", 1.0),
    ("relu3_1", 1.0),
    ("relu4_1", 1.0),
    ("relu5_1", 1.0),
)
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("recoloured", "content", "noise")
# Coarse levels keep at least this many pixels on their long side: below it relu4_2 (1/8 of the input) holds too
# little of the content, the style takes over and the full-size steps start from a picture that lost its subject.
MIN_LEVEL_SIDE = 128


@dataclass(frozen=True)
class GatysSettings:
    """Everything that decides a Gatys rendering.

    size: long side of the output (px). steps: objective evaluations (one forward + backward each) at full size.
    scales: coarse-to-fine levels (1 = single scale); each coarser level halves the size;
    the level below full size runs `coarse_steps` and each coarser one twice as many (`level_steps`); levels with a
    long side below `min_level_side` are skipped.
    spectral_decay: L-BFGS optimises a correction to the starting picture in Fourier space, each frequency f scaled by
    1/f^spectral_decay (`SpectralPicture`), so broad shapes move as readily as fine detail; 0 optimises the pixels
    directly (the textbook method). Adam always works on pixels.
    first_step: root-mean-square size of the first L-BFGS update (pixels in [0, 1]); 0 keeps torch's rule (the
    gradient divided by its L1 norm, a step that shrinks with the pixel count and takes a few evaluations to grow).
    hessian_bands: with the spectral parametrisation, L-BFGS starts each inverse-Hessian product from a diagonal
    with one secant scale per band of spatial frequency and colour channel (`SpectralPicture.frequency_bands`);
    0 starts from gamma I, as torch does.
    content_weight / style_weight / tv_weight: weights of the relative content loss, the relative Gram loss and the
    total variation (mean squared neighbour difference of the [0, 1] picture). Layer weights are normalised to sum 1.
    style_scale: style images are resized to `style_scale * size` on their long side (bigger = bigger brush strokes).
    style_weights: blend of several styles (normalised; None = equal). learning_rate: Adam only (pixels in [0, 1]).
    init: "recoloured" starts from the content picture with its colours' mean and covariance matched to the styles'
    (blended by style_weights); "content" from the content picture as it is; "noise" from seeded noise. Recolouring
    is skipped when the content's colours are to be kept (preserve_color) or there is no style term. At 256 px it
    cut the evaluations needed to reach the loss of 60 plain steps from 57/30/20/36 to 54/27/3/36 on four
    content/style pairs.
    preserve_color: "none", "luminance" (transfer on luma, keep the content's chroma) or "histogram" (recolour the
    styles to the content's colour statistics first).
    """

    size: int = 512
    steps: int = 300
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    learning_rate: float = 0.02
    content_weight: float = 1.0
    style_weight: float = 100.0
    tv_weight: float = 10.0
    content_layers: LayerWeights = DEFAULT_CONTENT_LAYERS
    style_layers: LayerWeights = DEFAULT_STYLE_LAYERS
    init: Literal["recoloured", "content", "noise"] = "recoloured"
    seed: int = 0
    scales: int = 1
    coarse_steps: int = 25
    min_level_side: int = MIN_LEVEL_SIDE
    spectral_decay: float = 0.5
    first_step: float = 0.01
    hessian_bands: int = 24
    style_scale: float = 1.0
    preserve_color: PreserveColor = "none"
    style_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        check_preserve_color(self.preserve_color)
        if not isinstance(self.size, int) or self.size < 16:
            raise ValueError(f"size must be a whole number of pixels, at least 16, got {self.size!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.scales < 1:
            raise ValueError(f"scales must be at least 1 (1 = single scale), got {self.scales}")
        if self.min_level_side < 32:
            raise ValueError(f"min_level_side must be at least 32 px (VGG pools 4 times), got {self.min_level_side}")
        if not (0.0 <= self.spectral_decay <= 2.0):
            raise ValueError(f"spectral_decay must be between 0 (plain pixels) and 2, got {self.spectral_decay}")
        if not (0.0 <= self.first_step <= 1.0):
            raise ValueError(f"first_step must be between 0 (torch's rule) and 1, got {self.first_step}")
        if isinstance(self.hessian_bands, bool) or not (
            isinstance(self.hessian_bands, int) and 0 <= self.hessian_bands <= 256
        ):
            raise ValueError(f"hessian_bands must be a whole number, 0 (gamma I) to 256, got {self.hessian_bands!r}")
        if self.scales > 1 and self.coarse_steps < 1:
            raise ValueError(f"coarse_steps must be at least 1 when scales > 1, got {self.coarse_steps}")
        for name in ("content_weight", "style_weight", "tv_weight"):
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not (self.learning_rate > 0.0):
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not (0.05 <= self.style_scale <= 4.0):
            raise ValueError(f"style_scale must be between 0.05 and 4, got {self.style_scale}")
        for what, layers in (("content_layers", self.content_layers), ("style_layers", self.style_layers)):
            _check_layers(layers, what)
        if self.style_weights is not None:
            normalise_weights(self.style_weights, len(self.style_weights), what="style")


def _check_layers(layers: LayerWeights, what: str) -> None:
    if not layers:
        raise ValueError(f"{what} is empty; name at least one VGG layer")
    for item in layers:
        if len(item) != 2:
            raise ValueError(f"{what} must be (layer, weight) pairs, got {item!r}")
        name, weight = item
        if name not in TAP_NAMES:
            raise ValueError(f"{what}: unknown layer {name!r}; choose from {', '.join(TAP_NAMES)}")
        if not (weight >= 0.0):
            raise ValueError(f"{what}: weight of {name} must be >= 0, got {weight}")
    if sum(weight for _, weight in layers) <= 0.0:
        raise ValueError(f"{what}: the layer weights sum to zero")


# --- the maths ------------------------------------------------------------------------------------------------------


def gram_matrix(features: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C, C): channel co-activations averaged over positions, F F^T / (H W)."""
    return _Gram.apply(features)


def _positions_by_channels(features: Tensor) -> tuple[Tensor, bool]:
    """(N, C, H, W) -> (N, H W, C) as a view when channels_last (then True), else (N, C, H W) (then False)."""
    n, c, h, w = features.shape
    if c > 1 and features.is_contiguous(memory_format=torch.channels_last):
        return features.permute(0, 2, 3, 1).reshape(n, h * w, c), True
    return features.reshape(n, c, h * w), False


class _Gram(torch.autograd.Function):
    """F F^T / P with a one-product backward: the gradient (G' + G'^T) F / P, where autograd would do two products."""

    @staticmethod
    def forward(ctx, features: Tensor) -> Tensor:
        flat, by_position = _positions_by_channels(features)
        positions = features.shape[2] * features.shape[3]
        ctx.save_for_backward(features)
        if by_position:
            return torch.bmm(flat.transpose(1, 2), flat) / positions
        return torch.bmm(flat, flat.transpose(1, 2)) / positions

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        (features,) = ctx.saved_tensors
        flat, by_position = _positions_by_channels(features)
        positions = features.shape[2] * features.shape[3]
        symmetric = (grad + grad.transpose(1, 2)) / positions
        if by_position:
            rows = torch.bmm(flat, symmetric)  # (N, H W, C)
            return rows.view(features.shape[0], *features.shape[2:], -1).permute(0, 3, 1, 2)
        return torch.bmm(symmetric, flat).view_as(features)


def _relative_error(value: Tensor, target: Tensor) -> Tensor:
    """||value - target||^2 / ||target||^2, per batch item -> (N,)."""
    dims = tuple(range(1, value.dim()))
    return (value - target).pow(2).sum(dim=dims) / target.pow(2).sum(dim=dims).clamp_min(1e-8)


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    """Relative squared error of activations (N, C, H, W) against the content's -> (N,)."""
    return _relative_error(features, target)


def style_loss(gram: Tensor, target: Tensor) -> Tensor:
    """Relative squared error of Gram matrices (N, C, C) against the style's (1 or N, C, C) -> (N,)."""
    return _relative_error(gram, target.expand_as(gram))


def total_variation(images: Tensor) -> Tensor:
    """Mean squared difference of vertical and horizontal neighbours of (N, 3, H, W) pictures -> (N,)."""
    dy = (images[:, :, 1:, :] - images[:, :, :-1, :]).pow(2).mean(dim=(1, 2, 3))
    dx = (images[:, :, :, 1:] - images[:, :, :, :-1]).pow(2).mean(dim=(1, 2, 3))
    return dy + dx


# --- style targets, computed once ------------------------------------------------------------------------------------


@dataclass
class _Entry:
    encoder: weakref.ReferenceType
    grams: dict[str, Tensor]


class StyleTargetCache:
    """LRU of style Gram matrices keyed by (VGG, style image digest, size, layers, colour variant, device).

    Owned by a caller (the Studio keeps one); `hits` and `misses` count look-ups. Entries hold a weak reference to the
    VGG they came from, so a freed VGG's entries are never served to a new one.
    """

    def __init__(self, max_entries: int = 16) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def get(self, vgg: nn.Module, key: Hashable) -> dict[str, Tensor] | None:
        full_key = (id(vgg), key)
        entry = self._entries.get(full_key)
        if entry is None or entry.encoder() is not vgg:
            self.misses += 1
            return None
        self._entries.move_to_end(full_key)
        self.hits += 1
        return entry.grams

    def put(self, vgg: nn.Module, key: Hashable, grams: dict[str, Tensor]) -> None:
        full_key = (id(vgg), key)
        self._entries[full_key] = _Entry(weakref.ref(vgg), grams)
        self._entries.move_to_end(full_key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


# --- preparing inputs ------------------------------------------------------------------------------------------------


@dataclass
class _Inputs:
    content: Image.Image
    styles: list[Image.Image]
    content_digest: str
    style_digests: list[str]
    style_weights: tuple[float, ...]


def _load_inputs(
    content: ImageSource, styles: Sequence[ImageSource], style_weights: Sequence[float] | None
) -> _Inputs:
    styles = image_sources(styles)
    if len(styles) == 0:
        raise ValueError("give at least one style image")
    content_image = load_image(content, name="content image")
    style_images = [load_image(style, name=f"style image {i + 1}") for i, style in enumerate(styles)]
    return _Inputs(
        content=content_image,
        styles=style_images,
        content_digest=image_digest(content_image),
        style_digests=[image_digest(style) for style in style_images],
        style_weights=normalise_weights(style_weights, len(style_images), what="style"),
    )


def level_sizes(size: int, scales: int, *, min_side: int = MIN_LEVEL_SIDE) -> list[int]:
    """Long sides of the coarse-to-fine levels, coarsest first, ending with `size`; levels below `min_side` dropped."""
    sizes = [max(1, round(size / 2**k)) for k in range(scales - 1, -1, -1)]
    return [s for s in sizes[:-1] if s >= min_side] + [size]


def level_steps(settings: GatysSettings, levels: int) -> list[int]:
    """Evaluations per level, coarsest first: `coarse_steps` for the level below full size, twice as many for each
    coarser one (a level costs about a quarter of the next), `steps` at full size."""
    coarse = [settings.coarse_steps * 2 ** (levels - 2 - k) for k in range(levels - 1)]
    return coarse + [settings.steps]


def _normalised(layers: LayerWeights) -> dict[str, float]:
    total = sum(weight for _, weight in layers)
    merged: dict[str, float] = {}
    for name, weight in layers:
        merged[name] = merged.get(name, 0.0) + weight / total
    return {name: weight for name, weight in merged.items() if weight > 0.0}


class _Objective:
    """The Gatys loss at one size: content activations and blended style Grams fixed, picture free."""

    def __init__(
        self,
        *,
        vgg: nn.Module,
        settings: GatysSettings,
        inputs: _Inputs,
        long_side: int,
        cache: StyleTargetCache | None,
    ) -> None:
        self.vgg = vgg
        self.settings = settings
        parameter = next(vgg.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.content_layers = _normalised(settings.content_layers)
        self.style_layers = _normalised(settings.style_layers)
        self.taps = sorted(set(self.content_layers) | set(self.style_layers), key=TAP_NAMES.index)
        self.content_rgb = pil_to_unit(resize_long_side(inputs.content, long_side), device=self.device)
        self.content_input = grey(self.content_rgb) if settings.preserve_color == "luminance" else self.content_rgb
        self.min_side = vgg.min_side(self.taps)
        check_picture_side(self.content_rgb.shape, self.min_side, what="content image")
        self.content_targets: dict[str, Tensor] = {}
        if self.content_layers and settings.content_weight > 0.0:
            with torch.no_grad():
                found = vgg(self.content_input, self.content_layers.keys())
            self.content_targets = {name: found[name].detach() for name in self.content_layers}
        self.style_side = max(16, round(long_side * settings.style_scale))  # style images' long side at this size
        self.style_targets: dict[str, Tensor] = {}
        if settings.style_weight > 0.0:
            blended: dict[str, Tensor] = {}
            for style, digest, weight in zip(inputs.styles, inputs.style_digests, inputs.style_weights, strict=True):
                if weight == 0.0:
                    continue
                grams = self._style_grams(style, digest, self.style_side, inputs.content_digest, cache)
                for name, gram in grams.items():
                    blended[name] = blended[name] + weight * gram if name in blended else weight * gram
            self.style_targets = blended

    def _style_grams(
        self, style: Image.Image, digest: str, side: int, content_digest: str, cache: StyleTargetCache | None
    ) -> dict[str, Tensor]:
        variant = self.settings.preserve_color
        layers = tuple(sorted(self.style_layers, key=TAP_NAMES.index))
        key = (digest, side, layers, variant, content_digest if variant != "none" else "", str(self.device))
        if cache is not None:
            found = cache.get(self.vgg, key)
            if found is not None:
                return found
        picture = pil_to_unit(resize_long_side(style, side), device=self.device)
        check_picture_side(picture.shape, self.min_side, what="style image")
        if variant == "luminance":
            picture = match_luminance(picture, self.content_rgb)
        elif variant == "histogram":
            picture = match_color(picture, self.content_rgb)
        with torch.no_grad():
            features = self.vgg(picture, layers)
        grams = {name: gram_matrix(features[name]).detach() for name in layers}
        if cache is not None:
            cache.put(self.vgg, key, grams)
        return grams

    def __call__(self, picture: Tensor) -> tuple[Tensor, dict[str, float]]:
        """picture (1, 3, H, W) -> (scalar loss with grad, {"content", "style", "tv", "loss"} as floats)."""
        s = self.settings
        features = self.vgg(picture, self.taps)
        zero = picture.new_zeros(())
        content = sum(
            (
                w * content_loss(features[n], self.content_targets[n]).sum()
                for n, w in self.content_layers.items()
                if n in self.content_targets
            ),
            zero,
        )
        style = sum(
            (
                w * style_loss(gram_matrix(features[n]), self.style_targets[n]).sum()
                for n, w in self.style_layers.items()
                if n in self.style_targets
            ),
            zero,
        )
        tv = total_variation(picture).sum() if s.tv_weight > 0.0 else zero
        loss = s.content_weight * content + s.style_weight * style + s.tv_weight * tv
        parts = {
            "content": float((s.content_weight * content).detach()),
            "style": float((s.style_weight * style).detach()),
            "tv": float((s.tv_weight * tv).detach()),
            "loss": float((loss).detach()),
        }
        return loss, parts


# --- optimisation ----------------------------------------------------------------------------------------------------


class _Stop(Exception):
    pass


class _Diverged(Exception):
    pass


class SpectralPicture:
    """A picture parametrised as `start + irfft2(coefficients * 1/f^decay)`, the coefficients starting at zero.

    Plain pixels make a badly conditioned problem for L-BFGS: the loss gradient is dominated by fine detail, so broad
    changes (a region's tone, a large stroke) take many steps. Scaling each frequency's coefficient by 1/f^decay
    (f in cycles per pixel, floored at one cycle per image) evens that out. Measured at 256 px with the real VGG19
    (benchmarks/bench_stylize.py and four content/style pairs), decay 0.5 reached the loss of 60 plain L-BFGS steps
    in 21-60 evaluations (median 36); it was never slower than plain pixels.
    """

    def __init__(self, start: Tensor, decay: float) -> None:
        self.start = start.detach()
        height, width = start.shape[-2:]
        fy = torch.fft.fftfreq(height, device=start.device)[:, None]
        fx = torch.fft.rfftfreq(width, device=start.device)[None, :]
        # f of each coefficient in cycles per pixel, floored at one cycle per image: (h, w // 2 + 1)
        self.frequency = (fx**2 + fy**2).sqrt().clamp_min(1.0 / max(height, width))
        scale = self.frequency.pow(-decay)
        # Normalised to mean 1 so that the first L-BFGS step is of the same size as with plain pixels.
        self.scale = (scale / scale.mean()).unsqueeze(-1)  # (h, w // 2 + 1, 1): real and imaginary parts alike
        shape = (*start.shape[:-1], width // 2 + 1, 2)
        self.coefficients = torch.zeros(shape, device=start.device, requires_grad=True)

    def frequency_bands(self, count: int) -> Tensor:
        """Each coefficient's group for L-BFGS's diagonal H0, flat: `count` log-spaced bands of spatial frequency
        (one cycle per image up to the Nyquist frequency) per picture and colour channel."""
        log_frequency = self.frequency.log()
        low, high = float(log_frequency.min()), float(log_frequency.max())
        band = ((log_frequency - low) / max(high - low, 1e-12) * count).long().clamp(0, count - 1)  # (h, w // 2 + 1)
        pictures_and_channels = self.start.shape[0] * self.start.shape[1]
        offsets = torch.arange(pictures_and_channels, device=self.start.device) * count
        return (offsets[:, None, None, None] + band[None, :, :, None]).expand(-1, -1, -1, 2).flatten()

    def render(self) -> Tensor:
        spectrum = torch.view_as_complex(self.coefficients * self.scale)
        return self.start + torch.fft.irfft2(spectrum, s=self.start.shape[-2:], norm="ortho")


def _optimise(
    picture: Tensor,
    objective: _Objective,
    *,
    steps: int,
    settings: GatysSettings,
    on_eval: Callable[[dict[str, float], Callable[[], Tensor]], bool | None],
) -> tuple[Tensor, bool]:
    """Run `steps` evaluations from `picture`; after each, `on_eval(loss terms, best picture so far)`.

    Returns the evaluated picture with the lowest loss (detached) and whether the callback asked to stop. A non-finite
    loss (L-BFGS without line search can overshoot) ends the level early with the best picture so far.
    """
    # Contiguous (NCHW) on purpose: channels_last measured 5-40% slower for forward + backward on CPU (torch 2.14).
    start = picture.detach().clone(memory_format=torch.contiguous_format)
    bands = None
    if settings.optimizer == "lbfgs" and settings.spectral_decay > 0.0:
        spectral = SpectralPicture(start, settings.spectral_decay)
        parameter, render = spectral.coefficients, spectral.render
        if settings.hessian_bands > 0:
            bands = spectral.frequency_bands(settings.hessian_bands)
    else:
        parameter = start.requires_grad_(True)

        def render() -> Tensor:
            return parameter

    best = {"loss": math.inf, "picture": picture.detach().clone()}

    def evaluate() -> Tensor:
        parameter.grad = None
        x = render()
        loss, parts = objective(x)
        if not math.isfinite(parts["loss"]):
            raise _Diverged
        loss.backward()
        if parts["loss"] < best["loss"]:
            best["loss"] = parts["loss"]
            best["picture"] = x.detach().clone()
        if on_eval(parts, lambda: best["picture"]) is False:
            raise _Stop
        return loss

    with torch.enable_grad():
        try:
            if settings.optimizer == "lbfgs":
                minimize_lbfgs(parameter, evaluate, steps=steps, first_step=settings.first_step, bands=bands)
            else:
                adam = torch.optim.Adam([parameter], lr=settings.learning_rate)
                for _ in range(steps):
                    adam.step(evaluate)
        except _Stop:
            return best["picture"], True
        except _Diverged:
            pass
    return best["picture"], False


def _recoloured(content: Tensor, inputs: _Inputs, style_side: int) -> Tensor:
    """`content` with the colour mean and covariance of the styles' pixels (mixed by the style weights)."""
    moments, weights = [], []
    for style, weight in zip(inputs.styles, inputs.style_weights, strict=True):
        if weight > 0.0:
            moments.append(colour_moments(pil_to_unit(resize_long_side(style, style_side), device=content.device)))
            weights.append(weight)
    return match_color_moments(content, *blend_colour_moments(moments, weights))


def stylize_gatys(
    *,
    content: ImageSource,
    styles: Sequence[ImageSource] | ImageSource,
    vgg: nn.Module,
    settings: GatysSettings = GatysSettings(),
    on_step: StepCallback | None = None,
    cache: StyleTargetCache | None = None,
    on_picture: PictureCallback | None = None,
) -> StylizeResult:
    """Optimise a picture with the content of `content` and the style of `styles` (blended by settings.style_weights).

    vgg: a float32 VGG19Features (any preprocessing) on the device to work on; it is not modified.
    on_step(step, total, loss): called after every objective evaluation, `total` counting all levels; return False
    to stop early (the best picture so far is returned) or raise `Cancelled` to abort.
    on_picture(step, total, render): called after each on_step; `render()` makes the best picture so far into the
    image this function would return if it stopped now (a few milliseconds, so call it only to show it).
    cache: a StyleTargetCache to reuse style Grams across calls.
    Returns StylizeResult(image (RGB, long side `settings.size`), settings, seconds, history, steps, stopped_early);
    history has one {"step", "size", "loss", "content", "style", "tv"} per evaluation.
    Raises ValueError for unreadable images, sizes above STUDIO_MAX_SIDE or a non-float32 VGG.
    """
    started = time.perf_counter()
    limit = max_side_from_env()
    check_output_side(settings.size, limit)
    check_output_side(max(16, round(settings.size * settings.style_scale)), limit, what="style size")
    parameter = next(vgg.parameters(), None)
    if parameter is None or parameter.dtype != torch.float32:
        raise ValueError("Gatys style transfer needs a float32 VGG; load it without half precision")
    inputs = _load_inputs(content, styles, settings.style_weights)
    if settings.style_weights is not None and len(settings.style_weights) != len(inputs.styles):
        raise ValueError(
            f"settings.style_weights has {len(settings.style_weights)} weights for {len(inputs.styles)} style images"
        )

    sizes = level_sizes(settings.size, settings.scales, min_side=settings.min_level_side)
    plan = level_steps(settings, len(sizes))
    total = sum(plan)
    content_rgb = pil_to_unit(resize_long_side(inputs.content, settings.size), device=parameter.device)
    history: list[dict[str, float]] = []
    picture: Tensor | None = None
    stopped = False
    for side, steps in zip(sizes, plan, strict=True):
        objective = _Objective(vgg=vgg, settings=settings, inputs=inputs, long_side=side, cache=cache)
        height, width = objective.content_input.shape[-2:]
        if picture is None:
            if settings.init == "recoloured" and settings.preserve_color == "none" and objective.style_targets:
                picture = _recoloured(objective.content_input, inputs, objective.style_side)
            elif settings.init in ("content", "recoloured"):
                picture = objective.content_input.clone()
            else:
                generator = torch.Generator().manual_seed(settings.seed)
                noise = torch.rand((1, 3, height, width), generator=generator)
                picture = noise.to(objective.device)
                if settings.preserve_color == "luminance":
                    picture = grey(picture)
        else:
            picture = F.interpolate(picture, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)

        def on_eval(parts: dict[str, float], best: Callable[[], Tensor], side: int = side) -> bool | None:
            history.append({"step": float(len(history) + 1), "size": float(side), **parts})
            answer = None if on_step is None else on_step(len(history), total, parts["loss"])
            if on_picture is not None and answer is not False:
                on_picture(len(history), total, lambda: _finished_image(best(), content_rgb, settings))
            return answer

        picture, stopped = _optimise(picture, objective, steps=steps, settings=settings, on_eval=on_eval)
        if stopped:
            break

    assert picture is not None
    return StylizeResult(
        image=_finished_image(picture, content_rgb, settings),
        settings=settings,
        seconds=time.perf_counter() - started,
        history=tuple(history),
        steps=len(history),
        stopped_early=stopped,
    )


def _finished_image(picture: Tensor, content_rgb: Tensor, settings: GatysSettings) -> Image.Image:
    """The optimised picture as the user sees it: at full size (a coarse level's is enlarged), in [0, 1], with the
    content's colours put back when they are to be kept."""
    final = picture.clamp(0, 1)
    if final.shape[-2:] != content_rgb.shape[-2:]:  # a coarse level's picture
        final = F.interpolate(final, size=content_rgb.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
    if settings.preserve_color == "luminance":
        final = transfer_luminance(final, content_rgb)
    return unit_to_pil(final)[0]


def evaluate_gatys_loss(
    *,
    image: Image.Image | Tensor,
    content: ImageSource,
    styles: Sequence[ImageSource] | ImageSource,
    vgg: nn.Module,
    settings: GatysSettings = GatysSettings(),
    cache: StyleTargetCache | None = None,
) -> dict[str, float]:
    """The Gatys objective of a finished picture at `settings.size` (the same definition `stylize_gatys` minimises).

    image: a PIL image or a (1, 3, H, W) tensor in [0, 1]; resized to the content's shape at `settings.size`.
    Returns {"content", "style", "tv", "loss"} (weighted terms and their sum).
    """
    inputs = _load_inputs(content, styles, settings.style_weights)
    objective = _Objective(vgg=vgg, settings=settings, inputs=inputs, long_side=settings.size, cache=cache)
    if isinstance(image, Image.Image):
        picture = pil_to_unit(image, device=objective.device)
    else:
        picture = image.detach().to(objective.device, torch.float32)
    shape = objective.content_input.shape[-2:]
    if picture.shape[-2:] != shape:
        picture = F.interpolate(picture, size=shape, mode="bicubic", align_corners=False)
    if settings.preserve_color == "luminance":
        picture = grey(picture)
    with torch.no_grad():
        _, parts = objective(picture)
    return parts
