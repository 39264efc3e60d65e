"""GAN Art Studio: generate, stylize and walk through artworks.

The public API is the `Studio` facade and its result types. Importing this package is cheap: nothing (not even
torch) is imported until one of these names is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
