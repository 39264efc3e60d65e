"""Latent-walk rendering: speed, encoding share and memory flatness. Prints `name value unit` lines.

    .venv/bin/python benchmarks/bench_walk.py [--keep walk.mp4] [--skip-memory]

1. A 120-frame, 128 px walk of the real offline omniart-eyes DCGAN (seeds 3, 14, 15, seamless spline loop, class 1
   "blue" one-hot) rendered to MP4 on CPU: total, generation and encoding seconds and the encoding share (median
   of --repeat runs), for the module as loaded and with channels_last weights (faster ConvTranspose on CPU).
   Targets: whole render under 10 s, encoding under 30 % of it.
2. Encoding alone for the same 120 frames in every format, at 128 px and upscaled to 512 px (lanczos).
3. Peak memory of a 600-frame render against a 60-frame one. Each runs in a fresh subprocess (the parent's
   allocations cannot leak into the figure): load the model, render one warm-up batch (so PyTorch's and the
   allocator's one-off buffers exist), read the peak RSS (getrusage ru_maxrss), render the walk, read the peak RSS
   again. We report both the process peak and the growth over the warm-up peak. tracemalloc would miss PyTorch's
   and FFmpeg's native allocations, so RSS is the honest measure. Target: 600-frame peak within 20 % of 60-frame.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from studio.loader import load_model  # noqa: E402
from studio.ops.generation import one_hot, seeded_latents  # noqa: E402
from studio.ops.interpolation import keyframe_path  # noqa: E402
from studio.ops.video import VideoWriter, render_walk  # noqa: E402
from studio.registry import builtin_models  # noqa: E402

SEEDS = (3, 14, 15)
EYE_CLASS = 1  # blue
BATCH = 16


def report(name: str, value: float, unit: str) -> None:
    print(f"{name} {value:.4g} {unit}", flush=True)


def eye_walk(frames: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    generator = load_model(builtin_models()["omniart-eyes"])
    keys = seeded_latents(SEEDS, z_dim=generator.z_dim)
    latents = keyframe_path(keys, frames=frames, loop=True, easing="spline")
    labels = one_hot(EYE_CLASS, generator.num_classes, count=1)[0]
    return generator, latents, labels


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def memory_child(frames: int) -> None:
    generator, latents, labels = eye_walk(frames)
    with tempfile.TemporaryDirectory() as folder:
        render_walk(latents[:BATCH], synthesize=generator, labels=labels, out=Path(folder) / "warm.mp4")
        before = peak_rss_mib()
        result = render_walk(latents, synthesize=generator, labels=labels, out=Path(folder) / "walk.mp4")
        after = peak_rss_mib()
    print(json.dumps({"frames": result.frames, "peak_mib": after, "growth_mib": after - before}))


def measure_memory(frames: int) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(frames)], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def encode_table(generator: torch.nn.Module, latents: torch.Tensor, labels: torch.Tensor, folder: Path) -> None:
    """Encoding alone: the same 120 generated frames written in every format, native and upscaled to 512 px."""
    with torch.inference_mode():
        frames = torch.cat([generator(z, labels.expand(len(z), -1)) for z in latents.split(BATCH)])
    for size in (None, 512):
        for suffix in ("mp4", "webm", "gif", "zip"):
            target = folder / f"encode.{suffix}"
            started = time.perf_counter()
            with VideoWriter(target, fps=30, size=size) as writer:
                for batch in frames.split(BATCH):
                    writer.write(batch)
            label = f"encode_120f_{size or 128}px_{suffix}"
            report(label, time.perf_counter() - started, "s")
            report(f"{label}_file", target.stat().st_size / 1024, "KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="also save the 120-frame MP4 here")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-encode", action="store_true", help="skip the encode-only table")
    parser.add_argument("--repeat", type=int, default=3, help="renders per variant (the median is reported)")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return

    print(f"# torch {torch.__version__}, {torch.get_num_threads()} CPU threads", flush=True)
    generator, latents, labels = eye_walk(120)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "walk.mp4"
        fast = copy.deepcopy(generator).to(memory_format=torch.channels_last)
        for variant, module in (("", generator), ("_channels_last", fast)):
            render_walk(latents[:BATCH], synthesize=module, labels=labels, out=out)  # warm-up
            runs = []
            for _ in range(args.repeat):  # the median of a few runs: the build machine's cores are shared
                started = time.perf_counter()
                result = render_walk(latents, synthesize=module, labels=labels, out=out, fps=30, batch_size=BATCH)
                runs.append((time.perf_counter() - started, result))
            total, result = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
            name = f"walk_120f_128px_mp4{variant}"
            report(f"{name}_total", total, "s")
            report(f"{name}_total_best", min(run[0] for run in runs), "s")
            report(f"{name}_generating", result.seconds_generating, "s")
            report(f"{name}_encoding", result.seconds_encoding, "s")
            report(f"{name}_encoding_share", 100 * result.seconds_encoding / total, "%")
        report("walk_120f_128px_mp4_file", out.stat().st_size / 1024, "KiB")
        if args.keep:
            args.keep.write_bytes(out.read_bytes())

        if not args.skip_encode:
            encode_table(generator, latents, labels, Path(folder))

    if not args.skip_memory:
        small, large = measure_memory(60), measure_memory(600)
        report("walk_60f_peak_rss", small["peak_mib"], "MiB")
        report("walk_600f_peak_rss", large["peak_mib"], "MiB")
        report("walk_600f_vs_60f_peak_rss", 100 * (large["peak_mib"] / small["peak_mib"] - 1), "%")
        report("walk_60f_rss_growth_after_warmup", small["growth_mib"], "MiB")
        report("walk_600f_rss_growth_after_warmup", large["growth_mib"], "MiB")


if __name__ == "__main__":
    main()
