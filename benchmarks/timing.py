"""What the benchmark scripts share (each runs with this folder first on sys.path): timing and the device choice."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    """Median wall-clock seconds of `repeats` calls of `run`, after one untimed warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: the CPU, then CUDA if there is one"
    )


def devices_to_run(parser: argparse.ArgumentParser, choice: str) -> list[str]:
    """The devices `--device choice` names, in order; "cuda" without a visible GPU is a usage error."""
    import torch

    has_cuda = torch.cuda.is_available()
    if choice == "cuda" and not has_cuda:
        parser.error("--device cuda: no CUDA device is visible to torch")
    if choice == "auto":
        return ["cpu", "cuda"] if has_cuda else ["cpu"]
    return [choice]
