"""Generation speed: prints `name value unit` lines.

CPU: one 128 px eye image end to end (seed -> latent -> generator -> PIL), median over repeats (target < 50 ms);
one 256 px projected-GAN image with random weights of the real architecture (target < 400 ms); GANSpace directions
for the eye model (target < 60 s). With CUDA: one eye image end to end, and images/s at batch 64 for the 256 px
generator in bf16 and the 1024 px FastGAN.

    .venv/bin/python benchmarks/bench_generate.py [--quick] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from unittest import mock

import torch
from timing import add_device_option, devices_to_run, median_seconds

from studio import Studio
from studio.imaging import signed_to_pil
from studio.loader import build_module, prepare_for_inference
from studio.ops.generation import seeded_latents, synthesize
from studio.registry import builtin_models


def trained_like(module: torch.nn.Module, steps: int = 3) -> torch.nn.Module:
    """Settle spectral-norm vectors and BatchNorm statistics so random weights give finite, image-like output, then
    prepare the module for inference as the studio's loader does."""
    module.train()
    with torch.no_grad():
        for _ in range(steps):
            module(torch.randn(2, module.z_dim))
    return prepare_for_inference(module)  # as studio.loader.load_model leaves a loaded model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    add_device_option(parser)
    args = parser.parse_args()
    for device in devices_to_run(parser, args.device):
        if device == "cpu":
            bench_cpu(quick=args.quick)
        else:
            bench_cuda()


def bench_cpu(*, quick: bool) -> None:
    repeats = 5 if quick else 30
    print(f"device cpu threads {torch.get_num_threads()} count")

    studio = Studio(device="cpu")
    studio.load("omniart-eyes")
    seeds = iter(range(10_000))
    eye = median_seconds(lambda: studio.generate(model="omniart-eyes", seed=next(seeds)).images[0], repeats)
    print(f"cpu_eye_128px_one_image_median {eye * 1000:.1f} ms")

    projected = trained_like(build_module(builtin_models()["wikiart-abstract-expressionism"]))
    latents = iter(seeded_latents(range(1000), z_dim=256).split(1))
    counter = iter(range(1000))

    def one_projected() -> None:
        signed_to_pil(synthesize(projected, next(latents), seeds=[next(counter)]))

    projected_seconds = median_seconds(one_projected, max(3, repeats // 3))
    print(f"cpu_projected_gan_256px_one_image_median {projected_seconds * 1000:.1f} ms")

    if not quick:
        # An empty cache, so the directions are really computed.
        with tempfile.TemporaryDirectory() as cache, mock.patch.dict(os.environ, {"STUDIO_CACHE_DIR": cache}):
            fresh = Studio(device="cpu")
            fresh.load("omniart-eyes")
            start = time.perf_counter()
            fresh.directions("omniart-eyes")
            print(f"cpu_eye_directions_compute {time.perf_counter() - start:.1f} s")


def bench_cuda() -> None:
    studio = Studio(device="cuda")
    studio.load("omniart-eyes")
    seeds = iter(range(10_000))
    eye = median_seconds(lambda: studio.generate(model="omniart-eyes", seed=next(seeds)).images[0], 30)
    print(f"cuda_eye_128px_one_image_median {eye * 1000:.1f} ms")

    for name, batch in (("wikiart-abstract-expressionism", 64), ("fastgan-painting", 16)):
        module = trained_like(build_module(builtin_models()[name])).cuda()
        z = seeded_latents(range(batch), z_dim=256)

        def run(module=module, z=z, batch=batch) -> None:
            synthesize(module, z, seeds=range(batch), device="cuda", batch_size=batch)
            torch.cuda.synchronize()

        seconds = median_seconds(run, 10)
        print(f"cuda_{name}_bf16_batch{batch}_throughput {batch / seconds:.0f} img/s")


if __name__ == "__main__":
    main()
