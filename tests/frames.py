"""Reading back the frames of a walk exported as a PNG zip (format="zip"), in file order."""

from __future__ import annotations

import os
import zipfile

import numpy as np
from PIL import Image


def zip_frames(path: str | os.PathLike[str]) -> list[np.ndarray]:
    """(H, W, 3) uint8 RGB arrays, one per frame."""
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
        return [np.asarray(Image.open(archive.open(name)).convert("RGB")) for name in names]
