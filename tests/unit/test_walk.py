"""Studio.walk with the real offline eye DCGAN: keyframes equal Generate's images, files decode, cancel is clean."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from studio import Studio
from studio.cli import main as cli_main
from studio.ops.common import Cancelled
from tests.frames import zip_frames


@pytest.fixture(scope="module")
def studio() -> Studio:
    return Studio(device="cpu")


def test_keyframes_land_exactly_on_the_generated_images(studio: Studio, tmp_path) -> None:
    result = studio.walk(
        model="omniart-eyes", seeds=[3, 14, 15], frames=12, loop=True, class_name="blue", out=tmp_path / "w.zip"
    )
    frames = zip_frames(result.path)
    assert len(frames) == result.frames == 12
    for index, seed in zip((0, 4, 8), (3, 14, 15), strict=True):
        generated = np.asarray(studio.generate(model="omniart-eyes", seed=seed, class_name="blue").images[0])
        assert np.array_equal(frames[index], generated), f"frame {index} should be seed {seed}'s image"
    # in-between frames are new images, not copies of the keyframes
    assert np.abs(frames[2].astype(int) - frames[0].astype(int)).mean() > 2


def test_mp4_plays_in_browsers_and_has_the_requested_frames(studio: Studio, tmp_path) -> None:
    result = studio.walk(model="omniart-eyes", seeds=[1, 2], frames=24, fps=24, loop=False, out=tmp_path / "w.mp4")
    with av.open(str(result.path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 24
        assert sum(1 for _ in container.decode(stream)) == 24
    assert (result.width, result.height) == (128, 128)


def test_walks_are_deterministic_and_loops_close(studio: Studio, tmp_path) -> None:
    first = studio.walk(model="omniart-eyes", seeds=[5, 6], frames=8, loop=True, out=tmp_path / "a.zip")
    second = studio.walk(model="omniart-eyes", seeds=[5, 6], frames=8, loop=True, out=tmp_path / "b.zip")
    assert all(np.array_equal(a, b) for a, b in zip(zip_frames(first.path), zip_frames(second.path), strict=True))
    steps = (first.latents[1:] - first.latents[:-1]).norm(dim=1)
    closing_step = (first.latents[0] - first.latents[-1]).norm()
    assert closing_step < 2 * steps.max(), "the last frame flows into the first like any other step"


def test_class_per_keyframe_and_noise_loop(studio: Studio, tmp_path) -> None:
    classes = studio.walk(
        model="omniart-eyes", seeds=[1, 2], frames=6, loop=False, class_name=["blue", "brown"], out=tmp_path / "c.zip"
    )
    first, last = zip_frames(classes.path)[0], zip_frames(classes.path)[-1]
    blue = np.asarray(studio.generate(model="omniart-eyes", seed=1, class_name="blue").images[0])
    assert np.array_equal(first, blue)
    assert last.shape == (128, 128, 3)
    orbit = studio.walk(
        model="omniart-eyes", seeds=[9], frames=10, path="noise-loop", spread=0.3, out=tmp_path / "n.gif"
    )
    with Image.open(orbit.path) as gif:
        assert gif.n_frames == 10
    assert orbit.route == "a noise loop around seed 9 (spread 0.3)" and classes.route == "keyframes 1, 2"
    assert orbit.settings["spread"] == 0.3 and classes.settings["spread"] is None  # only a noise loop uses it
    # a noise loop's class may come as a list of one, and the format in capitals
    brown = studio.walk(model="omniart-eyes", seeds=[9], frames=2, path="noise-loop", class_name=["brown"],
                        format="ZIP", out=tmp_path / "b.zip")  # fmt: skip
    by_name = studio.walk(model="omniart-eyes", seeds=[9], frames=2, path="noise-loop", class_name="brown",
                          out=tmp_path / "b2.zip")  # fmt: skip
    assert brown.settings["format"] == "zip"
    assert all(np.array_equal(a, b) for a, b in zip(zip_frames(brown.path), zip_frames(by_name.path), strict=True))


def test_one_keyframe_makes_a_loop_around_it_and_says_so(studio: Studio, tmp_path, capsys) -> None:
    around = studio.walk(model="omniart-eyes", seeds=[5], frames=8, loop=True, out=tmp_path / "one.zip")
    frames = zip_frames(around.path)
    assert len(frames) == 8 and np.abs(frames[4].astype(int) - frames[0]).mean() > 1  # it moves
    assert around.route.startswith("a loop around seed 5 (one keyframe: give two or more seeds")
    assert cli_main(["walk", "--seeds", "5", "--frames", "4", "--loop", "--out", str(tmp_path / "one.gif")]) == 0
    assert "a loop around seed 5 (one keyframe" in capsys.readouterr().out


def test_cancelling_leaves_no_file(studio: Studio, tmp_path) -> None:
    out = tmp_path / "cancelled.mp4"
    with pytest.raises(Cancelled):
        studio.walk(model="omniart-eyes", seeds=[1, 2], frames=48, out=out, on_progress=lambda done, total: False)
    assert list(tmp_path.iterdir()) == []


def test_a_stop_can_keep_the_frames_made(studio: Studio, tmp_path) -> None:
    full = studio.walk(model="omniart-eyes", seeds=[1, 2], frames=40, loop=True, out=tmp_path / "full.gif")
    reports: list[int] = []

    def stop_after_two_reports(done: int, total: int) -> bool:
        reports.append(done)
        return len(reports) < 2

    stopped = studio.walk(
        model="omniart-eyes",
        seeds=[1, 2],
        frames=40,
        loop=True,
        out=tmp_path / "stopped.gif",
        on_progress=stop_after_two_reports,
        keep_partial=True,
    )
    made = reports[-1]
    assert 1 < made < 40 and (stopped.frames, stopped.settings["frames"], stopped.stopped_early) == (made, 40, True)
    assert not full.stopped_early
    with Image.open(stopped.path) as partial, Image.open(full.path) as whole:
        assert partial.n_frames == made
        for index in (0, made - 1):  # the same frames as the whole walk's
            partial.seek(index)
            whole.seek(index)
            assert np.array_equal(np.asarray(partial.convert("RGB")), np.asarray(whole.convert("RGB")))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frames": 1}, "frames must be between"),
        ({"frames": 10**6}, "frames must be between"),
        ({"fps": float("nan")}, "fps must be between"),
        ({"seeds": []}, "at least one keyframe seed"),
        (
            {"seeds": [1], "loop": False},
            r"at least two keyframe seeds; with one, turn on the loop \(--loop; on the page",
        ),
        (
            {"model": "vgg19-caffe"},
            r"vgg19-caffe is not an image generator \(its kind: vgg-encoder\); pick a generator",
        ),
        ({"easing": "bouncy"}, "easing"),
        ({"easing": "bouncy", "path": "noise-loop"}, "easing"),
        ({"seeds": b"12"}, "seeds must be a list of whole numbers"),
        ({"seeds": 3}, "seeds must be a list of whole numbers"),
        ({"style": "/no/such/painting.jpg"}, "style image was not found"),
        ({"class_name": ["blue"]}, "one class per keyframe"),
        ({"path": "zigzag"}, "path must be"),
        ({"path": "noise-loop"}, r"a noise loop circles one seed: give one \(seeds=\[1\]\), or path='keyframes'"),
        ({"seeds": [1], "path": "noise-loop", "class_name": ["blue", "brown"]}, "takes a single class, got 2"),
        ({"seeds": [1], "path": "noise-loop", "class_name": [""]}, "the noise loop's class is empty"),
    ],
)
def test_bad_walk_settings_are_refused(studio: Studio, tmp_path, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        studio.walk(**{"model": "omniart-eyes", "seeds": [1, 2], "frames": 4, "out": tmp_path / "x.mp4", **kwargs})


def test_walks_without_a_path_are_named_after_model_and_seeds(studio: Studio) -> None:
    walk = studio.walk(model="omniart-eyes", seeds=[3, 14], frames=2, format="gif")
    assert walk.path.name.startswith("walk-omniart-eyes-3-14-") and walk.path.suffix == ".gif"
    with pytest.raises(ValueError, match="video format must be one of"):
        studio.walk(model="omniart-eyes", seeds=[3, 14], frames=2, format="avi")


ROUNDED_NOTE = "rounded up from 129 px: MP4 frames need even sides"


@pytest.mark.parametrize(("suffix", "side", "note"), [(".mp4", 130, ROUNDED_NOTE), (".gif", 129, "")])
def test_an_odd_frame_size_says_when_it_was_rounded_up(studio: Studio, tmp_path, suffix, side, note, capsys) -> None:
    walked = studio.walk(
        model="omniart-eyes", seeds=[1, 2], frames=2, loop=False, size=129, out=tmp_path / f"w{suffix}"
    )
    assert (walked.width, walked.height, walked.size_note) == (side, side, note)
    assert (
        cli_main(["walk", "--seeds", "1,2", "--frames", "2", "--size", "129", "--out", str(tmp_path / f"c{suffix}")])
        == 0
    )
    printed = capsys.readouterr().out
    assert f"{side}x{side}" in printed and (note in printed if note else "rounded" not in printed)


def test_cli_walk_refuses_a_noise_loop_with_several_seeds(tmp_path, capsys) -> None:
    out = tmp_path / "loop.gif"
    assert cli_main(["walk", "--noise-loop", "--seeds", "1,2,3", "--frames", "4", "--out", str(out)]) == 2
    assert "a --noise-loop circles around one seed: give one (--seeds 3)" in capsys.readouterr().err
    assert not out.exists()
    assert cli_main(["walk", "--noise-loop", "--frames", "4", "--out", str(out)]) == 0  # the default seeds: the first
    assert "a noise loop around seed 3" in capsys.readouterr().out


def test_cli_walk_writes_the_number_of_frames_asked_for(tmp_path) -> None:
    out = tmp_path / "walk.gif"
    assert cli_main(["walk", "--seeds", "3,14,15", "--frames", "9", "--fps", "10", "--loop", "--out", str(out)]) == 0
    with Image.open(out) as gif:
        assert gif.n_frames == 9


def test_class_lists_need_a_class_for_every_keyframe(studio: Studio, tmp_path) -> None:
    with pytest.raises(ValueError, match="keyframe 2 has no class"):
        studio.walk(model="omniart-eyes", seeds=[1, 2], frames=4, class_name=["blue", ""], out=tmp_path / "x.zip")


def test_cli_class_lists_may_have_spaces(tmp_path) -> None:
    out = tmp_path / "walk.zip"
    assert cli_main(["walk", "--seeds", "1,2", "--frames", "2", "--class", "blue, brown", "--out", str(out)]) == 0
    assert cli_main(["walk", "--seeds", "1,2", "--frames", "2", "--class", "blue,", "--out", str(out)]) == 2


def test_walks_without_a_path_share_one_folder_and_never_overwrite_each_other() -> None:
    studio = Studio(device="cpu")
    first = studio.walk(model="omniart-eyes", seeds=[5, 6], frames=4, format="zip")
    second = studio.walk(model="omniart-eyes", seeds=[5, 6], frames=4, format="gif")
    third = studio.walk(model="omniart-eyes", seeds=[5, 6], frames=4, format="zip")
    assert first.path.parent == second.path.parent == third.path.parent
    assert len({first.path, second.path, third.path}) == 3 and all(path.is_file() for path in (first.path, third.path))
    assert (first.path.suffix, second.path.suffix) == (".zip", ".gif")
    assert len(zip_frames(first.path)) == 4


def test_cli_class_names_may_hold_commas(tmp_path, monkeypatch) -> None:
    import torch

    from studio.models.dcgan import DCGANConfig, DCGANGenerator
    from studio.training.export import export_generator

    weights = tmp_path / "weights"
    monkeypatch.setenv("STUDIO_WEIGHTS_DIR", str(weights))
    torch.manual_seed(0)
    generator = DCGANGenerator(DCGANConfig(z_dim=8, num_classes=2, resolution=16, base_channels=8)).eval()
    for parameter in generator.parameters():
        parameter.data.normal_(0.0, 0.5)  # varied pictures, so that the classes visibly differ
    export_generator(generator, out_dir=weights / "tints", name="tints", classes=("red, dark", "blue"))
    studio = Studio(device="cpu")

    def walk(*arguments: str) -> list[np.ndarray]:
        out = tmp_path / "walk.zip"
        base = ["walk", "--model", "tints", "--seeds", "1,2", "--frames", "4", "--out", str(out)]
        assert cli_main([*base, *arguments]) == 0
        return zip_frames(out)

    def image(seed: int, class_name: str) -> np.ndarray:
        return np.asarray(studio.generate(model="tints", seed=seed, class_name=class_name).images[0])

    assert np.abs(image(2, "red, dark").astype(int) - image(2, "blue")).mean() > 5
    one_class = walk("--class", "red, dark")  # the keyframes are the first and the last frame
    assert np.array_equal(one_class[0], image(1, "red, dark")) and np.array_equal(one_class[3], image(2, "red, dark"))
    per_keyframe = walk("--class", "red, dark", "--class", "blue")
    assert np.array_equal(per_keyframe[0], image(1, "red, dark")) and np.array_equal(per_keyframe[3], image(2, "blue"))
