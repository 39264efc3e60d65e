"""Images in and out: the only place where pixels change representation.

Ranges used across the studio:
- PIL images are 8-bit RGB.
- "unit" tensors are float (N, 3, H, W) in [0, 1]  (VGG/AdaIN inputs, style transfer).
- "signed" tensors are float (N, 3, H, W) in [-1, 1] (GAN outputs, training data).
Every conversion between them lives here.
"""

from __future__ import annotations

import io
import os
import re
import struct
import threading
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from studio.files import replaced_when_done

DEFAULT_MAX_SIDE = 4096
# Decoding more pixels than this is refused before the decoder allocates memory (a 20000x20000 PNG header is 400 MP).
MAX_PIXELS = 64_000_000

ImageSource = str | os.PathLike[str] | bytes | BinaryIO | Image.Image


def image_sources(sources: ImageSource | Iterable[ImageSource]) -> list[ImageSource]:
    """One image source or several, as a list: a path, bytes, an open file or a PIL image is one picture (a file
    object is iterable, by lines, so it must not be taken for a list)."""
    if isinstance(sources, (str, bytes, os.PathLike, Image.Image)) or hasattr(sources, "read"):
        return [sources]  # type: ignore[list-item]
    if not isinstance(sources, Iterable):
        picture = "a file path, bytes, an open file or a PIL image"
        raise ValueError(f"expected a picture ({picture}) or a list of them, got {sources!r}")
    return list(sources)


def max_side_from_env() -> int:
    """The largest output side (px) the studio renders; `STUDIO_MAX_SIDE` overrides it."""
    raw = os.environ.get("STUDIO_MAX_SIDE", "")
    if not raw:
        return DEFAULT_MAX_SIDE
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"STUDIO_MAX_SIDE must be a whole number of pixels, got {raw!r}") from None
    if value < 16:
        raise ValueError(f"STUDIO_MAX_SIDE must be at least 16 px, got {value}")
    return value


def load_image(
    source: ImageSource, *, max_side: int | None = None, name: str = "image", reuse: bool = False
) -> Image.Image:
    """Open anything a user may upload and return an 8-bit RGB PIL image, upright.

    Handles JPEG, PNG, WebP, GIF (first frame), RGBA (composited on white), greyscale, palette, CMYK,
    16-bit and float images and EXIF orientation. Raises ValueError with an actionable message for non-images,
    truncated or empty files, decompression bombs (above MAX_PIXELS) and, when `max_side` is given, images with a
    longer side. Uploads are not held to STUDIO_MAX_SIDE: a 24-megapixel camera photo is scaled down to the working
    size anyway, and MAX_PIXELS bounds the memory its decoding takes.
    reuse: a file decoded recently, unchanged since, is not decoded again (`DecodedFiles`); for uploads that are
    read many times, not for a folder read once.
    """
    return _decoded(source, max_side=max_side, name=name, reuse=reuse, convert=_to_rgb)


def load_mask(
    source: ImageSource, *, max_side: int | None = None, name: str = "mask", reuse: bool = False
) -> Image.Image:
    """Open a mask as 8-bit greyscale (mode "L"), upright: `mask_band` of the picture. Same checks, errors and
    `reuse` as `load_image`."""
    return _decoded(source, max_side=max_side, name=name, reuse=reuse, convert=mask_band)


def _decoded(
    source: ImageSource,
    *,
    max_side: int | None,
    name: str,
    reuse: bool,
    convert: Callable[[Image.Image], Image.Image],
) -> Image.Image:
    """`_decoded_upright`, or with `reuse` the copy kept of the same file decoded the same way (`DecodedFiles`)."""
    identity = DecodedFiles.identity(source) if reuse else None
    key = None if identity is None else (convert.__name__, identity)
    decoded = _decoded_files.get(key) if key is not None else None
    if decoded is not None:
        _check_dimensions(decoded.size, max_side, name)
        return decoded.copy()  # the caller may change its picture; the kept one stays as decoded
    image = _decoded_upright(source, max_side, name, convert=convert)
    if key is None:
        return image
    _decoded_files.put(key, image)
    return image.copy()


def mask_band(image: Image.Image) -> Image.Image:
    """The one rule for reading a picture as a mask, 8-bit greyscale with 255 = inside: its alpha channel where it
    has transparency (opaque = inside, so a cut-out or strokes on a transparent layer select themselves), else its
    brightness (white = inside). An alpha channel that is opaque everywhere, as many editors export, says nothing:
    the brightness counts then."""
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:
            return alpha
    return _to_rgb(image).convert("L")


_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _decoded_upright(
    source: ImageSource, max_side: int | None, name: str, *, convert: Callable[[Image.Image], Image.Image]
) -> Image.Image:
    """The picture decoded (a GIF's first frame), turned upright by its EXIF orientation and `convert`ed."""
    image = source if isinstance(source, Image.Image) else open_image(source, name=name)
    _check_dimensions(image.size, max_side, name)
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        image.load()
        return convert(ImageOps.exif_transpose(image) or image)
    except MemoryError:
        raise
    except Exception as error:  # corrupt data makes PIL raise OSError, SyntaxError, ValueError, TypeError, ...
        raise ValueError(f"{name} could not be decoded ({error}); the file looks truncated or corrupt") from None


def _check_dimensions(size: tuple[int, int], max_side: int | None, name: str) -> None:
    width, height = size
    if width == 0 or height == 0:
        raise ValueError(f"{name} has zero size ({width}x{height}); upload a real picture")
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"{name} is {width}x{height} ({width * height / 1e6:.0f} megapixels); the limit is "
            f"{MAX_PIXELS / 1e6:.0f} megapixels. Downscale it first."
        )
    if max_side is not None and max(width, height) > max_side:
        raise ValueError(f"{name} is {width}x{height}; the limit is {max_side} px per side. Downscale it first.")


FileIdentity = tuple[str, int, int, int, int]
DecodedKey = tuple[str, FileIdentity]  # (how it was decoded, which file)


class DecodedFiles:
    """The pictures `load_image` and `load_mask` (with reuse=True) decoded last, by file and how it was decoded
    (as RGB, as a mask), least recently used first out.

    The Stylize tab decodes its uploads in the page's validator and again in the run, and every AdaIN preview
    during a slider drag decodes them once more: a 12-megapixel PNG takes 0.3 s on 2 cores, twice an AdaIN
    preview. A file is known by its path, inode, size and modification and change times (`identity`), so one
    rewritten or replaced is decoded anew.
    Bounded by pixels (3 bytes each), not by count.
    """

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self._pictures: OrderedDict[DecodedKey, Image.Image] = OrderedDict()
        self._pixels = 0
        self._lock = threading.Lock()

    @staticmethod
    def identity(source: ImageSource) -> FileIdentity | None:
        """A file's (path, inode, size, modification and change times), or None for a source that is not a readable
        file's path. The inode and change time tell a file replaced by one of the same size with its modification
        time kept (`cp -p`, `rsync -t`, an archive) from the one decoded."""
        if not isinstance(source, (str, os.PathLike)):
            return None
        try:
            path = os.path.realpath(source)
            stat = os.stat(path)
        except (OSError, ValueError):
            return None
        return path, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns

    def get(self, key: DecodedKey) -> Image.Image | None:
        with self._lock:
            picture = self._pictures.get(key)
            if picture is not None:
                self._pictures.move_to_end(key)
            return picture

    def put(self, key: DecodedKey, picture: Image.Image) -> None:
        pixels = picture.width * picture.height
        if pixels > self.max_pixels:
            return
        with self._lock:
            if key in self._pictures:
                return
            self._pictures[key] = picture
            self._pixels += pixels
            while self._pixels > self.max_pixels:
                _, oldest = self._pictures.popitem(last=False)
                self._pixels -= oldest.width * oldest.height


# About 150 MB of RGB: a content photo and a few style paintings at camera resolution.
_decoded_files = DecodedFiles(max_pixels=48_000_000)


def open_image(
    source: str | os.PathLike[str] | bytes | BinaryIO,
    *,
    name: str = "image",
    wanted: str = "use JPEG, PNG, WebP, GIF, BMP or TIFF",
) -> Image.Image:
    """Open (not decode) an image file as PIL sees it, metadata included; ValueError with an actionable message for
    missing, empty and non-image files (ending with `wanted`, what to give instead) and decompression bombs."""
    if isinstance(source, bytes):
        if not source:
            raise ValueError(f"{name} is an empty file")
        stream: BinaryIO = io.BytesIO(source)
    elif not isinstance(source, (str, os.PathLike)) and not hasattr(source, "read"):
        raise ValueError(f"{name} must be a file path, bytes, an open file or a PIL image, got {_described(source)}")
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            raise ValueError(f"{name} is a folder, not a picture: {path}")
        if not path.is_file():
            raise ValueError(f"{name} was not found: {path}")
        if path.stat().st_size == 0:
            raise ValueError(f"{name} is an empty file: {path}")
        stream = io.BytesIO(path.read_bytes())
    else:
        stream = source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(stream)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # PIL's own threshold is above MAX_PIXELS: say the studio's limit, as `_check_dimensions` does
        found = re.search(r"\((\d+) pixels\)", str(error))
        size = f" ({int(found.group(1)) / 1e6:.0f} megapixels)" if found else ""
        raise ValueError(
            f"{name} is too large to decode safely{size}; the limit is {MAX_PIXELS / 1e6:.0f} megapixels. "
            "Downscale it first."
        ) from None
    except UnidentifiedImageError:
        raise ValueError(f"{name} is not a picture file this studio can read; {wanted}") from None
    except OSError as error:
        raise ValueError(f"{name} could not be opened ({error}); the file looks truncated or corrupt") from None


def _described(value: object) -> str:
    """A short name for a wrong value in a message: small values as they are, anything else (an array of a million
    pixels) by its type."""
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    kind = type(value)
    return f"a {kind.__module__}.{kind.__qualname__}"


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT_BYTES = 1 << 20  # a settings chunk is a few hundred bytes; anything past this is not ours


def png_text_before_pixels(path: str | os.PathLike[str]) -> dict[str, str]:
    """The text chunks (tEXt, zTXt, iTXt) before a PNG's pixels, read without decoding any pixel, so that a picture
    too large to decode can still say how it was made. {} for a file that is not a PNG; stops at a chunk that is
    cut short or fails its checksum."""
    texts: dict[str, str] = {}
    with open(path, "rb") as file:
        if file.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
            return texts
        while len(header := file.read(8)) == 8:
            length, kind = struct.unpack(">I4s", header)
            if kind in (b"IDAT", b"IEND") or length > MAX_TEXT_BYTES:
                break
            data, checksum = file.read(length), file.read(4)
            if len(checksum) < 4 or struct.unpack(">I", checksum)[0] != zlib.crc32(kind + data):
                break  # cut short or damaged
            try:
                key, text = _png_text_chunk(kind, data)
            except (ValueError, zlib.error, UnicodeDecodeError):
                break
            if key:
                texts[key] = text
    return texts


def _png_text_chunk(kind: bytes, data: bytes) -> tuple[str, str]:
    """(keyword, text) of a tEXt, zTXt or iTXt chunk; ("", "") for any other chunk."""

    def inflate(compressed: bytes) -> bytes:
        inflater = zlib.decompressobj()
        text = inflater.decompress(compressed, MAX_TEXT_BYTES)
        if inflater.unconsumed_tail:
            raise ValueError("a compressed text chunk larger than any settings")
        return text

    keyword, _, rest = data.partition(b"\0")
    if kind == b"tEXt":
        return keyword.decode("latin-1"), rest.decode("latin-1")
    if kind == b"zTXt":
        return keyword.decode("latin-1"), inflate(rest[1:]).decode("latin-1")
    if kind == b"iTXt":
        compressed, rest = rest[:1] == b"\1", rest[2:]
        _language, _, rest = rest.partition(b"\0")
        _translated, _, text = rest.partition(b"\0")
        return keyword.decode("latin-1"), (inflate(text) if compressed else text).decode("utf-8")
    return "", ""


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        high = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        if mode == "F":
            high = max(float(array.max()), 1.0) if array.max() > 1.0 else 1.0
        eight_bit = np.clip(array / high * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(eight_bit, mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize_long_side(image: Image.Image, long_side: int) -> Image.Image:
    """Resize so that the longer side is `long_side` px, keeping the aspect ratio (Lanczos)."""
    new_size = long_side_size(image.size, long_side)
    if new_size == image.size:
        return image
    return image.resize(new_size, Image.Resampling.LANCZOS)


def long_side_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(width, height) that `resize_long_side` gives a picture of `size`, without resizing anything."""
    if long_side < 1:
        raise ValueError(f"size must be a positive number of pixels, got {long_side}")
    width, height = size
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


# Tensor conversions import torch lazily so that `import studio.imaging` stays cheap.


def pil_to_unit(image: Image.Image, *, device: str | None = None):  # -> torch.Tensor
    """RGB PIL image -> (1, 3, H, W) float32 in [0, 1]."""
    import torch

    array = np.asarray(_to_rgb(image), dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    return tensor.to(device) if device else tensor


def unit_to_pil(images) -> list[Image.Image]:
    """(N, 3, H, W) or (3, H, W) float in [0, 1] (values outside are clipped) -> list of RGB PIL images."""
    import torch

    if images.dim() == 3:
        images = images.unsqueeze(0)
    array = images.detach().float().clamp(0, 1).mul(255).add_(0.5).to("cpu", dtype=torch.uint8)
    return [Image.fromarray(frame.permute(1, 2, 0).numpy(), mode="RGB") for frame in array]


def signed_to_unit(images):
    """[-1, 1] -> [0, 1]."""
    return images.add(1).mul_(0.5)


def unit_to_signed(images):
    """[0, 1] -> [-1, 1]."""
    return images.mul(2).sub_(1)


def signed_to_uint8(images):
    """(N, 3, H, W) float in [-1, 1] -> (N, H, W, 3) uint8 on the same device (for video encoders)."""
    import torch

    return images.detach().float().add(1).mul_(127.5).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def signed_to_pil(images) -> list[Image.Image]:
    """(N, 3, H, W) float in [-1, 1] -> list of RGB PIL images."""
    frames = signed_to_uint8(images).cpu().numpy()
    return [Image.fromarray(frame, mode="RGB") for frame in frames]


def save_image(
    image: Image.Image, path: str | os.PathLike[str], *, image_format: str | None = None, **options: Any
) -> Path:
    """Save `image` to `path` in `image_format` ("PNG", ...; default: the one its suffix names), through a temporary
    file in the same folder that replaces `path` only once it is complete: a failed write (a full disk, a stop)
    leaves a file already at `path` as it was. `options` go to PIL's save (pnginfo, quality, ...)."""
    path = Path(path)
    image_format = image_format or Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"{path.name}: unknown picture file suffix; use .png, .jpg or .webp")
    try:
        with replaced_when_done(path) as temporary:
            image.save(temporary, format=image_format, **options)
    except OSError as error:  # named after the file asked for, not the temporary one
        raise OSError(error.errno, error.strerror or str(error), str(path)) from None
    return path


def make_grid(images: list[Image.Image], *, columns: int | None = None, padding: int = 2) -> Image.Image:
    """Tile same-sized images into one picture, row-major, on a white background."""
    if not images:
        raise ValueError("no images to put in a grid")
    count = len(images)
    columns = columns or int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    width, height = images[0].size
    grid = Image.new(
        "RGB", (columns * width + (columns - 1) * padding, rows * height + (rows - 1) * padding), (255, 255, 255)
    )
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid.paste(image, (column * (width + padding), row * (height + padding)))
    return grid


CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg_preprocess(images, convention: str):
    """RGB (N, 3, H, W) in [0, 1] -> the input a VGG19 weight set was trained on.

    "caffe": BGR in 0-255 minus the Caffe mean; "imagenet": RGB normalised by ImageNet mean/std;
    "adain": unchanged (the AdaIN encoder's first 1x1 conv does its own preprocessing).
    """
    if convention == "adain":
        return images
    if convention == "caffe":
        mean = images.new_tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1)
        return images.flip(1).mul(255.0).sub(mean)
    if convention == "imagenet":
        mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return images.sub(mean).div(std)
    raise ValueError(f"unknown VGG input convention {convention!r}")
