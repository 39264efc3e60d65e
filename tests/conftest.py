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


@pytest.fixture(autouse=True)
def isolated_studio_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never read or write the user's studio cache or weights folder."""
    root = tmp_path_factory.mktemp("studio")
    monkeypatch.setenv("STUDIO_CACHE_DIR", str(root / "cache"))
    monkeypatch.setenv("STUDIO_WEIGHTS_DIR", str(root / "weights"))
    monkeypatch.delenv("STUDIO_MAX_SIDE", raising=False)
    monkeypatch.delenv("STUDIO_MAX_BATCH", raising=False)
    monkeypatch.setenv("STUDIO_DEVICE", "cpu")


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The sample photos and paintings beside the checkout (../shared/data)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"sample images not found at {SHARED_DATA}; clone the project beside the shared/ folder")
    return SHARED_DATA
