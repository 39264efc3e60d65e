"""Writing files so that a failed write never leaves half a file where a good one was, and checking before any work
that a destination folder can be made and written to.

Every file the studio writes in one go (pictures, exported models, caches, pins) is written to a temporary file in the
same folder and renamed over its destination only once complete: a full disk, a stop or a crash leaves the file
already there as it was. Video files, written frame by frame, use the same `PendingFile`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PendingFile", "check_folder_can_be_written", "replaced_when_done", "write_text_when_done"]


class PendingFile:
    """A hidden temporary file beside `path` that becomes `path` on `commit()` (an ordinary 0644 file) or is deleted
    on `discard()`: for files written over many calls, like a video frame by frame. `make_folder` creates `path`'s
    folder first."""

    def __init__(self, path: str | os.PathLike[str], *, make_folder: bool = False) -> None:
        self.path = Path(path)
        if make_folder:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".part")
        os.close(handle)
        self.temporary = Path(name)

    def commit(self) -> Path:
        os.chmod(self.temporary, 0o644)  # mkstemp makes a private file
        os.replace(self.temporary, self.path)
        return self.path

    def discard(self) -> None:
        self.temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def replaced_when_done(path: str | os.PathLike[str], *, make_folder: bool = False) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write to; when the block ends without an error it becomes `path`
    (an ordinary 0644 file), otherwise it is deleted. `make_folder` creates `path`'s folder first."""
    pending = PendingFile(path, make_folder=make_folder)
    try:
        yield pending.temporary
        pending.commit()
    except BaseException:
        pending.discard()
        raise


def write_text_when_done(path: str | os.PathLike[str], text: str, *, make_folder: bool = False) -> None:
    """`path.write_text(text)` (UTF-8) through `replaced_when_done`."""
    with replaced_when_done(path, make_folder=make_folder) as temporary:
        temporary.write_text(text, encoding="utf-8")


def check_folder_can_be_written(folder: str | os.PathLike[str], *, what: str, remedy: str = "") -> None:
    """ValueError unless files can be written into `folder`, made later where it is missing: its nearest existing
    ancestor must be a folder this process may write into. `what` names it in the message ("the export folder x");
    `remedy` is added to the permission refusal."""
    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot make {what}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {what}: no permission to write in {existing}{remedy}")
