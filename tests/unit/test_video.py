import io
import struct
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from studio.api import read_png_settings
from studio.imaging import signed_to_uint8
from studio.loader import random_state_like
from studio.models.dcgan import DCGANConfig, DCGANGenerator
from studio.ops.common import Cancelled
from studio.ops.interpolation import keyframe_path, label_path, noise_loop
from studio.ops.video import VideoWriter, WalkVideo, render_walk, video_format

HEIGHT, WIDTH = 24, 32


def flat_colour(latents: torch.Tensor, height: int = HEIGHT, width: int = WIDTH) -> torch.Tensor:
    """Fake generator: frame i is a flat colour given by tanh of the first three latent coordinates."""
    colour = torch.tanh(latents[:, :3]).float()
    return colour[:, :, None, None].expand(-1, 3, height, width).clone()


def colour_latents(colours: list[tuple[int, int, int]]) -> torch.Tensor:
    """Latents that `flat_colour` renders as the given 8-bit RGB colours."""
    signed = torch.tensor(colours, dtype=torch.float64) / 127.5 - 1
    return torch.atanh(signed.clamp(-0.999, 0.999)).float()


def decode(path: Path) -> tuple[av.video.stream.VideoStream, list[np.ndarray]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return stream, frames


def top_level_boxes(data: bytes) -> list[str]:
    """Names of the top-level ISO-BMFF boxes of an MP4 file, in file order."""
    names, offset = [], 0
    while offset + 8 <= len(data):
        size, name = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        elif size == 0:
            size = len(data) - offset
        names.append(name.decode("latin-1"))
        offset += size
    return names


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- MP4 ------------------------------------------------------------------------------------------------------------


def test_mp4_is_h264_yuv420p_faststart_with_right_count_fps_and_colours(tmp_path):
    colours = [(200, 50, 30), (30, 200, 90), (40, 60, 220)] * 5  # 15 frames, distinct channels catch RGB/BGR swaps
    result = render_walk(
        colour_latents(colours), synthesize=flat_colour, out=tmp_path / "walk.mp4", fps=24, batch_size=4
    )
    assert isinstance(result, WalkVideo)
    assert (result.frames, result.fps, result.codec, result.width, result.height) == (15, 24.0, "h264", WIDTH, HEIGHT)
    assert result.path == tmp_path / "walk.mp4" and result.duration == pytest.approx(15 / 24)
    stream, frames = decode(result.path)
    assert stream.codec_context.name == "h264"
    assert stream.duration * stream.time_base == pytest.approx(15 / 24)  # the last frame lasts a full frame too
    assert stream.codec_context.profile == "High"
    assert stream.format.name == "yuv420p"
    assert stream.average_rate == 24
    assert len(frames) == 15 and frames[0].shape == (HEIGHT, WIDTH, 3)
    for frame, colour in zip(frames, colours, strict=True):
        assert np.abs(frame[HEIGHT // 2, WIDTH // 2].astype(int) - colour).max() <= 4
    boxes = top_level_boxes(result.path.read_bytes())
    assert "moov" in boxes and "mdat" in boxes
    assert boxes.index("moov") < boxes.index("mdat"), f"not faststart: {boxes}"
    assert leftovers(tmp_path) == ["walk.mp4"]


def test_odd_sizes_become_even_for_h264(tmp_path):
    def gradient(latents: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-1, 1, 47)
        return ramp.expand(latents.shape[0], 3, 33, 47).clone()

    padded = render_walk(torch.zeros(3, 4), synthesize=gradient, out=tmp_path / "odd.mp4")
    assert (padded.width, padded.height) == (48, 34)
    _, frames = decode(padded.path)
    assert frames[0].shape == (34, 48, 3)
    # Padding repeats the edge: the added column matches the last real one (up to compression).
    assert np.abs(frames[0][:, -1].astype(int) - frames[0][:, -2].astype(int)).max() <= 6
    resized = render_walk(torch.zeros(3, 4), synthesize=gradient, out=tmp_path / "resized.mp4", size=(101, 75))
    assert (resized.width, resized.height) == (102, 76)
    assert decode(resized.path)[1][0].shape == (76, 102, 3)
    # Other formats keep odd sizes.
    webm = render_walk(torch.zeros(2, 4), synthesize=gradient, out=tmp_path / "odd.webm")
    assert (webm.width, webm.height) == (47, 33)


def test_same_seed_gives_identical_files(tmp_path):
    latents = keyframe_path(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), frames=20, loop=True)
    first = render_walk(latents, synthesize=flat_colour, out=tmp_path / "a.mp4").path.read_bytes()
    again = keyframe_path(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), frames=20, loop=True)
    second = render_walk(again, synthesize=flat_colour, out=tmp_path / "b.mp4").path.read_bytes()
    other = noise_loop(frames=20, dim=8, seed=1)
    third = render_walk(other, synthesize=flat_colour, out=tmp_path / "c.mp4").path.read_bytes()
    assert first == second
    assert first != third


# --- GIF, WebM, PNG zip ---------------------------------------------------------------------------------------------


def test_gif_has_every_frame_loops_forever_and_keeps_time(tmp_path):
    colours = [(200, 50, 30), (30, 200, 90), (40, 60, 220)] * 10
    result = render_walk(colour_latents(colours), synthesize=flat_colour, out=tmp_path / "walk.gif", fps=30)
    assert (result.codec, result.frames) == ("gif", 30)
    with Image.open(result.path) as gif:
        assert gif.n_frames == 30
        assert gif.info["loop"] == 0  # 0 = forever
        durations = []
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info["duration"])
            pixel = gif.convert("RGB").getpixel((WIDTH // 2, HEIGHT // 2))
            assert np.abs(np.array(pixel) - colours[index]).max() <= 8
    assert set(durations) <= {30, 40} and sum(durations) == 1000  # 30 frames at 30 fps last one second


def test_gif_rejects_frame_rates_browsers_slow_down(tmp_path):
    with pytest.raises(ValueError, match="GIF"):
        VideoWriter(tmp_path / "fast.gif", fps=60)


def test_webm_decodes_as_vp9(tmp_path):
    colours = [(200, 50, 30), (30, 200, 90)] * 4
    result = render_walk(colour_latents(colours), synthesize=flat_colour, out=tmp_path / "walk.webm", fps=25)
    stream, frames = decode(result.path)
    assert stream.codec_context.name == "vp9" and result.codec == "vp9"
    assert len(frames) == 8 and stream.average_rate == 25
    assert np.abs(frames[1][HEIGHT // 2, WIDTH // 2].astype(int) - colours[1]).max() <= 6


def test_png_zip_holds_every_frame_losslessly(tmp_path):
    latents = noise_loop(frames=11, dim=6, seed=2)
    result = render_walk(latents, synthesize=flat_colour, out=tmp_path / "frames.zip", batch_size=3)
    expected = signed_to_uint8(flat_colour(latents)).numpy()
    with zipfile.ZipFile(result.path) as archive:
        names = archive.namelist()
        assert names == [f"frame_{i:05d}.png" for i in range(11)]
        for name, frame in zip(names, expected, strict=True):
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(archive.read(name)))), frame)
        (tmp_path / "frame_00004.png").write_bytes(archive.read("frame_00004.png"))
    # each frame says what it is, so Recreate can explain why it has no generation settings
    assert Image.open(tmp_path / "frame_00004.png").text == {"gan-art-studio:walk-frame": '{"frame": 4}'}
    with pytest.raises(ValueError, match="this is a frame of a latent walk; recreating works for artworks saved"):
        read_png_settings(tmp_path / "frame_00004.png")


def test_nearest_upscale_repeats_pixels(tmp_path):
    def checker(latents: torch.Tensor) -> torch.Tensor:
        board = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1
        return board.expand(latents.shape[0], 3, 8, 8).clone()

    result = render_walk(torch.zeros(2, 3), synthesize=checker, out=tmp_path / "big.zip", size=32, upscale="nearest")
    assert (result.width, result.height) == (32, 32)
    with zipfile.ZipFile(result.path) as archive:
        frame = np.asarray(Image.open(io.BytesIO(archive.read("frame_00000.png"))))
    small = signed_to_uint8(checker(torch.zeros(1, 3)))[0].numpy()
    assert np.array_equal(frame, small.repeat(4, axis=0).repeat(4, axis=1))


# --- hooks, labels, progress, cancellation --------------------------------------------------------------------------


class RecordingSynthesizer:
    """`flat_colour` with labels, remembering each batch's size and labels."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.labels: list[torch.Tensor] = []

    def __call__(self, latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.batches.append(latents.shape[0])
        self.labels.append(labels.clone())
        return flat_colour(latents)


def test_transforms_labels_and_progress(tmp_path):
    synthesize = RecordingSynthesizer()
    progress = []
    latents = colour_latents([(200, 50, 30)] * 10)
    labels = label_path(torch.eye(2), frames=10)
    result = render_walk(
        latents,
        synthesize=synthesize,
        labels=labels,
        out=tmp_path / "frames.zip",
        batch_size=4,
        latent_transform=lambda z: -z,  # flips the colour around grey
        frame_transform=lambda images: images.flip(1),  # RGB -> BGR, applied after synthesis
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert synthesize.batches == [4, 4, 2]
    assert torch.equal(torch.cat(synthesize.labels), labels)
    assert progress == [(4, 10), (8, 10), (10, 10)]
    with zipfile.ZipFile(result.path) as archive:
        pixel = np.asarray(Image.open(io.BytesIO(archive.read("frame_00000.png"))))[0, 0]
    assert np.abs(pixel.astype(int) - [255 - 30, 255 - 50, 255 - 200]).max() <= 2


def test_a_pixel_budget_renders_one_frame_first_then_batches_that_fit(tmp_path):
    synthesize = RecordingSynthesizer()
    progress = []
    latents = noise_loop(frames=10, dim=4, seed=1)
    labels = label_path(torch.eye(2), frames=10)
    budgeted = render_walk(
        latents,
        synthesize=synthesize,
        labels=labels,
        out=tmp_path / "budgeted.zip",
        batch_size=4,
        max_batch_pixels=3 * HEIGHT * WIDTH,  # three frames
        on_progress=lambda done, total: progress.append(done),
    )
    assert synthesize.batches == [1, 3, 3, 3] and progress == [1, 4, 7, 10]
    assert torch.equal(torch.cat(synthesize.labels), labels)
    whole = render_walk(latents, synthesize=synthesize, labels=labels, out=tmp_path / "whole.zip", batch_size=4)
    assert budgeted.frames == whole.frames == 10
    assert all(np.array_equal(a, b) for a, b in zip(frames_in(budgeted.path), frames_in(whole.path), strict=True))
    with pytest.raises(ValueError, match="max_batch_pixels must be at least 1"):
        render_walk(latents, synthesize=flat_colour, out=tmp_path / "x.zip", max_batch_pixels=0)


@pytest.mark.parametrize("suffix", ["mp4", "gif", "webm", "zip"])
def test_cancelling_leaves_no_file_and_no_temp(tmp_path, suffix):
    out = tmp_path / f"walk.{suffix}"
    calls = []

    def stop_after_two(done: int, total: int) -> bool:
        calls.append(done)
        return len(calls) < 2

    with pytest.raises(Cancelled):
        render_walk(
            noise_loop(frames=40, dim=4, seed=0),
            synthesize=flat_colour,
            out=out,
            batch_size=8,
            on_progress=stop_after_two,
        )
    assert calls == [8, 16]
    assert leftovers(tmp_path) == []


def frames_in(path: Path) -> list[np.ndarray]:
    """The frames of a walk file of any format, as (H, W, 3) uint8 arrays."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            return [np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("RGB")) for name in names]
    if path.suffix == ".gif":
        with Image.open(path) as gif:
            frames = []
            for index in range(gif.n_frames):
                gif.seek(index)
                frames.append(np.asarray(gif.convert("RGB")))
            return frames
    return decode(path)[1]


@pytest.mark.parametrize("suffix", ["mp4", "gif", "webm", "zip"])
def test_a_stop_with_keep_partial_finishes_the_file_with_the_frames_made(tmp_path, suffix):
    out = tmp_path / f"walk.{suffix}"
    colours = [(40 + 8 * i, 200 - 8 * i, 120) for i in range(20)]
    result = render_walk(
        colour_latents(colours),
        synthesize=flat_colour,
        out=out,
        fps=10,
        batch_size=4,
        on_progress=lambda done, total: done < 8,  # stop after the second batch
        keep_partial=True,
    )
    assert (result.frames, result.planned_frames, result.stopped_early) == (8, 20, True)
    assert leftovers(tmp_path) == [out.name]  # the finished file, no hidden temporary one
    frames = frames_in(out)
    assert len(frames) == 8
    tolerance = 0 if suffix == "zip" else 12  # lossy codecs, GIF palette
    for frame, colour in zip(frames, colours[:8], strict=True):
        assert np.abs(frame[HEIGHT // 2, WIDTH // 2].astype(int) - colour).max() <= tolerance


def test_a_stop_after_the_last_frame_keeps_the_whole_walk(tmp_path):
    out = tmp_path / "walk.gif"
    result = render_walk(
        noise_loop(frames=12, dim=4, seed=0),
        synthesize=flat_colour,
        out=out,
        batch_size=4,
        on_progress=lambda done, total: done < total,
    )
    assert (result.frames, result.stopped_early) == (12, False) and len(frames_in(out)) == 12


def test_failed_render_keeps_the_previous_file_and_leaves_no_temp(tmp_path):
    out = tmp_path / "walk.mp4"
    out.write_bytes(b"previous render")

    def broken(latents: torch.Tensor) -> torch.Tensor:
        if broken.calls == 1:
            raise RuntimeError("out of memory")
        broken.calls += 1
        return flat_colour(latents)

    broken.calls = 0
    with pytest.raises(RuntimeError, match="out of memory"):
        render_walk(torch.zeros(20, 4), synthesize=broken, out=out, batch_size=8)
    assert leftovers(tmp_path) == ["walk.mp4"] and out.read_bytes() == b"previous render"


def test_video_writer_on_its_own(tmp_path):
    frames = np.zeros((5, 16, 16, 3), dtype=np.uint8)
    frames[..., 1] = 180
    with VideoWriter(tmp_path / "clip.mp4", fps=10) as writer:
        writer.write(frames)
        writer.write(torch.from_numpy(frames[:2]))
        assert not (tmp_path / "clip.mp4").exists()  # nothing at the target until the file is complete
    assert writer.frames_written == 7
    stream, decoded = decode(tmp_path / "clip.mp4")
    assert len(decoded) == 7 and stream.average_rate == 10
    assert abs(int(decoded[0][8, 8, 1]) - 180) <= 3

    with pytest.raises(KeyError):
        with VideoWriter(tmp_path / "broken.gif", fps=10) as writer:
            writer.write(frames)
            raise KeyError("boom")
    with pytest.raises(ValueError, match="same size"):
        with VideoWriter(tmp_path / "sizes.mp4") as writer:
            writer.write(frames)
            writer.write(np.zeros((1, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="no frames"):
        with VideoWriter(tmp_path / "empty.mp4"):
            pass
    assert leftovers(tmp_path) == ["clip.mp4"]


def test_bad_requests_are_explained(tmp_path):
    with pytest.raises(ValueError, match="cannot tell the video format"):
        video_format(tmp_path / "walk.avi")
    assert video_format(tmp_path / "walk.avi", "webm") == "webm"
    with pytest.raises(ValueError, match="upscale"):
        VideoWriter(tmp_path / "a.mp4", upscale="sinc")
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(tmp_path / "a.mp4", fps=0)
    with pytest.raises(ValueError, match="labels"):
        render_walk(torch.zeros(4, 3), synthesize=flat_colour, out=tmp_path / "a.mp4", labels=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="synthesize must return"):
        render_walk(torch.zeros(4, 3), synthesize=lambda z: torch.zeros(4, 8, 8), out=tmp_path / "a.mp4")
    assert leftovers(tmp_path) == []


# --- a real (tiny, random) conditional DCGAN ------------------------------------------------------------------------


def test_tiny_conditional_dcgan_walk_renders_the_generator_frames(tmp_path):
    generator = DCGANGenerator(DCGANConfig(z_dim=8, num_classes=3, resolution=16, base_channels=4))
    generator.load_state_dict(random_state_like(generator, seed=0))
    generator.eval()
    keys = torch.randn(3, 8, generator=torch.Generator().manual_seed(7))
    latents = keyframe_path(keys, frames=12, loop=True)
    labels = label_path(torch.eye(3), frames=12, loop=True)
    zipped = render_walk(latents, synthesize=generator, labels=labels, out=tmp_path / "eyes.zip", batch_size=5)
    movie = render_walk(latents, synthesize=generator, labels=labels, out=tmp_path / "eyes.mp4", size=64)
    with torch.inference_mode():
        expected = signed_to_uint8(generator(latents, labels)).numpy()
    with zipfile.ZipFile(zipped.path) as archive:
        for index in (0, 5, 11):
            frame = np.asarray(Image.open(io.BytesIO(archive.read(f"frame_{index:05d}.png"))))
            assert np.array_equal(frame, expected[index])
    assert (movie.frames, movie.width, movie.height) == (12, 64, 64)
    assert len(decode(movie.path)[1]) == 12
