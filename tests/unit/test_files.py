"""Files are replaced only once their new content is complete."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from studio.files import replaced_when_done, write_text_when_done


def test_a_finished_write_replaces_the_file_and_is_an_ordinary_one(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "notes.json"
    write_text_when_done(target, '{"ok": true}', make_folder=True)
    assert target.read_text(encoding="utf-8") == '{"ok": true}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(path.name for path in target.parent.iterdir()) == ["notes.json"]  # no temporary left behind


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "picture.png"
    target.write_bytes(b"the old picture")
    with pytest.raises(OSError, match="disk full"), replaced_when_done(target) as temporary:
        temporary.write_bytes(b"half a new pic")
        raise OSError(28, "disk full")
    assert target.read_bytes() == b"the old picture"
    assert [path.name for path in tmp_path.iterdir()] == ["picture.png"]


def test_a_missing_folder_is_an_error_unless_asked_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_text_when_done(tmp_path / "missing" / "a.txt", "x")
    assert not (tmp_path / "missing").exists()
