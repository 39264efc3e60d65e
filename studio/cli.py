"""`python -m studio ...`: generate | stylize | walk | train | weights. Argument parsing only; work happens in Studio."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from studio.registry import DEFAULT_GENERATOR


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from studio.weights import WeightsIntegrityError, WeightsUnavailable

    try:
        return int(args.handler(args) or 0)
    except (ValueError, WeightsUnavailable, WeightsIntegrityError) as error:
        print(f"error: {error}", file=sys.stderr)
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
    fetch = weight_commands.add_parser("fetch", help="download (if needed) and verify a model's weights")
    fetch.add_argument("names", nargs="+", metavar="NAME")
    fetch.add_argument("--force", action="store_true", help="download again even if cached")
    fetch.set_defaults(handler=_weights_fetch)

    generate = commands.add_parser("generate", help="generate artworks with a GAN")
    generate.add_argument("--model", default=DEFAULT_GENERATOR)
    generate.add_argument("--seed", type=int, default=None, help="first seed (random if omitted)")
    generate.add_argument("--seeds", type=_int_list, default=None, help="comma-separated seeds, e.g. 3,14,15")
    generate.add_argument("--batch", type=int, default=1)
    generate.add_argument("--psi", type=float, default=1.0, help="truncation 0..1.5 (1 = none)")
    generate.add_argument("--class", dest="class_name", default=None, help="class of a conditional model")
    generate.add_argument(
        "--direction", action="append", default=[], metavar="INDEX=AMOUNT", help="move along a latent direction"
    )
    generate.add_argument("--size", type=int, default=None, help="output side in pixels")
    generate.add_argument("--out", type=Path, default=Path("out.png"), help="PNG path (a grid for batches)")
    generate.add_argument("--separate", action="store_true", help="also save each image as OUT-<seed>.png")
    generate.set_defaults(handler=_generate)
    return parser


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


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
    from studio.weights import cached_path, unrecognised_local_files

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
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    for path in unrecognised_local_files():
        print(f"note: {path} is not listed: put it in a folder with a config.json (see weights/README.md)")
    return 0


def _megabytes(size: int | None) -> str:
    return "?" if size is None else f"{size / 1e6:.1f} MB"


def _weights_fetch(args: argparse.Namespace) -> int:
    """Fetch every named model, report each, and exit non-zero if any could not be had."""
    from studio.api import Studio
    from studio.loader import resolve_weights
    from studio.weights import WeightsIntegrityError, WeightsUnavailable, resolve, sha256_of

    studio = Studio()
    failures = 0
    for name in args.names:
        try:
            spec = studio.spec(name)
            path = resolve(spec.sources[0], what=name, force=True) if args.force else resolve_weights(spec)
        except (ValueError, WeightsUnavailable, WeightsIntegrityError) as error:
            print(f"error: {error}", file=sys.stderr)
            failures += 1
            continue
        print(f"{name}: {path} ({_megabytes(path.stat().st_size)}, sha256 {sha256_of(path)[:16]}...) verified")
    return 2 if failures else 0


def _generate(args: argparse.Namespace) -> int:
    from studio.api import Studio

    result = Studio().generate(
        model=args.model,
        seed=args.seed,
        seeds=args.seeds,
        batch=args.batch,
        psi=args.psi,
        class_name=args.class_name,
        directions=_directions(args.direction),
        size=args.size,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result.save(args.out)
    if args.separate and len(result.images) > 1:
        for index, seed in enumerate(result.seeds):
            result.save(args.out.with_name(f"{args.out.stem}-{seed}.png"), index=index)
    print(f"{args.out}: {args.model} seeds {','.join(map(str, result.seeds))}")
    return 0
