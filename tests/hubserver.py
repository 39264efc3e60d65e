"""A small Hugging Face Hub look-alike for tests.

`HubServer` serves, on 127.0.0.1 from a background thread:

* `/{repo_id}/resolve/{revision}/{filename}` (HEAD and GET) with the headers the real `hf_hub_download` needs,
* `/api/models/{repo_id}[/revision/{revision}]`, enough for `model_info`,
* plain files registered with `add_url`, for downloads that do not go through the Hub client.

Every file answer supports single `Range` requests, with `If-Range` against the ETag. Faults (error statuses, cut
transfers) can be injected for the next requests. `use_hub` points `huggingface_hub` at a server and at a private
cache, `fast_retries` removes the library's retry sleeps so fault tests stay fast.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    import pytest

COMMIT_RE = re.compile(r"[0-9a-f]{40}")
RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str  # as sent, query and percent-escapes included
    headers: dict[str, str]  # names lower-cased


@dataclass
class _Commit:
    sha: str
    files: dict[str, bytes]


@dataclass
class _Repo:
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)  # branch or tag name -> commit sha


@dataclass
class _Fault:
    kind: Literal["status", "truncate"]
    value: int  # the status to answer, or how many body bytes to send
    remaining: int
    path_contains: str | None
    method: str | None

    def matches(self, kind: str, method: str, path: str) -> bool:
        return (
            self.kind == kind
            and (self.method is None or self.method == method)
            and (self.path_contains is None or self.path_contains in path)
        )


class _HttpServer(ThreadingHTTPServer):
    hub: HubServer


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so no keep-alive connection outlives `stop()` and a stopped server
    # really refuses every later request.
    protocol_version = "HTTP/1.0"
    server: _HttpServer

    def do_GET(self) -> None:
        self.server.hub._handle(self, "GET")

    def do_HEAD(self) -> None:
        self.server.hub._handle(self, "HEAD")

    def log_message(self, format: str, *args: object) -> None:
        pass  # requests are recorded in `HubServer.log`; keep test output quiet


class HubServer:
    """Hub-compatible HTTP server for tests. Use as `with HubServer() as server:` or call `start()`/`stop()`."""

    def __init__(self) -> None:
        self.log: list[LoggedRequest] = []  # every request received, in order; `log.clear()` to start afresh
        self._repos: dict[str, _Repo] = {}
        self._urls: dict[str, bytes] = {}
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._port = 0  # 0 until the first start; a restart binds the same port again
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request received, in order: a fresh list built from `log`."""
        with self._lock:
            return [(entry.method, entry.path) for entry in self.log]

    # --- lifecycle ---------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("HubServer.url is known once the server has been started")
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> None:
        if self._httpd is not None:
            return
        httpd = _HttpServer(("127.0.0.1", self._port), _Handler)
        httpd.hub = self
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket: later requests get "connection refused"."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        assert self._thread is not None
        self._thread.join()
        self._httpd = None
        self._thread = None

    def __enter__(self) -> HubServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- content -----------------------------------------------------------------------------------------------

    def add_file(self, repo_id: str, filename: str, data: bytes, *, revision: str | None = None) -> str:
        """Commit `data` as `filename` to a model repo and return the commit sha.

        `revision=None` makes a new commit on "main"; a branch or tag name makes a new commit there (starting from
        that branch, or from main for a new one). A 40-hex sha adds the file to that commit (so several files can
        share one commit: pass the sha a previous call returned), creating it as the new head of main if unknown.
        Each new commit keeps the files of its parent.
        """
        with self._lock:
            repo = self._repos.setdefault(repo_id, _Repo())
            if revision is not None and COMMIT_RE.fullmatch(revision):
                commit = repo.commits.get(revision)
                if commit is None:
                    commit = _Commit(revision, self._head_files(repo, "main"))
                    repo.commits[revision] = commit
                    repo.branches["main"] = revision
                commit.files[filename] = data
                return revision

            branch = revision or "main"
            sha = hashlib.sha1(f"{repo_id}\0{len(repo.commits)}\0{filename}\0".encode() + data).hexdigest()
            files = self._head_files(repo, branch if branch in repo.branches else "main")
            files[filename] = data
            repo.commits[sha] = _Commit(sha, files)
            repo.branches[branch] = sha
            return sha

    def add_url(self, path: str, data: bytes) -> str:
        """Serve `data` at `url + path` (a plain file, not a Hub repo) and return its full URL."""
        if not path.startswith("/"):
            path = "/" + path
        with self._lock:
            self._urls[path] = data
        return self.url + path

    @staticmethod
    def _head_files(repo: _Repo, branch: str) -> dict[str, bytes]:
        sha = repo.branches.get(branch)
        return dict(repo.commits[sha].files) if sha is not None else {}

    # --- fault injection ---------------------------------------------------------------------------------------

    def fail_next(
        self, status: int, count: int = 1, *, path_contains: str | None = None, method: str | None = None
    ) -> None:
        """Answer the next `count` matching requests with `status` (e.g. 500) instead of serving them.

        Without filters any request matches; `path_contains` limits the fault to paths containing that text (a file
        name, a repo id), `method` to "GET" or "HEAD".
        """
        with self._lock:
            self._faults.append(_Fault("status", status, count, path_contains, method))

    def truncate_next(self, n_bytes: int, count: int = 1, *, path_contains: str | None = None) -> None:
        """Cut the next `count` matching GET bodies after `n_bytes` bytes and close the connection.

        The headers still announce the full Content-Length, as a dropped connection would look to the client.
        """
        with self._lock:
            self._faults.append(_Fault("truncate", n_bytes, count, path_contains, "GET"))

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, kind: str, method: str, path: str) -> int | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(kind, method, path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault.value
        return None

    # --- request handling --------------------------------------------------------------------------------------

    def _handle(self, handler: _Handler, method: str) -> None:
        path = unquote(urlsplit(handler.path).path)
        with self._lock:
            self.log.append(LoggedRequest(method, handler.path, {k.lower(): v for k, v in handler.headers.items()}))

        status = self._take_fault("status", method, path)
        if status is not None:
            self._send_error(handler, method, status, "Injected fault")
        elif path in self._urls:
            self._send_file(handler, method, path, self._urls[path], {"ETag": f'"{_sha256(self._urls[path])}"'})
        elif path.startswith("/api/models/"):
            self._model_info(handler, method, path.removeprefix("/api/models/"))
        elif "/resolve/" in path:
            self._resolve(handler, method, path)
        else:
            self._send_error(handler, method, 404, "Not found")

    def _resolve(self, handler: _Handler, method: str, path: str) -> None:
        # Split the raw path: the client quotes the revision, so a revision like "refs/pr/1" arrives as one segment.
        repo_part, _, rest = urlsplit(handler.path).path.partition("/resolve/")
        revision, _, filename = rest.partition("/")
        repo_id, revision, filename = unquote(repo_part.lstrip("/")), unquote(revision), unquote(filename)

        found = self._find_commit(handler, method, repo_id, revision)
        if found is None:
            return
        data = found.files.get(filename)
        if data is None:
            # The Hub names the commit on a missing file; the client caches the absence under `.no_exist/<commit>`.
            self._send_error(handler, method, 404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": found.sha})
            return
        etag = _sha256(data)  # the Hub's ETag of an LFS file is its sha256; the client names the cached blob by it
        headers = {
            "X-Repo-Commit": found.sha,
            "ETag": f'"{etag}"',
            "X-Linked-Etag": f'"{etag}"',
            "X-Linked-Size": str(len(data)),
        }
        self._send_file(handler, method, path, data, headers)

    def _model_info(self, handler: _Handler, method: str, rest: str) -> None:
        repo_id, _, revision = rest.partition("/revision/")
        found = self._find_commit(handler, method, repo_id, revision or "main")
        if found is None:
            return
        info = {
            "id": repo_id,
            "modelId": repo_id,
            "sha": found.sha,
            "private": False,
            "disabled": False,
            "gated": False,
            "siblings": [{"rfilename": name, "size": len(data)} for name, data in sorted(found.files.items())],
        }
        body = json.dumps(info).encode()
        self._send(handler, method, 200, body, {"Content-Type": "application/json"})

    def _find_commit(self, handler: _Handler, method: str, repo_id: str, revision: str) -> _Commit | None:
        """The commit `revision` names in `repo_id`, or None after answering the Hub's 404 for it."""
        commit: _Commit | None = None
        with self._lock:
            repo = self._repos.get(repo_id)
            if repo is not None:
                sha = repo.branches.get(revision, revision)
                commit = repo.commits.get(sha)
        if repo is None:
            self._send_error(handler, method, 404, "Repository not found", "RepoNotFound")
            return None
        if commit is None:
            self._send_error(handler, method, 404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return None
        return commit

    # --- responses ---------------------------------------------------------------------------------------------

    def _send_file(self, handler: _Handler, method: str, path: str, data: bytes, headers: dict[str, str]) -> None:
        """Answer with `data`, or the single byte range the request asks for."""
        headers = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        size = len(data)
        match = RANGE_RE.fullmatch(handler.headers.get("Range", "").strip())
        if_range = handler.headers.get("If-Range")
        if if_range is not None and if_range != headers.get("ETag"):
            match = None  # RFC 9110: the file changed since the client's partial copy, so send all of it
        if match is None or match.groups() == ("", ""):
            self._send(handler, method, 200, data, headers, path)
            return

        first, last = match.groups()
        if first:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        else:  # "bytes=-N": the last N bytes
            start, end = max(size - int(last), 0), size - 1
        if start >= size or start > end:
            self._send(handler, method, 416, b"", {**headers, "Content-Range": f"bytes */{size}"})
            return
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._send(handler, method, 206, data[start : end + 1], headers, path)

    def _send_error(
        self,
        handler: _Handler,
        method: str,
        status: int,
        message: str,
        error_code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer an error the way the Hub does: `X-Error-Code` (which the client maps to exception types),
        `X-Error-Message` and a JSON body `{"error": ...}`."""
        headers = {**(headers or {}), "Content-Type": "application/json", "X-Error-Message": message}
        if error_code is not None:
            headers["X-Error-Code"] = error_code
        self._send(handler, method, status, json.dumps({"error": message}).encode(), headers)

    def _send(
        self,
        handler: _Handler,
        method: str,
        status: int,
        body: bytes,
        headers: dict[str, str],
        path: str | None = None,
    ) -> None:
        """Send status, headers and (for GET) the body; a pending truncate fault matching `path` (unquoted) cuts
        the body short. Error answers pass no `path`: only file bodies are ever cut."""
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if method != "GET" or not body:
            return
        cut = self._take_fault("truncate", method, path) if path is not None else None
        try:
            handler.wfile.write(body if cut is None else body[:cut])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on this answer; nothing left to do


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- pointing huggingface_hub at a server ----------------------------------------------------------------------


def use_hub(monkeypatch: pytest.MonkeyPatch, endpoint: str, hf_home: Path) -> Path:
    """Make `huggingface_hub` talk to `endpoint` and cache under `hf_home`; return the hub cache folder.

    `huggingface_hub.constants` reads the environment once, at import, and a few modules copy values from it at
    their own import; patching the environment alone changes nothing for an already imported library. So this sets
    the variables (for subprocesses and code that reads them later) and patches every copy `hf_hub_download`,
    `model_info` and the cache helpers read. Tokens are cleared so a developer's real token is never sent.
    """
    from huggingface_hub import constants, hf_api
    from huggingface_hub.utils import _cache_assets, _cache_manager

    hub_cache = hf_home / "hub"
    assets_cache = hf_home / "assets"
    token_path = hf_home / "token"

    for name, value in {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hub_cache),
        "HF_ASSETS_CACHE": str(assets_cache),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(token_path),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }.items():
        monkeypatch.setenv(name, value)
    unset = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_CACHE")
    for name in unset:
        monkeypatch.delenv(name, raising=False)

    for name, value in {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hub_cache),
        "HUGGINGFACE_HUB_CACHE": str(hub_cache),
        "HF_ASSETS_CACHE": str(assets_cache),
        "HUGGINGFACE_ASSETS_CACHE": str(assets_cache),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(token_path),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
    }.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(_cache_manager, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(_cache_assets, "HF_ASSETS_CACHE", str(assets_cache))
    # `huggingface_hub.model_info` & co. are methods of an `HfApi` built at import, which kept the old endpoint.
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    return hub_cache


def set_offline(monkeypatch: pytest.MonkeyPatch, offline: bool = True) -> None:
    """Switch `HF_HUB_OFFLINE` on or off for an already imported `huggingface_hub`."""
    from huggingface_hub import constants

    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)


class _NoSleepTime:
    """Stands in for the `time` module inside huggingface_hub: same module, but `sleep` only records."""

    def __init__(self, sleeps: list[float]) -> None:
        self._sleeps = sleeps

    def sleep(self, seconds: float) -> None:
        self._sleeps.append(seconds)

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def fast_retries(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Skip huggingface_hub's retry back-off (1 s, 2 s, 4 s, 8 s, 8 s on 5xx and connection errors; 1 s before
    resuming a cut download). Returns the list the skipped sleeps are recorded in, to assert that retries happened.
    """
    from huggingface_hub import file_download
    from huggingface_hub.utils import _http

    sleeps: list[float] = []
    monkeypatch.setattr(file_download, "time", _NoSleepTime(sleeps))
    monkeypatch.setattr(_http, "time", _NoSleepTime(sleeps))
    return sleeps
