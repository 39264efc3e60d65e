"""Training checkpoints that resume exactly: models, optimizers, step, metric history and every random state.

    <out>/checkpoints/last/
      state.pt        models, EMA, optimizers, step, history, settings (written by the main process)
      rng-<rank>.pt   each process's RNG states: torch CPU (+ CUDA), python `random`, numpy, data order, latents,
                      augmentation

Files are plain dicts of tensors and Python values, read back with `torch.load(weights_only=True)`. A new checkpoint
is written beside the old one and swapped in, so an interrupted save never leaves a broken `last/`.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "state.pt"


def checkpoint_dir(out_dir: Path) -> Path:
    return out_dir / "checkpoints" / "last"


def capture_rng(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every RNG state of this process, plus the named CPU generators' states."""
    kind, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)),
        "generators": {name: generator.get_state() for name, generator in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])


def save_checkpoint(out_dir: Path, *, state: dict[str, Any] | None, rng: dict[str, Any], rank: int) -> Path:
    """Write this process's part of a checkpoint (the main process also writes `state`) into a staging folder.

    Call `commit_checkpoint` on the main process once every process has written its part.
    """
    staging = out_dir / "checkpoints" / "next"
    staging.mkdir(parents=True, exist_ok=True)
    if state is not None:
        torch.save(state, staging / STATE_FILE)
    torch.save(rng, staging / f"rng-{rank}.pt")
    return staging


def commit_checkpoint(out_dir: Path) -> Path:
    """Swap the staged checkpoint in as `last/` (the previous one is removed only after the swap)."""
    final = checkpoint_dir(out_dir)
    staging = out_dir / "checkpoints" / "next"
    previous = out_dir / "checkpoints" / "previous"
    if previous.exists():
        shutil.rmtree(previous)
    if final.exists():
        final.rename(previous)
    staging.rename(final)
    if previous.exists():
        shutil.rmtree(previous)
    return final


def find_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint folder in `out_dir`, or None."""
    for candidate in (checkpoint_dir(out_dir), out_dir / "checkpoints" / "previous"):
        if (candidate / STATE_FILE).is_file():
            return candidate
    return None


def load_checkpoint(folder: Path, *, rank: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(state, this process's RNG states or None when the checkpoint was made with fewer processes)."""
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    rng_path = folder / f"rng-{rank}.pt"
    rng = torch.load(rng_path, map_location="cpu", weights_only=True) if rng_path.is_file() else None
    return state, rng


def saved_settings(out_dir: Path) -> dict[str, Any] | None:
    """The training settings of the newest checkpoint in `out_dir` (None when there is none)."""
    folder = find_checkpoint(out_dir)
    if folder is None:
        return None
    # memory-mapped: only the settings are read, not the networks' and optimisers' tensors (5 ms instead of 31 ms
    # for a 72 MB state; the resumed run reads the whole file once more)
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True, mmap=True)
    return dict(state.get("settings", {}))
