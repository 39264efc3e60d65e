"""A folder of artworks as training batches.

    my_paintings/                 unconditional: every image, however deep, is one sample
      a.jpg  b.png  ...
    my_paintings/                 conditional: the first-level folders are the classes (in sorted order)
      portraits/ a.jpg ...
      landscapes/ b.png ...

Every image is decoded once (`studio.imaging.load_image`, in a few threads) and kept in memory as uint8, resized so
that its short side is the training size, so a few hundred images cost nothing per step. Files with an image suffix
that cannot be decoded are skipped and listed, never fatal. Batches are (B, 3, S, S) float in [-1, 1], cut with a
random (or centre) square crop along the long side and an optional horizontal flip, drawn from a CPU generator.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from studio.imaging import load_image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
CROPS = ("random", "center")
MAX_ASPECT = 2.0  # longer side kept at most this multiple of the size; panoramas are centre-trimmed to it
DECODE_MAX_SIDE = 32768  # scans of paintings are big; imaging.MAX_PIXELS still guards against bombs


@dataclass(frozen=True)
class SkippedFile:
    path: Path
    reason: str


def find_image_files(root: Path) -> list[Path]:
    """Files with an image suffix under `root`, any depth, sorted; hidden files and folders are left out. Linked
    folders are followed (a class folder may be a symlink to where the pictures live), each real folder once."""
    found = []
    seen_folders: set[str] = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen_folders:  # a link loop, or a second link to the same folder
            subfolders[:] = []
            continue
        seen_folders.add(real)
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))  # first link wins
        for name in names:
            path = Path(folder) / name
            if not name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                found.append(path)
    return sorted(found)


def class_of(root: Path, path: Path) -> str | None:
    """The first-level folder an image lives in, or None for an image directly in `root`."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else None


def _decode(path: Path, size: int) -> Tensor | str:
    """-> (3, h, w) uint8 with min(h, w) == size and max(h, w) <= MAX_ASPECT * size, or the reason it failed."""
    try:
        image = load_image(path, max_side=DECODE_MAX_SIDE, name=path.name)
    except ValueError as error:
        return str(error)
    except Exception as error:  # a decoder bug on a hostile file must not end a long run
        return f"{type(error).__name__}: {error}"
    width, height = image.size
    scale = size / min(width, height)
    new_width, new_height = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_width, new_height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    limit = int(MAX_ASPECT * size)
    if new_width > limit or new_height > limit:
        left, top = (new_width - min(new_width, limit)) // 2, (new_height - min(new_height, limit)) // 2
        image = image.crop((left, top, left + min(new_width, limit), top + min(new_height, limit)))
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


class ImageFolder:
    """The decoded images of a folder. `batch(indices, generator)` -> (images, labels).

    conditional: None decides from the layout (classes when every image sits in one of >= 2 first-level folders);
    True insists (ValueError if the layout does not allow it); False ignores folders.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        size: int,
        crop: str = "random",
        flip: bool = True,
        conditional: bool | None = None,
        workers: int | None = None,
    ) -> None:
        self.root = Path(root)
        if self.root.is_file():
            raise ValueError(
                f"training data {self.root} is a file, not a folder; give the folder that holds the pictures, "
                f"such as {self.root.parent}"
            )
        if not self.root.is_dir():
            raise ValueError(f"training data folder not found: {self.root}")
        if size < 8 or size & (size - 1):
            raise ValueError(f"training size must be a power of two >= 8 (16, 32, 64, 128, 256), got {size}")
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        self.size, self.crop, self.flip = size, crop, flip
        files = find_image_files(self.root)
        if not files:
            raise ValueError(f"no images in {self.root}; put JPEG/PNG/WebP files there (subfolders become classes)")
        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            decoded = list(pool.map(lambda path: _decode(path, size), files))
        self.images: list[Tensor] = []
        self.files: list[Path] = []
        self.skipped: list[SkippedFile] = []
        for path, result in zip(files, decoded, strict=True):
            if isinstance(result, str):
                self.skipped.append(SkippedFile(path, result))
                continue
            self.images.append(result)
            self.files.append(path)
        if not self.images:
            reasons = "; ".join(f"{s.path.name}: {s.reason}" for s in self.skipped[:3])
            raise ValueError(f"none of the {len(files)} image files in {self.root} could be read ({reasons})")
        # Classes come from the pictures that were read: a folder of unreadable files is no class.
        folder_names = [class_of(self.root, path) for path in self.files]
        self.classes = self._decide_classes(folder_names, conditional)
        labels = [self.classes.index(folder) if self.classes else 0 for folder in folder_names]
        self.labels = torch.tensor(labels, dtype=torch.long)

    @staticmethod
    def _decide_classes(folder_names: list[str | None], conditional: bool | None) -> tuple[str, ...]:
        names = sorted({name for name in folder_names if name is not None})
        loose = sum(name is None for name in folder_names)
        if conditional is None:
            return tuple(names) if len(names) >= 2 and not loose else ()
        if not conditional:
            return ()
        if loose:
            raise ValueError(
                f"conditional training needs every image in a class folder; {loose} images sit directly in the "
                "data folder: move them into a subfolder named after their class"
            )
        if len(names) < 2:
            raise ValueError(f"conditional training needs at least 2 class folders, found {names or 'none'}")
        return tuple(names)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def batch(
        self, indices: Tensor, generator: torch.Generator, *, augment: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """indices: (B,) long. Returns (B, 3, S, S) float32 in [-1, 1] on CPU and (B, K) one-hot labels or None.

        augment=False gives centre crops without flips (for metrics); the generator is then not used.
        """
        count, size = len(indices), self.size
        random_crop = augment and self.crop == "random"
        positions = torch.rand(count, 2, generator=generator) if random_crop else None
        flips = torch.rand(count, generator=generator) < 0.5 if augment and self.flip else None
        crops = []
        for row, index in enumerate(indices.tolist()):
            image = self.images[index]
            height, width = image.shape[1:]
            if positions is not None:
                top, left = int(positions[row, 0] * (height - size + 1)), int(positions[row, 1] * (width - size + 1))
            else:
                top, left = (height - size) // 2, (width - size) // 2
            crop = image[:, top : top + size, left : left + size]
            crops.append(crop.flip(2) if flips is not None and flips[row] else crop)
        images = torch.stack(crops).float().div_(127.5).sub_(1.0)
        if not self.classes:
            return images, None
        return images, torch.nn.functional.one_hot(self.labels[indices], self.num_classes).float()


class EpochSampler:
    """Indices in shuffled epochs (every image once per epoch), from its own CPU generator; resumable exactly."""

    def __init__(self, count: int, *, seed: int) -> None:
        self.count = count
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.empty(0, dtype=torch.long)
        self.position = 0

    def next(self, batch_size: int) -> Tensor:
        """(batch_size,) long indices; epochs continue across calls (a batch may span two epochs)."""
        taken = []
        needed = batch_size
        while needed:
            if self.position >= len(self.order):
                self.order = torch.randperm(self.count, generator=self.generator)
                self.position = 0
            part = self.order[self.position : self.position + needed]
            taken.append(part)
            self.position += len(part)
            needed -= len(part)
        return torch.cat(taken)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": self.order.clone(), "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Restore a saved state; returns False when the saved epoch was over another number of images (the folder
        changed since), whose order is then dropped: the next batch starts a new epoch."""
        self.generator.set_state(state["generator"])
        order = state["order"]
        if len(order) and len(order) != self.count:
            self.order, self.position = torch.empty(0, dtype=torch.long), 0
            return False
        self.order = order.clone()
        self.position = int(state["position"])
        return True
