"""Headless Chromium (Debian's, through Playwright) against the real app, launched once per session."""

from __future__ import annotations

import os
import shutil
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
    from tests.apprunner import running_app

    with running_app(Studio(device="cpu"), tmp_path_factory.mktemp("browser-app")) as url:
        yield url


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
