"""The fake Hub in tests/hubserver.py, checked against the real `huggingface_hub.hf_hub_download`.

These also pin down which exceptions hf_hub_download raises for each failure, which studio/weights.py relies on.
"""

import http.client
import urllib.error
import urllib.request
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, constants, hf_hub_download, model_info
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.hubserver import HubServer, fast_retries, set_offline

REPO = "studio-test/tiny-gan"
FILE = "generator.safetensors"


def blob_files(repo_id: str = REPO) -> list[Path]:
    blobs = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "blobs"
    return sorted(blobs.iterdir()) if blobs.is_dir() else []


def test_download_then_cache_serves_it_after_the_server_stops(hub_server: HubServer) -> None:
    commit = hub_server.add_file(REPO, FILE, b"weights v1")

    path = hf_hub_download(REPO, FILE)
    assert Path(path).read_bytes() == b"weights v1"
    assert Path(path).is_relative_to(constants.HF_HUB_CACHE)
    assert hub_server.requests == [("HEAD", f"/{REPO}/resolve/main/{FILE}"), ("GET", f"/{REPO}/resolve/main/{FILE}")]

    hub_server.stop()
    # A pinned commit that is cached is returned without any network call.
    assert hf_hub_download(REPO, FILE, revision=commit) == path
    # "main" also works: the HEAD call fails (connection refused), and the library falls back to the commit it
    # recorded in refs/main at the last successful download. No retry back-off happens when a cached copy exists.
    assert hf_hub_download(REPO, FILE, revision="main") == path
    assert hf_hub_download(REPO, FILE) == path


def test_explicit_cache_dir(hub_server: HubServer, tmp_path: Path) -> None:
    hub_server.add_file(REPO, FILE, b"weights")
    path = hf_hub_download(REPO, FILE, cache_dir=tmp_path / "studio-cache")
    assert Path(path).is_relative_to(tmp_path / "studio-cache")
    assert blob_files() == []  # nothing went to the default cache


def test_pinned_revision_keeps_old_content_after_main_moves_on(hub_server: HubServer) -> None:
    old = hub_server.add_file(REPO, FILE, b"old")
    new = hub_server.add_file(REPO, FILE, b"new")
    assert old != new

    assert Path(hf_hub_download(REPO, FILE)).read_bytes() == b"new"
    assert Path(hf_hub_download(REPO, FILE, revision=old)).read_bytes() == b"old"
    assert Path(hf_hub_download(REPO, FILE, revision=new)).read_bytes() == b"new"
    assert model_info(REPO).sha == new
    assert HfApi().model_info(REPO, revision=old).sha == old


def test_not_found_errors(hub_server: HubServer) -> None:
    hub_server.add_file(REPO, FILE, b"weights")

    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("studio-test/missing", FILE)
    with pytest.raises(RemoteEntryNotFoundError) as file_error:
        hf_hub_download(REPO, "missing.bin")
    assert isinstance(file_error.value, EntryNotFoundError)  # the base class shared with LocalEntryNotFoundError
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, FILE, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, FILE, revision="0" * 40)
    # All of them are HfHubHTTPError (an OSError) carrying the response.
    with pytest.raises(HfHubHTTPError) as repo_error:
        hf_hub_download("studio-test/missing", FILE)
    assert repo_error.value.response.status_code == 404


def test_server_errors(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = fast_retries(monkeypatch)
    hub_server.add_file(REPO, FILE, b"weights")

    # One 500 on the metadata (HEAD) call is retried and goes unnoticed.
    hub_server.fail_next(500)
    assert Path(hf_hub_download(REPO, FILE)).read_bytes() == b"weights"

    # A lasting 500 with nothing cached: 1 + 5 retried HEAD calls (back-off 1+2+4+8+8 s, skipped here), then
    # LocalEntryNotFoundError whose cause is the HfHubHTTPError.
    other = hub_server.add_file("studio-test/other", FILE, b"other")
    hub_server.fail_next(500, count=100)
    with pytest.raises(LocalEntryNotFoundError) as error:
        hf_hub_download("studio-test/other", FILE, revision=other)
    assert isinstance(error.value.__cause__, HfHubHTTPError)
    assert error.value.__cause__.response.status_code == 500
    assert sleeps == [1, 2, 4, 8, 8]

    # A lasting 500 with "main" cached: the cached copy is returned at once.
    sleeps.clear()
    assert Path(hf_hub_download(REPO, FILE)).read_bytes() == b"weights"
    assert sleeps == []

    # A 500 on the download (GET) itself is not retried: HfHubHTTPError.
    hub_server.clear_faults()
    hub_server.fail_next(500, method="GET")
    with pytest.raises(HfHubHTTPError) as get_error:
        hf_hub_download("studio-test/other", FILE, revision=other)
    assert get_error.value.response.status_code == 500
    assert blob_files("studio-test/other") == []


def test_cut_transfer_is_resumed_or_leaves_no_blob(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = fast_retries(monkeypatch)
    data = bytes(range(256)) * 4
    hub_server.add_file(REPO, FILE, data)

    # One dropped connection: after a 1 s pause the library downloads again and succeeds. It reads the body in
    # DOWNLOAD_CHUNK_SIZE (10 MiB) pieces and an unfinished piece is lost, so a small file starts over from byte 0...
    hub_server.truncate_next(100)
    assert Path(hf_hub_download(REPO, FILE)).read_bytes() == data
    assert [entry.headers.get("range") for entry in hub_server.log if entry.method == "GET"] == [None, None]
    assert sleeps == [1]

    # ...while a bigger one resumes with a Range request from the last whole piece.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64)
    hub_server.add_file(REPO, FILE, data[::-1])
    hub_server.log.clear()
    hub_server.truncate_next(100)
    assert Path(hf_hub_download(REPO, FILE)).read_bytes() == data[::-1]
    assert [entry.headers.get("range") for entry in hub_server.log if entry.method == "GET"] == [None, "bytes=64-"]

    # Connections that keep dropping without progress: after 5 resume attempts the raw httpx2 error escapes.
    other = "studio-test/other"
    hub_server.add_file(other, FILE, data)
    hub_server.truncate_next(0, count=100)
    with pytest.raises(httpx2.RemoteProtocolError):
        hf_hub_download(other, FILE)
    assert blob_files(other) == []  # no partial or complete blob left behind

    hub_server.clear_faults()
    assert Path(hf_hub_download(other, FILE)).read_bytes() == data


def test_offline_mode(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    commit = hub_server.add_file(REPO, FILE, b"weights")
    path = hf_hub_download(REPO, FILE)

    set_offline(monkeypatch)
    hub_server.log.clear()
    assert hf_hub_download(REPO, FILE) == path
    assert hf_hub_download(REPO, FILE, revision=commit) == path
    with pytest.raises(LocalEntryNotFoundError) as error:
        hf_hub_download(REPO, "not-cached.bin")
    assert isinstance(error.value.__cause__, OfflineModeIsEnabled)
    assert hub_server.requests == []


def test_connection_refused_without_cache(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = fast_retries(monkeypatch)
    hub_server.add_file(REPO, FILE, b"weights")
    hub_server.stop()

    with pytest.raises(LocalEntryNotFoundError) as error:
        hf_hub_download(REPO, FILE)
    assert isinstance(error.value.__cause__, httpx2.ConnectError)
    assert sleeps == [1, 2, 4, 8, 8]  # ~23 s of back-off without fast_retries

    hub_server.start()  # same port again
    assert Path(hf_hub_download(REPO, FILE)).read_bytes() == b"weights"


def test_plain_url_with_ranges() -> None:
    with HubServer() as server:
        url = server.add_url("/files/style.pth", b"0123456789")

        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as response:
            assert response.headers["Content-Length"] == "10"
            assert response.headers["Accept-Ranges"] == "bytes"
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=4-"})) as response:
            assert response.status == 206
            assert response.headers["Content-Range"] == "bytes 4-9/10"
            assert response.read() == b"456789"
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=10-"}))
        assert error.value.code == 416

        server.truncate_next(3)
        with urllib.request.urlopen(url) as response:
            assert response.headers["Content-Length"] == "10"
            with pytest.raises(http.client.IncompleteRead) as cut:
                response.read()
            assert cut.value.partial == b"012"

        server.fail_next(503, path_contains="style.pth")
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(url)
        assert error.value.code == 503
        assert urllib.request.urlopen(url).read() == b"0123456789"

    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)
