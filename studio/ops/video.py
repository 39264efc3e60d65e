"""Render latent walks to files that play everywhere: MP4 (H.264), WebM (VP9), GIF and a zip of PNG frames.

Frames are generated in batches and streamed into the encoder, so memory stays flat however long the walk.
Files are written to a hidden temporary file beside the target and renamed into place only when complete: a
cancelled or failed render leaves neither a half-written video nor a temporary file behind.

Format choices (all through PyAV's bundled FFmpeg):
- mp4: libx264, yuv420p, High profile (x264 picks the level), CRF 18, BT.709 colour conversion and tags (limited
  range), even dimensions (odd sizes are padded by repeating the edge, or rounded up when resizing), `+faststart`
  so the index (moov atom) precedes the media data and browsers start playing before the download ends.
  Plays in Chromium, Chrome, Firefox and Safari.
- webm: libvpx-vp9, yuv420p, constant quality (CRF 31, no bitrate cap), BT.709 tags.
- gif: one adaptive 256-colour palette per frame (Pillow's fast octree quantiser: ~1 ms a 128 px frame, no dither
  so nothing crawls between frames) encoded by FFmpeg's GIF encoder (only changed rectangles are stored), loops
  forever. GIF delays are whole hundredths of a second: frame times are rounded on a 1/100 s clock, so 30 fps
  alternates 30 and 40 ms delays and a second of animation lasts exactly one second. At most 50 fps (browsers
  slow down shorter delays).
- zip: frame_00000.png, frame_00001.png, ... (lossless, for editing elsewhere).
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from studio.files import PendingFile
from studio.imaging import signed_to_uint8
from studio.ops.common import VIDEO_FORMATS, WALK_FRAME_METADATA_KEY, Cancelled

VideoFormat = Literal["mp4", "webm", "gif", "zip"]
SUFFIX_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".webm": "webm", ".gif": "gif", ".zip": "zip"}
CODECS = {"mp4": "h264", "webm": "vp9", "gif": "gif", "zip": "png"}
UPSCALE_FILTERS: tuple[str, ...] = ("nearest", "bilinear", "bicubic", "lanczos")
MAX_FPS = 120.0
MAX_GIF_FPS = 50.0

# ProgressFn(done, total) -> None | bool: called after every batch; returning False cancels the render.
ProgressFn = Callable[[int, int], "bool | None"]
Synthesize = Callable[..., Tensor]

# FFmpeg enum values (AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic BT709 = 1, AVCOL_RANGE_MPEG = 1).
_BT709 = 1
_LIMITED_RANGE = 1


def video_format(path: str | os.PathLike[str], format: str | None = None) -> str:
    """The container format for `path`: `format` if given, else from the suffix (.mp4/.m4v, .webm, .gif, .zip)."""
    suffix = Path(path).suffix.lower()
    if format is not None:
        format = str(format).lower()
        if format not in VIDEO_FORMATS:
            raise ValueError(f"video format must be one of {VIDEO_FORMATS}, got {format!r}")
        if SUFFIX_FORMATS.get(suffix, format) != format:
            raise ValueError(f"{Path(path).name!r} ends in {suffix} but the format asked for is {format}")
        return format
    if suffix not in SUFFIX_FORMATS:
        raise ValueError(
            f"cannot tell the video format from {Path(path).name!r}; end the name with one of "
            f"{sorted(SUFFIX_FORMATS)} or choose the format ({', '.join(VIDEO_FORMATS)})"
        )
    return SUFFIX_FORMATS[suffix]


def _fps_fraction(fps: float | Fraction, fmt: str) -> Fraction:
    try:
        value = Fraction(fps).limit_denominator(1001)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"fps must be a number, got {fps!r}") from None
    limit = MAX_GIF_FPS if fmt == "gif" else MAX_FPS
    if not 1 <= value <= limit:
        hint = " (GIF delays are in 1/100 s and browsers slow faster GIFs down; use mp4 or webm)" * (fmt == "gif")
        raise ValueError(f"fps must be between 1 and {limit:g} for {fmt}, got {float(value):g}{hint}")
    return value


def _output_size(width: int, height: int, size: int | tuple[int, int] | None, *, even: bool) -> tuple[int, int, bool]:
    """(out_width, out_height, resample) for input frames of width x height.

    size: None keeps the frame size, an int sets the longer side (aspect kept), (width, height) is exact.
    even: H.264 4:2:0 needs even sides: when resampling anyway the size is rounded up to even; otherwise the
    caller pads odd frames by one repeated edge row/column (resample False).
    """
    if size is None:
        out_w, out_h = width, height
    elif isinstance(size, int) and not isinstance(size, bool):
        if size < 2:
            raise ValueError(f"size must be at least 2 px, got {size}")
        scale = size / max(width, height)
        out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
    else:
        try:
            out_w, out_h = (int(v) for v in size)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"size must be None, an int (longer side) or (width, height), got {size!r}") from None
        if out_w < 2 or out_h < 2:
            raise ValueError(f"size must be at least 2x2 px, got {out_w}x{out_h}")
    resample = (out_w, out_h) != (width, height)
    if even:
        out_w, out_h = out_w + out_w % 2, out_h + out_h % 2
    return out_w, out_h, resample


def _interpolation(upscale: str) -> Any:
    from av.video.reformatter import Interpolation

    filters = {
        "nearest": Interpolation.POINT,
        "bilinear": Interpolation.BILINEAR,
        "bicubic": Interpolation.BICUBIC,
        "lanczos": Interpolation.LANCZOS,
    }
    if upscale not in filters:
        raise ValueError(f"upscale must be one of {UPSCALE_FILTERS}, got {upscale!r}")
    return filters[upscale] | Interpolation.ACCURATE_RND


def _as_rgb_batch(frames: Tensor | np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB on CPU from GAN output (N, 3, H, W) float in [-1, 1] or (N, H, W, 3) uint8."""
    if isinstance(frames, Tensor):
        if frames.is_floating_point():
            if frames.dim() != 4 or frames.shape[1] != 3:
                raise ValueError(f"float frames must be (N, 3, H, W) in [-1, 1], got shape {tuple(frames.shape)}")
            frames = signed_to_uint8(frames)
        frames = frames.detach().cpu().numpy()
    array = np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(
            f"frames must be (N, 3, H, W) float in [-1, 1] or (N, H, W, 3) uint8 RGB, got {array.dtype} "
            f"{tuple(array.shape)}"
        )
    return array


# --- encoders: one per format, each writing (H, W, 3) uint8 frames already at the output size ----------------------


class _AvEncoder:
    """What every PyAV-backed encoder shares: `container` and `stream` are set by the subclass."""

    container: Any
    stream: Any

    def _encode(self, frame: Any) -> None:
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        self._encode(None)  # flush the encoder
        self.container.close()

    def abort(self) -> None:
        self.container.close()


class _AvVideoEncoder(_AvEncoder):
    """H.264 in MP4 or VP9 in WebM through PyAV."""

    def __init__(self, path: Path, fmt: str, fps: Fraction, width: int, height: int, crf: int | None) -> None:
        import av

        self.width, self.height = width, height
        if fmt == "mp4":
            codec = "libx264"
            options = {"crf": str(18 if crf is None else crf), "preset": "medium", "profile": "high"}
            container_options = {"movflags": "+faststart"}
        else:
            codec = "libvpx-vp9"
            options = {
                "crf": str(31 if crf is None else crf),
                "b": "0",
                "deadline": "good",
                "cpu-used": "4",
                "row-mt": "1",
            }
            container_options = {}
        self.container = av.open(str(path), "w", format=fmt, options=container_options)
        try:
            self.stream = self.container.add_stream(codec, rate=fps, options=options)
            self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
            context = self.stream.codec_context
            context.colorspace = context.color_primaries = context.color_trc = _BT709
            context.color_range = _LIMITED_RANGE
        except BaseException:
            self.container.close()
            raise
        self.index = 0

    def write(self, frame: Any) -> None:
        """frame: an av.VideoFrame in yuv420p at the output size."""
        frame.pts = self.index
        self.index += 1
        self._encode(frame)


class _GifEncoder(_AvEncoder):
    """Per-frame adaptive palettes (Pillow octree) + FFmpeg's GIF encoder and muxer (loop forever)."""

    def __init__(self, path: Path, fps: Fraction, width: int, height: int) -> None:
        import av

        self.fps = fps
        self.container = av.open(str(path), "w", format="gif", options={"loop": "0"})
        try:
            # FFmpeg stores only the rectangle whose palette *indices* changed, which is wrong when the palette itself
            # changes between frames: every frame is stored whole (gifflags 0).
            self.stream = self.container.add_stream("gif", rate=fps, options={"gifflags": "0"})
            self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "pal8"
            self.stream.time_base = Fraction(1, 100)
        except BaseException:
            self.container.close()
            raise
        self.index = 0

    def write(self, rgb: np.ndarray) -> None:
        import av
        from PIL import Image

        indexed = Image.fromarray(rgb, mode="RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
        colours = np.asarray(indexed.getpalette(), dtype=np.uint8).reshape(-1, 3)[:256]
        palette = np.zeros((256, 4), dtype=np.uint8)
        palette[:, 0] = 255  # ARGB, opaque
        palette[: len(colours), 1:] = colours
        frame = av.VideoFrame.from_ndarray((np.asarray(indexed), palette), format="pal8")
        # Times on the GIF's 1/100 s clock, rounded per frame so the delays average exactly 1/fps.
        frame.pts = round(self.index * 100 / self.fps)
        frame.time_base = Fraction(1, 100)
        self.index += 1
        self._encode(frame)


class _PngZipEncoder:
    def __init__(self, path: Path) -> None:
        self.archive = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED)  # PNG is compressed already
        self.index = 0

    def write(self, rgb: np.ndarray) -> None:
        from PIL import Image, PngImagePlugin

        buffer = io.BytesIO()
        info = PngImagePlugin.PngInfo()
        info.add_text(WALK_FRAME_METADATA_KEY, json.dumps({"frame": self.index}))
        Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG", compress_level=4, pnginfo=info)
        self.archive.writestr(f"frame_{self.index:05d}.png", buffer.getvalue())
        self.index += 1

    def close(self) -> None:
        self.archive.close()

    def abort(self) -> None:
        self.archive.close()


# --- the writer -----------------------------------------------------------------------------------------------------


class VideoWriter:
    """Stream frames into a video file; the file appears at `path` only when `close()` succeeds.

        with VideoWriter("walk.mp4", fps=30, size=512) as writer:
            for images in batches:          # (N, 3, H, W) float in [-1, 1], or (N, H, W, 3) uint8 RGB
                writer.write(images)
        # leaving the block normally finalises and renames; an exception deletes the temporary file

    path: target file; its folder is created if missing; an existing file is replaced atomically on success.
    format: "mp4" | "webm" | "gif" | "zip", default from the suffix. fps: frames per second (1-120; GIF <= 50).
    size: None (frame size), int (longer side) or (width, height); resampled with `upscale`
    ("nearest" | "bilinear" | "bicubic" | "lanczos"). crf: quality for mp4/webm (lower is better; defaults 18/31).
    The encoder opens on the first frame (its size fixes the video size); later frames must match it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fps: float | Fraction = 30,
        format: str | None = None,
        size: int | tuple[int, int] | None = None,
        upscale: str = "lanczos",
        crf: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.format = video_format(self.path, format)
        self.fps = _fps_fraction(fps, self.format)
        self.codec = CODECS[self.format]
        self._size = size
        self._interpolation = _interpolation(upscale)
        if crf is not None and not 0 <= int(crf) <= 63:
            raise ValueError(f"crf must be between 0 and 63 (lower is better quality), got {crf}")
        self._crf = crf
        self.frames_written = 0
        self.width = 0
        self.height = 0
        self.seconds_encoding = 0.0
        self._input_size: tuple[int, int] | None = None
        self._resample = False
        self._encoder: Any = None
        self._pending: PendingFile | None = None
        self._finished = False

    # context manager ---------------------------------------------------------------------------------------------

    def __enter__(self) -> VideoWriter:
        self.open()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        """Create the hidden temporary file beside the target (called by `with`)."""
        if self._pending is not None or self._finished:
            return
        self._pending = PendingFile(self.path, make_folder=True)

    # frames ------------------------------------------------------------------------------------------------------

    def write(self, frames: Tensor | np.ndarray) -> None:
        """Append frames: (N, 3, H, W) float in [-1, 1] (GAN output) or (N, H, W, 3) uint8 RGB."""
        if self._finished:
            raise ValueError("this VideoWriter is closed; start a new one")
        self.open()
        started = time.perf_counter()
        try:
            rgb = _as_rgb_batch(frames)
            for frame in rgb:
                self._write_one(frame)
        except BaseException:
            self.abort()
            raise
        finally:
            self.seconds_encoding += time.perf_counter() - started

    def _write_one(self, rgb: np.ndarray) -> None:
        height, width = rgb.shape[:2]
        if self._encoder is None:
            self._start(width, height)
        elif (width, height) != self._input_size:
            raise ValueError(
                f"frame is {width}x{height} but the video started at {self._input_size[0]}x"
                f"{self._input_size[1]}; every frame must have the same size"
            )
        if self.format in ("mp4", "webm"):
            self._encoder.write(self._to_video_frame(rgb))
        else:
            self._encoder.write(self._to_rgb(rgb))
        self.frames_written += 1

    def _start(self, width: int, height: int) -> None:
        assert self._pending is not None
        temporary = self._pending.temporary
        self._input_size = (width, height)
        self.width, self.height, self._resample = _output_size(width, height, self._size, even=self.format == "mp4")
        if self.format in ("mp4", "webm"):
            self._encoder = _AvVideoEncoder(temporary, self.format, self.fps, self.width, self.height, self._crf)
        elif self.format == "gif":
            self._encoder = _GifEncoder(temporary, self.fps, self.width, self.height)
        else:
            self._encoder = _PngZipEncoder(temporary)

    def _to_video_frame(self, rgb: np.ndarray) -> Any:
        import av

        if not self._resample and rgb.shape[:2] != (self.height, self.width):  # odd size for H.264: repeat the edge
            rgb = np.pad(rgb, ((0, self.height - rgb.shape[0]), (0, self.width - rgb.shape[1]), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        return frame.reformat(
            width=self.width,
            height=self.height,
            format="yuv420p",
            dst_colorspace="itu709",
            dst_color_range="MPEG",
            interpolation=self._interpolation,
        )

    def _to_rgb(self, rgb: np.ndarray) -> np.ndarray:
        if not self._resample:
            return rgb
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        resized = frame.reformat(width=self.width, height=self.height, interpolation=self._interpolation)
        return resized.to_ndarray(format="rgb24")

    # finishing ---------------------------------------------------------------------------------------------------

    def close(self) -> Path:
        """Flush the encoder and move the finished file to `path`. Raises ValueError when no frame was written."""
        if self._finished:
            return self.path
        if self._encoder is None:
            self.abort()
            raise ValueError("no frames were written; a video needs at least one frame")
        started = time.perf_counter()
        try:
            self._encoder.close()
            assert self._pending is not None
            self._pending.commit()
        except BaseException:
            self.abort()
            raise
        finally:
            self.seconds_encoding += time.perf_counter() - started
        self._pending = None
        self._finished = True
        return self.path

    def abort(self) -> None:
        """Stop and delete the temporary file; nothing appears at `path`. Safe to call more than once."""
        if self._finished and self._pending is None:
            return
        encoder, self._encoder = self._encoder, None
        try:
            if encoder is not None:
                encoder.abort()
        except Exception:  # the encoder may already be broken; the file goes either way
            pass
        finally:
            if self._pending is not None:
                self._pending.discard()
                self._pending = None
            self._finished = True


# --- rendering a walk -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WalkVideo:
    """A rendered walk. path: the finished file. frames: frames in it. width, height: output pixels.
    codec: "h264" | "vp9" | "gif" | "png". seconds_generating: latents -> uint8 frames (synthesis, transforms,
    device transfer). seconds_encoding: resizing, colour conversion, encoding and writing. planned_frames: the
    frames asked for; fewer are in the file when the render was stopped and kept its first frames (`stopped_early`).
    """

    path: Path
    format: str
    frames: int
    fps: float
    width: int
    height: int
    codec: str
    seconds_generating: float
    seconds_encoding: float
    planned_frames: int

    @property
    def stopped_early(self) -> bool:
        return self.frames < self.planned_frames

    @property
    def duration(self) -> float:
        """Playing time in seconds."""
        return self.frames / self.fps


def render_walk(
    latents: Tensor,
    *,
    synthesize: Synthesize,
    out: str | os.PathLike[str],
    labels: Tensor | None = None,
    fps: float = 30,
    format: str | None = None,
    batch_size: int = 16,
    max_batch_pixels: int | None = None,
    size: int | tuple[int, int] | None = None,
    upscale: str = "lanczos",
    crf: int | None = None,
    latent_transform: Callable[[Tensor], Tensor] | None = None,
    frame_transform: Callable[[Tensor], Tensor] | None = None,
    on_progress: ProgressFn | None = None,
    keep_partial: bool = False,
) -> WalkVideo:
    """Generate the frames of a walk batch by batch and stream them into a video file.

    latents: (F, D), one row per output frame (e.g. from `keyframe_path` or `noise_loop`), on the device the
    generator runs on. labels: None, (F, C) class vectors parallel to the latents (`label_path`), or (C,) for one
    class throughout; moved to the latents' device.
    synthesize: (B, D) latents [, (B, C) labels] -> (B, 3, H, W) float in [-1, 1].
    latent_transform: applied to each (B, D) batch before synthesis (truncation, direction offsets).
    frame_transform: applied to each (B, 3, H, W) batch of images in [-1, 1] after synthesis (e.g. AdaIN).
    batch_size: frames per batch. max_batch_pixels: if given, the first batch is one frame, and later ones hold at
    most this many synthesized pixels (at least one frame): on a CPU, where batching gains little, big frames are
    then reported, and can be stopped, one by one instead of every `batch_size` frames.
    on_progress(done, total): after each batch; returning False stops. A stop deletes the partial file and raises
    `studio.ops.common.Cancelled`; with `keep_partial` it finishes the file with the frames made so far instead and
    returns it (`WalkVideo.stopped_early`). An error (`Cancelled` included) raised by a callback always deletes the
    partial file and propagates.
    fps, format, size, upscale, crf: see `VideoWriter`. Returns a `WalkVideo`.
    """
    if latents.dim() != 2 or latents.shape[0] < 1:
        raise ValueError(f"latents must be a (frames, D) tensor with at least one frame, got {tuple(latents.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_batch_pixels is not None and max_batch_pixels < 1:
        raise ValueError(f"max_batch_pixels must be at least 1 (or None), got {max_batch_pixels}")
    total = latents.shape[0]
    if labels is not None:
        if labels.dim() == 1:
            labels = labels.unsqueeze(0).expand(total, -1)
        if labels.dim() != 2 or labels.shape[0] != total:
            raise ValueError(f"labels must be (C,) or ({total}, C) to match the latents, got {tuple(labels.shape)}")
        labels = labels.to(latents.device)
    writer = VideoWriter(out, fps=fps, format=format, size=size, upscale=upscale, crf=crf)
    seconds_generating = 0.0
    this_batch = 1 if max_batch_pixels is not None else batch_size
    start = 0
    with writer, torch.inference_mode():
        while start < total:
            started = time.perf_counter()
            z = latents[start : start + this_batch]
            if latent_transform is not None:
                z = latent_transform(z)
            images = synthesize(z) if labels is None else synthesize(z, labels[start : start + this_batch])
            if frame_transform is not None:
                images = frame_transform(images)
            if images.dim() != 4 or images.shape[:2] != (z.shape[0], 3):
                raise ValueError(f"synthesize must return ({z.shape[0]}, 3, H, W) images, got {tuple(images.shape)}")
            frames = signed_to_uint8(images).cpu()  # waits for the device: generation time ends here
            seconds_generating += time.perf_counter() - started
            writer.write(frames)
            start += z.shape[0]
            if max_batch_pixels is not None:
                this_batch = max(1, min(batch_size, max_batch_pixels // (images.shape[2] * images.shape[3])))
            if on_progress is not None and on_progress(start, total) is False and start < total:
                if keep_partial:
                    break
                raise Cancelled(f"walk render cancelled after {start} of {total} frames")
    return WalkVideo(
        path=writer.path,
        format=writer.format,
        frames=writer.frames_written,
        fps=float(writer.fps),
        width=writer.width,
        height=writer.height,
        codec=writer.codec,
        seconds_generating=seconds_generating,
        seconds_encoding=writer.seconds_encoding,
        planned_frames=total,
    )
