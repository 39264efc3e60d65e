"""Studio.stylize end to end: Gatys with the real offline VGG19, AdaIN with random weights dropped into weights/."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from studio import Studio
from studio.cli import main as cli_main
from studio.ops.common import Cancelled
from studio.weights import WeightsUnavailable


def test_gatys_with_the_offline_vgg_moves_towards_the_style(photo, painting) -> None:
    studio = Studio(device="cpu")
    seen: list[tuple[int, int]] = []
    result = studio.stylize(
        content=photo,
        styles=[painting],
        method="gatys",
        size=64,
        steps=8,
        on_progress=lambda d, t: seen.append((d, t)),
    )
    assert result.image.size == (64, 43)
    assert result.settings["method"] == "gatys" and result.settings["steps"] == 8
    # what remakes the picture: the VGG and the strength as asked (style_weight is strength x the default balance)
    assert result.settings["vgg"] == "vgg19-caffe" and result.settings["strength"] == 1.0
    assert seen and seen[-1][0] == seen[-1][1], "progress reaches its total"
    content_only = studio.stylize(content=photo, styles=[painting], size=64, steps=8, strength=0.0)
    assert style_distance(studio, result.image, painting) < 0.8 * style_distance(studio, content_only.image, painting)


def style_distance(studio: Studio, image: Image.Image, style: Image.Image) -> float:
    """Mean relative Gram-matrix distance to the style at relu1_1..relu3_1 of the offline VGG19."""
    from studio.imaging import pil_to_unit
    from studio.ops.style_transfer import gram_matrix

    vgg = studio.load("vgg19-caffe")
    taps = ["relu1_1", "relu2_1", "relu3_1"]
    with torch.no_grad():
        ours, theirs = vgg(pil_to_unit(image), taps), vgg(pil_to_unit(style), taps)
    return sum(
        float((gram_matrix(ours[t]) - gram_matrix(theirs[t])).norm() / gram_matrix(theirs[t]).norm()) for t in taps
    ) / len(taps)


def test_gatys_cancel_and_bad_settings(photo, painting) -> None:
    studio = Studio(device="cpu")
    with pytest.raises(Cancelled):
        studio.stylize(content=photo, styles=painting, size=64, steps=50, on_progress=lambda done, total: False)
    with pytest.raises(ValueError, match="masks are an AdaIN feature"):
        studio.stylize(content=photo, styles=[painting], size=64, steps=2, mask=photo)
    with pytest.raises(ValueError, match="output size"):
        studio.stylize(content=photo, styles=[painting], size=10**6)
    with pytest.raises(ValueError, match="strength"):
        studio.stylize(content=photo, styles=[painting], strength=float("nan"))
    with pytest.raises(ValueError, match="strength must be a number between 0.0 and 1.0"):
        studio.stylize(content=photo, styles=[painting], strength=10**400)  # too large for a float
    with pytest.raises(ValueError, match="style weights must be numbers"):
        studio.stylize(content=photo, styles=[painting], style_weights=[10**400])
    with pytest.raises(ValueError, match="method"):
        studio.stylize(content=photo, styles=[painting], method="cartoon")
    with pytest.raises(ValueError, match="not a picture file"):
        studio.stylize(content=b"plain text, not a picture", styles=[painting], size=64, steps=2)


@pytest.mark.parametrize("method", ["gatys", "adain"])
@pytest.mark.parametrize(
    ("arguments", "message"),
    [  # wrong types are ValueErrors that say what to give, not TypeErrors from deep inside
        ({"content": None}, "content image must be a file path, bytes, an open file or a PIL image, got None"),
        ({"content": 123}, "content image must be a file path, bytes, an open file or a PIL image, got 123"),
        ({"styles": None}, r"expected a picture \(a file path, bytes, an open file or a PIL image\) or a list"),
        ({"styles": ["PAINTING", None]}, "style image 2 must be a file path, bytes, an open file or a PIL image"),
        ({"style_weights": 0.5}, "style weights must be a list of numbers, one per style, got 0.5"),
        ({"style_weights": ["heavy"]}, "style weights must be numbers, got 'heavy'"),
    ],
)
def test_wrong_types_in_the_api_are_clear_errors(photo, painting, arguments, message, method) -> None:
    given = {"content": photo, "styles": [painting], **arguments}
    given["styles"] = [painting if style == "PAINTING" else style for style in given["styles"] or []] or None
    with pytest.raises(ValueError, match=message):
        Studio(device="cpu").stylize(**given, method=method, size=32, steps=1)


def test_adain_offline_says_how_to_get_the_weights(photo, painting, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable, match="python -m studio weights fetch adain-encoder") as caught:
        Studio(device="cpu").stylize(content=photo, styles=[painting], method="adain", size=64)
    assert "neither is on this machine: python -m studio weights fetch adain-encoder adain-decoder" in str(
        caught.value
    )


def test_adain_full_preview_blend_and_mask(adain_weights, photo, painting) -> None:
    studio = Studio(device="cpu")
    full = studio.stylize(content=photo, styles=[painting], method="adain", size=96, strength=0.8)
    assert full.image.size == (96, 64) and full.settings["alpha"] == 0.8
    preview = studio.stylize(content=photo, styles=[painting], method="adain", size=512, preview=True)
    assert max(preview.image.size) == 256
    blended = studio.stylize(content=photo, styles=[painting, photo], style_weights=[3, 1], method="adain", size=96)
    assert blended.settings["style_weights"] == (3.0, 1.0)
    mask = Image.new("L", photo.size, 0)
    mask.paste(255, (0, 0, photo.size[0] // 2, photo.size[1]))
    masked = studio.stylize(content=photo, styles=[painting, photo], method="adain", size=96, mask=mask)
    assert masked.image.size == (96, 64)
    with pytest.raises(ValueError, match="exactly two styles"):
        studio.stylize(content=photo, styles=[painting], method="adain", size=96, mask=mask)
    # the same split drawn as an opaque black stroke on a transparent layer: the facade reads it as the op does
    stroke = Image.new("RGBA", photo.size, (0, 0, 0, 0))
    stroke.paste((0, 0, 0, 255), (0, 0, photo.size[0] // 2, photo.size[1]))
    for given in (stroke, studio_png(stroke)):
        by_alpha = studio.stylize(content=photo, styles=[painting, photo], method="adain", size=96, mask=given)
        assert by_alpha.image.tobytes() == masked.image.tobytes()


def studio_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_adain_works_under_an_output_limit_below_its_style_size(adain_weights, photo, painting, monkeypatch) -> None:
    monkeypatch.setenv("STUDIO_MAX_SIDE", "128")  # AdaIN encodes styles at 512 px: here at the limit instead
    studio = Studio(device="cpu")
    result = studio.stylize(content=photo, styles=[painting], method="adain", size=96)
    assert result.image.size == (96, 64) and result.settings["style_size"] == 128
    walked = studio.walk(model="omniart-eyes", seeds=[1, 2], frames=2, loop=False, style=painting)
    assert walked.frames == 2


def test_walk_frames_can_be_stylized(adain_weights, painting, tmp_path) -> None:
    result = Studio(device="cpu").walk(
        model="omniart-eyes", seeds=[1, 2], frames=4, loop=False, style=painting, out=tmp_path / "styled.zip"
    )
    assert result.frames == 4 and (result.width, result.height) == (128, 128)
    assert result.settings["styled"] is True


def test_cli_stylize_writes_the_requested_size(tmp_path, shared_data) -> None:
    out = tmp_path / "out.png"
    code = cli_main(
        [
            "stylize",
            "--content",
            str(shared_data / "content" / "coffee.png"),
            "--style",
            str(shared_data / "styles" / "en_campo_gris.jpg"),
            "--style",
            str(shared_data / "styles" / "mondrian_cropped.jpg"),
            "--weights",
            "0.7",
            "0.3",
            "--size",
            "48",
            "--steps",
            "3",
            "--preserve-color",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    image = Image.open(out)
    assert max(image.size) == 48
    assert (
        "gan-art-studio:stylize" in image.text
        and '"preserve_color": "luminance"' in image.text["gan-art-studio:stylize"]
    )


def test_one_open_file_is_one_style(photo, painting, tmp_path) -> None:
    path = tmp_path / "style.png"
    painting.save(path)
    studio = Studio(device="cpu")
    from_path = studio.stylize(content=photo, styles=path, size=32, steps=2)
    with path.open("rb") as stream:  # a file object iterates by lines: it was split into many "styles"
        from_file = studio.stylize(content=photo, styles=stream, size=32, steps=2)
    assert from_file.image.tobytes() == from_path.image.tobytes()


@pytest.mark.parametrize(
    ("device", "message"),
    [("gpu", "is not a device"), ("mps", "runs on cpu or cuda"), ("", "is not a device"), ("cuda:99", "no such CUDA")],
)
def test_a_bad_device_is_a_message(photo, device, message) -> None:
    with pytest.raises(ValueError, match=message):
        Studio(device=device).generate(seed=1)


def test_device_names_are_not_case_sensitive() -> None:
    assert Studio(device="CPU").device == "cpu" and Studio(device=torch.device("cpu")).device == "cpu"
