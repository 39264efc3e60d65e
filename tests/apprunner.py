"""The real studio app on a free local port, offline, on CPU: shared by the gradio_client and browser tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from studio.api import Studio


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_app(studio: Studio, root: Path) -> Iterator[str]:
    """Launch `build_demo(studio)` with its cache, weights and outputs under `root`; yields the page URL."""
    from studio.ui import build_demo, launch_options

    patch = pytest.MonkeyPatch()
    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setenv("STUDIO_DEVICE", "cpu")
    patch.setenv("STUDIO_CACHE_DIR", str(root / "cache"))
    patch.setenv("STUDIO_WEIGHTS_DIR", str(root / "weights"))
    patch.setenv("STUDIO_OUTPUT_DIR", str(root / "outputs"))
    patch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_demo(studio)
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, **launch_options())
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        patch.undo()
