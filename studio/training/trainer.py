"""Train a DCGAN on a folder of images: `train(TrainConfig(...))`.

One loop serves one CPU, one GPU and many GPUs: Hugging Face Accelerate prepares the models and optimizers (DDP
under `accelerate launch`), does the backward passes and tells which process is the main one. Each process draws
its own batches from its own seeded generators; the main process samples, measures, checkpoints and exports.

Per step: D sees DiffAugment-ed real and generated images (+ gradient penalty / R1), then G is updated through the
same augmentation, then the EMA generator follows G. On CUDA the forward passes run under bf16 autocast with
channels-last tensors; on CPU everything stays float32, and a resumed run repeats the straight run bit for bit.
Settings and results live in config.py; sample grids, metrics and exports in sampling.py, metrics.py and export.py.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from studio.models.dcgan import (
    DCGANConfig,
    DCGANDiscriminator,
    DCGANDiscriminatorConfig,
    DCGANGenerator,
    dcgan_init_,
)
from studio.training import checkpoint as ckpt
from studio.training.augment import diff_augment, parse_policy
from studio.training.config import (
    MIN_BATCH_SIZE,
    RESUME_KEYS,
    TrainConfig,
    TrainProgress,
    TrainResult,
    check_destination,
    make_train_config,
)
from studio.training.dataset import EpochSampler, ImageFolder
from studio.training.export import export_generator
from studio.training.losses import (
    discriminator_loss,
    ema_decay_at,
    ema_update,
    generator_loss,
    gradient_penalty,
    r1_penalty,
)
from studio.training.metrics import QualityMeter
from studio.training.sampling import fixed_latents, generate, sample_grid, with_standing_stats

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainProgress", "TrainResult", "make_train_config", "train"]


# --- the run ---------------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """The mutable state of one run (internal)."""

    config: TrainConfig
    accelerator: Any
    data: ImageFolder
    generator: Any  # prepared (DDP-wrapped under multi-process)
    discriminator: Any
    ema: DCGANGenerator
    opt_g: Any
    opt_d: Any
    sampler: EpochSampler
    rngs: dict[str, torch.Generator]
    policy: tuple[str, ...]
    use_bf16: bool
    memory_format: torch.memory_format
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    meter: QualityMeter | None = None
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)


def _make_accelerator(config: TrainConfig):
    from accelerate import Accelerator

    # Several processes without CUDA (torchrun / accelerate launch on a CPU box): Accelerate only forms the gloo
    # group when asked for the CPU, otherwise each process would train alone.
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = config.cpu or (launched and not torch.cuda.is_available())
    # Precision is handled here (bf16 autocast on CUDA), so Accelerate's own autocast stays off.
    return Accelerator(cpu=cpu, mixed_precision="no")


def _build_run(config: TrainConfig, data: ImageFolder, accelerator) -> _Run:
    init = torch.Generator().manual_seed(config.seed)
    g_config = DCGANConfig(
        z_dim=config.z_dim, num_classes=data.num_classes, resolution=config.size, base_channels=config.g_channels
    )
    d_config = DCGANDiscriminatorConfig(
        resolution=config.size,
        base_channels=config.d_channels,
        num_classes=data.num_classes,
        norm=config.discriminator_norm,
        spectral_norm=config.spectral_norm,
    )
    generator = dcgan_init_(DCGANGenerator(g_config), generator=init)
    discriminator = dcgan_init_(DCGANDiscriminator(d_config), generator=init)
    ema = copy.deepcopy(generator).requires_grad_(False)
    device = accelerator.device
    on_cuda = device.type == "cuda"
    use_bf16 = config.mixed_precision == "bf16" or (config.mixed_precision == "auto" and on_cuda)
    channels_last = on_cuda if config.channels_last is None else config.channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for module in (generator, discriminator, ema):
        module.to(device=device, memory_format=memory_format)
    betas = (config.beta1, config.beta2)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, betas=betas)
    generator, discriminator, opt_g, opt_d = accelerator.prepare(generator, discriminator, opt_g, opt_d)
    rank_seed = config.seed + 7919 * accelerator.process_index  # every process draws different batches
    sampler = EpochSampler(len(data), seed=rank_seed)
    rngs = {
        "data": sampler.generator,  # data order, crops and flips
        "latent": torch.Generator().manual_seed(rank_seed + 1),
        "augment": torch.Generator().manual_seed(rank_seed + 2),
    }
    return _Run(
        config=config,
        accelerator=accelerator,
        data=data,
        generator=generator,
        discriminator=discriminator,
        ema=ema,
        opt_g=opt_g,
        opt_d=opt_d,
        sampler=sampler,
        rngs=rngs,
        policy=parse_policy(config.augment),
        use_bf16=use_bf16,
        memory_format=memory_format,
    )


def _discriminator_step(run: _Run, reals: Tensor, fakes: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
    config, discriminator = run.config, run.discriminator
    real_in = diff_augment(reals, run.policy, run.rngs["augment"])
    fake_in = diff_augment(fakes.detach(), run.policy, run.rngs["augment"])
    if config.r1_gamma:
        real_in = real_in.detach().requires_grad_(True)
    with run.autocast():
        real_logits = discriminator(real_in, labels)
        fake_logits = discriminator(fake_in, labels)
    loss = discriminator_loss(config.loss, real_logits, fake_logits)
    terms = {"d": loss.detach(), "d_real": real_logits.detach().mean(), "d_fake": fake_logits.detach().mean()}
    if config.loss == "wgan-gp" and config.gp_weight:
        mix = torch.rand(reals.shape[0], generator=run.rngs["augment"])
        with run.autocast():
            penalty = gradient_penalty(lambda x: discriminator(x, labels), real_in, fake_in, mix=mix)
        loss = loss + config.gp_weight * penalty
        terms["gp"] = penalty.detach()
    if config.r1_gamma:
        penalty = r1_penalty(real_logits, real_in)
        loss = loss + 0.5 * config.r1_gamma * penalty
        terms["r1"] = penalty.detach()
    run.opt_d.zero_grad(set_to_none=True)
    run.accelerator.backward(loss)
    run.opt_d.step()
    return terms


def _generator_step(run: _Run, fakes: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
    single = run.accelerator.num_processes == 1  # under DDP every parameter must keep requiring grad
    if single:
        run.discriminator.requires_grad_(False)
    with run.autocast():
        logits = run.discriminator(diff_augment(fakes, run.policy, run.rngs["augment"]), labels)
    loss = generator_loss(run.config.loss, logits)
    run.opt_g.zero_grad(set_to_none=True)
    run.accelerator.backward(loss)
    run.opt_g.step()
    if single:
        run.discriminator.requires_grad_(True)
    ema_update(
        run.ema, run.accelerator.unwrap_model(run.generator), decay=ema_decay_at(run.step, decay=run.config.ema_decay)
    )
    return {"g": loss.detach()}


def _next_batch(run: _Run) -> tuple[Tensor, Tensor | None, Tensor]:
    """(reals (B, 3, S, S) in [-1, 1], labels (B, K) | None, latents (B, z_dim)), on the training device."""
    indices = run.sampler.next(run.config.batch_size)
    reals, labels = run.data.batch(indices, run.rngs["data"])
    z = torch.randn(run.config.batch_size, run.config.z_dim, generator=run.rngs["latent"])
    reals = reals.to(run.device, non_blocking=True).contiguous(memory_format=run.memory_format)
    return reals, None if labels is None else labels.to(run.device), z.to(run.device)


def train_step(run: _Run) -> dict[str, Tensor]:
    """One generator update (after `d_steps` discriminator updates). Returns detached scalar loss tensors."""
    terms: dict[str, Tensor] = {}
    for index in range(run.config.d_steps):
        reals, labels, z = _next_batch(run)
        last = index == run.config.d_steps - 1
        with run.autocast(), torch.set_grad_enabled(last):  # the last fakes are reused for the G step
            fakes = run.generator(z, labels)
        terms = _discriminator_step(run, reals, fakes, labels)
    terms.update(_generator_step(run, fakes, labels))
    run.step += 1
    return terms


# --- checkpoints, samples, metrics -----------------------------------------------------------------------------------


def _save(run: _Run) -> Path | None:
    accelerator = run.accelerator
    state = None
    if accelerator.is_main_process:
        state = {
            "step": run.step,
            "generator": accelerator.unwrap_model(run.generator).state_dict(),
            "discriminator": accelerator.unwrap_model(run.discriminator).state_dict(),
            "ema": run.ema.state_dict(),
            "opt_g": run.opt_g.state_dict(),
            "opt_d": run.opt_d.state_dict(),
            "history": run.history,
            "settings": run.config.settings(),
            "data_folder": str(run.config.data.expanduser().resolve()),  # settings hold it as given (maybe relative)
            "classes": list(run.data.classes),
        }
    rng = {**ckpt.capture_rng(run.rngs), "sampler": run.sampler.state_dict()}  # per process: data orders differ
    ckpt.save_checkpoint(run.config.out, state=state, rng=rng, rank=accelerator.process_index)
    accelerator.wait_for_everyone()
    folder = ckpt.commit_checkpoint(run.config.out) if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    return folder


def _restore(run: _Run) -> int:
    """Load the last checkpoint of `out` if there is one (and resume is on); returns the step it reached."""
    folder = ckpt.find_checkpoint(run.config.out)
    if folder is None or not run.config.resume:
        return 0
    state, rng = ckpt.load_checkpoint(folder, rank=run.accelerator.process_index)
    trained_on = state.get("data_folder")
    if trained_on is not None and Path(trained_on) != run.config.data.expanduser().resolve():
        raise ValueError(
            f"{run.config.out} holds a model trained on {trained_on}, not on {run.config.data}; to train a model of "
            "these images give another export folder (--out) or name (--name), or start this one over on them "
            "(--fresh on the command line, resume=False in Python)"
        )
    mismatched = [
        f"{key}: checkpoint {state['settings'].get(key)!r}, now {getattr(run.config, key)!r}"
        for key in RESUME_KEYS
        if state["settings"].get(key) != getattr(run.config, key)
    ]
    if list(state["classes"]) != list(run.data.classes):
        mismatched.append(f"classes: checkpoint {state['classes']}, now {list(run.data.classes)}")
    if mismatched:
        raise ValueError(
            f"{folder} was made with other settings ({'; '.join(mismatched)}); use the same settings, another "
            "export folder, or start over (--fresh on the command line, resume=False in Python)"
        )
    unwrap = run.accelerator.unwrap_model
    unwrap(run.generator).load_state_dict(state["generator"])
    unwrap(run.discriminator).load_state_dict(state["discriminator"])
    run.ema.load_state_dict(state["ema"])
    run.opt_g.load_state_dict(state["opt_g"])
    run.opt_d.load_state_dict(state["opt_d"])
    if rng is not None:
        ckpt.restore_rng(rng, run.rngs)
        if not run.sampler.load_state_dict(rng["sampler"]):
            log.warning("the data folder holds more or fewer images than at the checkpoint: a new epoch starts")
    else:  # more processes than when it was saved: the new ranks start fresh data orders
        log.warning(
            "checkpoint has no RNG state for process %d; its data order starts afresh", run.accelerator.process_index
        )
    run.step = int(state["step"])
    run.history = list(state["history"])
    return run.step


def _standing_ema(run: _Run) -> DCGANGenerator:
    return with_standing_stats(
        run.ema,
        z_dim=run.config.z_dim,
        num_classes=run.data.num_classes,
        seed=run.config.seed + 3,
        batch_size=min(64, max(run.config.batch_size, 16)),
    )


def _save_samples(run: _Run, model: DCGANGenerator) -> Path:
    z, labels = fixed_latents(
        count=run.config.sample_count,
        z_dim=run.config.z_dim,
        num_classes=run.data.num_classes,
        seed=run.config.seed + 1,
    )
    folder = run.config.out / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{run.step:07d}.png"
    sample_grid(model, z, labels).save(path)
    return path


def _measure(run: _Run, model: DCGANGenerator) -> dict[str, float] | None:
    count = min(run.config.metric_samples, len(run.data)) if run.config.metric_samples else 0
    if count < 2:
        return None
    order = torch.randperm(len(run.data), generator=torch.Generator().manual_seed(run.config.seed + 4))[:count]
    reals, labels = run.data.batch(order, torch.Generator(), augment=False)
    if run.meter is None:
        run.meter = QualityMeter(reals, fid=run.config.fid, device=run.device)
        run.unavailable = dict(run.meter.unavailable)
        for name, reason in run.unavailable.items():
            log.info("metric %s unavailable: %s", name, reason)
    z = torch.randn(count, run.config.z_dim, generator=torch.Generator().manual_seed(run.config.seed + 2))
    fakes = generate(model, z, labels)
    if not bool(torch.isfinite(fakes).all()):  # a diverged run: the distances are undefined (and eigh fails)
        run.unavailable["quality"] = (
            f"not measured at step {run.step}: the generator's output is not finite (training diverged; lower the "
            "learning rates or the penalty weights)"
        )
        log.warning("%s", run.unavailable["quality"])
        return None
    scores = run.meter.score(fakes)
    entry = {"step": run.step, **scores}
    run.history.append(entry)
    return scores


# --- interruption ----------------------------------------------------------------------------------------------------


class _StopRequest:
    """First Ctrl-C: finish the step, checkpoint, export, return. Second Ctrl-C: raise KeyboardInterrupt now."""

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nstopping after this step: saving a checkpoint and exporting (Ctrl-C again to quit now)", file=sys.stderr
        )

    @contextmanager
    def installed(self) -> Iterator[_StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def _any_process(accelerator, flag: bool) -> bool:
    """True when `flag` is set on any process (so that every process stops at the same step)."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)


# --- the entry point -------------------------------------------------------------------------------------------------


def _smaller_batch_advice(image_count: int) -> str:
    """What to give --batch so that no batch repeats an image, never below the smallest batch training accepts."""
    if image_count < MIN_BATCH_SIZE:
        return f"add images, or give --batch {MIN_BATCH_SIZE} (the smallest) to repeat them least"
    if image_count == MIN_BATCH_SIZE:
        return f"--batch {MIN_BATCH_SIZE} shows each image at most once per step"
    return f"--batch {MIN_BATCH_SIZE} to {image_count} shows each image at most once per step"


def train(config: TrainConfig, *, on_progress: Callable[[TrainProgress], None] | None = None) -> TrainResult:
    """Train (or resume) a DCGAN on `config.data`; write samples, checkpoints and the exported model to `config.out`.

    Stops at `config.steps` total steps, after `config.time_budget_s`, or on Ctrl-C / a KeyboardInterrupt raised
    by `on_progress` (then it checkpoints, exports and returns with stopped_by="interrupt"). Unreadable images are
    skipped and listed in the result. Raises ValueError for unusable data or settings.
    """
    check_destination(config)
    accelerator = _make_accelerator(config)
    main = accelerator.is_main_process
    data = ImageFolder(
        config.data, size=config.size, crop=config.crop, flip=config.flip, conditional=config.conditional
    )
    if main and config.progress_bar:
        print(
            f"{len(data)} image{'s' * (len(data) != 1)} in {config.data}"
            + (f", classes {list(data.classes)}" if data.classes else "")
            + (f"; skipped {len(data.skipped)} unreadable files:" if data.skipped else ""),
            file=sys.stderr,
        )
        for skipped in data.skipped:
            print(f"  skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
        if config.batch_size > len(data):
            print(
                f"note: a batch of {config.batch_size} is larger than the {len(data)} image{'s' * (len(data) != 1)}, "
                f"so every batch repeats some of them; {_smaller_batch_advice(len(data))}",
                file=sys.stderr,
            )
    if main:
        config.out.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    run = _build_run(config, data, accelerator)
    resumed_from = _restore(run)
    if main and config.progress_bar and resumed_from:
        print(f"resuming from step {resumed_from} in {config.out} (--fresh starts over)", file=sys.stderr)
    if main and not resumed_from:  # starting over: an earlier run's sample grids would pass for this one's
        for old in sorted((config.out / "samples").glob("step_*.png")):
            old.unlink()
    samples: list[Path] = []
    last_terms: dict[str, Tensor] = {}
    losses: dict[str, float] = {}
    stopped_by = "steps"
    images_done, train_seconds, started = 0, 0.0, time.perf_counter()

    from tqdm.auto import tqdm

    bar = tqdm(
        total=config.steps,
        initial=run.step,
        unit="step",
        disable=not (main and config.progress_bar),
        dynamic_ncols=True,
        desc=config.name,
    )
    stop = _StopRequest()
    checkpoint: Path | None = None
    with stop.installed():  # also while finishing: a Ctrl-C then must not lose the checkpoint and export
        try:
            while run.step < config.steps:
                tick = time.perf_counter()
                last_terms = train_step(run)
                if run.device.type == "cuda" and run.step % config.log_every == 0:
                    torch.cuda.synchronize(run.device)
                train_seconds += time.perf_counter() - tick
                images_done += config.batch_size * accelerator.num_processes
                speed = images_done / max(train_seconds, 1e-9)
                sample_path, scores = None, None
                at_checkpoint = config.checkpoint_every and run.step % config.checkpoint_every == 0
                at_sample = config.sample_every and run.step % config.sample_every == 0
                if (at_sample or at_checkpoint) and run.step < config.steps:
                    if main:  # side work never touches the global RNGs the training step may use
                        with torch.random.fork_rng(devices=[]):
                            standing = _standing_ema(run)
                            if at_sample:
                                sample_path = _save_samples(run, standing)
                                samples.append(sample_path)
                            if at_checkpoint:
                                scores = _measure(run, standing)
                    if at_checkpoint:
                        checkpoint = _save(run)
                if run.step % config.log_every == 0 or sample_path or scores:
                    losses = {name: float(value) for name, value in last_terms.items()}
                    bar.set_postfix(
                        {
                            **{k: f"{v:.3f}" for k, v in losses.items() if k in ("d", "g")},
                            "img/s": f"{speed:.0f}",
                            **{k: f"{v:.4g}" for k, v in (scores or {}).items()},
                        }
                    )
                    if on_progress is not None:
                        on_progress(
                            TrainProgress(
                                run.step,
                                config.steps,
                                losses,
                                speed,
                                time.perf_counter() - started,
                                sample_path,
                                scores,
                            )
                        )
                bar.update(1)
                out_of_time = config.time_budget_s is not None and time.perf_counter() - started > config.time_budget_s
                if _any_process(accelerator, stop.requested or out_of_time):
                    stopped_by = "interrupt" if stop.requested else "time"
                    break
        except KeyboardInterrupt:
            if stop.requested:  # second Ctrl-C: the user wants out now
                raise
            stopped_by = "interrupt"  # raised by on_progress between steps: the state is consistent
        finally:
            bar.close()
        losses = {name: float(value) for name, value in last_terms.items()} or losses
        return _finish(
            run,
            stopped_by=stopped_by,
            losses=losses,
            samples=samples,
            speed=images_done / max(train_seconds, 1e-9),
            resumed_from=resumed_from,
            checkpoint=checkpoint,
        )


def _finish(
    run: _Run,
    *,
    stopped_by: str,
    losses: dict[str, float],
    samples: list[Path],
    speed: float,
    resumed_from: int,
    checkpoint: Path | None,
) -> TrainResult:
    """Final samples, metrics, checkpoint and export."""
    config, accelerator = run.config, run.accelerator
    export = None
    if accelerator.is_main_process:
        with torch.random.fork_rng(devices=[]):  # the checkpoint below must hold the RNG states of the last step
            standing = _standing_ema(run)
            samples.append(_save_samples(run, standing))
            if not run.history or run.history[-1]["step"] != run.step:
                _measure(run, standing)
    checkpoint = _save(run)
    if accelerator.is_main_process:
        training = {
            "settings": config.settings(),
            "steps": run.step,
            "images": len(run.data),
            "skipped": [str(s.path) for s in run.data.skipped],
            "stopped_by": stopped_by,
            "images_per_second": round(speed, 2),
            "device": str(run.device),
            "precision": "bf16 autocast" if run.use_bf16 else "float32",
            "processes": accelerator.num_processes,
            "metrics": run.history,
            "metrics_unavailable": run.unavailable,
        }
        export = export_generator(
            standing.cpu(),
            out_dir=config.out,
            name=config.name,
            classes=run.data.classes,
            description=f"DCGAN trained with GAN Art Studio on {len(run.data)} images from "
            f"{config.data.name}, {config.size} px, {run.step} steps",
            training=training,
            samples=samples[-1],
        )
    accelerator.wait_for_everyone()
    return TrainResult(
        out_dir=config.out,
        export=export,
        step=run.step,
        stopped_by=stopped_by,
        images_per_second=speed,
        losses=losses,
        metrics=tuple(run.history),
        metrics_unavailable=dict(run.unavailable),
        samples=tuple(samples),
        checkpoint=checkpoint,
        classes=run.data.classes,
        images=len(run.data),
        skipped=tuple(run.data.skipped),
        resumed_from=resumed_from,
    )
