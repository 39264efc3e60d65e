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


def test_a_destination_folder_is_checked_at_its_nearest_existing_ancestor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from studio.files import check_folder_can_be_written

    check_folder_can_be_written(tmp_path / "new" / "deeper", what="the folder")  # made later: fine
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file")
    with pytest.raises(ValueError, match=f"cannot make the folder: {blocker} is a file"):
        check_folder_can_be_written(blocker / "sub", what="the folder")
    monkeypatch.setattr("studio.files.os.access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(ValueError, match=f"cannot write the folder: no permission to write in {tmp_path}; try X$"):
        check_folder_can_be_written(tmp_path / "new", what="the folder", remedy="; try X")
    assert not (tmp_path / "new").exists()
