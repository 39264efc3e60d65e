"""Uploads of every kind -> upright 8-bit RGB; bad uploads -> ValueError saying what to do; tensor ranges; saving."""

from __future__ import annotations

import errno
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio import imaging
from studio.imaging import (
    DecodedFiles,
    load_image,
    load_mask,
    long_side_size,
    max_side_from_env,
    pil_to_unit,
    resize_long_side,
    signed_to_pil,
    signed_to_uint8,
    signed_to_unit,
    unit_to_pil,
    unit_to_signed,
)

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def gradient(width: int = 48, height: int = 32) -> Image.Image:
    """RGB test card: red rises left to right, green top to bottom, blue constant."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, np.full_like(x, 90)], axis=-1).astype(np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# --- bad input: one test per kind -----------------------------------------------------------------------------------


def test_a_text_file_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is a shopping list, not a picture\n")
    with pytest.raises(ValueError, match="is not a picture file this studio can read; use JPEG, PNG"):
        load_image(path)


def test_a_folder_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="content image is a folder, not a picture"):
        load_image(tmp_path, name="content image")


@pytest.mark.parametrize("format", ["JPEG", "PNG"])
@pytest.mark.parametrize("where", ["headers", "pixels"])  # a JPEG cut in its headers already fails to open
def test_a_truncated_file_is_refused(format: str, where: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), format)
    kept = 300 if where == "headers" else len(data) * 6 // 10
    with pytest.raises(ValueError, match="upload could not be .*; the file looks truncated or corrupt"):
        load_image(data[:kept], name="upload")


def test_a_corrupt_tiff_is_refused() -> None:
    """PIL raises TypeError (not OSError) for a TIFF page without dimensions; it must still be a ValueError."""
    pages = [Image.new("RGB", (8, 6), (1, 2, 3)), Image.new("RGB", (8, 6))]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    width_tag = data.rindex(struct.pack("<HHI", 256, 4, 1))  # ImageWidth entry of the second page's directory
    corrupt = data[:width_tag] + struct.pack("<H", 0x7FFF) + data[width_tag + 2 :]
    with pytest.raises(ValueError, match="upload could not be decoded .*; the file looks truncated or corrupt"):
        load_image(corrupt, name="upload")


def test_a_zero_size_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(ValueError, match="is an empty file"):
        load_image(path)


def test_empty_bytes_are_refused() -> None:
    with pytest.raises(ValueError, match="upload is an empty file"):
        load_image(b"", name="upload")


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_image(tmp_path / "nowhere.png")


def test_a_decompression_bomb_is_refused_before_decoding() -> None:
    # A valid PNG whose header claims 20000x20000 1-bit pixels, with a tiny (and short) compressed body.
    header = struct.pack(">IIBBBBB", 20_000, 20_000, 1, 0, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
    bomb += png_chunk(b"IDAT", zlib.compress(b"\x00" * 2501 * 16)) + png_chunk(b"IEND", b"")
    assert len(bomb) < 200
    # in the studio's words and limit, not PIL's ("could be decompression bomb DOS attack", its own threshold)
    with pytest.raises(ValueError, match=r"too large to decode safely \(400 megapixels\); the limit is 64 megapixels"):
        load_image(bomb)


def test_many_megapixels_below_the_pil_bomb_limit_are_refused() -> None:
    big = Image.new("1", (9000, 8000))  # 72 MP: under PIL's bomb warning, over the studio's limit
    with pytest.raises(ValueError, match=r"9000x8000 \(72 megapixels\); the limit is 64 megapixels"):
        load_image(encode(big, "PNG"), max_side=10_000)


def test_something_that_is_not_a_picture_source_is_named_by_its_type_not_printed() -> None:
    with pytest.raises(ValueError, match=r"an open file or a PIL image, got a numpy\.ndarray$"):
        load_image(np.zeros((300, 300, 3), np.uint8))


def test_a_side_above_an_explicit_limit_is_refused_but_uploads_may_exceed_the_output_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = encode(gradient(100, 40), "PNG")
    with pytest.raises(ValueError, match="is 100x40; the limit is 64 px per side. Downscale it first."):
        load_image(data, max_side=64)
    assert load_image(data, max_side=100).size == (100, 40)
    monkeypatch.setenv("STUDIO_MAX_SIDE", "64")  # caps what the studio renders, not what a camera took
    assert load_image(data).size == (100, 40)
    monkeypatch.setenv("STUDIO_MAX_SIDE", "big")
    with pytest.raises(ValueError, match="STUDIO_MAX_SIDE must be a whole number"):
        max_side_from_env()


# --- good input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("format", "tolerance"), [("PNG", 0), ("JPEG", 12), ("WEBP", 12)])
def test_common_formats_load_as_rgb(format: str, tolerance: int) -> None:
    card = gradient()
    options = {"quality": 95} if format != "PNG" else {}
    image = load_image(encode(card, format, **options))
    assert image.mode == "RGB" and image.size == (48, 32)
    assert np.abs(pixels(image) - pixels(card)).max() <= tolerance


def test_every_way_of_passing_an_image(tmp_path: Path) -> None:
    card = gradient()
    path = tmp_path / "card.png"
    card.save(path)
    for source in (path, str(path), path.read_bytes(), io.BytesIO(path.read_bytes()), Image.open(path)):
        assert np.array_equal(pixels(load_image(source)), pixels(card))


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (20, 10), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    image = load_image(data)
    assert image.mode == "RGB" and image.size == (20, 10)
    assert np.all(pixels(image) == (255, 0, 0))


def test_rgba_is_composited_on_white() -> None:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, :4, 3] = 255  # left half opaque red, right half fully transparent
    rgba[:, 4:, 3] = 0
    image = load_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert image.mode == "RGB"
    assert np.all(pixels(image)[:, :4] == (200, 0, 0))
    assert np.all(pixels(image)[:, 4:] == (255, 255, 255))


def test_greyscale_becomes_three_equal_channels() -> None:
    grey = gradient().convert("L")
    image = load_image(encode(grey, "PNG"))
    assert image.mode == "RGB"
    for channel in range(3):
        assert np.array_equal(pixels(image)[..., channel], pixels(grey))


def test_cmyk_jpeg_is_converted_to_rgb() -> None:
    colours = Image.new("RGB", (32, 16), (220, 30, 40))
    colours.paste((20, 60, 200), (16, 0, 32, 16))
    image = load_image(encode(colours.convert("CMYK"), "JPEG", quality=95))
    assert image.mode == "RGB" and image.size == (32, 16)
    assert np.abs(pixels(image)[8, 4] - (220, 30, 40)).max() <= 12
    assert np.abs(pixels(image)[8, 28] - (20, 60, 200)).max() <= 12


def test_16_bit_png_is_scaled_to_8_bits() -> None:
    levels = np.linspace(0, 65535, 256).round().astype(np.uint16)  # a full-range ramp
    ramp = Image.frombytes("I;16", (256, 4), np.tile(levels, 4).astype("<u2").tobytes())
    data = encode(ramp, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    image = load_image(data)
    assert image.mode == "RGB"
    expected = np.round(levels / 65535 * 255)
    assert np.array_equal(pixels(image)[0, :, 0], expected)
    assert np.array_equal(pixels(image)[3, :, 2], expected)


def test_dark_16_bit_png_stays_dark() -> None:
    """A 16-bit image whose values all lie below 256 is nearly black, not a full-brightness 8-bit picture."""
    dark = Image.frombytes("I;16", (4, 1), np.array([0, 100, 200, 255], dtype="<u2").tobytes())
    image = load_image(encode(dark, "PNG"))
    assert pixels(image)[0, :, 0].max() <= 1


def test_exif_orientation_is_applied() -> None:
    stored = Image.new("RGB", (40, 20), (255, 255, 255))
    stored.paste((255, 0, 0), (0, 0, 10, 10))  # red block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image = load_image(encode(stored, "JPEG", exif=exif, quality=95))
    assert image.size == (20, 40)
    red = np.abs(pixels(image) - (255, 0, 0)).sum(axis=-1) < 60
    assert red[2:8, 12:18].all() and not red[30:, :].any()  # now at the top-right


def test_palette_with_transparency_is_composited_on_white() -> None:
    palette_image = Image.new("P", (8, 4), 0)
    palette_image.putpalette([0, 0, 255] + [0, 200, 0] + [0, 0, 0] * 254)
    palette_image.paste(1, (4, 0, 8, 4))
    data = encode(palette_image, "PNG", transparency=0)  # colour 0 (blue) is transparent
    assert Image.open(io.BytesIO(data)).mode == "P"
    image = load_image(data)
    assert np.all(pixels(image)[:, :4] == (255, 255, 255))
    assert np.all(pixels(image)[:, 4:] == (0, 200, 0))


# --- masks: one rule for every door (facade, op, page) ---------------------------------------------------------------


def half_and_half_alpha(mode: str = "RGBA") -> Image.Image:
    """Black everywhere, opaque on the left half and transparent on the right (strokes on a transparent layer)."""
    rgba = np.zeros((4, 8, 4), np.uint8)
    rgba[:, :4, 3] = 255
    return Image.fromarray(rgba, "RGBA").convert(mode)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_a_mask_with_transparency_is_its_alpha_whatever_its_colour(mode: str) -> None:
    mask = load_mask(encode(half_and_half_alpha(mode), "PNG"))
    assert mask.mode == "L" and mask.size == (8, 4)
    assert np.all(pixels(mask)[:, :4] == 255) and np.all(pixels(mask)[:, 4:] == 0)


def test_a_mask_opaque_everywhere_counts_by_brightness() -> None:
    rgba = np.full((4, 8, 4), 255, np.uint8)
    rgba[:, 4:, :3] = 0  # black on the right, alpha 255 everywhere (as editors often export)
    mask = load_mask(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert np.all(pixels(mask)[:, :4] == 255) and np.all(pixels(mask)[:, 4:] == 0)


def test_a_palette_mask_with_a_transparent_colour_is_its_alpha() -> None:
    palette_image = Image.new("P", (8, 4), 0)
    palette_image.putpalette([0, 0, 0] * 256)  # every colour black: only the transparency tells the halves apart
    palette_image.paste(1, (0, 0, 4, 4))
    mask = load_mask(encode(palette_image, "PNG", transparency=0))
    assert np.all(pixels(mask)[:, :4] == 255) and np.all(pixels(mask)[:, 4:] == 0)


def test_an_opaque_mask_is_its_brightness_and_checked() -> None:
    card = gradient()
    assert np.array_equal(pixels(load_mask(encode(card, "PNG"))), pixels(card.convert("L")))
    with pytest.raises(ValueError, match="mask is not a picture file"):
        load_mask(b"not a picture", name="mask")
    with pytest.raises(ValueError, match="the limit is 16 px per side"):
        load_mask(encode(card, "PNG"), max_side=16)


def test_the_adain_op_reads_a_pil_mask_by_the_same_rule() -> None:
    from studio.ops.color import mask_to_tensor

    for picture in (half_and_half_alpha(), gradient(8, 4)):
        expected = torch.tensor(pixels(load_mask(encode(picture, "PNG"))), dtype=torch.float32) / 255
        assert torch.equal(mask_to_tensor(picture, size=(4, 8))[0, 0], expected)


def test_sample_photographs_load() -> None:
    if not SAMPLES.is_dir():
        pytest.skip(f"sample images not found at {SAMPLES}")
    astronaut = load_image(SAMPLES / "content" / "astronaut.png")
    rocket = load_image(SAMPLES / "content" / "rocket.jpg")
    assert astronaut.mode == rocket.mode == "RGB"
    assert min(astronaut.size) > 100 and min(rocket.size) > 100


# --- decoding a file once for many uses -----------------------------------------------------------------------------


@pytest.fixture
def counted_opens(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every file `load_image` opens, with a decoded-file cache of its own."""
    opened: list[object] = []
    real_open = imaging.open_image

    def open_image(source, **options):
        opened.append(source)
        return real_open(source, **options)

    monkeypatch.setattr(imaging, "open_image", open_image)
    monkeypatch.setattr(imaging, "_decoded_files", DecodedFiles(max_pixels=10_000))
    return opened


def test_a_reused_file_is_decoded_once_and_each_caller_gets_its_own_copy(tmp_path: Path, counted_opens) -> None:
    card = gradient()
    path = tmp_path / "card.png"
    card.save(path)
    first = load_image(path, reuse=True)
    first.paste((0, 0, 0), (0, 0, 48, 32))  # a caller that paints over its picture
    second = load_image(str(path), reuse=True)
    assert len(counted_opens) == 1
    assert second is not first and np.array_equal(pixels(second), pixels(card))
    load_image(path)  # without reuse: decoded again
    assert len(counted_opens) == 2


def test_a_reused_mask_is_decoded_once_and_kept_apart_from_the_same_file_as_a_picture(
    tmp_path: Path, counted_opens
) -> None:
    path = tmp_path / "strokes.png"
    half_and_half_alpha().save(path)
    first = load_mask(path, reuse=True)
    assert load_mask(path, reuse=True).tobytes() == first.tobytes() and len(counted_opens) == 1
    picture = load_image(path, reuse=True)  # the same file as an upload: composited RGB, not the mask
    assert picture.mode == "RGB" and first.mode == "L" and len(counted_opens) == 2
    assert load_mask(path, reuse=True).mode == "L" and len(counted_opens) == 2


def test_a_reused_file_rewritten_in_place_is_decoded_anew(tmp_path: Path, counted_opens) -> None:
    path = tmp_path / "card.png"
    gradient().save(path)
    load_image(path, reuse=True)
    changed = gradient(40, 32)
    changed.save(path)
    assert load_image(path, reuse=True).size == (40, 32)
    assert len(counted_opens) == 2


def test_a_reused_file_replaced_by_one_of_the_same_size_and_time_is_decoded_anew(
    tmp_path: Path, counted_opens
) -> None:
    path, other = tmp_path / "card.png", tmp_path / "other.png"
    Image.new("RGB", (16, 16), (10, 10, 10)).save(path)
    Image.new("RGB", (16, 16), (200, 200, 200)).save(other)
    assert path.stat().st_size == other.stat().st_size
    load_image(path, reuse=True)
    times = path.stat()
    os.utime(other, ns=(times.st_atime_ns, times.st_mtime_ns))  # as `cp -p` or `rsync -t` keep it
    os.replace(other, path)
    assert load_image(path, reuse=True).getpixel((0, 0)) == (200, 200, 200)
    assert len(counted_opens) == 2


def test_a_reused_picture_is_still_held_to_the_side_limit(tmp_path: Path, counted_opens) -> None:
    path = tmp_path / "wide.png"
    gradient(100, 40).save(path)
    assert load_image(path, reuse=True).size == (100, 40)
    with pytest.raises(ValueError, match="is 100x40; the limit is 64 px per side"):
        load_image(path, reuse=True, max_side=64)
    assert len(counted_opens) == 1


def test_the_decoded_files_kept_are_bounded_by_pixels_least_recently_used_out(tmp_path: Path, counted_opens) -> None:
    paths = []
    for index in range(3):  # 4000 pixels each; the cache holds 10000
        paths.append(tmp_path / f"card{index}.png")
        gradient(80, 50).save(paths[-1])
    for path in paths[:2]:
        load_image(path, reuse=True)
    load_image(paths[0], reuse=True)  # used again: now the newest
    load_image(paths[2], reuse=True)  # pushes out paths[1], the least recently used
    assert len(counted_opens) == 3
    load_image(paths[0], reuse=True)
    assert len(counted_opens) == 3
    load_image(paths[1], reuse=True)
    assert counted_opens[-1] == paths[1] and len(counted_opens) == 4
    huge = tmp_path / "huge.png"
    gradient(200, 60).save(huge)  # 12000 pixels: more than the whole cache, never kept
    load_image(huge, reuse=True)
    load_image(huge, reuse=True)
    assert counted_opens[-2:] == [huge, huge]


def test_bytes_and_open_files_are_not_kept(counted_opens) -> None:
    data = encode(gradient(), "PNG")
    load_image(data, reuse=True)
    load_image(io.BytesIO(data), reuse=True)
    assert len(counted_opens) == 2


@pytest.mark.parametrize(("size", "long_side"), [((48, 32), 20), ((32, 48), 20), ((3000, 7), 256), ((5, 5), 9)])
def test_long_side_size_is_the_size_resize_long_side_gives(size: tuple[int, int], long_side: int) -> None:
    picture = Image.new("RGB", size)
    assert long_side_size(size, long_side) == resize_long_side(picture, long_side).size
    assert max(long_side_size(size, long_side)) == long_side


# --- tensors and ranges ---------------------------------------------------------------------------------------------


def test_unit_round_trip_is_exact_on_8_bit_data() -> None:
    # every 8-bit level, twice per channel, in random places
    values = np.random.default_rng(0).permutation(np.tile(np.arange(256, dtype=np.uint8), 6)).reshape(16, 32, 3)
    image = Image.fromarray(values)
    unit = pil_to_unit(image)
    assert unit.shape == (1, 3, 16, 32) and unit.dtype == torch.float32
    assert unit.min() == 0 and unit.max() == 1
    assert torch.equal(unit[0, :, 3, 5], torch.tensor(values[3, 5], dtype=torch.float32) / 255)
    (back,) = unit_to_pil(unit)
    assert np.array_equal(np.asarray(back), values)
    (single,) = unit_to_pil(unit[0])  # (3, H, W) works too
    assert np.array_equal(np.asarray(single), values)


def test_unit_to_pil_clips_out_of_range_values() -> None:
    (image,) = unit_to_pil(torch.tensor([-0.5, 0.5, 1.5]).view(1, 3, 1, 1))
    assert tuple(pixels(image)[0, 0]) == (0, 128, 255)


def test_signed_range_conversions() -> None:
    signed = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1)
    assert torch.equal(signed_to_unit(signed).flatten(), torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(unit_to_signed(signed_to_unit(signed)), signed)
    (image,) = signed_to_pil(signed)
    assert tuple(pixels(image)[0, 0]) == (0, 128, 255)
    assert signed_to_uint8(torch.zeros(2, 3, 4, 5)).shape == (2, 4, 5, 3)
    assert signed_to_uint8(torch.full((1, 3, 1, 1), 7.0)).max() == 255  # clipped, no wrap-around
    assert signed_to_uint8(torch.full((1, 3, 1, 1), -7.0)).max() == 0


def test_a_failed_save_leaves_the_file_already_there_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from studio.imaging import save_image

    target = tmp_path / "keep.png"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(target)
    before = target.read_bytes()

    def disk_fills_up(self: Image.Image, fp: str, *args: object, **kwargs: object) -> None:
        Path(fp).write_bytes(b"\x89PNG half a pict")  # what a full disk leaves behind
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_fills_up)
    with pytest.raises(OSError, match="No space left on device") as caught:
        save_image(Image.new("RGB", (8, 8)), target)
    assert caught.value.filename == str(target)  # the message names the file
    assert target.read_bytes() == before and sorted(tmp_path.iterdir()) == [target]  # no half file, no leftovers
    monkeypatch.undo()

    saved = save_image(Image.new("RGB", (4, 2), (200, 0, 0)), tmp_path / "new.webp", lossless=True)
    with Image.open(saved) as written:
        assert written.format == "WEBP" and written.getpixel((1, 1)) == (200, 0, 0)
    assert oct(saved.stat().st_mode & 0o777) == oct(0o644)
    with pytest.raises(ValueError, match="unknown picture file suffix"):
        save_image(Image.new("RGB", (4, 2)), tmp_path / "picture.xyz")
