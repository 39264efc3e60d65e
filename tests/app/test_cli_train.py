"""`python -m studio train` end to end: a tiny conditional run whose export is then a model the CLI generates with."""

from __future__ import annotations

import numpy as np
from PIL import Image

from studio import read_png_settings
from studio.cli import main as cli_main


def test_train_then_generate_with_the_new_model(tmp_path, monkeypatch, capsys) -> None:
    rng = np.random.default_rng(0)
    for label, tint in (("red", (255, 40, 40)), ("blue", (40, 40, 255))):
        folder = tmp_path / "data" / label
        folder.mkdir(parents=True)
        for index in range(6):
            noise = rng.integers(0, 60, (24, 24, 3))
            Image.fromarray((np.array(tint) * 0.7 + noise).astype("uint8")).save(folder / f"{index}.png")
    (tmp_path / "data" / "red" / "broken.jpg").write_text("not a picture")
    weights = tmp_path / "weights"
    monkeypatch.setenv("STUDIO_WEIGHTS_DIR", str(weights))

    code = cli_main(
        [
            "train",
            "--data",
            str(tmp_path / "data"),
            "--name",
            "tints",
            "--size",
            "16",
            "--steps",
            "3",
            "--batch",
            "4",
            "--seed",
            "1",
        ]
    )
    output = capsys.readouterr().out
    assert code == 0
    assert "stopped by steps" in output and "broken.jpg" in output
    assert (weights / "tints" / "model.safetensors").is_file()

    assert cli_main(["weights", "list"]) == 0
    assert "tints" in capsys.readouterr().out
    out = tmp_path / "new.png"
    assert cli_main(["generate", "--model", "tints", "--seed", "4", "--class", "blue", "--out", str(out)]) == 0
    assert Image.open(out).size == (16, 16)
    assert read_png_settings(out).class_name == "blue"

    # the same name into another folder would hide one of the two models: refused before training
    again = ["train", "--data", str(tmp_path / "data"), "--name", "tints", "--out", str(weights / "tints-2")]
    assert cli_main([*again, "--size", "16", "--steps", "3", "--batch", "4"]) == 2
    error = capsys.readouterr().err
    assert f"'tints' is already the name of the model in {weights / 'tints'}" in error and "--name" in error
    assert not (weights / "tints-2").exists()


def test_push_to_hub_targets_are_checked_before_training(tmp_path, monkeypatch, capsys) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    Image.new("RGB", (16, 16)).save(folder / "a.png")
    out = tmp_path / "out"
    base = ["train", "--data", str(folder), "--out", str(out), "--size", "16", "--steps", "1", "--batch", "2"]
    assert cli_main([*base, "--push-to-hub", "bad repo id"]) == 2
    assert "'bad repo id' is not a Hub repository id" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli_main([*base, "--push-to-hub", "me/my-gan"]) == 2
    assert "--push-to-hub: cannot push to the Hugging Face Hub while offline" in capsys.readouterr().err
    assert not out.exists()  # refused before any training


def test_a_picture_given_as_data_is_named_as_a_file_not_a_missing_folder(tmp_path, capsys) -> None:
    picture = tmp_path / "art" / "a.png"
    picture.parent.mkdir()
    Image.new("RGB", (16, 16)).save(picture)
    out = tmp_path / "out"
    assert cli_main(["train", "--data", str(picture), "--out", str(out), "--size", "16", "--steps", "1"]) == 2
    error = capsys.readouterr().err
    expected = f"{picture} is a file, not a folder; give the folder that holds the pictures, such as {picture.parent}"
    assert expected in error
    assert "not found" not in error and not out.exists()
