"""Training throughput: DCGAN steps per second (one D + one G update, DiffAugment on, EMA on).

Prints `name value unit` lines. Runs on the first CUDA device when there is one, else the CPU (float32); on CUDA
the loop uses bf16 autocast and channels-last, as `studio train` does.

    python benchmarks/bench_train.py                 # 64 px batch 32 (and 32 px), default widths (64)
    python benchmarks/bench_train.py --size 128 --batch 64 --steps 50
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.training.dataset import ImageFolder  # noqa: E402
from studio.training.trainer import _build_run, _make_accelerator, make_train_config, train_step  # noqa: E402


def make_folder(folder: Path, *, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 255, (size + 16, size + 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")


def steps_per_second(*, size: int, batch: int, steps: int, warmup: int, channels: int, loss: str) -> float:
    with tempfile.TemporaryDirectory() as temporary:
        data = Path(temporary) / "data"
        data.mkdir()
        make_folder(data, count=64, size=size)
        config = make_train_config(
            data=data,
            out=Path(temporary) / "out",
            size=size,
            batch_size=batch,
            g_channels=channels,
            d_channels=channels,
            loss=loss,
            steps=steps,
            progress_bar=False,
        )
        accelerator = _make_accelerator(config)
        run = _build_run(config, ImageFolder(data, size=size), accelerator)
        for _ in range(warmup):
            train_step(run)
        if run.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            train_step(run)
        if run.device.type == "cuda":
            torch.cuda.synchronize()
        return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="*", default=[64, 32])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--loss", default="bce")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"# device: {device}; loss {args.loss}; widths {args.channels}; DiffAugment color,translation,cutout")
    for size in args.size:
        rate = steps_per_second(
            size=size, batch=args.batch, steps=args.steps, warmup=args.warmup, channels=args.channels, loss=args.loss
        )
        print(f"train_steps_per_s_{size}px_batch{args.batch} {rate:.3f} steps/s")
        print(f"train_images_per_s_{size}px_batch{args.batch} {rate * args.batch:.1f} images/s")


if __name__ == "__main__":
    main()
