"""Train a DCGAN on a folder of images: `train(TrainConfig(...))`.

One loop serves one CPU, one GPU and many GPUs: Hugging Face Accelerate prepares the models and optimizers (DDP
under `accelerate launch`), does the backward passes and tells which process is the main one. Each process draws
its own batches from its own seeded generators; the main process samples, measures, checkpoints and exports.

Per step: D sees DiffAugment-ed real and generated images (+ gradient penalty / R1), then G is updated through the
same augmentation, then the EMA generator follows G. On CUDA the forward passes run under bf16 autocast with
channels-last tensors; on CPU everything stays float32, and a resumed run repeats the straight run bit for bit.
Sample grids, metrics and exports live in sampling.py, metrics.py and export.py.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import re
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
from studio.training.dataset import CROPS, EpochSampler, ImageFolder, SkippedFile
from studio.training.export import ExportResult, export_generator
from studio.training.losses import (
    LOSSES,
    discriminator_loss,
    ema_decay_at,
    ema_update,
    generator_loss,
    gradient_penalty,
    r1_penalty,
)
from studio.training.metrics import FID_MODES, QualityMeter
from studio.training.sampling import fixed_latents, generate, sample_grid, with_standing_stats

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "no")
D_NORMS = ("auto", "batch", "none")
# Checkpoint settings that must match to resume (the rest, e.g. steps, budgets or sampling, may change).
RESUME_KEYS = ("size", "z_dim", "g_channels", "d_channels", "loss", "d_norm", "spectral_norm", "batch_size")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. `steps` is the total to reach (a resumed run continues to it)."""

    data: Path
    out: Path
    name: str
    size: int = 64  # training resolution: 16 (tests), 32, 64, 128 or 256
    steps: int = 10_000
    time_budget_s: float | None = None  # stop (checkpoint + export) after this much wall time in this invocation
    batch_size: int = 64  # per process
    z_dim: int = 100
    g_channels: int = 64  # generator channels at the last hidden block (DCGANConfig.base_channels)
    d_channels: int = 64  # discriminator channels at the first block
    loss: str = "bce"  # "bce" (non-saturating) | "hinge" | "wgan-gp"
    gp_weight: float = 10.0  # WGAN-GP lambda
    r1_gamma: float = 0.0  # R1 penalty weight (gamma/2 * E||grad D(x)||^2 on reals); 0 = off
    d_norm: str = "auto"  # "batch" | "none" | "auto" (none for wgan-gp or spectral norm, else batch)
    spectral_norm: bool = False
    augment: str = "color,translation,cutout"  # DiffAugment policy; "" for none
    crop: str = "random"  # "random" | "center"
    flip: bool = True
    conditional: bool | None = None  # None: classes when the data folder has >= 2 class subfolders
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    d_steps: int = 1  # discriminator updates per generator update
    ema_decay: float = 0.999
    seed: int = 0
    sample_every: int = 500  # steps between sample grids; 0 = only at the end
    checkpoint_every: int = 1000  # steps between checkpoints (each also measures quality); 0 = only at the end
    sample_count: int = 64
    metric_samples: int = 256  # images per side for the Fréchet distances; 0 = no metrics
    fid: str = "auto"  # "auto" (only with cached Inception weights) | "download" | "off"
    resume: bool = True  # continue from <out>/checkpoints/last when it exists
    mixed_precision: str = "auto"  # "auto" = bf16 autocast on CUDA, float32 elsewhere | "bf16" | "no"
    channels_last: bool | None = None  # None = on CUDA only
    cpu: bool = False  # train on the CPU even when a GPU is there
    progress_bar: bool = True
    log_every: int = 10  # steps between progress updates (losses are read from the device only then)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "out", Path(self.out))
        checks = [
            (
                self.size >= 8 and not self.size & (self.size - 1) and self.size <= 1024,
                f"size must be a power of two between 8 and 1024 (16, 32, 64, 128, 256), got {self.size}",
            ),
            (self.steps >= 1, f"steps must be at least 1, got {self.steps}"),
            (self.time_budget_s is None or self.time_budget_s > 0, "time budget must be positive seconds"),
            (self.batch_size >= 2, f"batch size must be at least 2 (BatchNorm needs it), got {self.batch_size}"),
            (self.z_dim >= 1 and self.g_channels >= 1 and self.d_channels >= 1, "z_dim and channels must be >= 1"),
            (self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}"),
            (self.d_norm in D_NORMS, f"d_norm must be one of {D_NORMS}, got {self.d_norm!r}"),
            (self.crop in CROPS, f"crop must be one of {CROPS}, got {self.crop!r}"),
            (self.lr_g > 0 and self.lr_d > 0, "learning rates must be positive"),
            (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "Adam betas must be in [0, 1)"),
            (self.d_steps >= 1, f"d_steps must be at least 1, got {self.d_steps}"),
            (0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (self.gp_weight >= 0 and self.r1_gamma >= 0, "penalty weights must be >= 0"),
            (self.sample_every >= 0 and self.checkpoint_every >= 0, "sample/checkpoint intervals must be >= 0"),
            (self.sample_count >= 1, "sample_count must be at least 1"),
            (self.metric_samples == 0 or self.metric_samples >= 2, "metric_samples must be 0 (off) or >= 2"),
            (self.fid in FID_MODES, f"fid must be one of {FID_MODES}, got {self.fid!r}"),
            (self.mixed_precision in PRECISIONS, f"mixed_precision must be one of {PRECISIONS}"),
            (self.log_every >= 1, "log_every must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        parse_policy(self.augment)

    @property
    def discriminator_norm(self) -> str:
        if self.d_norm != "auto":
            return self.d_norm
        return "none" if self.loss == "wgan-gp" or self.spectral_norm else "batch"

    def settings(self) -> dict[str, Any]:
        """JSON-ready copy of the settings (paths as strings)."""
        return {
            key: str(value) if isinstance(value, Path) else value for key, value in dataclasses.asdict(self).items()
        }


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-") or "my-gan"


def make_train_config(
    *, data: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, name: str | None = None, **options: Any
) -> TrainConfig:
    """TrainConfig from CLI-style keyword arguments; options that are None keep their defaults.

    name defaults to the out folder's name, else the data folder's (slugified); out defaults to `weights/<name>`
    (STUDIO_WEIGHTS_DIR respected).
    Unknown options raise ValueError naming the known ones.
    """
    from studio.weights import local_weights_dir

    known = {f.name for f in dataclasses.fields(TrainConfig)} - {"data", "out", "name"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown training options {unknown}; known: {sorted(known)}")
    data_path = Path(data).expanduser()
    slug = _slug(name or (Path(out).expanduser().resolve().name if out else data_path.resolve().name))
    out_path = Path(out).expanduser() if out else local_weights_dir() / slug
    return TrainConfig(data=data_path, out=out_path, name=slug, **{k: v for k, v in options.items() if v is not None})


@dataclass(frozen=True)
class TrainProgress:
    """What `on_progress` receives every `log_every` steps and whenever a sample grid or metrics are new."""

    step: int
    total_steps: int
    losses: dict[str, float]
    images_per_second: float
    elapsed_s: float
    sample: Path | None = None
    metrics: dict[str, float] | None = None


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    export: ExportResult | None  # None on non-main processes
    step: int  # steps done in total (this run and those it resumed)
    stopped_by: str  # "steps" | "time" | "interrupt"
    images_per_second: float  # training throughput of this invocation, all processes together
    losses: dict[str, float]
    metrics: tuple[dict[str, float], ...]  # one entry per checkpoint: {"step", "vgg_fd", ["fid"]}
    metrics_unavailable: dict[str, str]
    samples: tuple[Path, ...]
    checkpoint: Path | None
    classes: tuple[str, ...]
    images: int  # readable training images
    skipped: tuple[SkippedFile, ...]
    resumed_from: int = 0

    @property
    def interrupted(self) -> bool:
        return self.stopped_by == "interrupt"


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
        config,
        accelerator,
        data,
        generator,
        discriminator,
        ema,
        opt_g,
        opt_d,
        sampler,
        rngs,
        parse_policy(config.augment),
        use_bf16,
        memory_format,
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
            "sampler": run.sampler.state_dict(),
            "history": run.history,
            "settings": run.config.settings(),
            "classes": list(run.data.classes),
        }
    rng = ckpt.capture_rng(run.rngs)
    rng["sampler"] = run.sampler.state_dict()
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
            "--out folder, or start over with resume=False"
        )
    unwrap = run.accelerator.unwrap_model
    unwrap(run.generator).load_state_dict(state["generator"])
    unwrap(run.discriminator).load_state_dict(state["discriminator"])
    run.ema.load_state_dict(state["ema"])
    run.opt_g.load_state_dict(state["opt_g"])
    run.opt_d.load_state_dict(state["opt_d"])
    if rng is not None:
        ckpt.restore_rng(rng, run.rngs)
        run.sampler.load_state_dict(rng["sampler"])
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
    scores = run.meter.score(generate(model, z, labels))
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


def train(config: TrainConfig, *, on_progress: Callable[[TrainProgress], None] | None = None) -> TrainResult:
    """Train (or resume) a DCGAN on `config.data`; write samples, checkpoints and the exported model to `config.out`.

    Stops at `config.steps` total steps, after `config.time_budget_s`, or on Ctrl-C / a KeyboardInterrupt raised
    by `on_progress` (then it checkpoints, exports and returns with stopped_by="interrupt"). Unreadable images are
    skipped and listed in the result. Raises ValueError for unusable data or settings.
    """
    accelerator = _make_accelerator(config)
    main = accelerator.is_main_process
    data = ImageFolder(
        config.data, size=config.size, crop=config.crop, flip=config.flip, conditional=config.conditional
    )
    if main and config.progress_bar:
        print(
            f"{len(data)} images in {config.data}"
            + (f", classes {list(data.classes)}" if data.classes else "")
            + (f"; skipped {len(data.skipped)} unreadable files:" if data.skipped else ""),
            file=sys.stderr,
        )
        for skipped in data.skipped:
            print(f"  skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    if main:
        config.out.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    run = _build_run(config, data, accelerator)
    resumed_from = _restore(run)
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
    try:
        with stop.installed():
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
