"""AdaIN: equivalence with the original formulation, statistics, alpha, blends, colour, masks, cache, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from studio.imaging import pil_to_unit, resize_long_side
from studio.loader import from_adain_decoder, from_adain_vgg_normalised
from studio.models.adain import AdaINDecoder
from studio.models.vgg import VGG19Features, max_pool_2x2, reflection_pad_1
from studio.ops.adain import (
    AdaINSettings,
    AdaINStylizer,
    adain_stylize,
    adaptive_instance_norm,
    channel_stats,
    masked_adain,
)
from studio.ops.color import (
    blend_colour_moments,
    colour_moments,
    match_color,
    rgb_to_yiq,
    transfer_luminance,
    yiq_to_rgb,
)
from studio.weights import load_state_dict, load_strict

# --- the official layouts (naoto0804/pytorch-AdaIN net.py), written out as plain data -------------------------------

# Encoder: 1x1 conv, then per VGG19 conv a reflection pad, the 3x3 conv and a ReLU; ceil-mode pools between blocks.
OFFICIAL_ENCODER_PLAN = (("conv1", 3, 3),) + tuple(
    item
    for block in (
        [(3, 64), (64, 64)],
        [(64, 128), (128, 128)],
        [(128, 256), (256, 256), (256, 256), (256, 256)],
        [(256, 512), (512, 512), (512, 512), (512, 512)],
        [(512, 512), (512, 512), (512, 512), (512, 512)],
    )
    for item in ([("pool", 0, 0)] if block[0][0] != 3 else []) + [("conv3", i, o) for i, o in block]
)
# Decoder: (in, out) per 3x3 conv; "up" = nearest x2. The last conv has no ReLU.
OFFICIAL_DECODER_PLAN = (
    (512, 256),
    "up",
    (256, 256),
    (256, 256),
    (256, 256),
    (256, 128),
    "up",
    (128, 128),
    (128, 64),
    "up",
    (64, 64),
    (64, 3),
)


def official_encoder() -> nn.Sequential:
    layers: list[nn.Module] = []
    for kind, cin, cout in OFFICIAL_ENCODER_PLAN:
        if kind == "conv1":
            layers.append(nn.Conv2d(cin, cout, (1, 1)))
        elif kind == "pool":
            layers.append(nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True))
        else:
            layers += [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(cin, cout, (3, 3)), nn.ReLU()]
    return nn.Sequential(*layers)


def official_decoder() -> nn.Sequential:
    layers: list[nn.Module] = []
    for item in OFFICIAL_DECODER_PLAN:
        if item == "up":
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        else:
            layers += [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(*item, (3, 3)), nn.ReLU()]
    return nn.Sequential(*layers[:-1])  # no ReLU after the last conv


def _randomise(module: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            fan_in = layer.weight[0].numel()
            layer.weight.data = torch.randn(layer.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5
            layer.bias.data = torch.randn(layer.bias.shape, generator=generator) * 0.05


def reference_calc_mean_std(features: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    n, c = features.shape[:2]
    var = features.view(n, c, -1).var(dim=2) + eps
    return features.view(n, c, -1).mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)


def reference_stylize(encoder, decoder, content, style, alpha):
    """The original inference: encoder[:31] -> AdaIN -> alpha blend -> decoder."""
    relu4_1 = encoder[:31]
    content_features, style_features = relu4_1(content), relu4_1(style)
    style_mean, style_std = reference_calc_mean_std(style_features)
    content_mean, content_std = reference_calc_mean_std(content_features)
    target = (content_features - content_mean) / content_std * style_std + style_mean
    target = alpha * target + (1 - alpha) * content_features
    return decoder(target)


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> dict:
    """Seeded random weights in the official layout, saved with torch.save and loaded through our converters."""
    assert len(official_encoder()) == 53 and len(official_decoder()) == 29
    encoder, decoder = official_encoder().eval(), official_decoder().eval()
    _randomise(encoder, 1)
    _randomise(decoder, 2)
    folder = tmp_path_factory.mktemp("adain")
    torch.save(encoder.state_dict(), folder / "vgg_normalised.pth")
    torch.save(decoder.state_dict(), folder / "decoder.pth")
    ours_encoder, ours_decoder = VGG19Features("adain"), AdaINDecoder()
    load_strict(ours_encoder, from_adain_vgg_normalised(load_state_dict(folder / "vgg_normalised.pth")), what="enc")
    load_strict(ours_decoder, from_adain_decoder(load_state_dict(folder / "decoder.pth")), what="dec")
    return {
        "encoder": encoder,
        "decoder": decoder,
        "stylizer": AdaINStylizer(encoder=ours_encoder.eval(), decoder=ours_decoder.eval()),
    }


def _picture(seed: int, size: tuple[int, int], tint: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Image.Image:
    """A smooth random colour picture (random noise upsampled), tinted per channel."""
    rng = np.random.default_rng(seed)
    small = rng.random((size[1] // 8 + 1, size[0] // 8 + 1, 3)) * np.array(tint)
    image = Image.fromarray((small * 255).clip(0, 255).astype(np.uint8), mode="RGB")
    return image.resize(size, Image.Resampling.BICUBIC)


CONTENT = _picture(0, (64, 48))
RED = _picture(1, (56, 40), (1.0, 0.3, 0.2))
BLUE = _picture(2, (40, 56), (0.2, 0.4, 1.0))
SMALL = AdaINSettings(content_size=64, style_size=56, preview_size=32)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 2, 2), (3, 8, 9, 4)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_reflection_padding_equals_torchs_and_keeps_the_memory_format(shape, layout) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(memory_format=layout).requires_grad_()
    ours, torchs = reflection_pad_1(x), F.pad(x, (1, 1, 1, 1), mode="reflect")
    assert torch.equal(ours, torchs)
    assert ours.is_contiguous(memory_format=layout)
    upstream = torch.randn(ours.shape, generator=torch.Generator().manual_seed(1))
    (our_gradient,) = torch.autograd.grad(ours, x, upstream)
    (torch_gradient,) = torch.autograd.grad(torchs, x, upstream)
    assert torch.allclose(our_gradient, torch_gradient, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="at least 2x2"):
        reflection_pad_1(torch.zeros(1, 3, 1, 5))


POOLING_CASES = [
    (shape, ceil_mode)
    for shape in [(2, 3, 6, 8), (1, 4, 5, 7), (3, 8, 9, 4), (1, 2, 1, 3)]
    for ceil_mode in (False, True)
    if ceil_mode or min(shape[-2:]) >= 2  # no whole window: torch refuses it (VGG19Features refuses such pictures)
]


@pytest.mark.parametrize(("shape", "ceil_mode"), POOLING_CASES)
def test_pooling_equals_torchs_with_and_without_autograd(shape, ceil_mode) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    x[..., :2, :2] = 0.0  # ties, as after a ReLU
    x[0, 0, -1, -1] = float("nan")  # a NaN wins its window in both
    expected = F.max_pool2d(x, 2, 2, ceil_mode=ceil_mode)
    with torch.no_grad():
        pooled = max_pool_2x2(x, ceil_mode=ceil_mode)
    assert pooled.shape == expected.shape
    assert torch.equal(pooled.nan_to_num(7.0), expected.nan_to_num(7.0))
    with torch.inference_mode():
        assert torch.equal(max_pool_2x2(x, ceil_mode=ceil_mode).nan_to_num(7.0), expected.nan_to_num(7.0))
    # With autograd, torch's own pooling routes the gradient to each window's maximum.
    tracked = x.nan_to_num(0.5).requires_grad_()
    upstream = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1))
    (ours,) = torch.autograd.grad(max_pool_2x2(tracked, ceil_mode=ceil_mode), tracked, upstream)
    (torchs,) = torch.autograd.grad(F.max_pool2d(tracked, 2, 2, ceil_mode=ceil_mode), tracked, upstream)
    assert torch.equal(ours, torchs)


def test_matches_the_original_formulation(official) -> None:
    settings = AdaINSettings(alpha=0.7, content_size=64, style_size=56)
    ours = official["stylizer"].render(content=CONTENT, styles=[RED], settings=settings)
    content = pil_to_unit(resize_long_side(CONTENT, 64))
    style = pil_to_unit(resize_long_side(RED, 56))
    with torch.no_grad():
        reference = reference_stylize(official["encoder"], official["decoder"], content, style, 0.7)
    assert ours.shape == reference.shape == (1, 3, 48, 64)
    assert reference.std() > 0.05  # a real signal, not a dead network
    assert torch.allclose(ours, reference, atol=1e-4, rtol=0)
    with torch.no_grad():
        batch = adain_stylize(
            encoder=official["stylizer"].encoder, decoder=official["stylizer"].decoder, content=content, style=style,
            alpha=0.7,
        )  # fmt: skip
    assert torch.allclose(batch, reference, atol=1e-4, rtol=0)


def test_adain_gives_the_style_statistics_at_relu4_1(official) -> None:
    encoder = official["stylizer"].encoder
    with torch.no_grad():
        content = encoder(pil_to_unit(CONTENT), ["relu4_1"])["relu4_1"]
        style = encoder(pil_to_unit(RED), ["relu4_1"])["relu4_1"]
    style_mean, style_std = channel_stats(style)
    out = adaptive_instance_norm(content, style_mean, style_std)
    out_mean, out_std = channel_stats(out, eps=0.0)
    _, content_std = channel_stats(content, eps=0.0)
    live = content_std.flatten() > 0.05  # channels that vary over the picture
    assert live.sum() > 100
    assert torch.allclose(out_mean, style_mean, atol=1e-4)
    # std(out) = std(style) exactly, up to the 1e-5 added to the content's variance.
    shrink = content_std / (content_std.square() + 1e-5).sqrt()
    assert torch.allclose(out_std, style_std * shrink, rtol=1e-4, atol=1e-5)
    assert torch.allclose(out_std.flatten()[live], style_std.flatten()[live], rtol=5e-3)


def test_alpha_zero_decodes_the_content_features(official) -> None:
    stylizer = official["stylizer"]
    out = stylizer.render(content=CONTENT, styles=[RED], settings=AdaINSettings(alpha=0.0, content_size=64))
    with torch.no_grad():
        expected = stylizer.decoder(stylizer.encoder(pil_to_unit(CONTENT), ["relu4_1"])["relu4_1"])
    assert torch.allclose(out, expected, atol=1e-5)
    half = stylizer.render(content=CONTENT, styles=[RED], settings=AdaINSettings(alpha=0.5, content_size=64))
    assert (half - out).abs().max() > 1e-2  # alpha does something


def test_blend_weights_are_normalised(official) -> None:
    stylizer = official["stylizer"]

    def render(weights):
        settings = AdaINSettings(content_size=64, style_size=56, style_weights=weights)
        return stylizer.render(content=CONTENT, styles=[RED, BLUE], settings=settings)

    even = render((0.5, 0.5))
    assert torch.allclose(render((2.0, 2.0)), even, atol=1e-6)
    assert torch.allclose(render(None), even, atol=1e-6)
    only_red = stylizer.render(content=CONTENT, styles=[RED], settings=SMALL)
    assert torch.allclose(render((3.0, 0.0)), only_red, atol=1e-5)
    assert (even - only_red).abs().max() > 1e-2
    with pytest.raises(ValueError, match="weights"):
        render((1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="sum to zero"):
        render((0.0, 0.0))


def test_luminance_preservation_keeps_the_content_chroma(official) -> None:
    stylizer = official["stylizer"]
    settings = AdaINSettings(content_size=64, style_size=56, preserve_color="luminance")
    out = stylizer.render(content=CONTENT, styles=[RED], settings=settings)
    plain = stylizer.render(content=CONTENT, styles=[RED], settings=SMALL)
    content = pil_to_unit(CONTENT)
    # The random decoder's luma is mostly outside [0, 1]; the chroma itself is checked on pictures below.
    assert torch.allclose(out, transfer_luminance(plain, content), atol=1e-6)
    assert (out - plain.clamp(0, 1)).abs().max() > 0.05
    assert stylizer.stylize(content=CONTENT, styles=[RED], settings=settings).image.size == (64, 48)


def test_transfer_luminance_on_pictures() -> None:
    content = pil_to_unit(_picture(5, (48, 32))) * 0.5 + 0.25
    stylised = pil_to_unit(_picture(6, (48, 32), (0.9, 0.2, 0.5))) * 0.5 + 0.25
    out = transfer_luminance(stylised, content)
    inside_gamut = ((out > 0) & (out < 1)).all(dim=1, keepdim=True).expand(-1, 2, -1, -1)
    assert inside_gamut.float().mean() > 0.8
    chroma_out, chroma_content = rgb_to_yiq(out)[:, 1:], rgb_to_yiq(content)[:, 1:]
    assert torch.allclose(chroma_out[inside_gamut], chroma_content[inside_gamut], atol=1e-5)
    assert torch.allclose(rgb_to_yiq(out)[:, 0][inside_gamut[:, 0]], rgb_to_yiq(stylised)[:, 0][inside_gamut[:, 0]])
    assert (rgb_to_yiq(stylised)[:, 1:] - chroma_content).abs().mean() > 0.05
    assert torch.allclose(yiq_to_rgb(rgb_to_yiq(content)), content, atol=1e-5)


def test_match_color_gives_the_reference_mean_and_covariance() -> None:
    source = pil_to_unit(_picture(7, (40, 40), (1.0, 0.3, 0.2))) * 0.5 + 0.2
    reference = pil_to_unit(_picture(8, (32, 48), (0.2, 0.4, 1.0))) * 0.5 + 0.25
    out = match_color(source, reference)

    def moments(x):
        flat = x.double().flatten(2)[0]
        return flat.mean(dim=1), torch.cov(flat, correction=0)

    mean_out, cov_out = moments(out)
    mean_ref, cov_ref = moments(reference)
    assert torch.allclose(mean_out, mean_ref, atol=2e-3)
    assert torch.allclose(cov_out, cov_ref, atol=5e-4)
    assert (moments(source)[0] - mean_ref).abs().max() > 0.1


def test_blended_colour_moments_are_those_of_the_pooled_pixels() -> None:
    first = pil_to_unit(_picture(7, (40, 40), (1.0, 0.3, 0.2)))
    second = pil_to_unit(_picture(8, (40, 40), (0.2, 0.4, 1.0)))
    pooled_mean, pooled_cov = colour_moments(torch.cat([first, second], dim=3))  # equal sizes: weights 1/2 each
    mean, cov = blend_colour_moments([colour_moments(first), colour_moments(second)], [0.5, 0.5])
    assert torch.allclose(mean, pooled_mean) and torch.allclose(cov, pooled_cov)
    only_first = blend_colour_moments([colour_moments(first), colour_moments(second)], [1.0, 0.0])
    assert all(torch.allclose(a, b) for a, b in zip(only_first, colour_moments(first), strict=True))


def test_histogram_preservation_recolours_the_style_first(official) -> None:
    stylizer = official["stylizer"]
    settings = AdaINSettings(content_size=64, style_size=56, preserve_color="histogram")
    stats_plain = stylizer.style_stats(RED, size=56)
    out = stylizer.render(content=CONTENT, styles=[RED], settings=settings)
    plain = stylizer.render(content=CONTENT, styles=[RED], settings=SMALL)
    assert (out - plain).abs().max() > 1e-2
    stats_recoloured = stylizer.style_stats(RED, size=56, recolour_to=CONTENT, recolour_size=64)
    assert (stats_recoloured[0] - stats_plain[0]).abs().max() > 1e-3


def test_mask_gives_each_region_its_style(official) -> None:
    encoder = official["stylizer"].encoder
    with torch.no_grad():
        content = encoder(pil_to_unit(CONTENT), ["relu4_1"])["relu4_1"]  # (1, 512, 6, 8)
        red = channel_stats(encoder(pil_to_unit(RED), ["relu4_1"])["relu4_1"])
        blue = channel_stats(encoder(pil_to_unit(BLUE), ["relu4_1"])["relu4_1"])
    mask = torch.zeros(1, 1, 6, 8)
    mask[..., :4] = 1.0  # left half inside
    out = masked_adain(content, red, blue, mask)
    left_mean, _ = channel_stats(out[..., :4])
    right_mean, _ = channel_stats(out[..., 4:])
    assert torch.allclose(left_mean, red[0], atol=1e-4)
    assert torch.allclose(right_mean, blue[0], atol=1e-4)

    stylizer = official["stylizer"]
    white, black = Image.new("L", (64, 48), 255), Image.new("L", (20, 15), 0)
    inside = stylizer.render(content=CONTENT, styles=[RED, BLUE], settings=SMALL, mask=white)
    outside = stylizer.render(content=CONTENT, styles=[RED, BLUE], settings=SMALL, mask=black)
    assert torch.allclose(inside, stylizer.render(content=CONTENT, styles=[RED], settings=SMALL), atol=1e-4)
    assert torch.allclose(outside, stylizer.render(content=CONTENT, styles=[BLUE], settings=SMALL), atol=1e-4)
    with pytest.raises(ValueError, match="exactly two styles"):
        stylizer.render(content=CONTENT, styles=[RED], settings=SMALL, mask=white)


def test_alpha_and_weight_changes_reuse_the_encoded_images(official) -> None:
    stylizer = AdaINStylizer(encoder=official["stylizer"].encoder, decoder=official["stylizer"].decoder)
    first = stylizer.stylize(content=CONTENT, styles=[RED, BLUE], settings=SMALL)
    assert stylizer.encoder_calls == 3  # content + two styles
    for alpha, weights in ((0.3, None), (0.8, (1.0, 3.0))):
        settings = AdaINSettings(content_size=64, style_size=56, preview_size=32, alpha=alpha, style_weights=weights)
        stylizer.stylize(content=CONTENT.copy(), styles=[RED, BLUE], settings=settings)
    assert stylizer.encoder_calls == 3
    preview = stylizer.preview(content=CONTENT, styles=[RED, BLUE], settings=SMALL)
    assert preview.image.size == (32, 24) and first.image.size == (64, 48)
    assert stylizer.encoder_calls == 4  # the content once more, at preview size; styles reuse their statistics
    stylizer.preview(content=CONTENT, styles=[RED, BLUE], settings=AdaINSettings(alpha=0.5, **_small()))
    assert stylizer.encoder_calls == 4
    fresh = AdaINStylizer(encoder=stylizer.encoder, decoder=stylizer.decoder)
    fresh.render(content=CONTENT, styles=[RED, BLUE], settings=AdaINSettings(style_weights=(1.0, 0.0), **_small()))
    assert fresh.encoder_calls == 2  # a style with weight 0 is not encoded


def _small() -> dict:
    return {"content_size": 64, "style_size": 56, "preview_size": 32}


def test_sizes_above_the_limit_and_unreadable_images_are_refused(official, monkeypatch) -> None:
    stylizer = official["stylizer"]
    monkeypatch.setenv("STUDIO_MAX_SIDE", "48")
    with pytest.raises(ValueError, match="limit of 48 px"):
        stylizer.stylize(content=CONTENT, styles=[RED], settings=AdaINSettings(content_size=64, style_size=32))
    small = stylizer.stylize(content=CONTENT, styles=[RED], settings=AdaINSettings(content_size=32, style_size=32))
    assert max(small.image.size) == 32  # a 64 px upload above the output limit is scaled down, not refused
    monkeypatch.delenv("STUDIO_MAX_SIDE")
    with pytest.raises(ValueError, match="style image 1 is not a picture file"):
        stylizer.stylize(content=CONTENT, styles=[b"definitely not a picture"], settings=SMALL)
    with pytest.raises(ValueError, match="content image was not found"):
        stylizer.stylize(content=Path("/no/such/picture.png"), styles=[RED], settings=SMALL)
    with pytest.raises(ValueError, match="alpha"):
        AdaINSettings(alpha=1.5)
    strip = Image.new("RGB", (640, 40))  # 4 px high at 64 px, and relu4_1 needs 9 with reflection padding
    with pytest.raises(ValueError, match="the content image is too narrow for this size: it becomes 64x4 px"):
        stylizer.stylize(content=strip, styles=[RED], settings=SMALL)
    with pytest.raises(ValueError, match="the style image is too narrow"):
        stylizer.stylize(content=CONTENT, styles=[strip], settings=SMALL)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="half precision path needs CUDA")
def test_half_precision_on_cuda_is_close(official) -> None:
    base = official["stylizer"]
    stylizer = AdaINStylizer(
        encoder=VGG19Features("adain").cuda().half().eval(), decoder=AdaINDecoder().cuda().half().eval()
    )
    stylizer.encoder.load_state_dict(base.encoder.state_dict())
    stylizer.decoder.load_state_dict(base.decoder.state_dict())
    half = stylizer.render(content=CONTENT, styles=[RED], settings=SMALL).cpu()
    full = base.render(content=CONTENT, styles=[RED], settings=SMALL)
    assert (half - full).abs().max() < 0.05
