"""Headless Chromium (Debian's, through Playwright) against the real app, launched once per session."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Playwright cannot download its own browser here: use the system Chromium. The background-networking flags keep
# Chromium from dialling out (on a closed network those connections are refused and slow the start).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
]


def chromium_path() -> str | None:
    configured = os.environ.get("STUDIO_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def browser_executable() -> str:
    found = chromium_path()
    if found is None:
        message = (
            "Chromium is not installed: apt-get install chromium (or make browser), or point STUDIO_CHROMIUM at a "
            "Chrome/Chromium binary"
        )
        if os.environ.get("STUDIO_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " (STUDIO_REQUIRE_BROWSER=1)")
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def studio_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from studio.api import Studio
    from studio.ui import build_demo, launch_options

    root = tmp_path_factory.mktemp("browser-app")
    patch = pytest.MonkeyPatch()
    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setenv("STUDIO_DEVICE", "cpu")
    patch.setenv("STUDIO_CACHE_DIR", str(root / "cache"))
    patch.setenv("STUDIO_WEIGHTS_DIR", str(root / "weights"))
    patch.setenv("STUDIO_OUTPUT_DIR", str(root / "outputs"))
    demo = build_demo(Studio(device="cpu"))
    port = _free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, **launch_options())
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        patch.undo()


@pytest.fixture(scope="module")
def page(browser_executable: str, studio_url: str) -> Iterator:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_executable, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(60_000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(studio_url)
        page.studio_errors = errors  # type: ignore[attr-defined]
        yield page
        context.close()
        browser.close()
