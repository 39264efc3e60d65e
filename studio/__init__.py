"""GAN Art Studio: generate, stylize and walk through artworks.

The public API is the `Studio` facade and its result types. Importing this package is cheap: nothing (not even
torch) is imported until one of these names is used.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# Idle OpenMP threads sleep instead of spinning. Gatys style transfer alternates torch's OpenMP kernels with NNPACK's
# own thread pool (studio.models.fast_conv); spinning OpenMP threads took the cores from NNPACK and undid its gain
# (0.44 -> 0.42 s per 256 px evaluation spinning, 0.44 -> 0.31 s sleeping; generation, AdaIN and training measured
# the same either way). OpenMP reads this once, when torch loads, so it only applies if studio is imported first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = [
    "Cancelled",
    "GenerationResult",
    "GenerationSettings",
    "Studio",
    "StylizeResult",
    "WalkResult",
    "read_png_settings",
]

if TYPE_CHECKING:
    from studio.api import (
        Cancelled,
        GenerationResult,
        GenerationSettings,
        Studio,
        StylizeResult,
        WalkResult,
        read_png_settings,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from studio import api

        return getattr(api, name)
    raise AttributeError(f"module 'studio' has no attribute {name!r}")
