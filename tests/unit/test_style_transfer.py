"""Gatys style transfer: Gram maths, losses, limits of the weights, coarse-to-fine, cache, callbacks, errors."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from studio.imaging import pil_to_unit, resize_long_side, unit_to_pil
from studio.models.vgg import VGG19Features
from studio.ops.color import rgb_to_yiq
from studio.ops.style_transfer import (
    Cancelled,
    GatysSettings,
    SpectralPicture,
    StyleTargetCache,
    evaluate_gatys_loss,
    gram_matrix,
    level_sizes,
    level_steps,
    style_loss,
    stylize_gatys,
    total_variation,
)


def _picture(seed: int, size: tuple[int, int], tint=(1.0, 1.0, 1.0), cells: int = 6) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.random((size[1] // cells + 1, size[0] // cells + 1, 3)) * np.array(tint)
    image = Image.fromarray((small * 255).clip(0, 255).astype(np.uint8), mode="RGB")
    return image.resize(size, Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def vgg() -> VGG19Features:
    """The real architecture with seeded He-initialised weights (the caffe convention: 0-255 BGR input)."""
    model = VGG19Features("caffe")
    generator = torch.Generator().manual_seed(0)
    for conv in model.convs.values():
        fan_in = conv.weight[0].numel()
        conv.weight.data = torch.randn(conv.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5
        conv.bias.data.zero_()
    return model.eval().requires_grad_(False)


CONTENT = _picture(0, (48, 40), cells=4)
STYLE = _picture(1, (40, 40), (1.0, 0.4, 0.2), cells=10)
OTHER_STYLE = _picture(2, (40, 32), (0.2, 0.5, 1.0), cells=3)
TINY = GatysSettings(size=48, steps=8, style_layers=(("relu1_1", 1.0), ("relu2_1", 1.0), ("relu3_1", 1.0)))


def _best(result) -> float:
    return min(entry["loss"] for entry in result.history)


def test_gram_matrix_by_hand() -> None:
    # Two channels over four positions: a = [1, 2, 0, 1], b = [0, 1, 3, -1].
    features = torch.tensor([[[[1.0, 2.0], [0.0, 1.0]], [[0.0, 1.0], [3.0, -1.0]]]])
    expected = torch.tensor([[[(1 + 4 + 0 + 1) / 4, (0 + 2 + 0 - 1) / 4], [(0 + 2 + 0 - 1) / 4, (0 + 1 + 9 + 1) / 4]]])
    assert torch.allclose(gram_matrix(features), expected)
    batch = torch.randn(3, 5, 4, 6)
    flat = batch[1].reshape(5, -1)
    assert torch.allclose(gram_matrix(batch)[1], flat @ flat.T / 24, atol=1e-5)
    channels_last = batch.contiguous(memory_format=torch.channels_last)
    assert torch.allclose(gram_matrix(channels_last), gram_matrix(batch), atol=1e-5)
    assert style_loss(gram_matrix(batch), gram_matrix(batch)).abs().max() == 0
    assert torch.allclose(style_loss(2 * expected, expected), torch.tensor([1.0]))  # relative: ||G - A||^2 / ||A||^2


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_gram_matrix_gradient_matches_autograd_of_the_formula(memory_format: torch.memory_format) -> None:
    features = torch.randn(2, 5, 4, 3, dtype=torch.float64).contiguous(memory_format=memory_format)
    features.requires_grad_(True)
    assert torch.autograd.gradcheck(gram_matrix, (features,))
    weights = torch.randn(2, 5, 5, dtype=torch.float64)  # not symmetric: the backward must symmetrise
    (gradient,) = torch.autograd.grad((gram_matrix(features) * weights).sum(), features)
    by_formula = torch.einsum("nchw,ndhw->ncd", features, features) / 12
    (expected,) = torch.autograd.grad((by_formula * weights).sum(), features)
    assert torch.allclose(gradient, expected)


def test_total_variation_by_hand() -> None:
    image = torch.zeros(1, 3, 2, 3)
    image[..., 1] = 1.0  # a vertical stripe: both horizontal neighbour pairs of each row differ by 1, no vertical pair
    assert torch.allclose(total_variation(image), torch.tensor([1.0]))
    assert total_variation(torch.ones(2, 3, 5, 5)).abs().max() == 0


def test_style_loss_goes_down(vgg) -> None:
    result = stylize_gatys(content=CONTENT, styles=[STYLE], vgg=vgg, settings=TINY)
    styles = [entry["style"] for entry in result.history]
    assert len(result.history) == result.steps == 8
    assert min(styles) < 0.5 * styles[0]  # L-BFGS without line search may spike; the best picture is returned
    assert result.image.size == (48, 40) and result.image.mode == "RGB"
    assert not result.stopped_early


def test_content_only_reconstructs_the_content_and_style_only_ignores_it(vgg) -> None:
    shallow = {"size": 48, "style_weight": 0.0, "tv_weight": 0.0, "init": "noise", "content_layers": (("relu2_1", 1),)}
    result = stylize_gatys(content=CONTENT, styles=[STYLE], vgg=vgg, settings=GatysSettings(steps=12, **shallow))
    assert all(entry["style"] == 0.0 for entry in result.history)
    assert min(entry["content"] for entry in result.history) < 0.1 * result.history[0]["content"]
    noise = stylize_gatys(content=CONTENT, styles=[STYLE], vgg=vgg, settings=GatysSettings(steps=1, **shallow))
    target = pil_to_unit(CONTENT)
    assert (pil_to_unit(result.image) - target).abs().mean() < 0.5 * (pil_to_unit(noise.image) - target).abs().mean()

    style_only = GatysSettings(size=48, steps=8, content_weight=0.0, tv_weight=0.0, style_layers=TINY.style_layers)
    result = stylize_gatys(content=CONTENT, styles=[STYLE], vgg=vgg, settings=style_only)
    assert all(entry["content"] == 0.0 for entry in result.history)
    assert min(entry["style"] for entry in result.history) < 0.5 * result.history[0]["style"]
    mixed = stylize_gatys(content=CONTENT, styles=[STYLE], vgg=vgg, settings=TINY)
    measure = GatysSettings(size=48, style_weight=0.0, tv_weight=0.0)
    drift_style_only = evaluate_gatys_loss(
        image=result.image, content=CONTENT, styles=[STYLE], vgg=vgg, settings=measure
    )
    drift_mixed = evaluate_gatys_loss(image=mixed.image, content=CONTENT, styles=[STYLE], vgg=vgg, settings=measure)
    assert drift_style_only["content"] > drift_mixed["content"]


def test_noise_init_is_seeded(vgg) -> None:
    settings = GatysSettings(size=32, steps=2, init="noise", seed=7)
    first = stylize_gatys(content=CONTENT, styles=[STYLE], vgg=vgg, settings=settings)
    again = stylize_gatys(content=CONTENT, styles=[STYLE], vgg=vgg, settings=settings)
    other = stylize_gatys(
        content=CONTENT, styles=[STYLE], vgg=vgg, settings=GatysSettings(size=32, steps=2, init="noise")
    )
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert not np.array_equal(np.asarray(first.image), np.asarray(other.image))


def _rgb_mean(image: Image.Image) -> Tensor:
    return pil_to_unit(image).double().flatten(2)[0].mean(dim=1)


def test_recoloured_init_starts_from_the_content_in_the_blended_styles_colours(vgg) -> None:
    def start(**options) -> Image.Image:  # one evaluation: the result is the starting picture
        settings = GatysSettings(size=40, steps=1, **options)
        return stylize_gatys(content=CONTENT, styles=[STYLE, OTHER_STYLE], vgg=vgg, settings=settings).image

    styles_mean = torch.stack([_rgb_mean(STYLE), _rgb_mean(OTHER_STYLE)])
    for weights in ((1.0, 0.0), (0.0, 1.0), (0.5, 0.5)):
        recoloured = start(style_weights=weights, style_scale=1.0)
        expected = torch.tensor(weights, dtype=torch.float64) @ styles_mean
        assert torch.allclose(_rgb_mean(recoloured), expected, atol=0.03), weights
    assert GatysSettings().init == "recoloured"
    content = np.asarray(start(init="content")).astype(int)
    assert np.abs(content - np.asarray(resize_long_side(CONTENT, 40)).astype(int)).max() <= 1
    for kept in ({"preserve_color": "histogram"}, {"style_weight": 0.0}):
        assert np.array_equal(np.asarray(start(**kept)), content), kept


def test_style_blend_weights_are_normalised(vgg) -> None:
    def loss(weights, styles=(STYLE, OTHER_STYLE)):
        settings = GatysSettings(size=48, style_weights=weights)
        return evaluate_gatys_loss(image=CONTENT, content=CONTENT, styles=list(styles), vgg=vgg, settings=settings)

    assert loss((2.0, 2.0)) == pytest.approx(loss((0.5, 0.5)), rel=1e-5)
    assert loss(None) == pytest.approx(loss((0.5, 0.5)), rel=1e-5)
    assert loss((5.0, 0.0))["style"] == pytest.approx(loss(None, styles=(STYLE,))["style"], rel=1e-5)
    assert loss((1.0, 0.0))["style"] != pytest.approx(loss((0.0, 1.0))["style"], rel=1e-3)
    with pytest.raises(ValueError, match="weights"):
        loss((1.0, 2.0, 3.0))
    assert loss((1e308, 1e308)) == pytest.approx(loss((0.5, 0.5)), rel=1e-5)  # the sum overflows, the blend not
    for bad in ((math.inf, 1.0), (math.nan, 1.0), (-1.0, 2.0)):
        with pytest.raises(ValueError, match="must be finite and zero or positive"):
            loss(bad)


def test_luminance_mode_keeps_the_content_chroma(vgg) -> None:
    content = pil_to_unit(CONTENT) * 0.5 + 0.25  # moderate colours so the result stays inside the RGB cube
    content_image = unit_to_pil(content)[0]
    settings = GatysSettings(size=48, steps=6, preserve_color="luminance", style_layers=TINY.style_layers)
    result = stylize_gatys(content=content_image, styles=[STYLE], vgg=vgg, settings=settings)
    out = pil_to_unit(result.image)
    chroma_error = (rgb_to_yiq(out)[:, 1:] - rgb_to_yiq(pil_to_unit(content_image))[:, 1:]).abs()
    plain = stylize_gatys(content=content_image, styles=[STYLE], vgg=vgg, settings=TINY)
    plain_error = (rgb_to_yiq(pil_to_unit(plain.image))[:, 1:] - rgb_to_yiq(pil_to_unit(content_image))[:, 1:]).abs()
    assert chroma_error.mean() < 0.01  # 8-bit rounding and a few clipped pixels
    assert plain_error.mean() > 3 * chroma_error.mean()

    histogram = GatysSettings(size=48, steps=6, preserve_color="histogram", style_layers=TINY.style_layers)
    recoloured = stylize_gatys(content=content_image, styles=[STYLE], vgg=vgg, settings=histogram)
    mean_content = pil_to_unit(content_image).mean(dim=(2, 3))
    assert (pil_to_unit(recoloured.image).mean(dim=(2, 3)) - mean_content).abs().max() < (
        pil_to_unit(plain.image).mean(dim=(2, 3)) - mean_content
    ).abs().max()


def test_coarse_to_fine_beats_single_scale_for_the_same_full_size_steps(vgg) -> None:
    assert level_sizes(512, 3) == [128, 256, 512] and level_sizes(512, 9) == [128, 256, 512]
    assert level_sizes(128, 4, min_side=64) == [64, 128] and level_sizes(96, 1) == [96]
    assert level_steps(GatysSettings(steps=30, coarse_steps=25), 3) == [50, 25, 30]  # cheaper levels run longer
    content, style = _picture(3, (128, 96), cells=8), _picture(4, (96, 96), (1.0, 0.6, 0.3), cells=12)
    base = {"size": 128, "steps": 6, "init": "noise", "style_layers": TINY.style_layers, "min_level_side": 64}
    single = stylize_gatys(content=content, styles=[style], vgg=vgg, settings=GatysSettings(**base))
    multi = stylize_gatys(
        content=content, styles=[style], vgg=vgg, settings=GatysSettings(**base, scales=2, coarse_steps=20)
    )
    assert [entry["size"] for entry in multi.history] == [64.0] * 20 + [128.0] * 6
    assert _best(multi) < 0.8 * _best(single)


def test_spectral_picture_starts_at_the_picture_and_moves_broad_shapes_faster() -> None:
    start = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(SpectralPicture(start, 0.5).render(), start)

    def gain(decay: float, cycles: int) -> float:
        """How far one unit gradient step on the coefficients moves the picture along a horizontal cosine."""
        picture = SpectralPicture(torch.zeros(1, 1, 24, 32), decay)
        pattern = torch.cos(2 * math.pi * cycles * torch.arange(32) / 32).expand(1, 1, 24, 32)
        (picture.render() * pattern).sum().backward()
        with torch.no_grad():
            picture.coefficients.copy_(picture.coefficients.grad)
            return float((picture.render() * pattern).sum() / (pattern * pattern).sum())

    # The step is J J^T pattern: each frequency f is scaled by (1/f^decay)^2, so 1 vs 8 cycles differ by 8^(2 decay).
    assert gain(0.0, 1) == pytest.approx(gain(0.0, 8), rel=1e-4)
    assert gain(0.5, 1) / gain(0.5, 8) == pytest.approx(8.0, rel=1e-4)
    assert gain(1.0, 1) / gain(1.0, 8) == pytest.approx(64.0, rel=1e-4)
    with pytest.raises(ValueError, match="spectral_decay"):
        GatysSettings(spectral_decay=3.0)


def test_frequency_bands_group_each_colour_channel_by_spatial_frequency() -> None:
    picture = SpectralPicture(torch.zeros(1, 3, 24, 32), 0.5)
    bands = picture.frequency_bands(6)
    assert bands.shape == (picture.coefficients.numel(),) and bands.dtype == torch.long
    by_position = bands.view(picture.coefficients.shape)  # (1, 3, 24, 17, 2)
    assert torch.equal(by_position[..., 0], by_position[..., 1])  # real and imaginary parts alike
    for channel in range(3):
        channel_bands = by_position[0, channel, :, :, 0]
        assert set(channel_bands.unique().tolist()) == set(range(6 * channel, 6 * channel + 6))
        assert channel_bands[0, 0] == 6 * channel  # the mean: the lowest band
        assert channel_bands[12, 16] == 6 * channel + 5  # Nyquist in both directions: the highest
    # a band holds one frequency range: along the first row the band never decreases as the frequency rises
    assert bool((by_position[0, 0, 0, 1:, 0].diff() >= 0).all())
    with pytest.raises(ValueError, match="hessian_bands"):
        GatysSettings(hessian_bands=-1)


def test_first_step_must_be_between_zero_and_one() -> None:
    with pytest.raises(ValueError, match="first_step"):
        GatysSettings(first_step=-1.0)


def test_studio_lbfgs_beats_textbook_lbfgs_for_the_same_steps(vgg) -> None:
    settings = GatysSettings(size=64, steps=12, style_layers=TINY.style_layers, init="content")
    content, style = _picture(3, (64, 48), cells=8), _picture(4, (64, 64), (1.0, 0.6, 0.3), cells=12)
    spectral = stylize_gatys(content=content, styles=[style], vgg=vgg, settings=settings)
    pixels = stylize_gatys(
        content=content, styles=[style], vgg=vgg, settings=replace(settings, spectral_decay=0.0, first_step=0.0)
    )
    assert spectral.history[0]["loss"] == pytest.approx(pixels.history[0]["loss"])  # same start
    assert _best(spectral) < 0.8 * _best(pixels)


def test_style_grams_are_cached(vgg) -> None:
    calls = []
    hook = vgg.register_forward_pre_hook(lambda module, args: calls.append(tuple(args[0].shape[-2:])))
    try:
        cache = StyleTargetCache()
        settings = GatysSettings(size=48, steps=2)
        stylize_gatys(content=CONTENT, styles=[STYLE], vgg=vgg, settings=settings, cache=cache)
        assert len(calls) == 1 + 1 + 2  # content, style, two steps
        assert (cache.hits, cache.misses) == (0, 1)
        stylize_gatys(content=CONTENT.copy(), styles=[STYLE.copy()], vgg=vgg, settings=settings, cache=cache)
        assert len(calls) == 4 + 1 + 2  # content and steps only
        assert cache.hits == 1
        stylize_gatys(content=CONTENT, styles=[STYLE], vgg=vgg, settings=GatysSettings(size=40, steps=1), cache=cache)
        assert cache.misses == 2  # another size is another entry
    finally:
        hook.remove()


def test_callback_stops_and_cancels(vgg) -> None:
    seen = []

    def stop_after_three(step: int, total: int, loss: float) -> bool:
        seen.append((step, total))
        return step < 3

    result = stylize_gatys(content=CONTENT, styles=[STYLE], vgg=vgg, settings=TINY, on_step=stop_after_three)
    assert seen == [(1, 8), (2, 8), (3, 8)]
    assert result.stopped_early and result.steps == 3 and result.image.size == (48, 40)

    def cancel(step: int, total: int, loss: float) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        stylize_gatys(content=CONTENT, styles=[STYLE], vgg=vgg, settings=TINY, on_step=cancel)


def test_pictures_so_far_are_what_a_shorter_or_stopped_run_returns(vgg) -> None:
    pictures: dict[int, Image.Image] = {}

    def keep(step: int, total: int, render) -> None:
        assert total == TINY.steps
        pictures[step] = render()

    full = stylize_gatys(content=CONTENT, styles=[STYLE], vgg=vgg, settings=TINY, on_picture=keep)
    assert sorted(pictures) == list(range(1, TINY.steps + 1))
    assert np.array_equal(np.asarray(pictures[TINY.steps]), np.asarray(full.image))
    shorter = stylize_gatys(content=CONTENT, styles=[STYLE], vgg=vgg, settings=replace(TINY, steps=3))
    assert np.array_equal(np.asarray(pictures[3]), np.asarray(shorter.image))
    assert not np.array_equal(np.asarray(pictures[3]), np.asarray(full.image))

    # kept colours are put back in the pictures so far too; a stop that asks for no more gets no picture
    luminance = replace(TINY, preserve_color="luminance")
    seen: list[int] = []
    stopped = stylize_gatys(
        content=CONTENT,
        styles=[STYLE],
        vgg=vgg,
        settings=luminance,
        on_step=lambda step, total, loss: step < 4,
        on_picture=lambda step, total, render: (seen.append(step), pictures.__setitem__(step, render())),
    )
    assert seen == [1, 2, 3] and stopped.steps == 4
    three_steps = stylize_gatys(content=CONTENT, styles=[STYLE], vgg=vgg, settings=replace(luminance, steps=3))
    assert np.array_equal(np.asarray(pictures[3]), np.asarray(three_steps.image))


def test_pictures_so_far_have_the_output_size_during_a_coarse_level(vgg) -> None:
    settings = replace(TINY, size=96, steps=2, scales=2, coarse_steps=2, min_level_side=48)
    sizes: list[tuple[int, tuple[int, int]]] = []
    stylize_gatys(
        content=CONTENT,
        styles=[STYLE],
        vgg=vgg,
        settings=settings,
        on_picture=lambda step, total, render: sizes.append((step, render().size)),
    )
    assert sizes == [(step, (96, 80)) for step in range(1, 5)]


def test_adam_runs_and_lowers_the_loss(vgg) -> None:
    settings = GatysSettings(size=48, steps=10, optimizer="adam", learning_rate=0.05, style_layers=TINY.style_layers)
    result = stylize_gatys(content=CONTENT, styles=[STYLE], vgg=vgg, settings=settings)
    assert _best(result) < 0.7 * result.history[0]["loss"]


@pytest.mark.parametrize(
    ("preprocessing", "tap", "needed"),
    [("caffe", "relu5_1", 16), ("caffe", "conv2_1", 2), ("caffe", "relu1_1", 1), ("adain", "relu4_1", 9)],
)
def test_vgg_min_side_is_the_smallest_picture_that_runs(preprocessing: str, tap: str, needed: int) -> None:
    encoder = VGG19Features(preprocessing).eval()
    assert encoder.min_side([tap, "relu1_1"]) == needed
    with torch.no_grad():
        assert encoder(torch.rand(1, 3, needed, 40), [tap])[tap].shape[2] >= 1
        if needed > 1:
            with pytest.raises(ValueError, match=f"both sides need at least {needed} px"):
                encoder(torch.rand(1, 3, 40, needed - 1), [tap])


def test_bad_input_is_refused(vgg, monkeypatch) -> None:
    monkeypatch.setenv("STUDIO_MAX_SIDE", "40")
    with pytest.raises(ValueError, match="limit of 40 px"):
        stylize_gatys(content=CONTENT, styles=[STYLE], vgg=vgg, settings=GatysSettings(size=48, steps=1))
    monkeypatch.delenv("STUDIO_MAX_SIDE")
    with pytest.raises(ValueError, match="style image 2 is not a picture file"):
        stylize_gatys(content=CONTENT, styles=[STYLE, b"<html>"], vgg=vgg, settings=TINY)
    with pytest.raises(ValueError, match="content image is an empty file"):
        stylize_gatys(content=b"", styles=[STYLE], vgg=vgg, settings=TINY)
    with pytest.raises(ValueError, match="unknown layer"):
        GatysSettings(style_layers=(("relu9_9", 1.0),))
    with pytest.raises(ValueError, match="optimizer"):
        GatysSettings(optimizer="sgd")  # type: ignore[arg-type]
    half = VGG19Features("caffe").half()
    with pytest.raises(ValueError, match="float32"):
        stylize_gatys(content=CONTENT, styles=[STYLE], vgg=half, settings=TINY)
    strip = Image.new("RGB", (400, 40), (200, 120, 40))  # 10:1, 4 px high at 40 px: relu5_1 would have no rows
    for content, styles, what in ((strip, [STYLE], "content image"), (CONTENT, [STYLE, strip], "style image")):
        with pytest.raises(ValueError, match=f"the {what} is too narrow for this size: it becomes 40x4 px"):
            stylize_gatys(content=content, styles=styles, vgg=vgg, settings=GatysSettings(size=40, steps=1))


@pytest.mark.slow
def test_real_caffe_vgg_smoke() -> None:
    from studio.loader import load_model
    from studio.registry import builtin_models

    real = load_model(builtin_models()["vgg19-caffe"])
    content = Image.open(_shared() / "content" / "chelsea.png")
    style = Image.open(_shared() / "styles" / "woman_with_hat_matisse.jpg")
    result = stylize_gatys(content=content, styles=[style], vgg=real, settings=GatysSettings(size=64, steps=10))
    losses = [entry["loss"] for entry in result.history]
    assert min(losses) < 0.6 * losses[0]
    assert result.image.size == (64, 43)
    assert np.asarray(result.image).std() > 20  # a picture, not a flat field


def _shared() -> Path:
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"
