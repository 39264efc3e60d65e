"""Small pieces shared by the ops: results, progress callbacks, cancellation, image digests, a PNG text key."""

from __future__ import annotations

import hashlib
import math
import numbers
import reprlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

# The PNG text key marking each frame of a walk saved as a PNG zip ({"frame": index}), so that Recreate can tell a
# person what the frame is instead of "no settings".
WALK_FRAME_METADATA_KEY = "gan-art-studio:walk-frame"
# The file formats a walk can be written as; each is also its file suffix (".mp4", ...).
VIDEO_FORMATS: tuple[str, ...] = ("mp4", "webm", "gif", "zip")

PreserveColor = Literal["none", "luminance", "histogram"]
PRESERVE_COLOR_MODES: tuple[str, ...] = ("none", "luminance", "histogram")

# on_step(step, total, loss) -> None | bool. `step` counts from 1; returning False stops the run early and the
# result so far is returned (`StylizeResult.stopped_early`). Raising `Cancelled` aborts: it propagates to the caller.
StepCallback = Callable[[int, int, float], "bool | None"]
# on_picture(step, total, render): after on_step; render() gives the picture the run would return if it stopped now.
PictureCallback = Callable[[int, int, Callable[[], Image.Image]], None]


class Cancelled(Exception):
    """Raised by a progress callback to abandon a run; the op lets it propagate and returns nothing."""


@dataclass(frozen=True)
class StylizeResult:
    """A stylised picture and how it was made.

    image: RGB PIL image. settings: the frozen settings object used (GatysSettings or AdaINSettings).
    history: per-step losses for optimisation methods (empty for feed-forward AdaIN).
    seconds: wall-clock time of the call. steps: objective evaluations actually run.
    stopped_early: True when the callback returned False before the last step.
    """

    image: Image.Image
    settings: Any
    seconds: float
    history: tuple[dict[str, float], ...] = ()
    steps: int = 0
    stopped_early: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


def image_digest(image: Image.Image) -> str:
    """A content hash of a PIL image (mode, size and pixels): a cache key that survives re-uploads of one file.
    SHA-256, which current server CPUs run in hardware (SHA extensions): hashing a 12-megapixel picture's pixels
    took 23 ms on this project's AMD EPYC cores, BLAKE2b 48 ms."""
    hasher = hashlib.sha256()
    hasher.update(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    hasher.update(image.tobytes())
    return hasher.hexdigest()[:32]


def weight_values(weights: Iterable[float], *, what: str) -> tuple[float, ...]:
    """Blend weights as floats; ValueError for anything but a list of numbers (a bare 0.5, text)."""
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Iterable):
        raise ValueError(f"{what} weights must be a list of numbers, one per {what}, got {weights!r}")
    values = []
    for weight in weights:
        try:
            values.append(float(weight))
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{what} weights must be numbers, got {reprlib.repr(weight)}") from None
    return tuple(values)


def normalise_weights(weights: Sequence[float] | None, count: int, *, what: str) -> tuple[float, ...]:
    """Blend weights for `count` items, scaled to sum to 1 ([2, 2] -> (0.5, 0.5)); None means equal weights."""
    if count < 1:
        raise ValueError(f"give at least one {what}")
    if weights is None:
        return tuple(1.0 / count for _ in range(count))
    values = weight_values(weights, what=what)
    if len(values) != count:
        raise ValueError(
            f"got {len(values)} {what} weights for {count} {what}{'s' * (count != 1)}; give one weight per {what}"
        )
    if any(not (0.0 <= w < math.inf) for w in values):  # also catches NaN
        raise ValueError(f"{what} weights must be finite and zero or positive, got {values}")
    largest = max(values)
    if largest <= 0.0:
        raise ValueError(f"{what} weights sum to zero; give at least one a positive weight")
    scaled = [w / largest for w in values]  # first, so that huge weights cannot overflow the sum
    total = sum(scaled)
    return tuple(w / total for w in scaled)


def check_picture_side(shape: Sequence[int], needed: int, *, what: str) -> None:
    """ValueError when a picture of `shape` (..., H, W) resized for the VGG is narrower than `needed` pixels."""
    height, width = shape[-2:]
    if min(height, width) < needed:
        raise ValueError(
            f"the {what} is too narrow for this size: it becomes {width}x{height} px and VGG19 needs at least "
            f"{needed} px on each side; raise the size or crop the picture closer to square"
        )


def check_preserve_color(mode: str) -> None:
    if mode not in PRESERVE_COLOR_MODES:
        raise ValueError(f"preserve_color must be one of {PRESERVE_COLOR_MODES}, got {mode!r}")


def check_mask_styles(count: int) -> None:
    """A mask splits the picture between exactly two styles (inside, outside)."""
    if count != 2:
        raise ValueError(
            f"a mask needs exactly two styles (inside, outside), got {count}; drop the mask to blend styles by weight"
        )


def as_whole_number(value: object) -> int | None:
    """`value` as an int when it is a whole number (an int, a NumPy integer, a float without a fraction), else None.
    Booleans are not numbers here."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return None


def check_output_side(size: object, limit: int, *, what: str = "output size") -> int:
    """The requested side as an int; ValueError when it is not a whole number of pixels >= 16 or is above `limit`."""
    side = as_whole_number(size)
    if side is None or side < 16:
        raise ValueError(f"{what} must be a whole number of pixels, at least 16, got {size!r}")
    if side > limit:
        raise ValueError(
            f"{what} {side} px is above the limit of {limit} px per side; lower it or raise STUDIO_MAX_SIDE"
        )
    return side
