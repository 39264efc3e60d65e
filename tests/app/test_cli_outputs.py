"""The CLI checks where it will write before doing any work, and never overwrites the pictures it reads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from studio import Studio
from studio.cli import main


def _photo(path: Path) -> Path:
    Image.new("RGB", (48, 32), (180, 90, 40)).save(path)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stylize(content: Path, style: Path, out: Path | str, *extra: str) -> list[str]:
    return ["stylize", "--content", str(content), "--style", str(style), "--size", "32", "--steps", "1", *extra,
            "--out", str(out)]  # fmt: skip


def test_bad_output_paths_are_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    content, style = _photo(tmp_path / "photo.png"), _photo(tmp_path / "style.png")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("in the way")
    kept = {path: _digest(path) for path in (content, style)}
    cases = [
        (["generate", "--seed", "1", "--out", str(folder)], "is a folder; give a file name"),
        (["generate", "--seed", "1", "--out", str(tmp_path / "eyes.jpg")], "--out must end with .png"),
        (["generate", "--seed", "1", "--out", str(a_file / "x.png")], "cannot make the folder for --out"),
        (_stylize(content, style, content), "is one of the input pictures"),
        (_stylize(content, style, style), "is one of the input pictures"),
        (_stylize(content, style, tmp_path / "out.xyz"), "--out must end with .png or .jpg or .jpeg or .webp"),
        (_stylize(content, style, tmp_path / "out.png", "--vgg", "omniart-eyes"), "not a VGG19 encoder"),
        (["walk", "--seeds", "1,2", "--frames", "2", "--out", str(tmp_path / "walk.avi")], "--out must end with"),
        (["walk", "--seeds", "1,2", "--frames", "2", "--out", str(folder)], "is a folder"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert {path: _digest(path) for path in (content, style)} == kept
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file", "folder.png", "photo.png", "style.png"]
    assert not any(folder.iterdir())


def test_a_bad_device_setting_is_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    for device, message in (("bogus", "is not a device"), ("cuda:99", "no such CUDA GPU")):
        monkeypatch.setenv("STUDIO_DEVICE", device)
        assert main(["generate", "--seed", "1", "--out", str(tmp_path / "eyes.png")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "eyes.png").exists()


def test_a_walk_format_that_contradicts_the_file_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ends in .mp4 but the format asked for is gif"):
        Studio(device="cpu").walk(seeds=[1, 2], frames=2, format="gif", out=tmp_path / "walk.mp4")
    assert not (tmp_path / "walk.mp4").exists()


def test_a_run_that_fails_prints_only_its_error_and_leaves_no_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    style = _photo(tmp_path / "style.png")
    out = tmp_path / "new" / "deeper" / "out.png"
    for argv in (
        _stylize(tmp_path / "missing.png", style, out),
        ["walk", "--model", "no-such-model", "--seeds", "1,2", "--frames", "2", "--out", str(out.with_suffix(".gif"))],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err  # no empty progress bar before it
    assert not (tmp_path / "new").exists()

    assert main(_stylize(_photo(tmp_path / "photo.png"), style, out)) == 0  # a run that works makes the folder
    assert Image.open(out).size == (32, 21)
    settings = json.loads(Image.open(out).text["gan-art-studio:stylize"])  # the inputs, by file name, as the page
    assert (settings["content"], settings["styles"], settings["mask"]) == ("photo.png", [style.name], None)


def test_walk_spread_without_a_noise_loop_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "walk.gif"
    assert main(["walk", "--seeds", "1,2", "--frames", "2", "--spread", "0.3", "--out", str(out)]) == 2
    assert "--spread is the radius of a --noise-loop walk" in capsys.readouterr().err
    assert not out.exists()


def test_generate_separate_saves_a_single_image_too(tmp_path: Path) -> None:
    out = tmp_path / "eyes.png"
    assert main(["generate", "--seed", "7", "--separate", "--out", str(out)]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["eyes-7.png", "eyes.png"]
    assert Image.open(tmp_path / "eyes-7.png").tobytes() == Image.open(out).tobytes()


def test_ctrl_c_during_gatys_saves_the_picture_so_far(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from studio import cli

    def interrupt_at_step_4(bar: cli._ProgressBar, done: int, total: int | None) -> None:
        if done == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli._ProgressBar, "__call__", interrupt_at_step_4)
    content, style = _photo(tmp_path / "photo.png"), _photo(tmp_path / "style.png")
    out = tmp_path / "kept" / "stylized.png"
    arguments = _stylize(content, style, out)
    arguments[arguments.index("--steps") + 1] = "300"
    assert main(arguments) == 130
    assert f"interrupted: {out} holds the picture after 3 of 300 steps" in capsys.readouterr().err
    settings = json.loads(Image.open(out).text["gan-art-studio:stylize"])
    assert settings["steps"] == 3 and settings["planned_steps"] == 300 and Image.open(out).size == (32, 21)
    assert settings["content"] == "photo.png" and settings["styles"] == ["style.png"]


def test_ctrl_c_before_any_step_saves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from studio import cli

    def interrupt(bar: cli._ProgressBar, done: int, total: int | None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli._ProgressBar, "__call__", interrupt)
    content, style = _photo(tmp_path / "photo.png"), _photo(tmp_path / "style.png")
    out = tmp_path / "kept" / "stylized.png"
    assert main(_stylize(content, style, out)) == 130
    assert not out.parent.exists()


def test_ctrl_c_during_a_walk_keeps_the_frames_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import signal

    from studio import cli

    reports: list[int] = []

    def ctrl_c_at_the_second_report(bar: cli._ProgressBar, done: int, total: int | None) -> None:
        reports.append(done)
        if len(reports) == 2:
            signal.raise_signal(signal.SIGINT)  # a real SIGINT, as a terminal sends it

    monkeypatch.setattr(cli._ProgressBar, "__call__", ctrl_c_at_the_second_report)
    out = tmp_path / "walk.gif"
    assert main(["walk", "--seeds", "1,2", "--frames", "48", "--out", str(out)]) == 130
    made = reports[-1]
    assert f"interrupted: {out} holds the first {made} of 48 frames" in capsys.readouterr().err
    assert len(reports) == 2 and 1 < made < 48 and Image.open(out).n_frames == made
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C quits again afterwards


def test_ctrl_c_before_a_walk_makes_frames_quits_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    loads: list[str] = []
    original_load = Studio.load

    def ctrl_c_while_loading(self: Studio, name: str) -> object:
        loads.append(name)
        signal.raise_signal(signal.SIGINT)  # during the model load, before any frame
        return original_load(self, name)

    monkeypatch.setattr(Studio, "load", ctrl_c_while_loading)
    out = tmp_path / "walks" / "walk.gif"
    assert main(["walk", "--seeds", "1,2", "--frames", "48", "--out", str(out)]) == 130
    assert loads and not out.parent.exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
