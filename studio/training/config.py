"""The settings of a training run and what it reports: TrainConfig, make_train_config, TrainProgress, TrainResult."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.files import check_folder_can_be_written
from studio.ops.common import as_whole_number
from studio.training.augment import parse_policy
from studio.training.dataset import CROPS, SkippedFile
from studio.training.export import ExportResult
from studio.training.losses import LOSSES
from studio.training.metrics import FID_MODES

PRECISIONS = ("auto", "bf16", "no")
D_NORMS = ("auto", "batch", "none")
MIN_BATCH_SIZE = 2  # BatchNorm needs two samples
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
        # Numbers may come as NumPy scalars, whole floats or text (from a notebook, a form or JSON): store plain
        # Python ones, so the settings go into config.json and the checkpoint as they are.
        for name in WHOLE_NUMBER_FIELDS:
            number = as_whole_number(_number_or_text(getattr(self, name)))
            if number is None:
                raise ValueError(f"{name} must be a whole number, got {getattr(self, name)!r}")
            object.__setattr__(self, name, number)
        for name in REAL_NUMBER_FIELDS:
            value = getattr(self, name)
            if value is None and name == "time_budget_s":
                continue
            try:
                number = float(_number_or_text(value))
            except (TypeError, ValueError, OverflowError):
                raise ValueError(f"{name} must be a number, got {reprlib.repr(value)}") from None
            if not math.isfinite(number):
                raise ValueError(f"{name} must be a finite number, got {reprlib.repr(value)}")
            object.__setattr__(self, name, number)
        checks = [
            (
                self.size >= 8 and not self.size & (self.size - 1) and self.size <= 1024,
                f"size must be a power of two between 8 and 1024 (16, 32, 64, 128, 256), got {self.size}",
            ),
            (self.steps >= 1, f"steps must be at least 1, got {self.steps}"),
            (self.time_budget_s is None or self.time_budget_s > 0, "time budget must be positive seconds"),
            (
                self.batch_size >= MIN_BATCH_SIZE,
                f"batch size must be at least {MIN_BATCH_SIZE} (BatchNorm needs it), got {self.batch_size}",
            ),
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
            (0 <= self.seed <= MAX_SEED, f"seed must be between 0 and {MAX_SEED}, got {self.seed}"),
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


WHOLE_NUMBER_FIELDS = (
    "size",
    "steps",
    "batch_size",
    "z_dim",
    "g_channels",
    "d_channels",
    "d_steps",
    "seed",
    "sample_every",
    "checkpoint_every",
    "sample_count",
    "metric_samples",
    "log_every",
)
REAL_NUMBER_FIELDS = ("time_budget_s", "gp_weight", "r1_gamma", "lr_g", "lr_d", "beta1", "beta2", "ema_decay")
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed


def _number_or_text(value: Any) -> Any:
    """Text such as "30" or "0.5" as a number; anything else unchanged (booleans are not numbers here)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        for parse in (int, float):  # "30" stays whole; "0.5", "1e3", "nan" are floats
            try:
                return parse(value)
            except ValueError:
                pass
        return None
    return value


def _slug(text: str) -> str:
    """A model name from a folder name: lower case, runs of anything but letters, digits, _ and - become one "-".
    Letters of every script are kept, so that folders named 油絵 and 水彩 give two models, not one "my-gan"."""
    return re.sub(r"[^\w-]+", "-", text.lower()).strip("-_") or "my-gan"


def make_train_config(
    *, data: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, name: str | None = None, **options: Any
) -> TrainConfig:
    """TrainConfig from CLI-style keyword arguments; options that are None keep their defaults, except that a run
    that resumes a checkpoint in `out` takes that checkpoint's value of each setting it must keep (RESUME_KEYS).

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
    given = {key: value for key, value in options.items() if value is not None}
    if given.get("resume", True):
        from studio.training.checkpoint import saved_settings

        saved = saved_settings(out_path) or {}
        given = {key: saved[key] for key in RESUME_KEYS if key in saved} | given
    return TrainConfig(data=data_path, out=out_path, name=slug, **given)


def check_destination(config: TrainConfig) -> None:
    """ValueError when training into `config.out` could overwrite a user's files, train on its own output or hide
    a built-in model. A folder the studio trained into before (a checkpoint or an export) may be used again."""
    from studio.registry import builtin_models
    from studio.training.export import WEIGHTS_FILE
    from studio.weights import local_weights_dir

    if config.name in builtin_models():
        raise ValueError(f"{config.name!r} is the name of a built-in model; give yours another name (--name)")
    data, out = config.data.expanduser().resolve(), config.out.expanduser().resolve()
    weights_dir = local_weights_dir().expanduser().resolve()
    if out.name in builtin_models() and out.parent == weights_dir:
        raise ValueError(
            f"{config.out} is where the studio looks for its own copy of the built-in model {out.name!r}, so your "
            "model would replace it; choose another folder name"
        )
    if out.parent == weights_dir:  # of two models there with one name, the studio lists only one
        other_folder = _local_model_folders(weights_dir).get(config.name, out)
        if other_folder != out:
            raise ValueError(
                f"{config.name!r} is already the name of the model in {other_folder}, so yours would not be listed; "
                f"give yours another name (--name), or train into {other_folder} (--out) to resume or replace it"
            )
    if out == data or data in out.parents:
        raise ValueError(
            f"the export folder {config.out} is inside the training images {config.data}, so its samples would be "
            "trained on; choose a folder outside it"
        )
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"{config.out} is a file; the export needs a folder")
        ours = (out / "checkpoints").is_dir() or ((out / "config.json").is_file() and (out / WEIGHTS_FILE).is_file())
        if not ours and any(out.iterdir()):
            raise ValueError(
                f"{config.out} already holds files the studio did not write; choose a new or empty folder, so that "
                "nothing of yours is overwritten"
            )
    # checked now, not when the first checkpoint is written after loading every image
    check_folder_can_be_written(out, what=f"the export folder {config.out}", remedy="; choose another folder (--out)")


def _local_model_folders(weights_dir: Path) -> dict[str, Path]:
    """{name: folder} of the models the studio lists from `weights_dir` (a resolved path)."""
    from studio.weights import discover_local_models

    folders = {}
    for spec in discover_local_models(weights_dir):
        weight_file = Path(spec.sources[0].path)  # weights_dir/<model folder>/<the file config.json names>
        try:
            folders[spec.name] = weights_dir / weight_file.relative_to(weights_dir).parts[0]
        except ValueError:  # a config.json naming a file outside its folder: no folder to point at
            continue
    return folders


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
