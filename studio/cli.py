"""`python -m studio ...`: generate | stylize | walk | train | weights. Parsing only; the work happens in Studio."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio.files import check_folder_can_be_written
from studio.registry import DEFAULT_GENERATOR

if TYPE_CHECKING:
    from studio.api import Studio, StylizeResult


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from studio.weights import WeightsIntegrityError, WeightsUnavailable

    try:
        return int(args.handler(args) or 0)
    except (ValueError, WeightsUnavailable, WeightsIntegrityError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a file or folder the command had to write: permissions, a full disk, ...
        print(f"error: {error.strerror or error}: {error.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m studio", description="GAN Art Studio from the command line")
    commands = parser.add_subparsers(dest="command", required=True)

    weights = commands.add_parser("weights", help="list or fetch model weights")
    weight_commands = weights.add_subparsers(dest="weights_command", required=True)
    listing = weight_commands.add_parser("list", help="every known model, where its weights come from, cached or not")
    listing.set_defaults(handler=_weights_list)
    fetch = weight_commands.add_parser("fetch", help="download (if needed), verify and load a model's weights")
    fetch.add_argument("names", nargs="+", metavar="NAME")
    fetch.add_argument("--force", action="store_true", help="download again even if cached")
    fetch.set_defaults(handler=_weights_fetch)

    generate = commands.add_parser("generate", help="generate artworks with a GAN")
    generate.add_argument("--model", default=DEFAULT_GENERATOR)
    generate.add_argument("--seed", type=int, default=None, help="first seed (random if omitted)")
    generate.add_argument("--seeds", type=_int_list, default=None, help="comma-separated seeds, e.g. 3,14,15")
    generate.add_argument("--batch", type=int, default=None, help="how many: seeds seed, seed+1, ... (default 1)")
    generate.add_argument("--psi", type=float, default=1.0, help="truncation 0..1.5 (1 = none)")
    generate.add_argument("--class", dest="class_name", default=None, help="class of a conditional model")
    generate.add_argument(
        "--direction", action="append", default=[], metavar="INDEX=AMOUNT", help="move along a latent direction"
    )
    generate.add_argument("--size", type=int, default=None, help="output side in pixels")
    generate.add_argument("--out", type=Path, default=Path("out.png"), help="PNG path (a grid for batches)")
    generate.add_argument(
        "--separate", action="store_true", help="also save each image as OUT-<seed>.png, even a single one"
    )
    generate.set_defaults(handler=_generate)

    stylize = commands.add_parser("stylize", help="neural style transfer (Gatys optimisation or AdaIN)")
    stylize.add_argument("--content", type=Path, required=True)
    stylize.add_argument("--style", type=Path, action="append", required=True, help="repeat to blend several styles")
    stylize.add_argument("--weights", type=float, nargs="+", default=None, help="blend weight per style")
    stylize.add_argument("--method", choices=["gatys", "adain"], default="gatys")
    stylize.add_argument("--strength", type=float, default=1.0, help="0 = content only, 1 = full style")
    stylize.add_argument(
        "--preserve-color",
        nargs="?",
        const="luminance",
        default="none",
        choices=["none", "luminance", "histogram"],
        help="keep the content's colours (luminance transfer, or histogram matching of the styles)",
    )
    stylize.add_argument("--size", type=int, default=512, help="output long side in pixels")
    stylize.add_argument("--steps", type=int, default=300, help="Gatys optimisation steps at full size")
    stylize.add_argument("--mask", type=Path, default=None, help="AdaIN: white = first style, black = second")
    stylize.add_argument("--seed", type=int, default=0)
    stylize.add_argument("--vgg", default="vgg19-caffe", help="VGG19 weights for Gatys")
    stylize.add_argument("--out", type=Path, default=Path("stylized.png"))
    stylize.set_defaults(handler=_stylize)

    walk = commands.add_parser("walk", help="render a latent walk to MP4, GIF, WebM or a PNG zip")
    walk.add_argument("--model", default=DEFAULT_GENERATOR)
    walk.add_argument("--seeds", type=_int_list, default=None, help="keyframe seeds (default 3,14,15)")
    walk.add_argument("--frames", type=int, default=120, help="number of frames in the file")
    walk.add_argument("--fps", type=float, default=30)
    walk.add_argument("--loop", action="store_true", help="flow from the last keyframe back to the first")
    walk.add_argument("--easing", default="spline", choices=["spline", "linear", "ease-in-out"])
    walk.add_argument("--noise-loop", action="store_true", help="a circular walk around the first seed instead")
    walk.add_argument("--spread", type=float, default=None, help="noise loop radius 0..1 (default 1)")
    walk.add_argument("--psi", type=float, default=1.0)
    walk.add_argument(
        "--class",
        dest="class_name",
        action="append",
        default=None,
        help="class; one per keyframe: repeat it (--class blue --class 'red, dark'), or blue,green,red",
    )
    walk.add_argument("--direction", action="append", default=[], metavar="INDEX=AMOUNT")
    walk.add_argument("--size", type=int, default=None, help="output side in pixels (upscaled with Lanczos)")
    walk.add_argument("--style", type=Path, default=None, help="stylize every frame with this image (AdaIN)")
    walk.add_argument("--out", type=Path, default=Path("walk.mp4"), help=".mp4, .gif, .webm or .zip")
    walk.set_defaults(handler=_walk)

    train = commands.add_parser(
        "train", help="train a DCGAN on a folder of images; the result appears as a model in the studio"
    )
    train.add_argument("--data", type=Path, required=True, help="folder of images (sub-folders become classes)")
    train.add_argument("--out", type=Path, default=None, help="export folder (default weights/<name>)")
    train.add_argument("--name", default=None, help="model name (default: the out or data folder's name)")
    train.add_argument("--size", type=int, default=None, choices=[16, 32, 64, 128, 256], help="resolution (64)")
    train.add_argument("--steps", type=int, default=None, help="total steps to reach (10000)")
    train.add_argument("--time-budget", dest="time_budget_s", type=float, default=None, help="stop after N seconds")
    train.add_argument("--batch", dest="batch_size", type=int, default=None, help="batch size (64)")
    train.add_argument("--loss", default=None, choices=["bce", "hinge", "wgan-gp"], help="adversarial loss (bce)")
    train.add_argument("--r1", dest="r1_gamma", type=float, default=None, help="R1 penalty weight (0 = off)")
    train.add_argument("--spectral-norm", dest="spectral_norm", action="store_true", default=None)
    train.add_argument("--augment", default=None, help="DiffAugment policy, e.g. color,translation,cutout or none")
    train.add_argument("--seed", type=int, default=None)
    train.add_argument(
        "--fresh",
        action="store_true",
        help="start over instead of resuming from --out (a resumed run keeps its size, batch and network settings)",
    )
    train.add_argument("--push-to-hub", dest="push_to_hub", default=None, metavar="REPO", help="upload the export")
    train.set_defaults(handler=_train)
    return parser


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


def _output_file(path: Path, *, suffixes: Sequence[str], inputs: Sequence[Path | None] = ()) -> Path:
    """Check --out before any work is done: a file name with one of `suffixes` ("" = none), in a folder that exists
    or can be made, that is not one of the command's input files."""
    if path.is_dir() or not path.name:
        raise ValueError(f"--out {path} is a folder; give a file name, e.g. {path / ('result' + suffixes[0])}")
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"--out must end with {' or '.join(s for s in suffixes if s)}, got {path.name!r}")
    for source in inputs:
        if source is not None and path.exists() and source.exists() and path.samefile(source):
            raise ValueError(f"--out {path} is one of the input pictures; choose another name so it is kept")
    # The folder is made only when the result is saved (`_make_folder`), so a run that fails leaves nothing behind.
    check_folder_can_be_written(path.absolute().parent, what=f"the folder for --out {path}")
    return path


def _make_folder(out: Path) -> Path:
    """Make --out's folder (checked by `_output_file`) right before the result is written."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot make the folder for --out {out}: {error.strerror or error}") from None
    return out


class _ProgressBar:
    """A tqdm bar that appears with the first progress report, so errors found before any work print alone.

    Use as `with _ProgressBar(unit="step", desc="gatys") as bar:` and pass `bar` as the `on_progress` callback.
    """

    def __init__(self, *, disable: bool = False, **options: Any) -> None:
        self.disable = disable
        self.options = options
        self._bar: Any = None

    def __call__(self, done: int, total: int | None) -> None:
        if self.disable:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, **self.options)
        self._bar.total = total
        self._bar.update(done - self._bar.n)

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.close()


def _directions(pairs: list[str]) -> dict[int, float]:
    amounts: dict[int, float] = {}
    for pair in pairs:
        index, _, amount = pair.partition("=")
        try:
            amounts[int(index)] = float(amount)
        except ValueError:
            raise ValueError(f"--direction takes INDEX=AMOUNT, e.g. 0=2.5; got {pair!r}") from None
    return amounts


def _weights_list(args: argparse.Namespace) -> int:
    from studio.api import Studio
    from studio.weights import cached_path, local_model_problems, unrecognised_local_files

    rows = [("NAME", "KIND", "SOURCE", "CACHED", "SIZE", "LICENCE")]
    for spec in Studio().models():
        source = spec.sources[0]
        path = cached_path(source)
        size = path.stat().st_size if path else getattr(source, "size", None)
        rows.append(
            (
                spec.name,
                spec.kind,
                source.describe(),
                "yes" if path else "no",
                _megabytes(size),
                spec.license,
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1])
    for path in unrecognised_local_files():
        print(f"note: {path} is not listed: put it in a folder with a config.json (see weights/README.md)")
    for folder, problem in local_model_problems():
        print(f"note: {folder} is not listed: {problem}")
    return 0


def _megabytes(size: int | None) -> str:
    return "?" if size is None else f"{size / 1e6:.1f} MB"


def _weights_fetch(args: argparse.Namespace) -> int:
    """Fetch, check and load every named model, report each, and exit non-zero if any could not be had."""
    from studio.api import Studio
    from studio.weights import WeightsIntegrityError, WeightsUnavailable

    studio = Studio()
    failures = 0
    for name in args.names:
        try:
            print(_fetch_and_load(studio, name, force=args.force))
        except (ValueError, WeightsUnavailable, WeightsIntegrityError) as error:
            print(f"error: {error}", file=sys.stderr)
            failures += 1
    return 2 if failures else 0


def _fetch_and_load(studio: Studio, name: str, *, force: bool) -> str:
    """Resolve a model's weights (downloading them if needed or forced) and load them, as the app would; the line
    that says what was checked. ValueError when the file does not load."""
    from studio.loader import fetch_model
    from studio.weights import pinned

    spec = studio.spec(name)
    fetched = fetch_model(spec, force=force)
    path, digest = fetched.path, fetched.digest
    if fetched.pinned_before:
        verdict = "verified"
    elif digest in {pinned(source).sha256 for source in spec.sources}:
        verdict = "pinned now (first use): there was no sha256 to verify it against; it must match from now on"
    else:
        verdict = "not verified: no sha256 is pinned for it yet"
    return f"{name}: {path} ({_megabytes(path.stat().st_size)}, sha256 {digest[:16]}...) {verdict}"


def _stylize(args: argparse.Namespace) -> int:
    from studio.api import Studio, stylize_input_names

    out = _output_file(
        args.out, suffixes=(".png", ".jpg", ".jpeg", ".webp", ""), inputs=[args.content, *args.style, args.mask]
    )
    latest: list[Callable[[], StylizeResult]] = []  # the Gatys picture so far, rendered only if Ctrl-C comes

    inputs = stylize_input_names(args.content, args.style, args.mask)

    def keep_latest(done: int, total: int, picture_so_far: Callable[[], StylizeResult]) -> None:
        latest[:] = [picture_so_far]

    try:
        with _ProgressBar(unit="step", desc=args.method, disable=args.method == "adain") as on_progress:
            result = Studio().stylize(
                content=args.content,
                styles=args.style,
                style_weights=args.weights,
                method=args.method,
                strength=args.strength,
                preserve_color=args.preserve_color,
                size=args.size,
                steps=args.steps,
                mask=args.mask,
                seed=args.seed,
                vgg=args.vgg,
                on_progress=on_progress,
                on_picture=keep_latest,
            )
    except KeyboardInterrupt:
        if not latest:
            raise
        so_far = latest[0]()
        so_far.save(_make_folder(out), inputs=inputs)
        steps, planned = so_far.settings["steps"], so_far.settings["planned_steps"]
        print(f"interrupted: {out} holds the picture after {steps} of {planned} steps", file=sys.stderr)
        return 130
    result.save(_make_folder(out), inputs=inputs)
    print(f"{out}: {result.image.size[0]}x{result.image.size[1]} in {result.seconds:.1f} s")
    return 0


def _walk(args: argparse.Namespace) -> int:
    from studio.api import Studio
    from studio.ops.video import SUFFIX_FORMATS

    if args.spread is not None and not args.noise_loop:
        raise ValueError("--spread is the radius of a --noise-loop walk; add --noise-loop, or leave --spread out")
    if args.noise_loop and args.seeds is not None and len(args.seeds) > 1:
        raise ValueError("a --noise-loop circles around one seed: give one (--seeds 3), or leave out --noise-loop")
    default_seeds = [3] if args.noise_loop else [3, 14, 15]  # a noise loop circles one seed
    seeds = default_seeds if args.seeds is None else args.seeds
    studio = Studio()
    classes: str | list[str] | None = args.class_name
    if classes and len(classes) == 1:
        (text,) = classes
        known = studio.spec(args.model).classes
        if "," in text and text not in known:  # one class per keyframe: "blue, green,red"
            classes = [part.strip() for part in text.split(",")]
        else:  # a single class, whose name may hold commas
            classes = text
    out = _output_file(args.out, suffixes=sorted(SUFFIX_FORMATS, key=lambda suffix: suffix != ".mp4"))
    started = threading.Event()  # frames were made: from then on a Ctrl-C keeps them
    with _ProgressBar(unit="frame", desc="walk") as bar, _ctrl_c_asks_to_stop_once(started) as stop_asked:

        def on_progress(done: int, total: int) -> bool:
            started.set()
            bar(done, total)
            return not stop_asked.is_set()

        result = studio.walk(
            model=args.model,
            seeds=seeds,
            frames=args.frames,
            fps=args.fps,
            loop=args.loop,
            easing=args.easing,
            path="noise-loop" if args.noise_loop else "keyframes",
            spread=1.0 if args.spread is None else args.spread,
            psi=args.psi,
            class_name=classes,
            directions=_directions(args.direction),
            size=args.size,
            style=args.style,
            out=out,
            on_progress=on_progress,
            keep_partial=True,  # a stop comes only once frames exist (see _ctrl_c_asks_to_stop_once)
        )
    if result.stopped_early:
        planned = result.settings["frames"]
        print(f"interrupted: {result.path} holds the first {result.frames} of {planned} frames", file=sys.stderr)
        return 130
    print(
        f"{result.path}: {result.route}, {result.frames} frames {result.width}x{result.height}"
        f"{f' ({result.size_note})' if result.size_note else ''} at {result.fps:g} fps "
        f"({result.seconds:.1f} s, {100 * result.seconds_encoding / max(result.seconds, 1e-9):.0f}% encoding)"
    )
    return 0


@contextlib.contextmanager
def _ctrl_c_asks_to_stop_once(started: threading.Event) -> Iterator[threading.Event]:
    """While inside, the first Ctrl-C after `started` is set sets the event that this yields (the job stops at its
    next progress report and keeps what it made) instead of raising KeyboardInterrupt wherever the program happens
    to be. Before `started`, when there is nothing to keep, and the second time, Ctrl-C interrupts at once."""
    asked = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # only the main thread may handle signals
        yield asked
        return

    def ask(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, previous)
        if not started.is_set():
            raise KeyboardInterrupt
        asked.set()
        print("\nstopping after the frames in hand (Ctrl-C again to quit now)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, ask)
    try:
        yield asked
    finally:
        signal.signal(signal.SIGINT, previous)


def _train(args: argparse.Namespace) -> int:
    from studio.training import make_train_config, push_to_hub, train
    from studio.training.export import HubUploadError, check_push_target

    if args.push_to_hub:
        try:  # before hours of training, not after
            check_push_target(args.push_to_hub)
        except HubUploadError as error:
            raise ValueError(f"--push-to-hub: {error}") from None

    options = {
        key: getattr(args, key)
        for key in (
            "size",
            "steps",
            "time_budget_s",
            "batch_size",
            "loss",
            "r1_gamma",
            "spectral_norm",
            "augment",
            "seed",
        )
    }
    config = make_train_config(data=args.data, out=args.out, name=args.name, resume=not args.fresh, **options)
    result = train(config)
    speed = f"{result.images_per_second:.0f} img/s"
    print(f"{result.export.folder}: step {result.step}, stopped by {result.stopped_by}, {speed}")
    for skipped in result.skipped:
        print(f"skipped {skipped.path}: {skipped.reason}")
    if result.metrics:
        print(
            "quality (lower is better): " + ", ".join(f"step {m['step']}: {m['vgg_fd']:.4g}" for m in result.metrics)
        )
    if args.push_to_hub:
        try:
            print(f"pushed: {push_to_hub(result.export.folder, repo_id=args.push_to_hub)}")
        except HubUploadError as error:
            print(f"error: {error}; the model is saved in {result.export.folder}", file=sys.stderr)
            return 2
    return 130 if result.interrupted else 0


def _generate(args: argparse.Namespace) -> int:
    from studio.api import Studio

    if args.seeds is not None and (args.seed is not None or args.batch is not None):
        raise ValueError("--seeds lists every seed to make; leave out --seed and --batch (or give --seed S --batch N)")
    out = _output_file(args.out, suffixes=(".png",))
    result = Studio().generate(
        model=args.model,
        seed=args.seed,
        seeds=args.seeds,
        batch=1 if args.batch is None else args.batch,
        psi=args.psi,
        class_name=args.class_name,
        directions=_directions(args.direction),
        size=args.size,
    )
    result.save(_make_folder(out))
    if args.separate:
        for index, seed in enumerate(result.seeds):
            result.save(out.with_name(f"{out.stem}-{seed}.png"), index=index)
    print(f"{out}: {args.model} seeds {','.join(map(str, result.seeds))}")
    return 0
