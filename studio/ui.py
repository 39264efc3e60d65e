"""The studio in the browser: a gradio Blocks app over the `Studio` facade.

Handlers are thin: they turn widget values into `Studio` calls and results into widget values. Bad input
(ValueError from the studio, missing or damaged weights) becomes a `gr.Error` with the studio's message; nothing a
person sees is a stack trace. Every event has an `api_name`, so `gradio_client` can call `/generate`, `/stylize`,
`/walk`, ... with the same arguments as the page.

Long jobs report progress through `gr.Progress` and can be stopped: a Stop button both cancels the gradio event
(`cancels=[...]`, which also drops a job still waiting in the queue) and sets a per-session flag that the studio's
`on_progress` callback reads, so the computation itself ends instead of running on in a worker thread. A client that
cancels through the API (`Job.cancel()`) is noticed the same way. Nothing made is lost: a Gatys render shows its
picture so far about once a second (the handler is a generator), so a stopped one keeps the latest of them, saved
with its settings; a stopped walk finishes its file with the frames made so far, which the Stop handler shows (the
cancelled event cannot).

On Hugging Face ZeroGPU Spaces (when the `spaces` package can be imported) the compute handlers are wrapped in
`spaces.GPU`; elsewhere they run as they are. Weights that are not cached are fetched when first needed, with a
progress bar.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import math
import os
import queue
import re
import reprlib
import secrets
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import gradio as gr
from gradio import utils as gradio_utils

from studio.api import (
    ADAIN_MODELS,
    MASK_NEEDS_ADAIN,
    MAX_SEED,
    NOISE_LOOP_SPREAD_RANGE,
    PSI_RANGE,
    WALK_PATHS,
    Cancelled,
    GenerationResult,
    Studio,
    StylizeResult,
    WalkResult,
    class_index,
    read_png_settings,
    stylize_input_names,
    walk_file_stem,
    walk_suffix,
)
from studio.imaging import load_image, load_mask, max_side_from_env
from studio.ops.common import check_mask_styles, check_output_side, check_preserve_color
from studio.registry import DEFAULT_GENERATOR, DEFAULT_VGG, HubFile, ModelSpec, PackageFile, UrlFile
from studio.weights import WeightsIntegrityError, WeightsUnavailable, is_cached, is_offline

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
EXAMPLES = ASSETS / "examples"

DIRECTION_SLIDERS = 5
DIRECTION_RANGE = 5.0
STYLIZE_SIZES = (64, 1024)
STYLIZE_STEPS = (1, 1000)
MAX_UI_BATCH = 8
MAX_WALK_FRAMES_UI = 600
PICTURE_EVERY_SECONDS = 1.0  # how often a Gatys render shows its picture so far
WALK_STOPPED = "**Stopped** before the first frames were made."
WALK_STOP_WAIT_SECONDS = 120  # how long Stop waits for a walk to finish the file of the frames it made
STYLIZE_STOPPED = "**Stopped** before the first picture."
STYLE_SLOTS = 3
STYLE_METHODS = [("Gatys: optimisation, works offline", "gatys"), ("AdaIN: fast, downloads its weights", "adain")]
ADAIN_OFFLINE_CHOICE = ("AdaIN: fast, needs its weights (offline now: not here)", "adain")
DEFAULT_SEED = 7
# (photo, painting) pairs offered as one-click examples; the files and their credits are in studio/assets/examples
EXAMPLE_PAIRS = (
    ("chelsea.jpg", "woman_with_hat_matisse.jpg"),
    ("astronaut.jpg", "mondrian_cropped.jpg"),
    ("coffee.jpg", "woman_with_hat_matisse.jpg"),
)
# Per-event concurrency, sized for one GPU or two CPU cores: generation is cheap, style transfer and walks are not.
CONCURRENCY = {"generate": 2, "stylize": 1, "stylize-preview": 1, "walk": 1, "weights": 1}
QUEUE_MAX_SIZE = 64
# Files the app wrote are kept for the session's downloads; the oldest go once there are more than this many.
KEEP_OUTPUTS = 400

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, WeightsUnavailable, WeightsIntegrityError)

CSS = """
#studio-header h1 { margin-bottom: 0.1em; }
#studio-header p { margin-top: 0; opacity: 0.8; }
.studio-info { min-height: 1.5em; }
#models-table, #models-table * { font-family: var(--font) !important; }
footer { opacity: 0.7; }
/* gradio draws a refused value's message (z-index 30) under the control's label (40), which hid its first words */
.wrap:has(> .validation-error) { z-index: 45; }
/* gradio's gallery cells are at least 100 px wide: four of them overflow a phone's screen */
@media (max-width: 600px) {
  #generate-gallery .grid-container { grid-template-columns: repeat(auto-fill, minmax(88px, 1fr)) !important; }
}
/* a caption is a picture's seed, up to 10 digits: the whole number, not "seed 1925003…" */
#generate-gallery .caption-label { white-space: normal; overflow-wrap: anywhere; text-overflow: clip; }
"""


# Runs once in the page.
# - gradio's "once" trigger mode lets a second click through while the first is still being submitted, so a double
#   click ran a style transfer or a walk twice: a click on those buttons within half a second of the last one (a
#   double click's two clicks are closer) is dropped before gradio sees it.
# - gradio's validators mark a refused value on its own control. On a phone that control is often above the screen,
#   and in a closed accordion it is hidden, so a press on Stylize or Render walk seemed to do nothing: when a press
#   brings new marks and none of them is on screen, the first marked control is shown (its accordions opened) and
#   scrolled into view.
# - gradio keeps such a mark on a radio, slider or image after its value is changed, until the next press: changing
#   a control dismisses its own mark, through the mark's close button. (A textbox clears its own on edit.)
PAGE_JS = """
() => {
  const lastClick = new Map();
  document.addEventListener("click", (event) => {
    const button = event.target.closest && event.target.closest("#stylize-button, #walk-button");
    if (!button) return;
    const now = Date.now();
    if (now - (lastClick.get(button.id) || 0) < 500) {
      event.stopImmediatePropagation();
      event.preventDefault();
      return;
    }
    lastClick.set(button.id, now);
  }, true);

  // Only marks answering a press (a button or Enter, by the person) are brought into view: a slider's live
  // re-render runs its validator again and rebuilds a standing mark, which must not pull the page away mid-drag.
  let pressedAt = 0;
  const pressed = (event) => {
    if (event.isTrusted) pressedAt = Date.now();
  };
  document.addEventListener("click", (event) => {
    if (event.target.closest && event.target.closest("button")) pressed(event);
  }, true);
  document.addEventListener("keydown", (event) => event.key === "Enter" && pressed(event), true);
  let marked = new Set();
  let checkQueued = false;
  const onScreen = (element) => {
    const box = element.getBoundingClientRect();
    return box.bottom > 0 && box.top < window.innerHeight;
  };
  // The closed accordions' headers around a hidden mark, outermost first; null when something else hides it.
  const closedAccordions = (element) => {
    const headers = [];
    for (let node = element.parentElement; node; node = node.parentElement) {
      if (getComputedStyle(node).display !== "none") continue;
      const accordion = node.dataset.testid === "accordion-content" ? node.parentElement : null;
      const header = accordion && accordion.querySelector(":scope > button.label-wrap");
      if (!header) return null;  // another tab
      headers.unshift(header);
    }
    return headers;
  };
  const showNewMarks = () => {
    checkQueued = false;
    const now = new Set(document.querySelectorAll(".validation-error"));
    const fresh = [...now].filter((element) => !marked.has(element));
    marked = now;
    if (fresh.length === 0 || Date.now() - pressedAt > 20000) return;
    const reachable = fresh.filter((element) => element.offsetParent !== null || closedAccordions(element) !== null);
    if (reachable.length === 0) return;
    pressedAt = 0;  // the first marks after a press answer it
    if (reachable.some((element) => element.offsetParent !== null && onScreen(element))) return;
    const first = reachable[0];  // document order: the topmost in a single column
    (closedAccordions(first) || []).forEach((header) => header.click());
    const control = first.closest(".block") || first;
    requestAnimationFrame(() => control.scrollIntoView({ behavior: "smooth", block: "center" }));
  };
  new MutationObserver(() => {
    if (checkQueued) return;
    checkQueued = true;
    requestAnimationFrame(showNewMarks);
  }).observe(document.body, { childList: true, subtree: true, attributes: true, attributeFilter: ["class"] });

  const dismissOwnMark = (event) => {
    const block = event.target.closest && event.target.closest(".block");
    if (!block) return;
    const buttons = block.querySelectorAll(".validation-error button");  // the close icon is a button in a button
    if (buttons.length > 0) buttons[buttons.length - 1].click();
  };
  document.addEventListener("input", dismissOwnMark, true);
  document.addEventListener("change", dismissOwnMark, true);
}
"""


def launch_options() -> dict[str, Any]:
    """Keyword arguments for `demo.launch()` that belong to the app (theme, css, served asset folder).

    Host and port are left out on purpose: gradio reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT itself.
    """
    theme = gr.themes.Soft(
        primary_hue="orange",
        secondary_hue="rose",
        neutral_hue="stone",
        # System fonts: the page must look right offline (no Google Fonts request).
        font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    )
    return {
        "theme": theme,
        "css": CSS,
        "js": PAGE_JS,
        "allowed_paths": [str(EXAMPLES)],
        "footer_links": ["api", "settings"],
    }


# --- small helpers ------------------------------------------------------------------------------------------------


def _spaces_module() -> Any | None:
    """The Hugging Face `spaces` package when it is installed (on Spaces), else None."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return None
    return spaces


def _gpu(duration: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`spaces.GPU(duration=...)` on Hugging Face ZeroGPU; a no-op everywhere else."""
    spaces = _spaces_module()
    if spaces is None:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


def _friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the studio's errors into `gr.Error` with its message; log anything unexpected with its traceback.
    Works on generator handlers too (they stay generators, so gradio still streams what they yield)."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except Exception as error:
                raise _as_gradio_error(error, fn) from None

        return generator_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            raise _as_gradio_error(error, fn) from None

    return wrapper


def _as_gradio_error(error: Exception, fn: Callable[..., Any]) -> gr.Error:
    if isinstance(error, gr.Error):
        return error
    if isinstance(error, Cancelled):
        return gr.Error("Stopped before the end.", title="Stopped", print_exception=False)
    if isinstance(error, USER_ERRORS):
        return gr.Error(_without_upload_folders(str(error)), print_exception=False)
    if isinstance(error, MemoryError):
        return gr.Error("Out of memory: lower the size, the batch or the number of frames.")
    if "out of memory" in str(error).lower():
        return gr.Error("Out of memory on the device: lower the size, the batch or the frames.")
    log.error("unexpected error in %s", getattr(fn, "__name__", "handler"), exc_info=error)
    return gr.Error(
        f"Something went wrong ({type(error).__name__}: {str(error)[:300]}). The server log has the details."
    )


def _without_upload_folders(message: str) -> str:
    """Name uploads by their file names: gradio keeps each one at <upload folder>/<hash>/<name>, a server path that
    means nothing to the person who uploaded it."""
    folder = re.escape(str(gradio_utils.get_upload_folder()).rstrip("/\\"))
    return re.sub(folder + r"[/\\][^/\\\s]+[/\\]", "", message)


def _number(value: Any, what: str) -> float:
    """A finite float from a slider/number widget (gradio lets NaN and infinity through)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{what} is empty: type a number")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what} must be a number, got {reprlib.repr(value)}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {reprlib.repr(value)}")
    return number


def _in_range(value: Any, what: str, low: float, high: float) -> float:
    number = _number(value, what)
    if not low <= number <= high:
        raise ValueError(f"{what} must be between {low:g} and {high:g}, got {reprlib.repr(value)}")
    return number


def _direction_amount(value: Any, number: int) -> float:
    """The slider "Direction {number}" (1-based on the page; the API's index is number - 1)."""
    return _in_range(value, f"direction {number}", -DIRECTION_RANGE, DIRECTION_RANGE)


def _direction_amounts(*sliders: Any) -> dict[int, float]:
    """The latent direction sliders as the API's {index: amount}, zeros left out."""
    amounts = {number - 1: _direction_amount(value, number) for number, value in enumerate(sliders, start=1)}
    return {index: amount for index, amount in amounts.items() if amount}


def _directions_text(amounts: dict[int, float]) -> str:
    """{0: 2.5, 4: -1} -> "directions 1: +2.5, 5: -1", numbered as the sliders are."""
    return "directions " + ", ".join(f"{index + 1}: {amount:+g}" for index, amount in sorted(amounts.items()))


def _direction_verdicts(sliders: Iterable[Any]) -> list[dict[str, Any]]:
    """The validator's verdict on each latent direction slider."""
    return [
        _verdict(lambda value=value, number=number: _direction_amount(value, number))
        for number, value in enumerate(sliders, start=1)
    ]


def _whole(value: Any, what: str, low: int, high: int) -> int:
    number = _number(value, what)
    if not number.is_integer() or not low <= number <= high:
        raise ValueError(f"{what} must be a whole number from {low} to {high}, got {reprlib.repr(value)}")
    return int(number)


def _seed_box_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _seed_or_random(value: Any) -> int:
    """The seed box: empty means a fresh random seed."""
    if _seed_box_empty(value):
        return secrets.randbelow(MAX_SEED + 1)
    return _whole(value, "seed", 0, MAX_SEED)


def _keeping_a_typed_seed(generate: Callable[..., tuple[Any, ...]]) -> Callable[..., tuple[Any, ...]]:
    """`StudioUI.generate` for the page's own re-renders (a slider, the class, the model, Enter, the dice): the seed
    box is written back only when it was empty (to show the random seed drawn). Otherwise a render landing while
    the person types a new seed would put the old one back, and the next press would render the old seed."""

    @functools.wraps(generate)
    def render(model: Any, seed: Any, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        gallery, info, png, first_seed, state = generate(model, seed, *args, **kwargs)
        return gallery, info, png, first_seed if _seed_box_empty(seed) else gr.update(), state

    return render


def _walk_side(size: Any) -> int:
    """The walk's frame size from its menu (text): "native", nothing or 0 is 0, the model's own size; else pixels,
    checked as the studio does."""
    if size in (None, "", "native"):
        return 0
    side = _number(size, "frame size")
    if side.is_integer():
        side = int(side)  # "5" is refused as 5, not 5.0
    return 0 if side == 0 else check_output_side(side, max_side_from_env(), what="frame size")


def parse_seeds(text: str) -> list[int]:
    """'3, 14 15' -> [3, 14, 15]; ValueError naming the first part that is not a seed."""
    parts = [part for part in str(text or "").replace(",", " ").split() if part]
    if not parts:
        raise ValueError("give at least two keyframe seeds, e.g. 3, 14, 15")
    seeds = []
    for part in parts:
        try:
            seed = int(part)
        except ValueError:
            raise ValueError(f"keyframe seeds are whole numbers separated by commas; {part!r} is not one") from None
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed {seed} is outside 0..{MAX_SEED}")
        seeds.append(seed)
    return seeds


def _walk_route(route: Any) -> str:
    if route not in WALK_PATHS:
        raise ValueError(f"route must be one of {WALK_PATHS}, got {route!r}")
    return str(route)


def _walk_seeds(text: str, route: Any) -> list[int]:
    """The keyframe seeds box; a noise loop circles one seed, so it takes one."""
    if route == "noise-loop" and not str(text or "").strip():
        raise ValueError("give the one seed a noise loop circles, e.g. 3")
    seeds = parse_seeds(text)
    if route == "noise-loop" and len(seeds) > 1:
        raise ValueError(
            f"a noise loop circles one seed: leave only one (e.g. {seeds[0]}), or take the route through the keyframes"
        )
    return seeds


def _check_walk_seeds(text: str, route: Any, loop: Any) -> None:
    """ValueError unless the seeds box holds seeds that the route can walk (with or without looping back)."""
    if len(_walk_seeds(text, route)) < 2 and route != "noise-loop" and not loop:
        raise ValueError(
            "a walk needs at least two keyframe seeds; with one, tick Loop back to the first keyframe to circle "
            "around it"
        )


def _noise_loop_spread(spread: Any, route: Any) -> float:
    """The spread slider: checked for a noise loop; a walk through keyframes does not use it."""
    if route != "noise-loop":
        return 1.0
    return _in_range(spread, "noise loop spread", *NOISE_LOOP_SPREAD_RANGE)


def _check_content(content: str | None) -> None:
    if not content:
        raise ValueError("upload (or take) a photo to stylize first")


def _check_styles_given(styles: tuple[str | None, ...]) -> None:
    if not any(styles):
        raise ValueError("add at least one style picture (a painting to borrow the style from)")


def _check_picture(path: str | None, name: str) -> None:
    """An uploaded picture decodes within the pixel limit (nothing uploaded passes: other checks ask for it). The
    run that follows reuses the decoded picture."""
    if path:
        load_image(path, name=name, reuse=True)


def _check_method(method: str) -> None:
    if method not in ("gatys", "adain"):
        raise ValueError(f"method must be gatys or adain, got {method!r}")


def _stylize_seed(seed: Any) -> int:
    """The Stylize seed box: empty means 0."""
    return _whole(seed if seed not in (None, "") else 0, "seed", 0, MAX_SEED)


def _verdict(check: Callable[[], object]) -> dict[str, Any]:
    """gradio's validation result for one control: valid, or the message of the ValueError `check()` raised."""
    try:
        check()
    except ValueError as error:
        return gr.validate(False, _without_upload_folders(str(error)))
    return gr.validate(True, "")


def _count(number: int, noun: str) -> str:
    """'1 step', '25 steps'."""
    return f"{number} {noun}{'s' * (number != 1)}"


def _megabytes(size: int | None) -> str:
    return "?" if not size else f"{size / 1e6:.0f} MB"


def _download_size(spec: ModelSpec) -> int | None:
    return getattr(spec.sources[0], "size", None) if spec.sources else None


def _output_side(spec: ModelSpec) -> int | None:
    """A generator's picture side in px, known without loading it (FastGAN's is fixed by its architecture)."""
    from studio.models.fastgan import RESOLUTION as FASTGAN_RESOLUTION

    if spec.config.get("resolution"):
        return int(spec.config["resolution"])
    return FASTGAN_RESOLUTION if spec.architecture == "fastgan" else None


def _weights_state(spec: ModelSpec) -> Literal["cached", "missing", "download"]:
    """Where a model's weights stand: "cached" (on this machine), "missing" (not here, and the studio is offline) or
    "download" (fetched on first use). The model menus, the model summary and the Models table word it each their way.
    """
    if is_cached(spec):
        return "cached"
    return "missing" if is_offline() else "download"


def _selected_index(state: dict) -> int:
    """The index of the picture picked in Generate's state (one with pictures), within its pictures."""
    return min(int(state.get("selected", 0)), len(state["paths"]) - 1)


def _png_download(path: str, seed: int) -> gr.DownloadButton:
    """Generate's download button holding one picture, named by its seed: which picture in the gallery is selected
    is easy to lose sight of."""
    return gr.DownloadButton(f"⬇ PNG of seed {seed}, with settings", value=path)


def _source_label(source: Any) -> str:
    if isinstance(source, PackageFile):
        return f"PyPI package `{source.distribution}`"
    if isinstance(source, HubFile):
        return f"[{source.repo_id}](https://huggingface.co/{source.repo_id})"
    if isinstance(source, UrlFile):
        return f"[{source.filename}]({source.url})"
    return f"local file `{getattr(source, 'path', source)}`"


class UploadedImage(gr.Image):
    """gr.Image that hands the handler the uploaded file's path without decoding it first.

    gradio's own preprocessing opens every upload with PIL and fails with an opaque error on text files,
    decompression bombs and truncated files; `studio.imaging.load_image` (inside the studio) refuses them with a
    message a person can act on instead. Same browser widget (`is_template`), `type="filepath"` semantics.
    """

    is_template = True

    def preprocess(self, payload: Any) -> str | None:
        if payload is None:
            return None
        path = getattr(payload, "path", None)
        if path:
            return str(path)
        try:  # webcam snapshots may arrive as data URLs: gradio decodes those itself
            return super().preprocess(payload)
        except Exception as error:
            raise gr.Error(f"the image could not be read ({error}); upload a JPEG, PNG or WebP file") from None


class CheckedSlider(gr.Slider):
    """gr.Slider whose range is checked by the event's validator (`_in_range`), not by gradio's preprocessing.

    Out of range, gradio's own check fails inside the validator and the API answers a bare HTTP 400; the validator
    names the parameter and its range instead, and the page shows that message on the slider. Same browser widget.
    """

    is_template = True

    def preprocess(self, payload: float) -> float:
        return gr.Number.round_to_precision(payload, self.precision)


class CheckedRadio(gr.Radio):
    """gr.Radio (type="value") whose choice is checked by the event's validator, not by gradio's preprocessing.

    As with CheckedSlider: a value outside the choices otherwise fails inside the validator as a bare HTTP 400; the
    validator names the parameter and its choices instead. Same browser widget.
    """

    is_template = True

    def preprocess(self, payload: str | int | float | None) -> str | int | float | None:
        return payload


class _Job:
    """A running stoppable job. Stop sets `stop_requested`; the job's progress callback reads it.

    A Stop button that also cancels the job's event (so that a queued job goes too) leaves the job no way to show
    what it made before it stopped, so the job hands its last outputs over here and the Stop handler shows them.
    """

    def __init__(self) -> None:
        self.stop_requested = threading.Event()
        self._ended = threading.Event()
        self._outputs: tuple[Any, ...] | None = None
        self.shown_summary: str | None = None  # the summary of what the job has on show so far (a picture so far)

    def hand_over(self, outputs: tuple[Any, ...]) -> None:
        self._outputs = outputs
        self._ended.set()

    def end(self) -> None:
        self._ended.set()

    def outputs(self, timeout: float) -> tuple[Any, ...] | None:
        """The outputs handed over, waiting up to `timeout` seconds for the job to end; None if it gave none."""
        self._ended.wait(timeout)
        return self._outputs


class _RunningJobs:
    """The running job of each (browser session, job kind)."""

    def __init__(self) -> None:
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._lock = threading.Lock()

    def start(self, session: str, kind: str) -> _Job:
        with self._lock:
            job = _Job()
            self._jobs[(session, kind)] = job
            return job

    def stop(self, session: str, kind: str) -> _Job | None:
        """Ask the running job to stop; returns it, or None when none was running."""
        with self._lock:
            job = self._jobs.get((session, kind))
        if job is not None:
            job.stop_requested.set()
        return job

    def finish(self, session: str, kind: str, job: _Job) -> None:
        job.end()
        with self._lock:
            if self._jobs.get((session, kind)) is job:
                del self._jobs[(session, kind)]


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


def _event_still_running() -> bool:
    """False once gradio has cancelled the current event (Stop button, closed tab or a client's `Job.cancel()`).

    gradio cancels the asyncio task that waits for a handler but cannot stop the worker thread; this lets the
    handler notice. It reads the queue's list of active jobs; on any surprise it answers True (keep going).
    """
    try:
        from gradio.context import LocalContext

        blocks = LocalContext.blocks.get(None)
        event_id = LocalContext.event_id.get(None)
        if blocks is None or event_id is None or getattr(blocks, "_queue", None) is None:
            return True
        jobs = blocks._queue.active_jobs
        return any(job is not None and any(event._id == event_id for event in job) for job in jobs)
    except Exception:  # private gradio state: never let a probe break a job
        return True


PictureSoFar = Callable[[int, int, Callable[[], StylizeResult]], None]


def _stopped_stylize_info(shown: str | None) -> str:
    """The Stylize summary after a Stop: what the picture on show is, or that there was none yet."""
    return STYLIZE_STOPPED if shown is None else f"**Stopped.** {shown}"


def _showing_pictures(
    render: Callable[[PictureSoFar], StylizeResult], *, every: float
) -> Iterator[tuple[StylizeResult, bool]]:
    """Run `render(on_picture)` in a thread and yield the pictures so far that it offers, at most one per `every`
    seconds, then its result, each with whether it is the result.

    The thread runs in a copy of the caller's context, so gradio's progress bar and `_event_still_running` work
    there. Errors are raised here. If the consumer stops iterating (gradio cancelled the event), the render is
    stopped at its next picture.
    """
    updates: queue.Queue[tuple[str, Any]] = queue.Queue()
    abandoned = threading.Event()
    last_shown = time.perf_counter()

    def on_picture(done: int, total: int, picture_so_far: Callable[[], StylizeResult]) -> None:
        nonlocal last_shown
        if abandoned.is_set():
            raise Cancelled("nobody is waiting for this picture any more")
        if done < total and time.perf_counter() - last_shown >= every:
            updates.put(("picture", picture_so_far()))
            last_shown = time.perf_counter()

    def run() -> None:
        try:
            updates.put(("result", render(on_picture)))
        except BaseException as error:  # handed over to the consumer's thread
            updates.put(("error", error))

    worker = threading.Thread(target=contextvars.copy_context().run, args=(run,), name="studio-render", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = updates.get()
            if kind == "error":
                raise value
            yield value, kind == "result"
            if kind == "result":
                return
    finally:
        abandoned.set()


class _Outputs:
    """Files the app writes for downloads and galleries (PNG with settings, videos). Beyond `keep` files the oldest
    are deleted, except those a visitor still has on show (`show`): every visitor's slider moves write new files, and
    the pictures someone is looking at must stay downloadable and sendable to another tab."""

    def __init__(self, root: Path | None = None, *, keep: int = KEEP_OUTPUTS) -> None:
        self._root = root
        self._keep = keep
        self._lock = threading.Lock()
        self._written: list[Path] = []
        self._on_show: dict[tuple[str, str], tuple[Path, ...]] = {}  # (visitor, tab) -> its files on show

    @property
    def root(self) -> Path:
        with self._lock:
            if self._root is None:
                configured = os.environ.get("STUDIO_OUTPUT_DIR")
                self._root = Path(configured) if configured else Path(tempfile.mkdtemp(prefix="gan-art-studio-"))
            self._root.mkdir(parents=True, exist_ok=True)
            return self._root

    def discard(self, path: Path) -> None:
        """Delete a file this app wrote that nobody needs any more (a picture so far, once a newer one shows)."""
        with self._lock:
            if path in self._written:
                self._written.remove(path)
                path.unlink(missing_ok=True)

    def show(self, visitor: str, tab: str, paths: Iterable[str | Path]) -> None:
        """`paths` are what `visitor` now has on show in `tab` (replacing what it had there): kept until replaced."""
        with self._lock:
            self._on_show[(visitor, tab)] = tuple(Path(path) for path in paths)

    def forget(self, visitor: str) -> None:
        """The visitor left: its files may go like any others."""
        with self._lock:
            for key in [key for key in self._on_show if key[0] == visitor]:
                del self._on_show[key]

    def path(self, stem: str, suffix: str) -> Path:
        path = self.root / f"{stem}-{uuid.uuid4().hex[:8]}{suffix}"
        with self._lock:
            on_show = {shown for paths in self._on_show.values() for shown in paths}
            kept: list[Path] = []
            while len(self._written) + len(kept) >= self._keep and self._written:  # room for the new one
                old = self._written.pop(0)
                if old in on_show:
                    kept.append(old)
                else:
                    old.unlink(missing_ok=True)
            self._written[:0] = kept
            self._written.append(path)
        return path


# --- handlers -----------------------------------------------------------------------------------------------------


def _direction_sliders(elem_prefix: str) -> list[gr.Slider]:
    """The latent direction sliders, "Direction 1" (the API's index 0) first."""
    return [
        CheckedSlider(
            -DIRECTION_RANGE,
            DIRECTION_RANGE,
            value=0.0,
            step=0.25,
            label=f"Direction {number}",
            elem_id=f"{elem_prefix}-{number}",
            min_width=160,
            buttons=[],
        )
        for number in range(1, DIRECTION_SLIDERS + 1)
    ]


class StudioUI:
    """The handlers behind the widgets. One instance per app; per-visitor state lives in gr.State."""

    def __init__(self, studio: Studio, *, outputs: _Outputs | None = None) -> None:
        self.studio = studio
        self.outputs = outputs or _Outputs()
        self.jobs = _RunningJobs()

    # model helpers

    def generator_choices(self) -> list[tuple[str, str]]:
        choices = []
        for spec in self.studio.models(kind="generator"):
            note = {"cached": "offline", "missing": "not on this machine"}.get(
                _weights_state(spec), f"download {_megabytes(_download_size(spec))}"
            )
            side = _output_side(spec)
            choices.append((f"{spec.name}  ·  {f'{side} px  ·  ' if side else ''}{note}", spec.name))
        return choices

    def ensure_weights(self, name: str, progress: Any = None) -> ModelSpec:
        """Load a model (downloading its weights with a progress bar when they are not cached yet)."""
        self.studio.load(name, progress=self._download_progress(name, progress))
        return self.studio.spec(name)

    @staticmethod
    def _download_progress(name: str, progress: Any) -> Callable[[int, int | None], None]:
        """Says "Loading NAME" on the page's progress bar and returns the callback that shows its download."""

        def report(done: int, total: int | None) -> None:
            if progress is not None and total:
                progress(done / total, desc=f"Downloading {name}: {done / 1e6:.0f} of {total / 1e6:.0f} MB")

        if progress is not None:
            progress(0, desc=f"Loading {name}")
        return report

    def model_summary(self, spec: ModelSpec) -> str:
        state = _weights_state(spec)
        if state == "cached":
            status = "✅ weights on this machine"
        elif state == "missing":
            status = (
                "⛔ weights not on this machine, and the studio is offline: pick a model marked offline, or go online "
                "(unset HF_HUB_OFFLINE and STUDIO_OFFLINE) to fetch them"
            )
        else:
            status = (
                f"⬇ weights not cached ({_megabytes(_download_size(spec))} from {_source_label(spec.sources[0])}); "
                "they are fetched on first use"
            )
        kind = f"conditional on {len(spec.classes)} classes" if spec.classes else "unconditional"
        return f"{spec.description}  \n{kind} · {status} · licence: {spec.license or 'see model card'}"

    # Generate tab

    def class_menu(self, name: str) -> Any:
        """The class menu shows only for conditional models, with their classes."""
        classes = list(self.studio.spec(name).classes)
        return gr.update(visible=bool(classes), choices=classes, value=classes[0] if classes else None)

    def describe_model(self, name: str) -> tuple[Any, str]:
        """The class menu and what the model is."""
        return self.class_menu(name), self.model_summary(self.studio.spec(name))

    def select_model(
        self,
        name: str,
        state: dict | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, Any, str]:
        """Load a generator, fetching its weights with a progress bar if needed: (model, class menu, summary).

        When it cannot be loaded (no network, damaged weights) a warning says why and the menus go back to the
        model and class of the pictures on show, so that the page keeps working with them.
        """
        try:
            spec = self._generator_spec(name)
            self.ensure_weights(name, progress)
        except USER_ERRORS as error:
            previous = (state or {}).get("model")
            if not previous or previous == name:
                raise
            gr.Warning(_without_upload_folders(str(error)), title=f"{name} could not be loaded")
            previous_spec = self.studio.spec(previous)
            classes = list(previous_spec.classes)
            class_menu = gr.update(visible=bool(classes), choices=classes, value=state.get("class_name"))
            return previous, class_menu, self.model_summary(previous_spec)
        return gr.update(), gr.update(), self.model_summary(spec)

    def generate(
        self,
        model: str,
        seed: Any,
        batch: Any,
        psi: Any,
        class_name: str | None,
        direction_1: Any = 0.0,
        direction_2: Any = 0.0,
        direction_3: Any = 0.0,
        direction_4: Any = 0.0,
        direction_5: Any = 0.0,
        request: gr.Request = None,  # type: ignore[assignment]
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, ...]:
        """Generate `batch` images from seeds seed, seed+1, ... (empty seed: random).

        Returns the gallery (PNG files with settings, captioned with their seeds), a summary, the first PNG, the
        first seed, and the per-session state (paths and seeds) that later buttons use.
        """
        started = time.perf_counter()
        spec = self._generator_spec(model)
        self.ensure_weights(model, progress)
        start = _seed_or_random(seed)
        count = _whole(batch, "batch", 1, MAX_UI_BATCH)
        directions = _direction_amounts(direction_1, direction_2, direction_3, direction_4, direction_5)
        progress(0.5, desc="Generating")
        result = self.studio.generate(
            model=model,
            seed=start,
            batch=count,
            psi=_number(psi, "truncation psi"),
            class_name=(class_name or None) if spec.is_conditional else None,
            directions=directions,
        )
        paths = self._save_generation(result)
        self.outputs.show(_session(request), "generate", paths)
        gallery = [(str(path), f"seed {seed_}") for path, seed_ in zip(paths, result.seeds, strict=True)]
        info = self._generation_info(result, time.perf_counter() - started)
        state = {
            "paths": [str(path) for path in paths],
            "seeds": list(result.seeds),
            "selected": 0,
            "model": model,  # what a failed model switch goes back to
            "class_name": result.settings.class_name,
        }
        return gallery, info, str(paths[0]), start, state

    def check_generate_inputs(
        self, model: str, seed: Any, batch: Any, psi: Any, class_name: str | None, *directions: Any
    ) -> list[dict[str, Any]]:
        """Runs before `generate` (gradio's validator): a value it would refuse is marked on its own control, and
        the pictures on show stay, instead of an error covering the gallery and the seed box."""
        return [
            _verdict(lambda: self._generator_spec(model)),
            _verdict(lambda: _seed_or_random(seed)),
            _verdict(lambda: _whole(batch, "batch", 1, MAX_UI_BATCH)),
            _verdict(lambda: _in_range(psi, "truncation psi", *PSI_RANGE)),
            _verdict(lambda: None),  # the class: checked with the model, by `generate`
            *_direction_verdicts(directions),
        ]

    def _adain_missing_offline(self) -> bool:
        """Offline with AdaIN's encoder or decoder not on this machine: AdaIN cannot run until the network is back."""
        return any(_weights_state(self.studio.spec(name)) == "missing" for name in ADAIN_MODELS)

    def _generator_spec(self, name: str) -> ModelSpec:
        for spec in self.studio.models(kind="generator"):
            if spec.name == name:
                return spec
        raise ValueError(f"no generator named {name!r}: pick one from the menu (the Models tab lists every model)")

    @staticmethod
    def after_generation(
        state: dict | None, ticked: list[str] | None, picked_seed: int | None, offered: list[str] | None = None
    ) -> tuple[Any, dict | None, Any, list[str]]:
        """After new pictures: the keyframe picker offers their seeds, and what the person chose survives a change
        that keeps the seeds (a slider moved): the ticked seeds stay ticked, none if they unticked all (new seeds
        get the first four ticked), and the picture they clicked stays the one that is downloaded and sent on.
        `offered`: the seeds the picker offered until now. Returns (keyframes, state, download, seeds offered)."""
        seeds = [str(seed) for seed in (state or {}).get("seeds", [])]
        ticked = list(ticked or []) if set(ticked or []) <= set(seeds) else []
        same_seeds = offered is not None and list(offered) == seeds
        default = seeds[:4] if len(seeds) > 1 else []
        keyframes = gr.update(choices=seeds, value=ticked if ticked or same_seeds else default)
        if not state or not state.get("paths"):
            return keyframes, state, gr.update(), seeds
        index = seeds.index(str(picked_seed)) if str(picked_seed) in seeds else _selected_index(state)
        state = {**state, "selected": index}
        return keyframes, state, _png_download(state["paths"][index], state["seeds"][index]), seeds

    # Stylize tab

    def stylize(
        self,
        content: str | None,
        style_1: str | None,
        weight_1: Any,
        style_2: str | None,
        weight_2: Any,
        style_3: str | None,
        weight_3: Any,
        method: str,
        strength: Any,
        preserve_color: str,
        size: Any,
        steps: Any,
        mask: str | None,
        seed: Any,
        request: gr.Request = None,  # type: ignore[assignment]
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> Iterator[tuple[str, str, str]]:
        """Restyle a photo like one to three paintings (Gatys optimisation or AdaIN).

        Yields the picture (a PNG that carries its settings), the same file for download and a summary: for Gatys
        first the picture so far about once a second, so that it grows on screen and Stop keeps the latest one,
        then the finished picture.
        """
        started = time.perf_counter()
        arguments = self._stylize_arguments(
            content,
            (style_1, style_2, style_3),
            (weight_1, weight_2, weight_3),
            method,
            strength,
            preserve_color,
            size,
            steps,
            mask,
            seed,
        )
        self._ensure_style_weights(arguments["method"], progress)
        on_cpu = self.studio.device.partition(":")[0] == "cpu"
        tuning_note = (
            " (the first run at a picture size on this computer also times its convolutions)" if on_cpu else ""
        )
        progress(0, desc=f"Stylizing: preparing{tuning_note}")
        shown: str | None = None  # the picture so far on show; replaced by the next (a stopped run keeps it)
        with self._stoppable(request, "stylize", progress, "steps") as (on_progress, job):

            def render(on_picture: PictureSoFar) -> StylizeResult:
                return self.studio.stylize(**arguments, on_progress=on_progress, on_picture=on_picture)

            try:
                for result, finished in _showing_pictures(render, every=PICTURE_EVERY_SECONDS):
                    path = self._save_stylized(result, arguments)
                    self.outputs.show(_session(request), "stylize", [path])
                    job.shown_summary = self._stylize_info(result, arguments, time.perf_counter() - started)
                    if finished:
                        # Done before the last yield, which waits for gradio: a Stop from now on has nothing to stop
                        # and must not call the finished picture stopped.
                        self.jobs.finish(_session(request), "stylize", job)
                    yield path, path, job.shown_summary
                    if shown is not None:
                        self.outputs.discard(Path(shown))
                    shown = path
            except Cancelled:  # the picture so far stays on show (sent again: the run's last outputs are whole)
                kept = gr.update() if shown is None else shown
                yield kept, kept, _stopped_stylize_info(job.shown_summary)

    def stylize_preview(
        self,
        content: str | None,
        style_1: str | None,
        weight_1: Any,
        style_2: str | None,
        weight_2: Any,
        style_3: str | None,
        weight_3: Any,
        method: str,
        strength: Any,
        preserve_color: str,
        size: Any,
        steps: Any,
        mask: str | None,
        seed: Any,
    ) -> tuple[Any, str]:
        """A fast low-resolution AdaIN preview while sliders move, with AdaIN chosen; quietly skipped when it cannot
        run. With Gatys chosen nothing changes: the picture and summary on show stay until Stylize is pressed."""
        if method != "adain":
            return gr.update(), gr.update()
        if not content or not any((style_1, style_2, style_3)):
            return gr.update(), ""
        if not all(is_cached(self.studio.spec(name)) for name in ADAIN_MODELS):
            return gr.update(), self._no_adain_preview()  # a slider drag never waits for a download (or a timeout)
        try:
            arguments = self._stylize_arguments(
                content,
                (style_1, style_2, style_3),
                (weight_1, weight_2, weight_3),
                method,
                strength,
                preserve_color,
                size,
                steps,
                mask,
                seed,
            )
            result = self.studio.stylize(**arguments, preview=True)
        except (WeightsUnavailable, WeightsIntegrityError):
            return gr.update(), self._no_adain_preview()
        except ValueError as error:  # a setting the Stylize button would refuse too: say so, without a pop-up
            return gr.update(), f"No preview: {_without_upload_folders(str(error))}"
        path = self.outputs.path("preview", ".png")
        result.image.save(path, format="PNG")
        return str(
            path
        ), f"Preview ({result.image.width}×{result.image.height}, AdaIN) · press **Stylize** for the full picture"

    def _no_adain_preview(self) -> str:
        """The preview's note when AdaIN's weights are not here: where to get them, unless the studio is offline."""
        if self._adain_missing_offline():
            return (
                "Live previews use AdaIN, whose weights are not on this machine, and the studio is offline: "
                "choose Gatys and press **Stylize**."
            )
        return (
            "Live previews use AdaIN, whose weights are not on this machine (fetch them in the Models tab, or "
            "`python -m studio weights fetch adain-encoder adain-decoder`). Press **Stylize** for a full render."
        )

    def check_stylize_inputs(
        self,
        content: str | None,
        style_1: str | None,
        weight_1: Any,
        style_2: str | None,
        weight_2: Any,
        style_3: str | None,
        weight_3: Any,
        method: str,
        strength: Any,
        preserve_color: str,
        size: Any,
        steps: Any,
        mask: str | None,
        seed: Any,
    ) -> list[dict[str, Any]]:
        """Runs before `stylize` (gradio's validator): what it would refuse is marked on the control to change, and
        the picture on show stays. The pictures are decoded here too, so an unreadable or oversized upload is named
        on its own box instead of failing the run."""
        styles, weights = (style_1, style_2, style_3), (weight_1, weight_2, weight_3)

        def method_can_run() -> None:
            _check_method(method)
            if method == "adain" and self._adain_missing_offline():
                # short: on the page this message sits over the method's options
                raise ValueError("offline, without AdaIN's weights: use Gatys")

        def mask_fits() -> None:
            if not mask:
                return
            if method != "adain":
                raise ValueError(MASK_NEEDS_ADAIN)
            load_mask(mask, name="mask", reuse=True)  # decodes within the pixel limit; the run reuses it
            check_mask_styles(sum(1 for style in styles if style))

        def style_fits(index: int) -> None:
            if index == 0:
                _check_styles_given(styles)
            _check_picture(styles[index], f"style image {index + 1}")

        def weight_fits(index: int) -> None:
            if not styles[index]:
                return  # an empty slot's weight is not used
            _in_range(weights[index], f"style {index + 1} weight", 0, 1)
            try:
                given = [_number(weight, "weight") for style, weight in zip(styles, weights, strict=True) if style]
            except ValueError:
                return  # another weight is not a number: its own box says so
            if styles[index] and not mask and max(given) <= 0.0:  # with a mask the weights do not apply
                raise ValueError("every style has weight 0: give at least one a positive weight")

        return [
            _verdict(lambda: (_check_content(content), _check_picture(content, "content image"))),
            _verdict(lambda: style_fits(0)),
            _verdict(lambda: weight_fits(0)),
            _verdict(lambda: style_fits(1)),
            _verdict(lambda: weight_fits(1)),
            _verdict(lambda: style_fits(2)),
            _verdict(lambda: weight_fits(2)),
            _verdict(method_can_run),
            _verdict(lambda: _in_range(strength, "strength", 0, 1)),
            _verdict(lambda: check_preserve_color(preserve_color)),
            _verdict(lambda: _whole(size, "size", *STYLIZE_SIZES)),
            _verdict(lambda: _whole(steps, "steps", *STYLIZE_STEPS) if method == "gatys" else None),
            _verdict(mask_fits),
            _verdict(lambda: _stylize_seed(seed)),
        ]

    def _stylize_arguments(
        self,
        content: str | None,
        styles: tuple[str | None, ...],
        weights: tuple[Any, ...],
        method: str,
        strength: Any,
        preserve_color: str,
        size: Any,
        steps: Any,
        mask: str | None,
        seed: Any,
    ) -> dict[str, Any]:
        _check_content(content)
        _check_styles_given(styles)
        chosen = [
            (style, _number(weight, f"style {index + 1} weight"))
            for index, (style, weight) in enumerate(zip(styles, weights, strict=True))
            if style
        ]
        _check_method(method)
        return {
            "content": content,
            "styles": [style for style, _ in chosen],
            # with a mask the mask decides where each style goes: the weights do not apply
            "style_weights": None if mask else [weight for _, weight in chosen],
            "method": method,
            "strength": _number(strength, "strength"),
            "preserve_color": preserve_color or "none",
            "size": _whole(size, "size", 16, 4096),
            **({"steps": _whole(steps, "steps", 1, 5000)} if method == "gatys" else {}),  # AdaIN takes no steps
            "mask": mask or None,
            "seed": _stylize_seed(seed),
        }

    def _ensure_style_weights(self, method: str, progress: Any) -> None:
        if method == "adain":
            self.studio.load_adain(lambda name: self._download_progress(name, progress))
        else:
            self.ensure_weights(DEFAULT_VGG, progress)

    def _save_stylized(self, result: Any, arguments: dict[str, Any]) -> str:
        """A PNG whose text chunks say how it was made (file names of the inputs, not their pixels)."""
        inputs = stylize_input_names(arguments["content"], arguments["styles"], arguments["mask"])
        path = self.outputs.path(f"stylized-{arguments['method']}", ".png")
        return str(result.save(path, inputs=inputs))

    @staticmethod
    def _stylize_info(result: Any, arguments: dict[str, Any], seconds: float) -> str:
        image = result.image
        weights = arguments["style_weights"] or [None] * len(arguments["styles"])
        styles = ", ".join(
            Path(style).name + (f" ({weight:g})" if weight is not None else "")
            for style, weight in zip(arguments["styles"], weights, strict=True)
        )
        parts = [f"**{arguments['method']}**", f"styles {styles}", f"strength {arguments['strength']:g}"]
        settings = result.settings
        planned = settings.get("planned_steps")  # only in a picture so far
        if arguments["method"] == "gatys":
            steps, warm_up = settings.get("steps", arguments["steps"]), settings.get("warm_up_steps", 0)
            if planned is not None and steps == 0:
                parts.append(f"a first sketch at a smaller size, before {_count(planned, 'step')}")
            elif planned is not None:
                parts.append(f"the picture after {steps} of {_count(planned, 'step')}")
            else:
                parts.append(_count(steps, "step") + (f" after {warm_up} at smaller sizes" if warm_up else ""))
        if arguments["preserve_color"] != "none":
            parts.append(f"colour kept ({arguments['preserve_color']})")
        parts.append(f"{image.width}×{image.height}")
        parts.append(f"{getattr(result, 'seconds', seconds):.1f} s")
        if planned is not None:
            return " · ".join(parts) + "  \nThe PNG holds this picture so far, with its settings."
        return " · ".join(parts) + "  \nThe PNG carries these settings."

    @staticmethod
    def download_ready(file: str | None) -> Any:
        """A download button can be pressed once it holds a file (before, a click would do nothing)."""
        return gr.update(interactive=bool(file))

    def send_to_stylize(self, state: dict | None) -> tuple[Any, Any]:
        """The selected (or first) artwork becomes the photo to stylize."""
        if not state or not state.get("paths"):
            raise ValueError("generate an artwork first")
        return state["paths"][_selected_index(state)], gr.Tabs(selected="stylize")

    def send_to_walk(
        self,
        keyframes: list[str] | None,
        state: dict | None,
        model: str,
        psi: Any,
        class_name: str | None,
        *direction_amounts: Any,
    ) -> tuple[Any, ...]:
        """The ticked seeds (or all on show) become the walk's keyframes; model, psi, class and the latent directions
        come along (their accordion opens when one is moved), and several seeds take the route through them. A note
        says when no seed was ticked."""
        on_show = [str(seed) for seed in (state or {}).get("seeds", [])]
        seeds = [str(seed) for seed in keyframes or []] or on_show
        if not seeds:
            raise ValueError("generate some artworks first, then tick the seeds to walk through")
        if not keyframes and len(on_show) > 1:
            gr.Info(f"No seed was ticked: the walk goes through all {len(on_show)} on show.")
        spec = self.studio.spec(model)
        class_update = gr.update(
            visible=bool(spec.classes), choices=list(spec.classes), value=class_name if spec.classes else None
        )
        moved = any(isinstance(amount, (int, float)) and amount != 0 for amount in direction_amounts)
        directions_box = gr.update(open=True) if moved else gr.update()
        route = "keyframes" if len(seeds) > 1 else gr.update()  # a noise loop circles one seed
        walk_tab = gr.Tabs(selected="walk")
        return ", ".join(seeds), model, psi, class_update, *direction_amounts, directions_box, route, walk_tab

    def walk(
        self,
        model: str,
        seeds: str,
        frames: Any,
        fps: Any,
        loop: bool,
        easing: str,
        video_format: str,
        psi: Any,
        class_name: str | None,
        size: Any,
        style: str | None,
        style_strength: Any,
        direction_1: Any = 0.0,
        direction_2: Any = 0.0,
        direction_3: Any = 0.0,
        direction_4: Any = 0.0,
        direction_5: Any = 0.0,
        route: str = "keyframes",
        spread: Any = 1.0,
        request: gr.Request = None,  # type: ignore[assignment]
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> Iterator[tuple[Any, Any, str]]:
        """Render a latent walk through the keyframe seeds ("3, 14, 15"), or a noise loop around one seed (route
        "noise-loop", wandering `spread` 0..1 away), every frame moved along the latent directions as the Generate
        tab's sliders move a picture.

        Yields, once, the video for the player (None for GIF and PNG zip), the file to download and a summary.
        A generator although it yields once: when gradio cancels a plain function's event (Stop) after an earlier
        run of it finished, the page puts a bare "Error" on its outputs; a generator's cancel leaves them be.
        """
        spec = self.ensure_weights(model, progress)
        keyframes = _walk_seeds(seeds, route)
        directions = _direction_amounts(direction_1, direction_2, direction_3, direction_4, direction_5)
        side = _walk_side(size)
        fmt = str(video_format or "mp4").lower()
        out = self.outputs.path(walk_file_stem(model, keyframes), walk_suffix(fmt))
        progress(0, desc="Rendering the walk")
        with self._stoppable(request, "walk", progress, "frames", then="finishing the file") as (on_progress, job):
            try:
                result = self.studio.walk(
                    model=model,
                    seeds=keyframes,
                    frames=_whole(frames, "frames", 2, MAX_WALK_FRAMES_UI),
                    fps=_number(fps, "fps"),
                    loop=bool(loop),
                    easing=easing,
                    psi=_number(psi, "truncation psi"),
                    class_name=(class_name or None) if spec.is_conditional else None,
                    directions=directions,
                    path=route,
                    spread=_noise_loop_spread(spread, route),
                    format=fmt,
                    size=side or None,
                    style=style or None,
                    style_strength=_number(style_strength, "style strength"),
                    out=out,
                    on_progress=on_progress,
                    keep_partial=True,
                )
            except Cancelled:
                outputs: tuple[Any, Any, str] = (gr.update(), gr.update(), WALK_STOPPED)
            else:
                playable = str(result.path) if fmt in ("mp4", "webm") else None
                summary = self._walk_info(result, model)
                if job.stop_requested.is_set() and not result.stopped_early:
                    summary += "  \nStop came after the last frame was made: the walk is whole."
                outputs = (playable, str(result.path), summary)
                self.outputs.show(_session(request), "walk", [result.path])
            job.hand_over(outputs)  # a Stop on the page cancels this event: its handler shows these instead
        yield outputs

    def check_walk_inputs(
        self,
        model: str,
        seeds: str,
        frames: Any,
        fps: Any,
        loop: bool,
        easing: str,
        video_format: str,
        psi: Any,
        class_name: str | None,
        size: Any,
        style: str | None,
        style_strength: Any,
        direction_1: Any = 0.0,
        direction_2: Any = 0.0,
        direction_3: Any = 0.0,
        direction_4: Any = 0.0,
        direction_5: Any = 0.0,
        route: str = "keyframes",
        spread: Any = 1.0,
    ) -> list[dict[str, Any]]:
        """Runs before `walk` (gradio's validator): a value it would refuse is marked on its own control, and an API
        client is told which parameter it was, instead of a bare "less than minimum"."""
        from studio.ops.interpolation import check_easing

        def model_can_run() -> None:
            if _weights_state(self._generator_spec(model)) == "missing":
                raise ValueError(
                    f"{model}'s weights are not on this machine and the studio is offline: pick a model marked offline"
                )

        def style_can_run() -> None:
            _check_picture(style, "style picture")
            if style and self._adain_missing_offline():
                raise ValueError(
                    "offline, without AdaIN's weights a walk cannot be stylized: remove the style picture"
                )

        def frames_fit() -> None:
            count = _whole(frames, "frames", 2, MAX_WALK_FRAMES_UI)
            try:
                keyframes = len(_walk_seeds(seeds, route)) if route != "noise-loop" else 1
            except ValueError:
                return  # the seeds box says what is wrong with them
            if count < keyframes:
                raise ValueError(f"{count} frames cannot show {keyframes} keyframes; use at least {keyframes} frames")

        def fps_fits() -> None:
            from studio.ops.video import MAX_GIF_FPS

            if _in_range(fps, "fps", 1, 60) > MAX_GIF_FPS and str(video_format).lower() == "gif":
                raise ValueError(
                    f"GIF plays at most {MAX_GIF_FPS:g} fps (its delays are in 1/100 s, and browsers slow faster "
                    "ones down): lower the fps, or choose mp4 or webm"
                )

        def class_fits() -> None:
            try:
                spec = self._generator_spec(model)
            except ValueError:
                return  # the model's box says so
            if spec.is_conditional:
                class_index(spec, class_name or None)

        return [
            _verdict(model_can_run),
            _verdict(lambda: _check_walk_seeds(seeds, route, loop)),
            _verdict(frames_fit),
            _verdict(fps_fits),
            _verdict(lambda: None),  # loop
            _verdict(lambda: check_easing(easing)),
            _verdict(lambda: walk_suffix(video_format)),
            _verdict(lambda: _in_range(psi, "truncation psi", *PSI_RANGE)),
            _verdict(class_fits),
            _verdict(lambda: _walk_side(size)),
            _verdict(style_can_run),
            _verdict(lambda: _in_range(style_strength, "style strength", 0, 1)),
            *_direction_verdicts((direction_1, direction_2, direction_3, direction_4, direction_5)),
            _verdict(lambda: _walk_route(route)),
            _verdict(lambda: _noise_loop_spread(spread, route)),
        ]

    @staticmethod
    def _walk_info(result: WalkResult, model: str) -> str:
        settings = result.settings
        directions = f" · {_directions_text(settings['directions'])}" if settings["directions"] else ""
        summary = (
            f"**{model}** · {result.route}{directions} · {_count(result.frames, 'frame')} at {result.fps:g} fps "
            f"({result.frames / result.fps:.1f} s) · {result.width}×{result.height} {settings['format'].upper()}"
            f"{f' ({result.size_note})' if result.size_note else ''} · rendered in {result.seconds:.1f} s"
        )
        if not result.stopped_early:
            return summary
        loops = settings["loop"] or settings["path"] == "noise-loop"
        loop_note = ", so it does not loop back to the start" if loops else ""
        return (
            f"**Stopped** after {result.frames} of {settings['frames']} frames: the file holds those"
            f"{loop_note}.\n\n{summary}"
        )

    @staticmethod
    def route_controls(route: str) -> tuple[Any, Any, Any, Any]:
        """Loop and easing shape a walk through keyframes, the spread a noise loop (which always loops): the controls
        the chosen route does not use are greyed out. The seeds box is touched without a change, which clears a
        refusal marked on it: it may have been about the route ("a noise loop circles one seed"); `check_route_seeds`
        then marks the seeds again if the new route cannot walk them either."""
        keyframes = route != "noise-loop"
        return (
            gr.update(interactive=keyframes),
            gr.update(interactive=keyframes),
            gr.update(interactive=not keyframes),
            gr.update(),
        )

    @staticmethod
    def check_route_seeds(seeds: str, route: str, loop: bool) -> list[dict[str, Any]]:
        """Runs (gradio's validator) after a route change: marks the seeds box when the route chosen cannot walk its
        seeds, as pressing Walk would."""
        return [
            _verdict(lambda: _check_walk_seeds(seeds, route, loop)),
            _verdict(lambda: None),
            _verdict(lambda: None),
        ]

    @staticmethod
    def walk_preview(file: str | None) -> tuple[Any, Any]:
        """The player that fits the file: the video player for MP4 and WebM, an image box for an animated GIF (the
        video player cannot play it), neither for a zip of frames (its download is below)."""
        suffix = Path(file).suffix.lower() if file else ".mp4"
        is_gif = suffix == ".gif"
        return gr.update(visible=suffix in (".mp4", ".webm")), gr.update(
            value=file if is_gif else None, visible=is_gif
        )

    def stop_stylize(self, request: gr.Request = None) -> Any:  # type: ignore[assignment]
        """Stop this visitor's style transfer; the summary says so (its picture so far stays on show). No change
        when none was running."""
        job = self.jobs.stop(_session(request), "stylize")
        return gr.update() if job is None else _stopped_stylize_info(job.shown_summary)

    def stop_walk(self, request: gr.Request = None) -> tuple[Any, Any, Any, Any]:  # type: ignore[assignment]
        """Stop this visitor's walk and show the file of the frames it made: the video player (MP4, WebM), the GIF
        box, the download and the summary. No change when no walk was running."""
        job = self.jobs.stop(_session(request), "walk")
        if job is None:
            return gr.update(), gr.update(), gr.update(), gr.update()
        outputs = job.outputs(timeout=WALK_STOP_WAIT_SECONDS)
        if outputs is None:  # the walk failed, or is still finishing its file
            return gr.update(), gr.update(), gr.update(), "**Stopped.**"
        playable, file, summary = outputs
        if not isinstance(file, str):  # stopped before any frame: nothing to show
            return gr.update(), gr.update(), gr.update(), summary
        video, gif = self.walk_preview(file)
        return gr.update(value=playable, visible=video["visible"]), gif, file, summary

    @contextlib.contextmanager
    def _stoppable(
        self, request: gr.Request | None, kind: str, progress: Any, unit: str, *, then: str = ""
    ) -> Iterator[tuple[Callable[[int, int], bool], _Job]]:
        """An `on_progress(done, total)` for the studio, which moves the progress bar and answers False once the
        job is stopped, and the running job. `then`: what the job still does after its last unit (said then)."""
        session = _session(request)
        job = self.jobs.start(session, kind)

        def on_progress(done: int, total: int) -> bool:
            if progress is not None:
                desc = f"{kind.capitalize()}: {done} of {total} {unit}" + (
                    f", {then}" if then and done >= total else ""
                )
                progress((int(done), int(total)), desc=desc, unit=unit)
            return not job.stop_requested.is_set() and _event_still_running()

        try:
            yield on_progress, job
        finally:
            self.jobs.finish(session, kind, job)

    def _save_generation(self, result: GenerationResult) -> list[Path]:
        paths = []
        for index, seed in enumerate(result.seeds):
            path = self.outputs.path(f"{result.settings.model}-seed{seed}", ".png")
            result.save(path, index=index)
            paths.append(path)
        return paths

    @staticmethod
    def _generation_info(result: GenerationResult, seconds: float) -> str:
        settings = result.settings
        parts = [f"**{settings.model}**", "seeds " + ", ".join(str(seed) for seed in result.seeds)]
        parts.append(f"ψ {settings.psi:g}")
        if settings.class_name:
            parts.append(f"class {settings.class_name}")
        if settings.directions:
            parts.append(_directions_text(settings.directions))
        parts.append(f"{seconds:.2f} s")
        return " · ".join(parts) + "  \nEach PNG carries these settings; drop it into *Recreate* to get it back."

    def select_image(self, state: dict | None, event: gr.SelectData) -> tuple[Any, dict | None, int | None]:
        """A click on a gallery image makes it the one that is downloaded and sent on (and remembers its seed, so
        that it stays chosen when the pictures are made again with other settings)."""
        if not state or not state.get("paths"):
            return gr.update(), state, None
        index = min(max(int(event.index), 0), len(state["paths"]) - 1)
        state = {**state, "selected": index}
        return _png_download(state["paths"][index], state["seeds"][index]), state, state["seeds"][index]

    @staticmethod
    def random_seed() -> int:
        return secrets.randbelow(MAX_SEED + 1)

    def recreate(self, png: str | None) -> tuple[Any, ...]:
        """Read the settings stored in a studio PNG back into the Generate widgets."""
        if not png:
            raise ValueError("drop a PNG that the studio saved (it carries its settings)")
        settings = read_png_settings(png)
        spec = self.studio.spec(settings.model)
        if spec.kind != "generator":
            raise ValueError(
                f"this PNG names {settings.model}, which is not an image generator (its kind: {spec.kind})"
            )
        # refused here, before the controls change: the pictures on show and the controls must keep matching
        if _weights_state(spec) == "missing":
            raise ValueError(
                f"this PNG was made with {settings.model}, whose weights are not on this machine, and the studio is "
                "offline; fetch them where the internet can be reached (python -m studio weights fetch "
                f"{settings.model})"
            )
        if spec.classes and settings.class_name not in spec.classes:
            raise ValueError(
                f"this PNG names class {settings.class_name!r}, which {settings.model} does not have "
                f"({', '.join(spec.classes)})"
            )
        seeds = list(settings.seeds)
        consecutive = all(later == earlier + 1 for earlier, later in zip(seeds, seeds[1:], strict=False))
        if not consecutive:
            gr.Warning("These seeds are not consecutive; the studio recreates the first one.")
            seeds = seeds[:1]
        if len(seeds) > MAX_UI_BATCH:
            gr.Warning(f"This PNG holds {len(seeds)} seeds; the page shows the first {MAX_UI_BATCH}.")
        if settings.size is not None:
            gr.Warning(f"It was saved at {settings.size} px; the page renders at the model's own size.")
        hidden = {index: amount for index, amount in settings.directions.items() if index >= DIRECTION_SLIDERS}
        if hidden:
            gr.Warning(f"Directions beyond the first {DIRECTION_SLIDERS} are not shown here: {hidden}")
        amounts = [settings.directions.get(index, 0.0) for index in range(DIRECTION_SLIDERS)]
        if any(abs(amount) > DIRECTION_RANGE for amount in amounts):
            raise ValueError(
                f"this PNG moves a direction beyond the sliders' ±{DIRECTION_RANGE:g}; "
                "recreate it from Python with Studio().regenerate(png)"
            )
        class_update = gr.update(
            visible=bool(spec.classes), choices=list(spec.classes), value=settings.class_name if spec.classes else None
        )
        return (settings.model, seeds[0], min(len(seeds), MAX_UI_BATCH), settings.psi, class_update, *amounts)

    # Models tab

    def models_table(self) -> list[list[str]]:
        rows = []
        for spec in self.studio.models():
            size = _download_size(spec)
            status = {"cached": "✅ ready", "missing": "⛔ missing (offline)"}.get(
                _weights_state(spec), f"⬇ {_megabytes(size)}" if size else "⬇ download"
            )
            rows.append([spec.name, spec.kind, status, spec.description, spec.license])
        return rows

    def visitor_left(self, request: gr.Request = None) -> None:  # type: ignore[assignment]
        """The page was closed: the files it had on show may be pruned like any others."""
        self.outputs.forget(_session(request))

    def model_menus(self) -> tuple[Any, Any, Any]:
        """Fresh choices for the Generate and Walk model menus and the Models tab's fetch menu: a model trained or
        dropped into the weights folder while the app runs appears, and fetched weights lose their "download" note."""
        generators = self.generator_choices()
        every_model = [spec.name for spec in self.studio.models()]
        return gr.update(choices=generators), gr.update(choices=generators), gr.update(choices=every_model)

    def fetch(self, name: str, progress: gr.Progress = gr.Progress()) -> tuple[list[list[str]], str]:  # noqa: B008
        """Download (if needed), verify and load a model's weights."""
        if not name:
            raise ValueError("choose a model to fetch")
        started = time.perf_counter()
        self.ensure_weights(name, progress)
        digest = self.studio.weight_digest(name)
        message = f"✅ **{name}** is ready (sha256 {digest[:16]}…, {time.perf_counter() - started:.1f} s)."
        return self.models_table(), message

    def credits(self) -> str:
        lines = ["### Models", "", "| model | made by | licence | weights from |", "|---|---|---|---|"]
        for spec in self.studio.models():
            source = _source_label(spec.sources[0]) if spec.sources else "-"
            lines.append(f"| {spec.name} | {spec.credit or '-'} | {spec.license or '-'} | {source} |")
        credits_file = EXAMPLES / "CREDITS.md"
        if credits_file.is_file():
            text = credits_file.read_text(encoding="utf-8").replace("\n## ", "\n#### ")
            text = text.replace("# Example images", "### Example images", 1)
            lines += ["", text]
        return "\n".join(lines)


# --- layout -------------------------------------------------------------------------------------------------------


def build_demo(studio: Studio | None = None) -> gr.Blocks:
    """The whole app. `studio` defaults to a new `Studio()` (device from STUDIO_DEVICE, else CUDA when present)."""
    ui = StudioUI(studio or Studio())
    if _spaces_module() is not None:
        # ZeroGPU runs each @spaces.GPU call in a forked worker: models loaded here are inherited by every call
        # instead of being loaded again inside each one. Only the offline models; Hub ones load on first use.
        for name in (DEFAULT_GENERATOR, DEFAULT_VGG):
            ui.studio.load(name)
    generators = ui.generator_choices()
    generator_names = [value for _, value in generators]
    default_model = DEFAULT_GENERATOR if DEFAULT_GENERATOR in generator_names else generator_names[0]
    default_spec = ui.studio.spec(default_model)

    with gr.Blocks(title="GAN Art Studio", analytics_enabled=False, delete_cache=(3600, 7200)) as demo:
        with gr.Column(elem_id="studio-header"):
            gr.Markdown(
                "# 🎨 GAN Art Studio\n"
                "Generate artworks with GANs, restyle photos with neural style transfer and animate walks through "
                "latent space. Every result keeps its settings, so it can be made again."
            )
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=300):
                        model = gr.Dropdown(
                            generators,
                            value=default_model,
                            label="Model",
                            interactive=True,
                            # the studio checks the name (gradio's own check would fail API calls with a bare 400)
                            allow_custom_value=True,
                            elem_id="model",
                        )
                        model_info = gr.Markdown(
                            ui.model_summary(default_spec), label="About the model", elem_classes="studio-info"
                        )
                        with gr.Row(equal_height=True):
                            seed = gr.Number(value=DEFAULT_SEED, label="Seed", step=1, scale=3, elem_id="seed")
                            dice = gr.Button("🎲 Random seed", scale=2, min_width=120, elem_id="dice")
                        batch = CheckedSlider(
                            1, MAX_UI_BATCH, value=MAX_UI_BATCH, step=1, label="Batch", info="seed, seed+1, …"
                        )
                        class_name = gr.Dropdown(
                            list(default_spec.classes),
                            value=default_spec.classes[0] if default_spec.classes else None,
                            label="Class",
                            allow_custom_value=True,  # the choices change with the model; the studio validates
                            visible=bool(default_spec.classes),
                            interactive=True,
                            elem_id="class-name",
                        )
                        psi = CheckedSlider(
                            *PSI_RANGE,
                            value=1.0,
                            step=0.05,
                            label="Truncation ψ",
                            info="lower: closer to the average artwork; higher: more unusual",
                            elem_id="psi",
                        )
                        generate_button = gr.Button("Generate", variant="primary", elem_id="generate-button")
                    with gr.Column(scale=3, min_width=360):
                        gallery = gr.Gallery(
                            label="Artworks",
                            columns=4,
                            fit_columns=False,  # one or two pictures keep their size: stretched, they were cropped
                            height=400,
                            object_fit="contain",
                            preview=False,
                            elem_id="generate-gallery",
                            buttons=["download", "fullscreen"],
                            interactive=False,
                        )
                        generate_info = gr.Markdown(
                            label="Summary", elem_classes="studio-info", elem_id="generate-info"
                        )
                        with gr.Row():
                            download_png = gr.DownloadButton(
                                "⬇ PNG with settings", variant="secondary", size="sm", elem_id="download-png"
                            )
                            to_stylize = gr.Button("Send to Stylize →", size="sm", elem_id="to-stylize")
                            to_walk = gr.Button("Walk through the ticked seeds →", size="sm", elem_id="to-walk")
                        keyframes = gr.CheckboxGroup(
                            [],
                            label="Keyframes for a latent walk",
                            info="click a picture to select it for download or Stylize; tick seeds for a walk",
                            elem_id="keyframes",
                        )
                with gr.Accordion("Latent directions", open=True):
                    gr.Markdown(
                        "Principal directions of the generator's latent space (GANSpace), strongest first. "
                        "The pictures follow a slider as it moves (mouse or arrow keys).",
                        elem_classes="studio-info",
                    )
                    with gr.Row():
                        directions = _direction_sliders("direction")
                    reset_directions = gr.Button("Reset directions", size="sm", variant="secondary")
                with gr.Accordion("Recreate from a studio PNG", open=False):
                    # no file_types filter: a dropped JPEG or text file gets a message saying what to give, not silence
                    recreate_file = gr.File(label="PNG saved by the studio", height=120)
                generate_state = gr.State({"paths": [], "seeds": [], "selected": 0})
                picked_seed = gr.State(None)  # the seed of the picture last clicked in the gallery
                offered_seeds = gr.State(None)  # the seeds the keyframe picker offers

            with gr.Tab("Stylize", id="stylize"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=320):
                        with gr.Row():
                            content = UploadedImage(
                                label="Photo (content)",
                                type="filepath",
                                sources=["upload", "webcam", "clipboard"],
                                height=240,
                                elem_id="stylize-content",
                            )
                            style_weights = []
                            style_1 = UploadedImage(
                                label="Style (a painting)",
                                type="filepath",
                                sources=["upload", "clipboard"],
                                height=240,
                                elem_id="stylize-style-1",
                            )
                        with gr.Accordion("Blend more styles", open=False, elem_id="stylize-blend"):
                            with gr.Row():
                                style_2 = UploadedImage(
                                    label="Style 2",
                                    type="filepath",
                                    sources=["upload", "clipboard"],
                                    height=160,
                                    elem_id="stylize-style-2",
                                )
                                style_3 = UploadedImage(
                                    label="Style 3", type="filepath", sources=["upload", "clipboard"], height=160
                                )
                            with gr.Row():
                                for index in range(STYLE_SLOTS):
                                    style_weights.append(
                                        CheckedSlider(
                                            0.0,
                                            1.0,
                                            value=1.0,
                                            step=0.05,
                                            label=f"Weight of style {index + 1}",
                                            buttons=[],
                                        )
                                    )
                            mask = UploadedImage(
                                label="Mask for two styles (AdaIN): white = style 1, black = style 2",
                                # with transparency, opaque = style 1 (imaging.mask_band)
                                type="filepath",
                                sources=["upload"],
                                height=160,
                            )
                        methods = (
                            STYLE_METHODS[:1] + [ADAIN_OFFLINE_CHOICE]
                            if ui._adain_missing_offline()
                            else STYLE_METHODS
                        )
                        method = CheckedRadio(methods, value="gatys", label="Method", elem_id="stylize-method")
                        strength = CheckedSlider(
                            0.0,
                            1.0,
                            value=0.8,
                            step=0.05,
                            label="Strength",
                            info="how much of the style: AdaIN's alpha, Gatys' style/content balance",
                            elem_id="stylize-strength",
                        )
                        preserve_color = CheckedRadio(
                            [
                                ("keep style colours", "none"),
                                ("keep photo colours (luminance)", "luminance"),
                                ("match photo palette (histogram)", "histogram"),
                            ],
                            value="none",
                            label="Colour",
                        )
                        with gr.Row():
                            stylize_size = CheckedSlider(
                                *STYLIZE_SIZES,
                                value=256,
                                step=32,
                                label="Size",
                                info="long side, px",
                                elem_id="stylize-size",
                            )
                            stylize_steps = CheckedSlider(
                                *STYLIZE_STEPS,
                                value=100,
                                step=1,
                                label="Steps",
                                info="Gatys only",
                                elem_id="stylize-steps",
                            )
                        stylize_seed = gr.Number(value=0, label="Seed", step=1, visible=False)
                        with gr.Row():
                            stylize_button = gr.Button("Stylize", variant="primary", elem_id="stylize-button")
                            stylize_stop = gr.Button("Stop", variant="stop", elem_id="stylize-stop")
                    with gr.Column(scale=3, min_width=360):
                        stylized = gr.Image(
                            label="Stylized",
                            type="filepath",
                            interactive=False,
                            height=520,
                            elem_id="stylized",
                            format="png",
                        )
                        stylize_info = gr.Markdown(label="Summary", elem_classes="studio-info", elem_id="stylize-info")
                        stylize_download = gr.DownloadButton(
                            "⬇ PNG with settings",
                            variant="secondary",
                            size="sm",
                            elem_id="stylize-download",
                            interactive=False,  # until there is a picture to download (download_ready)
                        )
                        pairs = [
                            [str(EXAMPLES / photo), str(EXAMPLES / painting)]
                            for photo, painting in EXAMPLE_PAIRS
                            if (EXAMPLES / photo).is_file() and (EXAMPLES / painting).is_file()
                        ]
                        if pairs:
                            gr.Examples(
                                pairs,
                                inputs=[content, style_1],
                                label="Try a pairing (public-domain pictures; credits in the Models tab)",
                                elem_id="pairing-examples",
                            )

            with gr.Tab("Walk", id="walk"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=300):
                        walk_model = gr.Dropdown(
                            generators, value=default_model, label="Model", interactive=True, allow_custom_value=True
                        )
                        walk_seeds = gr.Textbox(
                            value="7, 8, 9, 10",
                            label="Keyframe seeds",
                            info="the walk passes through these seeds' artworks, in order",
                            elem_id="walk-seeds",
                        )
                        walk_class = gr.Dropdown(
                            list(default_spec.classes),
                            value=default_spec.classes[0] if default_spec.classes else None,
                            label="Class",
                            allow_custom_value=True,
                            visible=bool(default_spec.classes),
                            interactive=True,
                        )
                        with gr.Row():
                            walk_frames = CheckedSlider(
                                2, MAX_WALK_FRAMES_UI, value=96, step=1, label="Frames", elem_id="walk-frames"
                            )
                            walk_fps = CheckedSlider(1, 60, value=24, step=1, label="Frames per second")
                        with gr.Row():
                            walk_easing = CheckedRadio(
                                ["spline", "linear", "ease-in-out"], value="spline", label="Easing"
                            )
                            walk_format = CheckedRadio(
                                ["mp4", "webm", "gif", "zip"], value="mp4", label="Format", elem_id="walk-format"
                            )
                        walk_loop = gr.Checkbox(value=True, label="Loop back to the first keyframe")
                        walk_route = CheckedRadio(
                            [("through the keyframes", "keyframes"), ("noise loop around one seed", "noise-loop")],
                            value="keyframes",
                            label="Route",
                            info="a noise loop wanders around one seed's artwork and always comes back",
                            elem_id="walk-route",
                        )
                        walk_spread = CheckedSlider(
                            *NOISE_LOOP_SPREAD_RANGE,
                            value=1.0,
                            step=0.01,
                            label="Noise loop spread",
                            info="how far a noise loop wanders from the seed's artwork",
                            interactive=False,  # until the noise loop route is chosen (route_controls)
                            elem_id="walk-spread",
                        )
                        with gr.Accordion("More", open=False):
                            walk_psi = CheckedSlider(*PSI_RANGE, value=1.0, step=0.05, label="Truncation ψ")
                            walk_size = gr.Dropdown(
                                # text values: the API lists a dropdown's values as strings, so ints were refused
                                [("native", "native"), ("256 px", "256"), ("512 px", "512")],
                                value="256",
                                label="Frame size",
                                info="upscaled with Lanczos; native is the model's own resolution; or type a size",
                                allow_custom_value=True,  # checked by the validator, like the model's name
                            )
                            walk_style = UploadedImage(
                                label="Style every frame like this picture (AdaIN; optional)",
                                type="filepath",
                                sources=["upload", "clipboard"],
                                height=160,
                            )
                            walk_strength = CheckedSlider(0.0, 1.0, value=1.0, step=0.05, label="Style strength")
                        with gr.Accordion("Latent directions", open=False, elem_id="walk-directions") as walk_moves:
                            gr.Markdown(
                                "Every frame moves along the generator's latent directions, as on the Generate tab "
                                "(Walk through the ticked seeds brings its sliders along).",
                                elem_classes="studio-info",
                            )
                            with gr.Row():
                                walk_directions = _direction_sliders("walk-direction")
                    with gr.Column(scale=3, min_width=360):
                        # above the video, not below the settings: the render, its progress and its result stay
                        # in one view however far down the settings were scrolled
                        with gr.Row():
                            walk_button = gr.Button("Render walk", variant="primary", elem_id="walk-button")
                            walk_stop = gr.Button("Stop", variant="stop", elem_id="walk-stop")
                        walk_video = gr.Video(
                            label="Walk",
                            autoplay=True,
                            loop=True,
                            format=None,
                            height=420,
                            interactive=False,
                            elem_id="walk-video",
                            buttons=["download"],
                        )
                        walk_gif = gr.Image(
                            label="Walk (GIF)", visible=False, interactive=False, height=420, elem_id="walk-gif"
                        )
                        walk_info = gr.Markdown(label="Summary", elem_classes="studio-info", elem_id="walk-info")
                        walk_file = gr.File(label="Download", interactive=False, elem_id="walk-file", height=60)

            with gr.Tab("Models", id="models"):
                gr.Markdown(
                    "Models the studio knows. ✅ means the weights are on this machine; the others are downloaded "
                    "when first used (or fetch them here), and ⛔ marks those missing while the studio is offline. "
                    "To work offline later, fetch them beforehand: `python -m studio weights fetch NAME`."
                )
                models_table = gr.Dataframe(
                    ui.models_table(),
                    label="Models",
                    show_label=False,
                    elem_id="models-table",
                    max_height=720,
                    headers=["model", "kind", "weights", "what", "licence"],
                    interactive=False,
                    wrap=True,
                    # in pixels: gradio makes percentages of the screen's width, which on a phone breaks words
                    # letter by letter; this way a narrow screen scrolls the table sideways instead
                    column_widths=["190px", "120px", "130px", "500px", "260px"],
                )
                with gr.Row(equal_height=False):
                    fetch_name = gr.Dropdown(
                        [spec.name for spec in ui.studio.models()],
                        label="Model",
                        value=None,
                        scale=3,
                        elem_id="fetch-name",
                    )
                    with gr.Column(scale=2, min_width=200):
                        fetch_button = gr.Button("Fetch and verify weights", variant="primary", elem_id="fetch-button")
                        refresh_button = gr.Button("Refresh the list", variant="secondary", size="sm")
                fetch_info = gr.Markdown(label="Fetch result", elem_id="fetch-info")
                with gr.Accordion("Credits and licences", open=False):
                    gr.Markdown(ui.credits())

        # --- Generate events ---
        generate_inputs = [model, seed, batch, psi, class_name, *directions]
        generate_outputs = [gallery, generate_info, download_png, seed, generate_state]
        # The API's "generate" returns the first seed; the page's re-renders leave a typed seed in its box.
        generate_fn = _gpu(60)(_friendly_errors(ui.generate))
        rerender_fn = _gpu(60)(_friendly_errors(_keeping_a_typed_seed(ui.generate)))
        common = {"concurrency_id": "generate", "concurrency_limit": CONCURRENCY["generate"]}

        def generate_on(
            listener: Callable[..., Any], api_name: str, handler: Callable[..., Any] = rerender_fn, **options: Any
        ) -> Any:
            options.setdefault("api_visibility", "undocumented")
            return listener(
                handler,
                generate_inputs,
                generate_outputs,
                api_name=api_name,
                validator=ui.check_generate_inputs,
                **common,
                **options,
            ).success(
                ui.after_generation,
                [generate_state, keyframes, picked_seed, offered_seeds],
                [keyframes, generate_state, download_png, offered_seeds],
                api_name=f"{api_name}_keyframes",
                queue=False,
                api_visibility="private",
            )

        generate_on(
            generate_button.click,
            "generate",
            generate_fn,
            api_visibility="public",
            api_description="Generate artworks: model, first seed (empty: random), batch, truncation psi, class of "
            "a conditional model (ignored otherwise), and amounts (-5..5) along the first five latent directions. "
            "Returns the gallery (PNG files that carry their settings, captioned with their seeds), a summary, "
            "the first PNG and the first seed.",
        )
        generate_on(dice.click(ui.random_seed, None, seed, api_name="random_seed", queue=False).then, "generate_dice")
        generate_on(seed.submit, "generate_seed")  # Enter in the seed box
        # One listener for all the sliders, so that its "always_last" also orders renders across them: two listeners
        # could run at once and the older picture could land last.
        slider_moves = functools.partial(gr.on, [control.input for control in (psi, *directions, class_name)])
        generate_on(slider_moves, "generate_preview", trigger_mode="always_last", show_progress="minimal")
        reset = reset_directions.click(
            lambda: [0.0] * DIRECTION_SLIDERS,
            None,
            directions,
            api_name="reset_directions",
            queue=False,
            api_visibility="private",
        )
        generate_on(reset.then, "generate_reset")
        described = model.select(
            ui.describe_model,
            model,
            [class_name, model_info],
            api_name="describe_model",
            queue=False,
            api_visibility="private",
        )
        chosen = described.then(
            _friendly_errors(ui.select_model),
            [model, generate_state],
            [model, class_name, model_info],
            api_name="select_model",
            concurrency_id="weights",
            concurrency_limit=CONCURRENCY["weights"],
        )
        generate_on(chosen.success, "generate_model")
        gallery.select(
            ui.select_image,
            generate_state,
            [download_png, generate_state, picked_seed],
            api_name="select_image",
            queue=False,
            api_visibility="private",
        )
        # Queued (not queue=False) like every event that can fail: gradio shows gr.Error and gr.Warning only for
        # queued events; unqueued ones put a bare "Error" on each output instead.
        recreated = recreate_file.upload(
            _friendly_errors(ui.recreate),
            recreate_file,
            [model, seed, batch, psi, class_name, *directions],
            api_name="read_settings",
            show_progress="hidden",  # a failure is the toast alone, not an "Error" badge on every control
        )
        generate_on(recreated.success, "generate_recreated")
        generate_on(demo.load, "generate_on_load")

        # --- Models events ---
        # The note of an earlier fetch goes first: a failure must not sit under an old "✅ ready" (its toast says why).
        cleared = fetch_button.click(
            lambda: "", None, fetch_info, queue=False, show_progress="hidden", api_visibility="private"
        )
        fetched = cleared.then(
            _friendly_errors(ui.fetch),
            fetch_name,
            [models_table, fetch_info],
            api_name="fetch_weights",
            show_progress_on=[fetch_info],  # a failed fetch is a toast and a note there; the table stays readable
            concurrency_id="weights",
            concurrency_limit=CONCURRENCY["weights"],
        )
        refresh_button.click(ui.models_table, None, models_table, api_name="models", queue=False)
        demo.load(
            ui.models_table, None, models_table, api_name="models_on_load", queue=False, api_visibility="private"
        )
        model_menus = [model, walk_model, fetch_name]
        for refreshed in (refresh_button.click, demo.load, fetched.success):
            refreshed(ui.model_menus, None, model_menus, queue=False, api_visibility="private", show_progress="hidden")
        demo.unload(ui.visitor_left)

        # --- Latent walk events ---
        walk_event = walk_button.click(
            _gpu(300)(_friendly_errors(ui.walk)),
            [
                walk_model,
                walk_seeds,
                walk_frames,
                walk_fps,
                walk_loop,
                walk_easing,
                walk_format,
                walk_psi,
                walk_class,
                walk_size,
                walk_style,
                walk_strength,
                *walk_directions,
                walk_route,
                walk_spread,
            ],
            [walk_video, walk_file, walk_info],
            validator=ui.check_walk_inputs,
            api_name="walk",
            api_description="Render a latent walk: model, keyframe seeds ('3, 14, 15'), frames, fps, loop, easing "
            "(spline | linear | ease-in-out), format (mp4 | webm | gif | zip), truncation psi, class, frame size (0 = "
            "native), optional style image (AdaIN) and its strength, the five latent direction amounts (-5..5, as on "
            "/generate), the route (keyframes | noise-loop: around the one seed given) and the noise loop's spread "
            "(0.01..1). Raw HTTP calls send all 19 values. Returns the playable video (mp4/webm), the file "
            "and a summary.",
            concurrency_id="walk",
            concurrency_limit=CONCURRENCY["walk"],
            show_progress_on=[walk_info],  # one progress bar, next to the button, not one on each output
        )
        walk_event.success(
            ui.walk_preview,
            walk_file,
            [walk_video, walk_gif],
            api_name="walk_preview",
            queue=False,
            api_visibility="private",
        )
        walk_stop.click(
            ui.stop_walk,
            None,
            [walk_video, walk_gif, walk_file, walk_info],
            cancels=[walk_event],
            api_name="stop_walk",
            queue=False,
        )
        walk_route.change(
            ui.route_controls,
            walk_route,
            [walk_loop, walk_easing, walk_spread, walk_seeds],
            queue=False,
            api_visibility="private",
            show_progress="hidden",
        ).then(
            lambda *_: None,  # the validator is the point: it marks seeds the new route cannot walk
            [walk_seeds, walk_route, walk_loop],
            None,
            validator=ui.check_route_seeds,  # validators run in the queue only
            concurrency_limit=None,  # never waits for a render
            api_visibility="private",
            show_progress="hidden",
        )
        walk_model.select(
            ui.class_menu, walk_model, walk_class, api_name="walk_class_menu", queue=False, api_visibility="private"
        )
        to_walk.click(
            _friendly_errors(ui.send_to_walk),
            [keyframes, generate_state, model, psi, class_name, *directions],
            [walk_seeds, walk_model, walk_psi, walk_class, *walk_directions, walk_moves, walk_route, tabs],
            api_name="send_to_walk",
            show_progress="hidden",  # a failure is the toast alone, not an "Error" badge on every control
            api_visibility="private",
        )

        # --- Stylize events ---
        stylize_inputs = [
            content,
            style_1,
            style_weights[0],
            style_2,
            style_weights[1],
            style_3,
            style_weights[2],
            method,
            strength,
            preserve_color,
            stylize_size,
            stylize_steps,
            mask,
            stylize_seed,
        ]
        stylize_event = stylize_button.click(
            _gpu(180)(_friendly_errors(ui.stylize)),
            stylize_inputs,
            [stylized, stylize_download, stylize_info],
            validator=ui.check_stylize_inputs,
            api_name="stylize",
            api_description="Restyle a photo: content image, up to three style images each with a weight, method "
            "(gatys | adain), strength 0..1, preserve_color (none | luminance | histogram), size (long side px), "
            "steps (Gatys), optional mask (white = style 1, black = style 2) and seed. Returns the PNG (with its "
            "settings), the same file and a summary.",
            concurrency_id="stylize",
            concurrency_limit=CONCURRENCY["stylize"],
            show_progress_on=[stylize_info],  # over the summary: the picture so far stays in view as it grows
        )
        stylize_stop.click(
            ui.stop_stylize, None, stylize_info, cancels=[stylize_event], api_name="stop_stylize", queue=False
        )
        # The summary changes with every picture the run shows and when it stops, in the same update as the download's
        # file (the API's outputs stay plain files: an update dict there would reach API clients as it is).
        stylize_info.change(
            ui.download_ready, stylize_download, stylize_download, queue=False, api_visibility="private"
        )
        preview_fn = _gpu(30)(_friendly_errors(ui.stylize_preview))
        gr.on(
            [control.input for control in (method, strength, *style_weights, preserve_color)],
            preview_fn,
            stylize_inputs,
            [stylized, stylize_info],
            api_name="stylize_preview",
            api_visibility="undocumented",
            trigger_mode="always_last",
            show_progress="minimal",
            concurrency_id="stylize-preview",
            concurrency_limit=CONCURRENCY["stylize-preview"],
        )
        to_stylize.click(
            _friendly_errors(ui.send_to_stylize),
            generate_state,
            [content, tabs],
            api_name="send_to_stylize",
            show_progress="hidden",  # a failure is the toast alone, not an "Error" badge on every control
            api_visibility="private",
        )

    demo.queue(default_concurrency_limit=1, max_size=QUEUE_MAX_SIZE)
    return demo


__all__ = ["CONCURRENCY", "StudioUI", "build_demo", "launch_options", "parse_seeds"]
