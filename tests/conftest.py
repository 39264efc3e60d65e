from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hubserver import HubServer, use_hub


@pytest.fixture
def hub_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    """A running fake Hub; huggingface_hub talks to it and caches under `tmp_path / "hf_home"`."""
    with HubServer() as server:
        use_hub(monkeypatch, server.url, tmp_path / "hf_home")
        yield server
