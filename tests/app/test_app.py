"""The real app, launched once, driven through `gradio_client` like any API user would.

Uses the offline models only (omniart-eyes, vgg19-caffe); Hub models are uncached here and HF_HUB_OFFLINE is set,
so selecting them must give a clear message. Everything asserts real outputs: sizes, pixels, metadata, errors.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError, ValidationError
from PIL import Image, PngImagePlugin

from studio.api import METADATA_KEY, Studio, read_png_settings
from tests.apprunner import running_app


class ObservedStudio(Studio):
    """The real Studio, plus a record of how each long job ended (tests check that cancelling stops the work)."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.endings: list[tuple[str, str]] = []

    def _observed(self, kind: str, call: Callable[[], object]) -> object:
        try:
            result = call()
        except BaseException as error:
            self.endings.append((kind, type(error).__name__))
            raise
        self.endings.append((kind, "finished"))
        return result

    def stylize(self, **options: object):  # type: ignore[override]
        return self._observed("stylize", lambda: super(ObservedStudio, self).stylize(**options))

    def walk(self, **options: object):  # type: ignore[override]
        return self._observed("walk", lambda: super(ObservedStudio, self).walk(**options))


STUDIO = ObservedStudio(device="cpu")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app on a free local port, launched once for the module, offline, on CPU."""
    with running_app(STUDIO, tmp_path_factory.mktemp("app")) as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url: str) -> Client:
    return Client(app_url, verbose=False, analytics_enabled=False)


def _generate(client: Client, *, seed: int = 5, batch: int = 1, psi: float = 1.0, class_name: str = "blue",
              directions: tuple[float, ...] = (0, 0, 0, 0, 0), model: str = "omniart-eyes") -> tuple:  # fmt: skip
    return client.predict(model, seed, batch, psi, class_name, *directions, api_name="/generate")


def _pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def _gallery_paths(gallery: list[dict]) -> list[str]:
    return [item["image"] for item in gallery]


# --- API surface ----------------------------------------------------------------------------------------------------


def test_api_lists_the_documented_endpoints(client: Client) -> None:
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    for name in ("/generate", "/fetch_weights", "/models", "/read_settings"):
        assert name in endpoints, sorted(endpoints)
    generate = endpoints["/generate"]
    names = [parameter["parameter_name"] for parameter in generate["parameters"]]
    assert names[:5] == ["model", "seed", "batch", "psi", "class_name"]
    assert names[5:] == [f"direction_{index}" for index in range(1, 6)]


# --- Generate -------------------------------------------------------------------------------------------------------


def test_generate_returns_pngs_with_settings_one_per_seed(client: Client) -> None:
    gallery, summary, png, first_seed = _generate(client, seed=5, batch=3, class_name="green")
    paths = _gallery_paths(gallery)
    assert [item["caption"] for item in gallery] == ["seed 5", "seed 6", "seed 7"]
    assert first_seed == 5
    assert "omniart-eyes" in summary and "5, 6, 7" in summary and "green" in summary
    for path, seed in zip(paths, (5, 6, 7), strict=True):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (128, 128)
        settings = read_png_settings(path)  # the served file is the saved PNG, metadata intact
        assert settings.model == "omniart-eyes" and settings.seeds == (seed,) and settings.class_name == "green"
    assert read_png_settings(png).seeds == (5,)
    # the images differ from one another (three different seeds)
    first, second = _pixels(paths[0]), _pixels(paths[1])
    assert np.abs(first - second).mean() > 5


def test_generate_is_deterministic_by_seed(client: Client) -> None:
    first = _pixels(_gallery_paths(_generate(client, seed=11)[0])[0])
    again = _pixels(_gallery_paths(_generate(client, seed=11)[0])[0])
    other = _pixels(_gallery_paths(_generate(client, seed=12)[0])[0])
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 5


def test_generate_matches_the_studio_called_directly(client: Client) -> None:
    gallery = _generate(client, seed=21, psi=0.7, class_name="hazel")[0]
    direct = Studio(device="cpu").generate(model="omniart-eyes", seed=21, psi=0.7, class_name="hazel").images[0]
    np.testing.assert_array_equal(_pixels(_gallery_paths(gallery)[0]), np.asarray(direct, dtype=np.int16))


def test_truncation_and_directions_change_the_image(client: Client) -> None:
    base = _pixels(_gallery_paths(_generate(client, seed=3)[0])[0])
    truncated = _pixels(_gallery_paths(_generate(client, seed=3, psi=0.3)[0])[0])
    moved_gallery = _generate(client, seed=3, directions=(3.0, 0, 0, 0, -2.0))[0]
    moved = _pixels(_gallery_paths(moved_gallery)[0])
    assert np.abs(base - truncated).mean() > 2
    assert np.abs(base - moved).mean() > 2
    assert read_png_settings(_gallery_paths(moved_gallery)[0]).directions == {0: 3.0, 4: -2.0}


def test_empty_seed_draws_a_random_one_and_reports_it(client: Client) -> None:
    gallery, _, png, first_seed = client.predict(
        "omniart-eyes", None, 1, 1.0, "amber", 0, 0, 0, 0, 0, api_name="/generate"
    )
    assert isinstance(first_seed, (int, float)) and 0 <= first_seed < 2**32
    assert read_png_settings(png).seeds == (int(first_seed),)
    assert gallery[0]["caption"] == f"seed {int(first_seed)}"


def test_read_settings_round_trips_a_saved_png(client: Client) -> None:
    png = _generate(client, seed=40, batch=2, psi=0.8, class_name="red", directions=(1.5, 0, 0, 0, 0))[2]
    model, seed, batch, psi, class_update, *amounts = client.predict(handle_file(png), api_name="/read_settings")
    assert (model, seed, batch, psi) == ("omniart-eyes", 40, 1, 0.8)
    assert class_update["value"] == "red"
    assert amounts == [1.5, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (
            {"model": "wikiart-cubism", "seeds": [4]},
            "this PNG was made with wikiart-cubism, whose weights are not on this machine, and the studio is offline",
        ),
        ({"model": "omniart-eyes", "seeds": [4], "class_name": "zebra"}, "names class 'zebra', which omniart-eyes"),
        ({"model": "vgg19-caffe", "seeds": [4]}, "vgg19-caffe, which is not an image generator (its kind: vgg-enc"),
    ],
)
def test_read_settings_refuses_what_it_cannot_remake_before_changing_any_control(
    client: Client, tmp_path: Path, stored: dict, expected: str
) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text(METADATA_KEY, json.dumps(stored))
    png = tmp_path / "made-elsewhere.png"
    Image.new("RGB", (8, 8)).save(png, pnginfo=info)
    with pytest.raises(AppError, match=re.escape(expected)):
        client.predict(handle_file(str(png)), api_name="/read_settings")


def test_an_empty_number_box_says_so(app_url: str) -> None:
    kind, payload = call_raw(app_url, "generate", '{"data": ["omniart-eyes", 5, 1, null, "blue", 0, 0, 0, 0, 0]}')
    assert kind == "refused" and "psi: truncation psi is empty: type a number" in payload["error"], payload


# --- Models ---------------------------------------------------------------------------------------------------------


def test_models_table_says_what_is_cached(client: Client) -> None:
    table = client.predict(api_name="/models")
    rows = {row[0]: row for row in table["data"]}
    assert rows["omniart-eyes"][2].startswith("✅") and rows["vgg19-caffe"][2].startswith("✅")
    assert rows["wikiart-cubism"][2] == "⛔ missing (offline)"  # the app under test is offline
    assert {"generator", "vgg-encoder", "adain-decoder"} <= {row[1] for row in rows.values()}


def test_fetch_verifies_an_offline_model(client: Client) -> None:
    _, message = client.predict("omniart-eyes", api_name="/fetch_weights")
    assert "omniart-eyes" in message and "dd486abbd738bfe3" in message  # the pinned sha256


def test_uncached_hub_model_gives_a_clear_message(app_url: str) -> None:
    visitor = Client(app_url, verbose=False, analytics_enabled=False)  # no pictures on show to go back to
    for endpoint, args in (
        ("/select_model", ("wikiart-cubism",)),
        ("/generate", ("wikiart-cubism", 1, 1, 1.0, None, 0, 0, 0, 0, 0)),
        ("/fetch_weights", ("fastgan-painting",)),
    ):
        with pytest.raises(AppError) as caught:
            visitor.predict(*args, api_name=endpoint)
        message = str(caught.value)
        assert "not cached, and the studio is offline (HF_HUB_OFFLINE set)" in message, (endpoint, message)
        assert "unset HF_HUB_OFFLINE and run python -m studio weights fetch" in message, (endpoint, message)
        assert "Traceback" not in message


def test_a_model_that_cannot_load_gives_way_to_the_one_on_show(app_url: str) -> None:
    visitor = Client(app_url, verbose=False, analytics_enabled=False)  # its own session: its own pictures on show
    _generate(visitor, seed=3, class_name="green")
    model, class_menu, summary = visitor.predict("wikiart-cubism", api_name="/select_model")
    assert model == "omniart-eyes" and class_menu["value"] == "green" and ["green", "green"] in class_menu["choices"]
    assert "Painted eyes" in summary  # the summary of the model the menu went back to
    model, class_menu, summary = visitor.predict("omniart-eyes", api_name="/select_model")
    assert class_menu == {"__type__": "update"} and model == {"__type__": "update"} and "Painted eyes" in summary


# --- bad input ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "refusal", "expected"),
    [  # ValidationError: the check before the render, which the page shows on the control itself
        ({"seed": 1.5}, ValidationError, "- seed: seed must be a whole number"),
        ({"seed": -1}, ValidationError, "- seed: seed must be a whole number from 0 to 4294967295, got -1"),
        ({"batch": 2.5}, ValidationError, "- batch: batch must be a whole number"),
        ({"class_name": "purple"}, AppError, "no class 'purple'"),
        ({"model": "no-such-model"}, ValidationError, "- model: no generator named 'no-such-model': pick one"),
        ({"model": "vgg19-caffe"}, ValidationError, "- model: no generator named 'vgg19-caffe'"),
    ],
)
def test_bad_generate_input_gives_a_message(
    client: Client, arguments: dict, refusal: type[Exception], expected: str
) -> None:
    with pytest.raises(refusal, match=re.escape(expected)):
        _generate(client, **arguments)


def call_raw(app_url: str, api_name: str, body: str) -> tuple[str, dict]:
    """POST a hand-written JSON body (gradio_client refuses to send NaN) and read the event stream's outcome:
    ("complete", data), ("error", {"error": message}), or ("refused", {"error": message}) when the checks before
    the queue refused it (HTTP 422 lists a message per argument; 400 is gradio's own range check)."""
    started = httpx.post(
        f"{app_url}gradio_api/call/{api_name}", content=body, headers={"content-type": "application/json"}
    )
    if started.status_code in (400, 422):
        detail = started.json()["detail"]
        if isinstance(detail, list):
            detail = "; ".join(
                f"{item['parameter_name']}: {item['message']}" for item in detail if not item["is_valid"]
            )
        return "refused", {"error": str(detail)}
    started.raise_for_status()
    event_id = started.json()["event_id"]
    kind = ""
    with httpx.stream("GET", f"{app_url}gradio_api/call/{api_name}/{event_id}", timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                kind = line.removeprefix("event:").strip()
            elif line.startswith("data:") and kind in ("complete", "error"):
                return kind, json.loads(line.removeprefix("data:").strip() or "null")
    raise AssertionError("the event stream ended without an outcome")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ('"omniart-eyes", 5, 1, NaN, "blue", 0, 0, 0, 0, 0', "psi: truncation psi must be a finite number"),
        ('"omniart-eyes", 5, 1, Infinity, "blue", 0, 0, 0, 0, 0', "psi: truncation psi must be a finite number"),
        ('"omniart-eyes", 5, 1, 2.0, "blue", 0, 0, 0, 0, 0', "psi: truncation psi must be between 0 and 1.5, got 2"),
        ('"omniart-eyes", 5, 1, 1.0, "blue", 0, -9, 0, 0, 0', "direction_2: direction 2 must be between -5 and 5"),
        ('"omniart-eyes", NaN, 1, 1.0, "blue", 0, 0, 0, 0, 0', "seed: seed must be a finite number"),
        ('"omniart-eyes", 5, NaN, 1.0, "blue", 0, 0, 0, 0, 0', "batch: batch must be a finite number"),
        ('"omniart-eyes", 5, 1, 1.0, "blue", NaN, 0, 0, 0, 0', "direction_1: direction 1 must be a finite number"),
    ],
)
def test_nan_and_infinity_sliders_give_a_message(app_url: str, values: str, expected: str) -> None:
    kind, payload = call_raw(app_url, "generate", f'{{"data": [{values}]}}')
    assert kind == "refused" and expected in payload["error"], payload
    assert (
        call_raw(app_url, "generate", '{"data": ["omniart-eyes", 5, 1, 1.0, "blue", 0, 0, 0, 0, 0]}')[0] == "complete"
    )


def test_bad_files_give_messages_and_the_server_keeps_serving(client: Client, tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    huge = tmp_path / "huge.png"
    huge.write_bytes(huge_png_header(20000, 20000))
    truncated = tmp_path / "cut.png"
    whole = Path(_generate(client, seed=1)[2]).read_bytes()
    truncated.write_bytes(whole[: whole.index(METADATA_KEY.encode()) + 40])  # cut inside the settings
    pixels_cut = tmp_path / "pixels-cut.png"
    pixels_cut.write_bytes(whole[: whole.index(b"IDAT") + 200])  # header and settings intact: still recreated
    damaged = tmp_path / "damaged.png"  # a seed beyond 64 bits once broke the response itself
    info = PngImagePlugin.PngInfo()
    info.add_text(METADATA_KEY, json.dumps({"model": "omniart-eyes", "seeds": [2**70]}))
    Image.new("RGB", (8, 8)).save(damaged, pnginfo=info)
    for bad, expected in (
        (text, "not a picture file this studio can read; give a PNG saved from Generate"),
        (huge, "too large"),
        (truncated, "truncated|corrupt"),
        (damaged, "damaged: seed must be between"),
    ):
        with pytest.raises(AppError, match=expected):
            client.predict(handle_file(str(bad)), api_name="/read_settings")
    assert client.predict(handle_file(str(pixels_cut)), api_name="/read_settings")[:2] == ("omniart-eyes", 1)
    assert _generate(client, seed=2)[3] == 2  # still serving


def huge_png_header(width: int, height: int) -> bytes:
    """A valid, tiny PNG that claims width x height 1-bit pixels (a decompression bomb: a few KB on disk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def test_huge_png_header_is_small_and_valid() -> None:
    data = huge_png_header(20000, 20000)
    assert len(data) < 100_000
    assert data[12:16] == b"IHDR" and struct.unpack(">II", data[16:24]) == (20000, 20000)
    # PIL refuses it as a decompression bomb before decoding a single row
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))


# --- Latent walk ----------------------------------------------------------------------------------------------------


def _walk(client: Client, seeds: str = "3, 14, 15", *, frames: int = 12, fps: float = 12, loop: bool = True,
          easing: str = "spline", fmt: str = "mp4", psi: float = 1.0, class_name: str = "blue", size: str = "native",
          style: str | None = None, strength: float = 1.0, model: str = "omniart-eyes",
          directions: tuple[float, ...] = (0, 0, 0, 0, 0), route: str = "keyframes", spread: float = 1.0,
          ) -> tuple:  # fmt: skip
    style_file = handle_file(style) if style else None
    return client.predict(
        model, seeds, frames, fps, loop, easing, fmt, psi, class_name, size, style_file, strength, *directions, route,
        spread, api_name="/walk",
    )  # fmt: skip


def _decode(path: str) -> tuple[list[np.ndarray], float]:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24").astype(np.int16) for frame in container.decode(stream)]
        return frames, float(stream.average_rate)


def test_walk_renders_a_video_that_starts_on_the_first_keyframe(client: Client) -> None:
    video, file, summary = _walk(client, frames=12, fps=12)
    assert video is not None and Path(video).suffix == ".mp4" and Path(file).suffix == ".mp4"
    frames, rate = _decode(video)
    assert len(frames) == 12 and rate == 12 and frames[0].shape == (128, 128, 3)
    assert "keyframes 3, 14, 15 · 12 frames at 12 fps" in summary
    keyframe = _pixels(_gallery_paths(_generate(client, seed=3, class_name="blue")[0])[0])
    assert np.abs(frames[0] - keyframe).mean() < 8  # the walk starts on seed 3's artwork (codec loss aside)
    assert np.abs(frames[6] - keyframe).mean() > 8  # and goes somewhere else
    again, _ = _decode(_walk(client, frames=12, fps=12)[0])
    assert np.abs(again[5] - frames[5]).mean() < 1  # same seeds, same walk


def test_walk_moves_every_frame_along_the_latent_directions(client: Client) -> None:
    moved = (3.0, 0, 0, 0, -2.0)
    video, _, summary = _walk(client, seeds="3, 14", frames=6, fps=6, directions=moved)
    assert "keyframes 3, 14 · directions 1: +3, 5: -2 · 6 frames" in summary
    frames, _ = _decode(video)
    keyframe = _pixels(_gallery_paths(_generate(client, seed=3, class_name="blue", directions=moved)[0])[0])
    plain = _pixels(_gallery_paths(_generate(client, seed=3, class_name="blue")[0])[0])
    assert np.abs(keyframe - plain).mean() > 8  # the directions change the artwork
    assert np.abs(frames[0] - keyframe).mean() < 8  # and the walk starts on the moved one (codec loss aside)
    # an API client that leaves the directions out walks without them
    model, seeds = "omniart-eyes", "3, 14"
    unmoved, _, summary = client.predict(
        model, seeds, 6, 6, True, "spline", "mp4", 1.0, "blue", "native", None, 1.0, api_name="/walk"
    )
    assert "directions" not in summary
    assert np.abs(_decode(unmoved)[0][0] - plain).mean() < 8


def test_a_noise_loop_circles_one_seed_and_comes_back(client: Client) -> None:
    keyframe = _pixels(_gallery_paths(_generate(client, seed=3, class_name="blue")[0])[0])
    distances = {}
    for spread in (0.2, 1.0):
        video, _, summary = _walk(client, seeds="3", frames=16, fps=16, route="noise-loop", spread=spread)
        assert f"a noise loop around seed 3 (spread {spread:g}) · 16 frames" in summary
        frames, _ = _decode(video)
        after = frames[1:] + frames[:1]
        steps = [np.abs(later - earlier).mean() for earlier, later in zip(frames, after, strict=True)]
        assert max(steps) < 3 * np.mean(steps)  # no jump anywhere, the end joining the start included
        distances[spread] = np.mean([np.abs(frame - keyframe).mean() for frame in frames])
    assert distances[0.2] < distances[1.0]  # a small spread stays near the seed's artwork


def test_walk_formats_and_frame_size(client: Client) -> None:
    video, gif, _ = _walk(client, fmt="gif", frames=8, size="256")
    assert video is None
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames == 8 and image.size == (256, 256)
    video, archive, _ = _walk(client, fmt="zip", frames=6)
    import zipfile

    with zipfile.ZipFile(archive) as bundle:
        assert len([name for name in bundle.namelist() if name.endswith(".png")]) == 6
    webm, _, _ = _walk(client, fmt="webm", frames=6)
    frames, _ = _decode(webm)
    assert len(frames) == 6
    _, typed, _ = _walk(client, fmt="gif", frames=3, size="96")  # a size typed into the menu
    with Image.open(typed) as image:
        assert image.size == (96, 96)


@pytest.mark.parametrize(
    ("arguments", "refusal", "expected"),
    [  # ValidationError: refused before the queue, the message on the control to change
        ({"seeds": "3, x, 5"}, ValidationError, "- seeds: keyframe seeds are whole numbers separated by commas; 'x'"),
        ({"seeds": ""}, ValidationError, "- seeds: give at least two keyframe seeds"),
        ({"seeds": "3, 99999999999"}, ValidationError, "- seeds: seed 99999999999 is outside"),
        ({"frames": 1}, ValidationError, "- frames: frames must be a whole number from 2 to 600, got 1"),
        ({"fps": 0}, ValidationError, "- fps: fps must be between 1 and 60, got 0"),
        ({"psi": 3.0}, ValidationError, "- psi: truncation psi must be between 0 and 1.5, got 3.0"),
        ({"strength": -1.0}, ValidationError, "- style_strength: style strength must be between 0 and 1"),
        ({"size": "8"}, ValidationError, "- size: frame size must be a whole number of pixels, at least 16, got 8"),
        ({"size": "huge"}, ValidationError, "- size: frame size must be a number, got 'huge'"),
        ({"model": "no-such-model"}, ValidationError, "- model: no generator named 'no-such-model'"),
        ({"model": "vgg19-caffe"}, ValidationError, "- model: no generator named 'vgg19-caffe'"),
        (
            {"seeds": "3", "loop": False},
            ValidationError,
            "- seeds: a walk needs at least two keyframe seeds; with one",
        ),
        ({"seeds": "1, 2, 3, 4", "frames": 3}, ValidationError, "- frames: 3 frames cannot show 4 keyframes"),
        ({"fmt": "gif", "fps": 55}, ValidationError, "- fps: GIF plays at most 50 fps"),
        ({"fmt": "GIF", "fps": 55}, ValidationError, "- fps: GIF plays at most 50 fps"),
        ({"class_name": "purple"}, ValidationError, "- class_name: omniart-eyes has no class 'purple'; choose one of"),
        ({"fmt": "avi"}, ValidationError, "- video_format: video format must be one of ('mp4', 'webm', 'gif', 'zip')"),
        ({"easing": "bounce"}, ValidationError, "- easing: easing must be one of"),
        ({"directions": (0, 0, 9, 0, 0)}, ValidationError, "- direction_3: direction 3 must be between -5 and 5"),
        ({"route": "noise-loop"}, ValidationError, "- seeds: a noise loop circles one seed: leave only one (e.g. 3)"),
        ({"route": "spiral"}, ValidationError, "- route: route must be one of ('keyframes', 'noise-loop')"),
        (
            {"route": "noise-loop", "seeds": "3", "spread": 0.0},
            ValidationError,
            "- spread: noise loop spread must be between 0.01 and 1, got 0.0",
        ),
        (
            {"route": "noise-loop", "seeds": " "},
            ValidationError,
            "- seeds: give the one seed a noise loop circles, e.g. 3",
        ),
    ],
)
def test_bad_walk_input_gives_a_message(
    client: Client, arguments: dict, refusal: type[Exception], expected: str
) -> None:
    with pytest.raises(refusal, match=re.escape(expected)):
        _walk(client, **arguments)


def test_nan_walk_sliders_give_a_message(app_url: str) -> None:
    values = '"omniart-eyes", "3, 4", NaN, 12, true, "spline", "mp4", 1.0, "blue", "native", null, 1.0, 0, 0, 0, 0, 0'
    body = f'{{"data": [{values}, "keyframes", 1.0]}}'
    kind, payload = call_raw(app_url, "walk", body)
    assert kind == "refused" and "frames: frames must be a finite number" in payload["error"], payload


def test_walk_style_needs_adain_weights_offline(client: Client, shared_data: Path) -> None:
    # refused before the queue, on the style box: the video on show stays
    expected = "- style: offline, without AdaIN's weights a walk cannot be stylized: remove the style picture"
    with pytest.raises(ValidationError, match=re.escape(expected)):
        _walk(client, frames=4, style=str(shared_data / "styles" / "mondrian_cropped.jpg"))


def test_walk_with_an_unreadable_style_picture_names_it(client: Client, tmp_path: Path) -> None:
    broken = tmp_path / "style.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValidationError, match=r"- style: style picture .*is not a picture file"):
        _walk(client, frames=4, style=str(broken))


def test_walk_with_a_model_not_on_this_machine_is_refused_offline(client: Client) -> None:
    expected = (
        "- model: wikiart-cubism's weights are not on this machine and the studio is offline: pick a model marked"
    )
    with pytest.raises(ValidationError, match=re.escape(expected)):
        _walk(client, frames=4, model="wikiart-cubism")


def _wait_for_frames(job) -> None:
    """Until the job reports its first batch of frames done (the render is under way)."""

    def frames_done() -> int:
        units = job.status().progress_data or []
        return max((unit.index or 0 for unit in units if unit.length), default=0)

    deadline = time.monotonic() + 60
    while frames_done() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert frames_done() >= 1, "the render never started"


def test_cancelling_a_walk_stops_the_render(client: Client) -> None:
    outputs = Path(os.environ["STUDIO_OUTPUT_DIR"])
    before = set(outputs.glob("*walk-*"))
    job = client.submit(
        "omniart-eyes", "1, 2, 3, 4", 600, 24, True, "spline", "mp4", 1.0, "blue", "512", None, 1.0, api_name="/walk"
    )
    _wait_for_frames(job)
    partial = [path for path in outputs.glob(".walk-*.part") if path not in before]
    assert partial, "the render should be writing its hidden partial file"
    job.cancel()
    # The video is written to a hidden .part file, renamed when the render ends: its going away, with far fewer than
    # the 600 frames in the finished file, proves the computation itself ended.
    deadline = time.monotonic() + 30
    while partial[0].exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not partial[0].exists(), "the walk kept rendering after the job was cancelled"
    (finished,) = [path for path in outputs.glob("walk-*-1-2-3-4-*.mp4") if path not in before]
    assert 16 <= len(_decode(str(finished))[0]) < 600
    assert _walk(client, frames=4)[2]  # the server (and the walk's concurrency slot) is free again


def test_the_stop_button_keeps_the_frames_a_walk_made(client: Client) -> None:
    from studio.ui import WALK_STOPPED

    nothing = {"__type__": "update"}
    assert client.predict(api_name="/stop_walk") == (nothing, nothing, nothing, nothing)  # nothing running
    job = client.submit(
        "omniart-eyes", "5, 6", 600, 24, True, "spline", "mp4", 1.0, "blue", "512", None, 1.0, api_name="/walk"
    )
    _wait_for_frames(job)
    endings = len(STUDIO.endings)
    player, gif, file, note = client.predict(api_name="/stop_walk")  # the same visitor (session) as the walk
    video, walk_file, summary = job.result(timeout=30)
    assert STUDIO.endings[endings:] == [("walk", "finished")]
    # Stop shows the file of the frames made (the page cancels the walk's event, so the walk cannot show it itself)
    made = re.match(r"\*\*Stopped\*\* after (\d+) of 600 frames: the file holds those, so it does not loop", note)
    assert made and note == summary and summary != WALK_STOPPED
    assert Path(file).read_bytes() == Path(walk_file).read_bytes() == Path(player["value"]).read_bytes()
    assert player["visible"] is True and gif["visible"] is False
    frames, _ = _decode(walk_file)
    assert len(frames) == int(made.group(1)) and frames[0].shape == (512, 512, 3)


# --- Stylize --------------------------------------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "studio" / "assets" / "examples"
PHOTO = str(EXAMPLES / "chelsea.jpg")
PAINTING = str(EXAMPLES / "woman_with_hat_matisse.jpg")


def _stylize(client: Client, content: str | None = PHOTO, styles: tuple[str | None, ...] = (PAINTING,), *,
             weights: tuple[float, ...] = (1.0, 1.0, 1.0), method: str = "gatys", strength: float = 0.8,
             preserve_color: str = "none", size: int = 64, steps: int = 4, mask: str | None = None,
             seed: int = 0) -> tuple:  # fmt: skip
    slots = [handle_file(style) if style else None for style in (*styles, None, None, None)[:3]]
    return client.predict(
        handle_file(content) if content else None,
        slots[0], weights[0], slots[1], weights[1], slots[2], weights[2],
        method, strength, preserve_color, size, steps, handle_file(mask) if mask else None, seed,
        api_name="/stylize",
    )  # fmt: skip


def test_stylize_gatys_returns_a_png_with_its_settings(client: Client) -> None:
    image, download, summary = _stylize(client, size=64, steps=4)
    with Image.open(image) as picture:
        assert picture.format == "PNG" and picture.size == (64, 43)  # chelsea is 451x300: long side 64
        settings = json.loads(picture.text["gan-art-studio:stylize"])
    assert settings["method"] == "gatys" and settings["steps"] == 4 and settings["styles"] == [Path(PAINTING).name]
    assert Path(download).read_bytes() == Path(image).read_bytes()
    assert "gatys" in summary and "64×43" in summary
    photo = np.asarray(Image.open(PHOTO).convert("RGB").resize((64, 43)), dtype=np.int16)
    assert np.abs(_pixels(image) - photo).mean() > 1  # four steps from the photo already move it


def test_stylize_gatys_shows_its_pictures_so_far_then_the_finished_one(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("studio.ui.PICTURE_EVERY_SECONDS", 0.0)  # a picture after every step but the last
    outputs = Path(os.environ["STUDIO_OUTPUT_DIR"])
    before = set(outputs.glob("stylized-*.png"))
    job = client.submit(
        handle_file(PHOTO), handle_file(PAINTING), 1.0, None, 1.0, None, 1.0, "gatys", 0.8, "none", 64, 6, None, 0,
        api_name="/stylize",
    )  # fmt: skip
    finished = job.result(timeout=120)
    shown = job.outputs()
    assert len(shown) == 6 and shown[-1] == finished
    for step, (image, _download, summary) in enumerate(shown[:-1], start=1):
        assert f"the picture after {step} of 6 steps" in summary and "picture so far" in summary
        with Image.open(image) as picture:
            settings = json.loads(picture.text["gan-art-studio:stylize"])
            assert picture.size == (64, 43)
        assert settings["steps"] == step and settings["planned_steps"] == 6
    image, download, summary = finished
    assert "6 steps" in summary and "the picture after" not in summary
    settings = json.loads(Image.open(image).text["gan-art-studio:stylize"])
    assert settings["steps"] == 6 and "planned_steps" not in settings
    # the finished picture moved on from the first picture so far; of the PNGs written, only the finished one stays
    assert np.abs(_pixels(image) - _pixels(shown[0][0])).mean() > 0.5
    assert [path.name for path in set(outputs.glob("stylized-*.png")) - before] == [Path(image).name]


def test_stylize_adain_offline_is_refused_before_the_queue(client: Client) -> None:
    with pytest.raises(ValidationError, match="- method: offline, without AdaIN's weights: use Gatys"):
        _stylize(client, method="adain")  # refused before the queue, with the message on the Method control


def test_stylize_preview_without_adain_weights_is_a_quiet_note(client: Client) -> None:
    image, note = client.predict(
        handle_file(PHOTO), handle_file(PAINTING), 1.0, None, 1.0, None, 1.0, "adain", 0.5, "none", 64, 4, None, 0,
        api_name="/stylize_preview",
    )  # fmt: skip
    assert image == {"__type__": "update"}  # the picture on show stays as it is
    # the app under test is offline: fetching cannot help, so the note does not suggest it
    assert "AdaIN" in note and "the studio is offline: choose Gatys" in note and "fetch" not in note


def test_stylize_preview_leaves_a_gatys_picture_and_its_summary_alone(client: Client) -> None:
    image, note = client.predict(
        handle_file(PHOTO), handle_file(PAINTING), 1.0, None, 1.0, None, 1.0, "gatys", 0.5, "luminance", 64, 4,
        None, 0, api_name="/stylize_preview",
    )  # fmt: skip
    assert image == {"__type__": "update"} and note == {"__type__": "update"}


STYLIZE_CONTROLS = ("content", "style_1", "weight_1", "style_2", "weight_2", "style_3", "weight_3", "method",
                    "strength", "preserve_color", "size", "steps", "mask", "seed")  # fmt: skip


def test_the_stylize_checks_mark_what_the_run_refuses_and_only_that(tmp_path: Path) -> None:
    from studio.ui import StudioUI

    ui = StudioUI(Studio(device="cpu"))
    mask = tmp_path / "mask.png"
    Image.new("L", (64, 64), 255).save(mask)

    def refusals(**changed: object) -> dict[str, str]:
        values = dict(zip(STYLIZE_CONTROLS, (PHOTO, PAINTING, 1.0, PAINTING, 1.0, None, 1.0, "adain", 0.5, "none",
                                             64, 4, str(mask), 0), strict=True)) | changed  # fmt: skip
        verdicts = ui.check_stylize_inputs(*values.values())
        return {name: verdict["message"] for name, verdict in zip(STYLIZE_CONTROLS, verdicts, strict=True)
                if not verdict["is_valid"]}  # fmt: skip

    # a mask splits the picture between two styles: with one, the mask box says so (not a pop-up after the queue)
    assert refusals(style_2=None)["mask"].startswith("a mask needs exactly two styles (inside, outside), got 1")
    # an empty slot's weight and AdaIN's unused steps are not the run's business, so not refused
    unused = refusals(weight_3=float("nan"), steps="")
    assert not {"weight_3", "steps", "mask"} & set(unused)
    assert "steps" in refusals(method="gatys", mask=None, steps="")
    # numbers too large for a float are refused on their boxes, shortened
    huge = refusals(weight_1=10**400, size=10**400)
    assert huge["weight_1"].startswith("style 1 weight must be a number, got 1000") and len(huge["weight_1"]) < 90
    assert huge["size"].startswith("size must be a number, got 1000")


def test_a_preview_that_cannot_run_says_why_in_its_note_without_a_pop_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from studio import ui as ui_module
    from studio.ui import StudioUI

    monkeypatch.setattr(ui_module, "is_cached", lambda spec: True)  # as if AdaIN's weights were here
    image, note = StudioUI(Studio(device="cpu")).stylize_preview(
        PHOTO, PAINTING, 0.0, None, 1.0, None, 1.0, "adain", 0.5, "none", 64, 4, None, 0
    )
    assert image == {"__type__": "update"} and note == (
        "No preview: style weights sum to zero; give at least one a positive weight"
    )


def test_stylize_preview_never_starts_a_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A slider drag must not wait for AdaIN's weights (with a network but no Hub, that is a 23 s timeout)."""
    from studio.ui import StudioUI

    for switch in ("HF_HUB_OFFLINE", "STUDIO_OFFLINE"):  # online: the note says how to fetch them
        monkeypatch.delenv(switch, raising=False)
    studio = Studio(device="cpu")

    def load(name: str, **_: object) -> None:
        raise AssertionError(f"the preview tried to load {name}")

    monkeypatch.setattr(studio, "load", load)
    image, note = StudioUI(studio).stylize_preview(
        PHOTO, PAINTING, 1.0, None, 1.0, None, 1.0, "adain", 0.5, "none", 64, 4, None, 0
    )
    assert image == {"__type__": "update"} and "weights fetch adain-encoder adain-decoder" in note


@pytest.mark.parametrize(
    ("arguments", "refusal", "expected"),
    [  # ValidationError: refused before the queue, the message on the control to change
        ({"content": None}, ValidationError, "- content: upload (or take) a photo"),
        ({"styles": ()}, ValidationError, "- style_1: add at least one style picture"),
        ({"size": 8}, ValidationError, "- size: size must be a whole number from 64 to 1024, got 8"),
        ({"steps": 5000}, ValidationError, "- steps: steps must be a whole number from 1 to 1000, got 5000"),
        ({"method": "cnn"}, ValidationError, "- method: method must be gatys or adain, got 'cnn'"),
        ({"preserve_color": "sepia"}, ValidationError, "- preserve_color: preserve_color must be one of"),
        ({"strength": 1.5}, ValidationError, "- strength: strength must be between 0 and 1, got 1.5"),
        ({"mask": PAINTING}, ValidationError, "- mask: masks are an AdaIN feature"),
        ({"weights": (0.0, 1.0, 1.0)}, ValidationError, "- weight_1: every style has weight 0"),
    ],
)
def test_bad_stylize_input_gives_a_message(
    client: Client, arguments: dict, refusal: type[Exception], expected: str
) -> None:
    with pytest.raises(refusal, match=re.escape(expected)):
        _stylize(client, **arguments)


def _bad_images(folder: Path) -> list[tuple[Path, str]]:
    text = folder / "notes.jpg"
    text.write_text("this is not an image, just a text file with a .jpg name")
    huge = folder / "huge.png"
    huge.write_bytes(huge_png_header(20000, 20000))
    truncated = folder / "cut.jpg"
    truncated.write_bytes(Path(PAINTING).read_bytes()[:2000])
    return [(text, "not a picture file"), (huge, "too large|megapixels"), (truncated, "truncated|corrupt")]


def test_bad_uploads_are_refused_on_their_boxes_and_the_server_keeps_serving(client: Client, tmp_path: Path) -> None:
    for bad, expected in _bad_images(tmp_path):
        for role in ("content", "style_1"):
            arguments = {"content": str(bad)} if role == "content" else {"styles": (str(bad),)}
            with pytest.raises(ValidationError, match=f"- {role}: .*({expected})") as caught:
                _stylize(client, **arguments)
            assert "Traceback" not in str(caught.value)
    assert _generate(client, seed=9)[3] == 9


def test_errors_name_uploads_by_their_file_names(client: Client, tmp_path: Path) -> None:
    empty = tmp_path / "my empty photo.png"
    empty.write_bytes(b"")
    with pytest.raises(ValidationError) as caught:
        _stylize(client, content=str(empty))
    assert str(caught.value).endswith("content image is an empty file: my empty photo.png")  # not gradio's path


def _upload_raw(app_url: str, path: str) -> str:
    with open(path, "rb") as stream:
        response = httpx.post(f"{app_url}gradio_api/upload", files={"files": (Path(path).name, stream)})
    response.raise_for_status()
    return response.json()[0]


def test_nan_stylize_sliders_give_a_message(app_url: str) -> None:
    photo = json.dumps({"path": _upload_raw(app_url, PHOTO), "meta": {"_type": "gradio.FileData"}})
    for position, expected in ((8, "strength must be a finite number"), (2, "style 1 weight must be a finite")):
        values = [photo, photo, 1.0, None, 1.0, None, 1.0, "gatys", 0.5, "none", 64, 4, None, 0]
        values[position] = "NaN"
        body = "{" + '"data": [' + ", ".join(v if isinstance(v, str) and v.startswith(("{", "N")) else
                                          json.dumps(v) for v in values) + "]}"  # fmt: skip
        kind, payload = call_raw(app_url, "stylize", body)
        assert kind == "refused" and expected in payload["error"], payload


# --- many visitors at once ------------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_eight_clients_at_once_all_get_right_answers(app_url: str, client: Client) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _stylize(client, size=64, steps=2)  # models warm: what follows measures the requests, not the first loads
    before = _rss_bytes()

    def visit(index: int) -> tuple[str, object]:
        visitor = Client(app_url, verbose=False, analytics_enabled=False)
        if index % 4 == 3:
            return "stylize", _stylize(visitor, size=64, steps=3)
        return "generate", _generate(visitor, seed=100 + index, batch=2)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(visit, range(8)))
    elapsed = time.perf_counter() - started
    grown = _rss_bytes() - before
    stylized = []
    for index, (kind, answer) in enumerate(answers):
        if kind == "generate":
            gallery, _, _, first = answer
            assert first == 100 + index and [item["caption"] for item in gallery] == [
                f"seed {100 + index}", f"seed {101 + index}"
            ]  # fmt: skip
            assert read_png_settings(gallery[1]["image"]).seeds == (101 + index,)
        else:
            stylized.append(_pixels(answer[0]))
    assert len(stylized) == 2
    np.testing.assert_array_equal(stylized[0], stylized[1])  # same request, same picture, even under load
    assert grown < 400 * 2**20, f"RSS grew by {grown / 2**20:.0f} MB serving 8 requests"
    print(f"8 concurrent requests: {elapsed:.1f} s, RSS +{grown / 2**20:.0f} MB")


def test_cancelling_a_style_transfer_stops_the_optimisation_and_keeps_the_picture_so_far(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("studio.ui.PICTURE_EVERY_SECONDS", 0.0)
    job = client.submit(
        handle_file(PHOTO), handle_file(PAINTING), 1.0, None, 1.0, None, 1.0, "gatys", 0.8, "none", 256, 1000, None, 0,
        api_name="/stylize",
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
        unit.length for unit in (job.status().progress_data or [])
    ):  # fmt: skip
        time.sleep(0.05)
    assert any(unit.length for unit in (job.status().progress_data or [])), "the optimisation never started"
    while time.monotonic() < deadline and not job.outputs():
        time.sleep(0.05)
    endings = len(STUDIO.endings)
    job.cancel()
    # 1000 steps at 256 px take minutes here: ending within seconds, by `Cancelled`, means the stop reached the loop
    deadline = time.monotonic() + 30
    while len(STUDIO.endings) == endings and time.monotonic() < deadline:
        time.sleep(0.05)
    assert STUDIO.endings[endings:] == [("stylize", "Cancelled")]
    # what was on show stays: the latest picture so far, a PNG that says how far it got
    image, _, summary = job.outputs()[-1]
    settings = json.loads(Image.open(image).text["gan-art-studio:stylize"])
    assert 1 <= settings["steps"] < 1000 and settings["planned_steps"] == 1000
    assert f"the picture after {settings['steps']} of 1000 steps" in summary
    kept = [  # the server keeps that one (or one a step later, shown as the cancel arrived), not the earlier ones
        json.loads(Image.open(path).text["gan-art-studio:stylize"])
        for path in Path(os.environ["STUDIO_OUTPUT_DIR"]).glob("stylized-gatys-*.png")
    ]
    assert [found["steps"] - settings["steps"] for found in kept if found.get("planned_steps") == 1000] in ([0], [1])
    image, _, _ = _stylize(client, size=64, steps=2)  # and the next one runs
    assert Image.open(image).size == (64, 43)


def test_the_stop_button_keeps_the_picture_so_far(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("studio.ui.PICTURE_EVERY_SECONDS", 0.0)
    job = client.submit(
        handle_file(PHOTO), handle_file(PAINTING), 1.0, None, 1.0, None, 1.0, "gatys", 0.8, "none", 128, 1000, None, 0,
        api_name="/stylize",
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(job.outputs()) < 2:
        time.sleep(0.05)
    client.predict(api_name="/stop_stylize")
    image, download, summary = job.result(timeout=30)  # no error: the run ends on its latest picture
    settings = json.loads(Image.open(image).text["gan-art-studio:stylize"])
    assert 2 <= settings["steps"] < 1000 and f"the picture after {settings['steps']} of 1000 steps" in summary
    assert summary.startswith("**Stopped.**")
    assert Path(download).read_bytes() == Path(image).read_bytes()


# --- AdaIN through the app (seeded random weights dropped into a weights folder: the real ones need the network) ----


def _drop_random_adain_weights(folder: Path) -> None:
    """Random AdaIN encoder/decoder checkpoints in the official layouts, where `weights/<name>/` is looked up."""
    import torch

    from studio.loader import ADAIN_ENCODER_CONV_INDICES, build_module, random_state_like
    from studio.registry import builtin_models

    models = builtin_models()
    ours = random_state_like(build_module(models["adain-encoder"]), seed=1)
    official = {"0.weight": ours["input_conv.weight"], "0.bias": ours["input_conv.bias"]}
    convs = [key for key in ours if key.startswith("convs.") and key.endswith(".weight")]
    for key, index in zip(convs, ADAIN_ENCODER_CONV_INDICES, strict=True):
        official[f"{index}.weight"], official[f"{index}.bias"] = ours[key], ours[key.replace(".weight", ".bias")]
    (folder / "adain-encoder").mkdir(parents=True)
    torch.save(official, folder / "adain-encoder" / "vgg_normalised.pth")
    decoder = random_state_like(build_module(models["adain-decoder"]), seed=2)
    (folder / "adain-decoder").mkdir(parents=True)
    torch.save(
        {key.removeprefix("layers."): value for key, value in decoder.items()},
        folder / "adain-decoder" / "decoder.pth",
    )


@pytest.fixture(scope="module")
def adain_client(tmp_path_factory: pytest.TempPathFactory, app_url: str) -> Iterator[Client]:
    """A second app whose studio finds AdaIN weights in its weights folder."""
    folder = tmp_path_factory.mktemp("adain-weights")
    _drop_random_adain_weights(folder)
    with running_app(Studio(device="cpu", weights_dir=folder), tmp_path_factory.mktemp("adain-app")) as url:
        yield Client(url, verbose=False, analytics_enabled=False)


def test_adain_blends_two_styles_through_a_mask(adain_client: Client, tmp_path: Path) -> None:
    mask = tmp_path / "mask.png"
    half = np.zeros((64, 64), dtype=np.uint8)
    half[:, 32:] = 255
    Image.fromarray(half).save(mask)
    mondrian = str(EXAMPLES / "mondrian_cropped.jpg")
    image, _, summary = _stylize(
        adain_client, styles=(PAINTING, mondrian), weights=(1.0, 1.0, 1.0), method="adain", size=96, mask=str(mask)
    )
    with Image.open(image) as picture:
        assert picture.size == (96, 64)
        settings = json.loads(picture.text["gan-art-studio:stylize"])
    assert settings["method"] == "adain" and settings["mask"] == "mask.png" and len(settings["styles"]) == 2
    assert "adain" in summary


def test_adain_preview_renders_while_sliders_move(adain_client: Client) -> None:
    image, note = adain_client.predict(
        handle_file(PHOTO), handle_file(PAINTING), 1.0, None, 1.0, None, 1.0, "adain", 0.5, "none", 512, 100, None, 0,
        api_name="/stylize_preview",
    )  # fmt: skip
    with Image.open(image) as picture:
        assert max(picture.size) < 512  # a small, fast render whatever the size asked for the full one
    assert note.startswith("Preview") and "AdaIN" in note


def test_a_run_decodes_each_upload_once_though_its_validator_decodes_it_too(
    adain_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from studio import imaging

    opened: list[str] = []
    real_open = imaging.open_image

    def open_image(source, **options):
        opened.append(Path(source).name)
        return real_open(source, **options)

    monkeypatch.setattr(imaging, "open_image", open_image)  # the app runs in this process
    monkeypatch.setattr(imaging, "_decoded_files", imaging.DecodedFiles(max_pixels=10_000_000))
    image, _, _ = _stylize(adain_client, method="adain", size=96)
    with Image.open(image) as picture:
        assert picture.size == (96, 64)
    assert sorted(opened) == sorted([Path(PHOTO).name, Path(PAINTING).name])


def test_walk_styled_frame_by_frame(adain_client: Client) -> None:
    plain, _ = _decode(_walk(adain_client, frames=4)[0])
    styled, _ = _decode(_walk(adain_client, frames=4, style=PAINTING, strength=1.0)[0])
    assert len(styled) == 4 and styled[0].shape == plain[0].shape
    assert np.abs(styled[0] - plain[0]).mean() > 5


# --- Handler plumbing -----------------------------------------------------------------------------------------------


def test_generator_handlers_keep_streaming_and_get_friendly_errors() -> None:
    import inspect

    import gradio as gr

    from studio.ui import _friendly_errors

    def pictures():
        yield "first"
        raise ValueError("the style picture is 1 px wide; use one at least 16 px on each side")

    wrapped = _friendly_errors(pictures)
    assert inspect.isgeneratorfunction(wrapped)  # gradio streams only generator functions
    stream = wrapped()
    assert next(stream) == "first"
    with pytest.raises(gr.Error, match="at least 16 px"):
        next(stream)


def test_pictures_so_far_come_from_a_worker_and_its_errors_reach_the_caller() -> None:
    import threading

    from studio.api import Cancelled, StylizeResult
    from studio.ui import _showing_pictures

    def result(step: int) -> StylizeResult:
        return StylizeResult(image=Image.new("RGB", (4, 4)), settings={"steps": step}, seconds=0.0)

    def render(on_picture) -> StylizeResult:
        for step in range(1, 4):
            on_picture(step, 3, lambda step=step: result(step))  # the last step is the result, not a picture so far
        return result(3)

    shown = [(picture.settings["steps"], finished) for picture, finished in _showing_pictures(render, every=0.0)]
    assert shown == [(1, False), (2, False), (3, True)]

    def failing(on_picture) -> StylizeResult:
        raise ValueError("unreadable content image")

    with pytest.raises(ValueError, match="unreadable"):
        list(_showing_pictures(failing, every=0.0))

    ended = threading.Event()
    endings: list[str] = []

    def endless(on_picture) -> StylizeResult:
        try:
            step = 0
            while True:
                step += 1
                on_picture(step, 10**9, lambda step=step: result(step))
        except Cancelled:
            endings.append("cancelled")
            raise
        finally:
            ended.set()

    stream = _showing_pictures(endless, every=0.0)
    picture, finished = next(stream)
    assert picture.settings["steps"] == 1 and not finished
    stream.close()  # gradio stops reading when the event is cancelled: the render ends at its next picture
    assert ended.wait(10) and endings == ["cancelled"]


def test_a_style_transfer_stopped_before_its_first_picture_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from studio.api import Cancelled
    from studio.ui import STYLIZE_STOPPED, StudioUI

    studio = Studio(device="cpu")

    def stopped(**_: object) -> None:
        raise Cancelled("style transfer cancelled at step 1 of 100")

    monkeypatch.setattr(studio, "stylize", stopped)
    shown = list(
        StudioUI(studio).stylize(
            PHOTO, PAINTING, 1.0, None, 1.0, None, 1.0, "gatys", 0.5, "none", 64, 100, None, 0,
            progress=lambda *args, **kwargs: None,
        )
    )  # fmt: skip
    assert shown == [({"__type__": "update"}, {"__type__": "update"}, STYLIZE_STOPPED)]


def test_a_stop_after_the_finished_picture_is_shown_leaves_it_unstopped() -> None:
    from types import SimpleNamespace

    from studio.ui import StudioUI

    ui = StudioUI(Studio(device="cpu"))
    request = SimpleNamespace(session_hash="visitor")
    run = ui.stylize(
        PHOTO, PAINTING, 1.0, None, 1.0, None, 1.0, "gatys", 0.5, "none", 64, 3, None, 0,
        request=request, progress=lambda *args, **kwargs: None,
    )  # fmt: skip
    for *_, summary in run:  # pictures so far (a slow first step shows one), then the finished picture
        if "The PNG carries these settings" in summary:
            break  # gradio has not resumed the handler after the finished picture yet
    assert "· 3 steps" in summary and "Stopped" not in summary
    assert ui.stop_stylize(request) == {"__type__": "update"}  # a Stop now leaves the summary as it is
    assert list(run) == []


def test_the_stylize_stop_button_says_stopped_and_what_stays_on_show() -> None:
    from types import SimpleNamespace

    from studio.ui import STYLIZE_STOPPED, StudioUI

    ui = StudioUI(Studio(device="cpu"))
    request = SimpleNamespace(session_hash="visitor")
    assert ui.stop_stylize(request) == {"__type__": "update"}  # nothing running: nothing changes
    job = ui.jobs.start("visitor", "stylize")
    assert ui.stop_stylize(request) == STYLIZE_STOPPED and job.stop_requested.is_set()
    job.shown_summary = "**gatys** · the picture after 16 of 200 steps"
    assert ui.stop_stylize(request) == "**Stopped.** **gatys** · the picture after 16 of 200 steps"


def test_a_walk_says_when_it_is_finishing_its_file_and_when_a_stop_came_too_late() -> None:
    from types import SimpleNamespace

    from studio.ui import StudioUI

    ui = StudioUI(Studio(device="cpu"))
    request = SimpleNamespace(session_hash="visitor")
    said: list[str] = []

    def progress(_: object, *, desc: str = "", **__: object) -> None:
        said.append(desc)
        if desc.endswith("finishing the file"):  # the last frame is made: a Stop now cannot shorten the walk
            ui.jobs.stop("visitor", "walk")

    (outputs,) = list(
        ui.walk("omniart-eyes", "3, 14", 4, 12, False, "linear", "gif", 1.0, "blue", "native", None, 1.0,
                request=request, progress=progress)
    )  # fmt: skip
    assert said[-1] == "Walk: 4 of 4 frames, finishing the file"
    assert (
        "4 frames at 12 fps" in outputs[2]
        and "Stop came after the last frame was made: the walk is whole." in outputs[2]
    )


def test_stop_walk_shows_what_the_walk_handed_over_or_says_stopped() -> None:
    import threading
    from types import SimpleNamespace

    from studio.ui import StudioUI

    ui = StudioUI(Studio(device="cpu"))
    visitor = SimpleNamespace(session_hash="visitor")
    nothing = {"__type__": "update"}
    assert ui.stop_walk(visitor) == (nothing, nothing, nothing, nothing)  # no walk running

    job = ui.jobs.start("visitor", "walk")
    threading.Timer(0.2, job.hand_over, [("/tmp/w.mp4", "/tmp/w.mp4", "**Stopped** after 17 of 96 frames")]).start()
    video, gif, file, summary = ui.stop_walk(visitor)  # waits for the walk to finish its file
    assert job.stop_requested.is_set() and video["value"] == file == "/tmp/w.mp4" and video["visible"] is True
    assert gif["visible"] is False and summary.startswith("**Stopped** after 17")
    ui.jobs.finish("visitor", "walk", job)

    failing = ui.jobs.start("visitor", "walk")
    threading.Timer(0.2, ui.jobs.finish, ["visitor", "walk", failing]).start()  # ends without outputs (an error)
    assert ui.stop_walk(visitor) == (nothing, nothing, nothing, "**Stopped.**")


def test_walk_frame_sizes_from_the_menu() -> None:
    from studio.ui import _walk_side

    assert [_walk_side(size) for size in ("native", "", None, "0", "256", 96.0)] == [0, 0, 0, 0, 256, 96]
    with pytest.raises(ValueError, match=r"at least 16, got 8$"):  # as typed, not 8.0
        _walk_side("8")
    with pytest.raises(ValueError, match=r"whole number of pixels, at least 16, got 20.5$"):
        _walk_side("20.5")


def test_model_menus_say_what_a_model_needs_online_and_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from studio.ui import StudioUI

    ui = StudioUI(Studio(device="cpu"))
    for flag in ("HF_HUB_OFFLINE", "STUDIO_OFFLINE"):
        monkeypatch.delenv(flag, raising=False)
    online = dict((name, label) for label, name in ui.generator_choices())
    assert online["omniart-eyes"] == "omniart-eyes  ·  128 px  ·  offline"
    assert online["wikiart-cubism"] == "wikiart-cubism  ·  256 px  ·  download 423 MB"
    assert online["fastgan-painting"] == "fastgan-painting  ·  1024 px  ·  download 117 MB"
    assert "fetched on first use" in ui.model_summary(ui.studio.spec("wikiart-cubism"))

    monkeypatch.setenv("STUDIO_OFFLINE", "1")
    offline = dict((name, label) for label, name in ui.generator_choices())
    assert offline["omniart-eyes"] == online["omniart-eyes"]
    assert offline["wikiart-cubism"] == "wikiart-cubism  ·  256 px  ·  not on this machine"
    assert "the studio is offline: pick a model marked offline" in ui.model_summary(ui.studio.spec("wikiart-cubism"))


def test_pruning_old_outputs_spares_the_files_a_visitor_has_on_show(tmp_path: Path) -> None:
    from studio.ui import _Outputs

    outputs = _Outputs(tmp_path, keep=4)

    def write(stem: str) -> Path:
        path = outputs.path(stem, ".png")
        path.write_bytes(b"png")
        return path

    first = [write(f"a{index}") for index in range(2)]
    outputs.show("alice", "generate", first)
    later = [write(f"b{index}") for index in range(6)]  # others' slider moves
    assert all(path.is_file() for path in first)  # on show: kept although the oldest
    assert [path.is_file() for path in later] == [False, False, False, False, True, True]
    outputs.show("alice", "generate", later[-1:])  # new pictures replace alice's old ones on show
    write("c0")
    assert not first[0].is_file() and first[1].is_file() and later[-1].is_file()
    outputs.forget("alice")
    write("c1")
    write("c2")
    assert not first[1].is_file()
    assert len(list(tmp_path.glob("*.png"))) == 4


def test_sending_to_walk_brings_the_settings_and_says_when_nothing_was_ticked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gradio as gr

    from studio.ui import StudioUI

    notes: list[str] = []
    monkeypatch.setattr(gr, "Info", notes.append)
    ui = StudioUI(Studio(device="cpu"))
    state = {"seeds": [7, 8, 9], "paths": [], "selected": 0}
    seeds, model, psi, class_update, *directions, directions_box, route, tab = ui.send_to_walk(
        [], state, "omniart-eyes", 0.7, "blue", 0.0, 1.5, 0, 0, -2.25
    )
    assert (seeds, model, psi, class_update["value"]) == ("7, 8, 9", "omniart-eyes", 0.7, "blue")
    assert directions == [0.0, 1.5, 0, 0, -2.25] and directions_box["open"] is True and tab.selected == "walk"
    assert route == "keyframes"  # several seeds: not a noise loop, which would refuse them
    assert notes == ["No seed was ticked: the walk goes through all 3 on show."]
    notes.clear()
    seeds, *_, directions_box, _, _ = ui.send_to_walk(["8", "9"], state, "omniart-eyes", 1.0, "blue", 0, 0, 0, 0, 0)
    assert seeds == "8, 9" and notes == [] and "open" not in directions_box
    seeds, *_, route, _ = ui.send_to_walk(["9"], state, "omniart-eyes", 1.0, "blue", 0, 0, 0, 0, 0)
    assert seeds == "9" and route == {"__type__": "update"}  # one seed: either route can take it


def test_the_route_greys_out_the_controls_it_does_not_use() -> None:
    from studio.ui import StudioUI

    loop, easing, spread, seeds = StudioUI.route_controls("noise-loop")
    assert (loop["interactive"], easing["interactive"], spread["interactive"]) == (False, False, True)
    assert seeds == {"__type__": "update"}  # the seeds stay as typed
    loop, easing, spread, seeds = StudioUI.route_controls("keyframes")
    assert (loop["interactive"], easing["interactive"], spread["interactive"]) == (True, True, False)


def test_after_a_route_change_the_seeds_are_checked_for_the_new_route() -> None:
    from studio.ui import StudioUI

    def seeds_verdict(seeds: str, route: str, loop: bool) -> dict:
        verdicts = StudioUI.check_route_seeds(seeds, route, loop)
        assert [verdict["is_valid"] for verdict in verdicts[1:]] == [True, True]  # the route and loop themselves
        return verdicts[0]

    assert seeds_verdict("3, 14, 15", "keyframes", True)["is_valid"]
    several = seeds_verdict("3, 14, 15", "noise-loop", True)
    assert not several["is_valid"] and "circles one seed" in several["message"]
    assert seeds_verdict("3", "noise-loop", True)["is_valid"]
    assert "give the one seed" in seeds_verdict("", "noise-loop", True)["message"]
    one = seeds_verdict("3", "keyframes", False)
    assert not one["is_valid"] and "at least two keyframe seeds" in one["message"]
    assert seeds_verdict("3", "keyframes", True)["is_valid"]  # one keyframe, looped
    for route in ("keyframes", "noise-loop"):
        assert "'x' is not one" in seeds_verdict("3, x", route, True)["message"]


def test_a_re_render_leaves_a_typed_seed_in_its_box_and_shows_a_drawn_one() -> None:
    from studio.ui import _keeping_a_typed_seed

    def generate(model, seed, batch, request=None):
        first = 41 if seed is None or not str(seed).strip() else int(seed)
        return ["gallery"], f"seeds {first}..", f"/tmp/{first}.png", first, {"seeds": [first]}

    render = _keeping_a_typed_seed(generate)
    # the box held 5 when the render began: whatever it holds when the render lands stays
    assert render("omniart-eyes", 5, 8) == (
        ["gallery"],
        "seeds 5..",
        "/tmp/5.png",
        {"__type__": "update"},
        {"seeds": [5]},
    )
    for empty in (None, "", "  "):  # empty: the random seed drawn is shown, so the next move keeps it
        assert render("omniart-eyes", empty, 8, request=None)[3] == 41


def test_generates_download_button_names_the_seed_of_the_picture_it_holds() -> None:
    from studio.ui import StudioUI

    state = {"seeds": [7, 8, 9], "paths": [f"/tmp/{seed}.png" for seed in (7, 8, 9)], "selected": 0}
    _, first, download, _ = StudioUI.after_generation(state, [], None, None)  # new pictures: the first one
    assert first["selected"] == 0 and download.label == "⬇ PNG of seed 7, with settings"
    assert download.value["path"] == "/tmp/7.png"
    _, kept, download, _ = StudioUI.after_generation(state, [], 9, None)  # the clicked seed is still on show
    assert kept["selected"] == 2 and download.label == "⬇ PNG of seed 9, with settings"
    assert download.value["path"] == "/tmp/9.png"
    clicked, chosen, seed = StudioUI.select_image(None, state, SimpleNamespace(index=1))  # type: ignore[arg-type]
    assert (chosen["selected"], seed, clicked.label) == (1, 8, "⬇ PNG of seed 8, with settings")
    assert clicked.value["path"] == "/tmp/8.png"


def test_the_keyframe_ticks_follow_the_person_across_re_renders() -> None:
    from studio.ui import StudioUI

    state = {"seeds": [7, 8, 9, 10, 11], "paths": [f"/tmp/{seed}.png" for seed in range(7, 12)], "selected": 0}
    seeds = ["7", "8", "9", "10", "11"]
    fresh, _, _, offered = StudioUI.after_generation(state, [], None, None)  # first pictures: the first four
    assert fresh["value"] == ["7", "8", "9", "10"] and offered == seeds
    kept, *_ = StudioUI.after_generation(state, ["9", "11"], None, seeds)  # a slider moved: the same seeds
    assert kept["value"] == ["9", "11"]
    none, *_ = StudioUI.after_generation(state, [], None, seeds)  # all unticked, then a slider moved: still none
    assert none["value"] == []
    other = {**state, "seeds": [20, 21, 22]}
    new, *_ = StudioUI.after_generation(other, [], None, seeds)  # new seeds: the first four of them again
    assert new["value"] == ["20", "21", "22"]
