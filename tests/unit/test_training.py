"""Training a DCGAN on a folder: tiny runs (16 px, 4-8 channels, a few steps) on generated images, plus the losses,
penalties, augmentations and Fréchet distance against hand-computed values."""

from __future__ import annotations

import json
import math
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio.loader import load_model
from studio.models.dcgan import DCGANDiscriminator, DCGANDiscriminatorConfig
from studio.training import (
    FeatureStats,
    HubUploadError,
    TrainConfig,
    feature_stats,
    frechet_distance,
    make_train_config,
    push_to_hub,
    train,
)
from studio.training.augment import diff_augment, parse_policy, random_cutout, random_translation
from studio.training.losses import discriminator_loss, generator_loss, gradient_penalty, r1_penalty
from studio.weights import discover_local_models

TINY = dict(
    size=16,
    batch_size=4,
    z_dim=8,
    g_channels=4,
    d_channels=4,
    sample_every=0,
    checkpoint_every=0,
    sample_count=4,
    metric_samples=0,
    progress_bar=False,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models are fastest (and steadiest on a busy machine) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_images(folder: Path, count: int, *, seed: int, tint: int = 0) -> None:
    """Small images of varied sizes and formats: red-ish (tint 0) or blue-ish (tint 2) noise over a gradient."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        height, width = (int(v) for v in rng.integers(16, 40, 2))
        pixels = rng.integers(0, 60, (height, width, 3)).astype(np.uint8)
        pixels[..., tint] += np.linspace(100, 190, width, dtype=np.uint8)[None, :]
        image = Image.fromarray(pixels)
        if index % 3 == 0:
            image.save(folder / f"img{index}.jpg", quality=90)
        elif index % 3 == 1:
            image.convert("L").save(folder / f"img{index}.png")
        else:
            image.save(folder / f"img{index}.webp")


@pytest.fixture(scope="module")
def flat_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("flat")
    write_images(folder, 10, seed=0)
    return folder


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("classes")
    write_images(folder / "reds", 6, seed=1, tint=0)
    write_images(folder / "blues", 4, seed=2, tint=2)
    write_images(folder / "blues" / "deeper", 2, seed=3, tint=2)  # still class "blues"
    return folder


def all_tensors(result_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(result_dir / "checkpoints" / "last" / "state.pt", weights_only=True)
    flat = {}
    for part in ("generator", "discriminator", "ema"):
        flat.update({f"{part}.{k}": v for k, v in state[part].items()})
    for part in ("opt_g", "opt_d"):
        for index, slots in state[part]["state"].items():
            flat.update({f"{part}.{index}.{k}": v for k, v in slots.items()})
    return flat


# --- whole runs -----------------------------------------------------------------------------------------------------


def test_tiny_run_exports_a_model_the_studio_loads(flat_folder: Path, tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    config = make_train_config(data=flat_folder, out=weights / "mine", **{**TINY, "metric_samples": 8}, steps=4)
    result = train(config)
    assert result.step == 4 and result.stopped_by == "steps" and result.images == 10 and not result.skipped
    assert {"d", "g", "d_real", "d_fake"} <= set(result.losses)
    assert all(math.isfinite(value) for value in result.losses.values())
    assert result.images_per_second > 0
    # quality proxy on every checkpoint (here only the final one), FID reported as unavailable offline
    assert [entry["step"] for entry in result.metrics] == [4]
    assert math.isfinite(result.metrics[0]["vgg_fd"]) and result.metrics[0]["vgg_fd"] > 0
    from studio.training.metrics import inception_weights_path

    if not inception_weights_path().is_file():
        assert "fid" not in result.metrics[0] and "not cached" in result.metrics_unavailable["fid"]
    assert result.samples[-1].is_file() and Image.open(result.samples[-1]).size == (2 * 16 + 2, 2 * 16 + 2)

    meta = json.loads((weights / "mine" / "config.json").read_text())
    assert meta["architecture"] == "dcgan" and meta["key_format"] == "studio" and meta["kind"] == "generator"
    assert meta["config"] == {"z_dim": 8, "num_classes": 0, "resolution": 16, "base_channels": 4, "dropout": 0.0}
    assert meta["training"]["steps"] == 4 and meta["training"]["metrics"][0]["step"] == 4
    assert "mine" in (weights / "mine" / "README.md").read_text()

    specs = {spec.name: spec for spec in discover_local_models(weights)}
    model = load_model(specs["mine"])  # verifies the sha256 written into config.json
    with torch.inference_mode():
        images = model(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)))
    assert images.shape == (3, 3, 16, 16) and images.abs().max() <= 1 and images.std() > 0


def test_resume_continues_bit_identically(class_folder: Path, tmp_path: Path) -> None:
    # augmentation, R1, conditional data and random crops all draw random numbers: all must be restored
    settings = {**TINY, "r1_gamma": 1.0, "checkpoint_every": 2}
    straight = train(make_train_config(data=class_folder, out=tmp_path / "straight", steps=3, **settings))
    train(make_train_config(data=class_folder, out=tmp_path / "resumed", steps=2, **settings))
    resumed = train(make_train_config(data=class_folder, out=tmp_path / "resumed", steps=3, **settings))
    assert resumed.resumed_from == 2 and resumed.step == straight.step == 3
    expected, actual = all_tensors(tmp_path / "straight"), all_tensors(tmp_path / "resumed")
    assert expected.keys() == actual.keys() and len(expected) > 20
    different = [key for key in expected if not torch.equal(expected[key], actual[key])]
    assert not different, f"resumed run differs in {different[:5]}"
    assert resumed.losses == straight.losses


def test_resume_refuses_other_settings(flat_folder: Path, tmp_path: Path) -> None:
    train(make_train_config(data=flat_folder, out=tmp_path / "run", steps=1, **TINY))
    with pytest.raises(ValueError, match="size"):
        train(make_train_config(data=flat_folder, out=tmp_path / "run", steps=2, **{**TINY, "size": 32}))


def test_broken_files_are_skipped_and_listed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_images(data, 6, seed=4)
    (data / "notes.jpg").write_text("this is not a picture")
    buffer = tmp_path / "whole.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(buffer)
    (data / "cut.png").write_bytes(buffer.read_bytes()[:60])
    (data / "empty.jpeg").write_bytes(b"")
    (data / "readme.txt").write_text("not an image suffix: ignored")
    result = train(make_train_config(data=data, out=tmp_path / "out", steps=2, **TINY))
    assert result.step == 2 and result.images == 6
    assert sorted(skipped.path.name for skipped in result.skipped) == ["cut.png", "empty.jpeg", "notes.jpg"]
    assert all(skipped.reason for skipped in result.skipped)
    meta = json.loads((tmp_path / "out" / "config.json").read_text())
    assert sorted(Path(p).name for p in meta["training"]["skipped"]) == ["cut.png", "empty.jpeg", "notes.jpg"]


def test_folder_without_readable_images_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="could be read"):
        train(make_train_config(data=tmp_path / "data", out=tmp_path / "out", steps=1, **TINY))


def test_destinations_that_would_lose_or_confuse_work_are_refused(flat_folder: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes")
    refusals = [
        (dict(data=flat_folder, out=mine), "already holds files the studio did not write"),
        (dict(data=flat_folder, out=flat_folder), "inside the training images"),
        (dict(data=flat_folder, out=flat_folder / "export"), "inside the training images"),
        (dict(data=flat_folder, out=tmp_path / "eyes", name="Omniart Eyes"), "name of a built-in model"),
        (dict(data=flat_folder, out=mine / "README.md"), "is a file"),
        (dict(data=flat_folder, out=mine / "README.md" / "model"), "cannot make the export folder .* is a file"),
    ]
    for where, message in refusals:
        with pytest.raises(ValueError, match=message):
            train(make_train_config(**where, steps=1, **TINY))
    assert (mine / "README.md").read_text() == "my notes" and sorted(p.name for p in mine.iterdir()) == ["README.md"]
    assert not (flat_folder / "export").exists() and not (tmp_path / "eyes").exists()
    # a folder the studio trained into before may be trained into again, resumed or fresh
    out = tmp_path / "again"
    train(make_train_config(data=flat_folder, out=out, steps=1, **TINY))
    assert train(make_train_config(data=flat_folder, out=out, steps=1, resume=False, **TINY)).step == 1


def test_an_export_folder_that_cannot_be_written_is_refused_before_loading(
    flat_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import studio.training.config as training_config

    locked = tmp_path / "locked"
    locked.mkdir()
    # as os.access answers for a read-only folder (root may write anywhere, so chmod cannot show it in CI)
    monkeypatch.setattr(training_config.os, "access", lambda path, mode: Path(path) != locked)
    loaded: list[Path] = []
    monkeypatch.setattr("studio.training.trainer.ImageFolder", lambda folder, **_: loaded.append(folder))
    with pytest.raises(ValueError, match=f"cannot write the export folder {locked / 'model'}: no permission"):
        train(make_train_config(data=flat_folder, out=locked / "model", steps=1, **TINY))
    assert loaded == [] and not (locked / "model").exists()


def test_a_batch_larger_than_the_images_trains_and_says_so(
    flat_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_train_config(data=flat_folder, out=tmp_path / "out", steps=1, **{**TINY, "batch_size": 16})
    assert train(replace(config, progress_bar=True)).step == 1
    assert "a batch of 16 is larger than the 10 images" in capsys.readouterr().err
    train(replace(config, steps=2, progress_bar=True, batch_size=8, resume=False))
    assert "larger than" not in capsys.readouterr().err


def test_the_note_on_a_batch_larger_than_the_images_never_suggests_a_batch_below_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_images(tmp_path / "one", 1, seed=5)
    config = make_train_config(data=tmp_path / "one", out=tmp_path / "out", steps=1, **{**TINY, "progress_bar": True})
    assert train(config).step == 1
    note = capsys.readouterr().err
    assert "--batch 1" not in note and "--batch 2 (the smallest)" in note
    assert "a batch of 4 is larger than the 1 image," in note
    write_images(tmp_path / "three", 3, seed=6)
    train(replace(config, data=tmp_path / "three", out=tmp_path / "out3"))
    assert "--batch 2 to 3 shows each image at most once per step" in capsys.readouterr().err


def test_a_file_given_as_the_data_folder_is_named_as_a_file(tmp_path: Path) -> None:
    write_images(tmp_path / "art", 1, seed=7)
    picture = next((tmp_path / "art").iterdir())
    message = f"{picture} is a file, not a folder; give the folder that holds the pictures, such as {tmp_path / 'art'}"
    with pytest.raises(ValueError, match=re.escape(message)):
        train(make_train_config(data=picture, out=tmp_path / "out", steps=1, **TINY))


def test_conditional_training_from_nested_folders(class_folder: Path, tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    result = train(make_train_config(data=class_folder, out=weights / "two", steps=2, **TINY))
    assert result.classes == ("blues", "reds") and result.images == 12
    spec = {spec.name: spec for spec in discover_local_models(weights)}["two"]
    assert spec.classes == ("blues", "reds") and spec.config["num_classes"] == 2
    model = load_model(spec)
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        blue, red = model(z, torch.eye(2)[[0, 0]]), model(z, torch.eye(2)[[1, 1]])
    assert blue.shape == (2, 3, 16, 16) and not torch.equal(blue, red)
    with pytest.raises(ValueError, match="class vector"):
        model(z)
    # the same folder trained unconditionally, and a folder with loose images refused for conditional training
    plain = train(make_train_config(data=class_folder, out=tmp_path / "plain", steps=1, conditional=False, **TINY))
    assert plain.classes == ()
    write_images(class_folder.parent / "mixed" / "reds", 2, seed=5)
    write_images(class_folder.parent / "mixed", 1, seed=6)
    mixed = make_train_config(
        data=class_folder.parent / "mixed", out=tmp_path / "m", steps=1, conditional=True, **TINY
    )
    with pytest.raises(ValueError, match="class folder"):
        train(mixed)


def test_interrupt_checkpoints_and_exports(flat_folder: Path, tmp_path: Path) -> None:
    seen = []

    def stop_at_three(progress) -> None:
        seen.append(progress.step)
        if progress.step == 3:
            raise KeyboardInterrupt

    config = make_train_config(data=flat_folder, out=tmp_path / "out", steps=1000, log_every=1, **TINY)
    result = train(config, on_progress=stop_at_three)
    assert result.interrupted and result.step == 3 and seen == [1, 2, 3]
    assert torch.load(result.checkpoint / "state.pt", weights_only=True)["step"] == 3
    assert result.export is not None and result.export.weights.is_file()
    assert json.loads(result.export.config.read_text())["training"]["stopped_by"] == "interrupt"


def test_ctrl_c_finishes_the_step_then_checkpoints_and_exports(flat_folder: Path, tmp_path: Path) -> None:
    carried_on = []

    def press_ctrl_c(progress) -> None:
        if progress.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # what a terminal sends
            carried_on.append(True)  # train()'s handler only notes the request: no KeyboardInterrupt mid-step

    config = make_train_config(data=flat_folder, out=tmp_path / "out", steps=1000, log_every=1, **TINY)
    result = train(config, on_progress=press_ctrl_c)
    assert result.interrupted and result.step == 2 and carried_on == [True]
    assert torch.load(result.checkpoint / "state.pt", weights_only=True)["step"] == 2
    assert result.export is not None and result.export.weights.is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back


def test_time_budget_stops_the_run(flat_folder: Path, tmp_path: Path) -> None:
    config = make_train_config(data=flat_folder, out=tmp_path / "out", steps=1000, time_budget_s=1e-6, **TINY)
    result = train(config)
    assert result.stopped_by == "time" and result.step == 1 and result.export.weights.is_file()


def test_settings_are_validated(flat_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STUDIO_WEIGHTS_DIR", raising=False)
    with pytest.raises(ValueError, match="power of two"):
        make_train_config(data=flat_folder, out=tmp_path, size=48)
    with pytest.raises(ValueError, match="unknown training options"):
        make_train_config(data=flat_folder, out=tmp_path, learning_rate=1)
    with pytest.raises(ValueError, match="loss"):
        make_train_config(data=flat_folder, out=tmp_path, loss="lsgan")
    with pytest.raises(ValueError, match="augmentation"):
        make_train_config(data=flat_folder, out=tmp_path, augment="color,zoom")
    config = make_train_config(data=flat_folder, out=None, steps=None, loss="wgan-gp")
    assert isinstance(config, TrainConfig) and config.steps == TrainConfig.steps
    assert config.out == Path("weights") / config.name and config.discriminator_norm == "none"


# --- losses and penalties -------------------------------------------------------------------------------------------


def test_losses_at_known_logits() -> None:
    zero = torch.zeros(4)
    assert discriminator_loss("bce", zero, zero).item() == pytest.approx(2 * math.log(2))
    assert generator_loss("bce", zero).item() == pytest.approx(math.log(2))
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert discriminator_loss("hinge", real, fake).item() == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert discriminator_loss("wgan-gp", real, fake).item() == pytest.approx(-1.0 - 1.25)
    assert generator_loss("hinge", fake).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="lsgan"):
        generator_loss("lsgan", fake)


def quadratic_critic(weights: torch.Tensor):
    """D(x) = sum(w * x^2) per sample: grad_x D = 2 w x."""
    return lambda x: (weights * x.pow(2)).flatten(1).sum(1)


def test_gradient_penalty_matches_the_analytic_gradient() -> None:
    generator = torch.Generator().manual_seed(0)
    weights = torch.rand(1, 2, 3, 3, generator=generator).requires_grad_(True)
    real, fake = torch.randn(4, 2, 3, 3, generator=generator), torch.randn(4, 2, 3, 3, generator=generator)
    mix = torch.tensor([0.0, 0.25, 0.5, 1.0])
    penalty = gradient_penalty(quadratic_critic(weights), real, fake, mix=mix)
    mixed = mix.view(4, 1, 1, 1) * real + (1 - mix.view(4, 1, 1, 1)) * fake
    norms = (2 * weights.detach() * mixed).flatten(1).norm(dim=1)
    assert penalty.item() == pytest.approx(((norms - 1) ** 2).mean().item(), rel=1e-6)
    # and it trains the critic: d/dw of the penalty, by hand
    penalty.backward()
    by_hand = (2 * (norms - 1) / norms).view(4, 1, 1, 1) * 4 * weights.detach() * mixed.pow(2)
    torch.testing.assert_close(weights.grad, by_hand.mean(0, keepdim=True))


def test_r1_penalty_matches_the_analytic_gradient() -> None:
    generator = torch.Generator().manual_seed(1)
    weights = torch.rand(1, 3, 2, 2, generator=generator).requires_grad_(True)
    real = torch.randn(5, 3, 2, 2, generator=generator).requires_grad_(True)
    penalty = r1_penalty(quadratic_critic(weights)(real), real)
    expected = (2 * weights.detach() * real.detach()).pow(2).flatten(1).sum(1).mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-6)
    penalty.backward()
    torch.testing.assert_close(weights.grad, (8 * weights.detach() * real.detach().pow(2)).mean(0, keepdim=True))


# --- Fréchet distance -----------------------------------------------------------------------------------------------


def test_frechet_distance_of_identical_features_is_zero() -> None:
    features = torch.randn(300, 16, generator=torch.Generator().manual_seed(2)) * 5 + 3
    stats = feature_stats(features)
    assert frechet_distance(stats, stats) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_against_hand_computed_cases() -> None:
    def gaussian(mean: list[float], cov: list[list[float]]) -> FeatureStats:
        return FeatureStats(torch.tensor(mean, dtype=torch.float64), torch.tensor(cov, dtype=torch.float64), 100)

    # 1-D: (mu1 - mu2)^2 + (sigma1 - sigma2)^2
    assert frechet_distance(gaussian([1.0], [[4.0]]), gaussian([-2.0], [[9.0]])) == pytest.approx(9 + 1)
    # diagonal: the sum of the 1-D terms
    a, b = gaussian([0.0, 1.0], [[1.0, 0.0], [0.0, 16.0]]), gaussian([3.0, 1.0], [[4.0, 0.0], [0.0, 1.0]])
    assert frechet_distance(a, b) == pytest.approx((9 + 1) + (0 + 9))
    # full covariances that do not commute: tr sqrt(C1 C2) from the eigenvalues of the product
    c1, c2 = (
        torch.tensor([[2.0, 0.7], [0.7, 1.0]], dtype=torch.float64),
        torch.tensor([[1.5, -0.4], [-0.4, 0.5]], dtype=torch.float64),
    )
    trace_sqrt = torch.linalg.eigvals(c1 @ c2).real.sqrt().sum()
    expected = (c1.trace() + c2.trace() - 2 * trace_sqrt).item() + 1.0
    assert frechet_distance(gaussian([1.0, 0.0], c1.tolist()), gaussian([0.0, 0.0], c2.tolist())) == pytest.approx(
        expected, rel=1e-10
    )


# --- augmentation and the discriminator ------------------------------------------------------------------------------


def test_augmentations_are_seeded_differentiable_and_do_what_they_say() -> None:
    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    policy = parse_policy("color,translation,cutout")
    first = diff_augment(images, policy, torch.Generator().manual_seed(9))
    again = diff_augment(images, policy, torch.Generator().manual_seed(9))
    assert torch.equal(first, again) and first.shape == images.shape
    first.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    ones = torch.ones(4, 3, 16, 16)
    holes = (random_cutout(ones, torch.Generator().manual_seed(0)) == 0).all(1).flatten(1).sum(1)
    assert holes.max() <= 64 and holes.min() >= 16  # an 8x8 square, clipped at the border
    ramp = torch.arange(16.0).view(1, 1, 1, 16).expand(2, 3, 16, 16)
    moved = random_translation(ramp, torch.Generator().manual_seed(5))
    for row in moved[:, 0, 8]:  # a shifted ramp: consecutive values, zeros only where the image slid out
        values = row[row != 0]
        assert torch.equal(values.diff(), torch.ones(len(values) - 1)) and len(values) >= 13
    assert parse_policy("") == ()


@pytest.mark.parametrize("resolution", [16, 64, 256])
def test_discriminator_shapes_and_projection(resolution: int) -> None:
    config = DCGANDiscriminatorConfig(resolution=resolution, base_channels=4, num_classes=3, spectral_norm=True)
    critic = DCGANDiscriminator(config).eval()
    images = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    logits = critic(images, torch.eye(3)[[0, 1]])
    assert logits.shape == (2,) and logits.dtype == torch.float32
    other = critic(images, torch.eye(3)[[2, 2]])
    assert not torch.allclose(logits, other)  # the projection term depends on the class
    with pytest.raises(ValueError, match="class vector"):
        critic(images)


def test_push_to_hub_fails_clearly_offline(flat_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="not an exported model"):
        push_to_hub(tmp_path, repo_id="me/my-gan")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"x")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUploadError, match="offline"):
        push_to_hub(tmp_path, repo_id="me/my-gan")


def test_folders_with_non_latin_names_make_distinct_models(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STUDIO_WEIGHTS_DIR", str(tmp_path / "weights"))
    names = {make_train_config(data=tmp_path / folder).name for folder in ("油絵", "水彩", "Études", "my paintings")}
    assert names == {"油絵", "水彩", "études", "my-paintings"}  # no longer all "my-gan"
    assert make_train_config(data=tmp_path / "!!!").name == "my-gan"


def test_another_folder_does_not_resume_a_model_trained_on_different_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write_images(first, 6, seed=1)
    write_images(second, 6, seed=2)
    out = tmp_path / "out"
    train(make_train_config(data=first, out=out, steps=2, **TINY))
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="holds a model trained on .*first, not on .*second"):
        train(make_train_config(data=second, out=out, steps=4, **TINY))
    assert (out / "model.safetensors").read_bytes() == before  # the first model is untouched
    fresh = train(make_train_config(data=second, out=out, steps=2, resume=False, **TINY))
    assert fresh.resumed_from == 0 and fresh.step == 2

    monkeypatch.chdir(tmp_path)  # the same folder, named relative to another working directory, still resumes
    assert train(make_train_config(data=Path("second"), out=out, steps=3, **TINY)).resumed_from == 2


def test_starting_over_clears_the_earlier_runs_sample_grids(tmp_path: Path) -> None:
    write_images(tmp_path / "art", 6, seed=3)
    out = tmp_path / "out"
    options = {**TINY, "sample_every": 2}
    first = train(make_train_config(data=tmp_path / "art", out=out, steps=4, **options))
    assert sorted(path.name for path in (out / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    again = train(make_train_config(data=tmp_path / "art", out=out, steps=2, resume=False, **options))
    assert again.resumed_from == 0 and first.step == 4
    assert sorted(path.name for path in (out / "samples").iterdir()) == ["step_0000002.png"]  # only this run's
    resumed = train(make_train_config(data=tmp_path / "art", out=out, steps=4, **options))
    assert resumed.resumed_from == 2
    assert sorted(path.name for path in (out / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]


def test_resuming_keeps_the_checkpoints_settings_unless_told_otherwise(tmp_path: Path) -> None:
    write_images(tmp_path / "art", 6, seed=4)
    out = tmp_path / "out"
    train(make_train_config(data=tmp_path / "art", out=out, steps=2, **TINY))
    quiet = {key: TINY[key] for key in ("sample_every", "checkpoint_every", "metric_samples", "progress_bar")}
    config = make_train_config(data=tmp_path / "art", out=out, steps=4, **quiet)  # no --size, --batch, ...
    assert (config.size, config.batch_size, config.z_dim, config.g_channels) == (16, 4, 8, 4)
    assert train(config).resumed_from == 2
    with pytest.raises(ValueError, match="size: checkpoint 16, now 32"):
        train(make_train_config(data=tmp_path / "art", out=out, steps=6, size=32, **quiet))
    fresh = make_train_config(data=tmp_path / "art", out=out, steps=6, resume=False, **quiet)
    assert fresh.size == make_train_config(data=tmp_path / "elsewhere").size  # starting over: the defaults


def test_resume_after_images_were_removed_starts_a_new_epoch(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_images(data, 10, seed=3)
    out = tmp_path / "out"
    train(make_train_config(data=data, out=out, steps=1, **TINY))  # mid-epoch: 4 of 10 images used
    for path in sorted(data.iterdir())[:6]:
        path.unlink()
    result = train(make_train_config(data=data, out=out, steps=4, **TINY))  # indices 4..9 no longer exist
    assert result.resumed_from == 1 and result.step == 4 and result.images == 4


def test_ctrl_c_while_finishing_still_saves_the_checkpoint_and_export(
    flat_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from studio.training import trainer

    real_save_samples = trainer._save_samples

    def press_ctrl_c_then_save(run, model):
        os.kill(os.getpid(), signal.SIGINT)  # arrives after the last step, during the final samples
        return real_save_samples(run, model)

    monkeypatch.setattr(trainer, "_save_samples", press_ctrl_c_then_save)
    result = train(make_train_config(data=flat_folder, out=tmp_path / "out", steps=2, **TINY))
    assert result.step == 2 and result.export is not None and result.export.weights.is_file()
    assert torch.load(result.checkpoint / "state.pt", weights_only=True)["step"] == 2


def test_a_diverged_generator_is_exported_without_quality_figures(
    flat_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from studio.training import trainer

    monkeypatch.setattr(trainer, "generate", lambda model, z, labels: torch.full((len(z), 3, 16, 16), math.nan))
    options = {**TINY, "metric_samples": 4}
    result = train(make_train_config(data=flat_folder, out=tmp_path / "out", steps=2, **options))
    assert result.export is not None and result.export.weights.is_file()
    assert "not finite" in result.metrics_unavailable["quality"] and result.metrics == ()


def test_numbers_may_be_numpy_scalars_or_text_but_must_be_whole_and_finite(flat_folder: Path, tmp_path: Path) -> None:
    config = make_train_config(
        data=flat_folder, out=tmp_path / "out", steps=np.int64(2), seed=np.int64(3), time_budget_s="60", **TINY
    )
    assert (config.steps, config.seed, config.time_budget_s) == (2, 3, 60.0)
    assert type(config.steps) is int and type(config.time_budget_s) is float
    for option, value, message in (
        ("steps", 4.5, "steps must be a whole number"),
        ("batch_size", "eight", "batch_size must be a whole number"),
        ("r1_gamma", math.inf, "r1_gamma must be a finite number"),
        ("lr_g", "nan", "lr_g must be a finite number"),
        ("seed", 2**70, "seed must be between 0 and"),
        ("steps", True, "steps must be a whole number"),
    ):
        with pytest.raises(ValueError, match=message):
            make_train_config(data=flat_folder, out=tmp_path / "out", **{**TINY, option: value})
    result = train(config)
    assert json.loads(result.export.config.read_text())["training"]["settings"]["steps"] == 2


def test_training_into_the_folder_of_a_built_in_model_is_refused(
    flat_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "weights"
    monkeypatch.setenv("STUDIO_WEIGHTS_DIR", str(weights))
    config = make_train_config(data=flat_folder, out=weights / "omniart-eyes", name="mine", steps=1, **TINY)
    with pytest.raises(ValueError, match="its own copy of the built-in model 'omniart-eyes'"):
        train(config)
    assert not (weights / "omniart-eyes").exists()


def test_a_name_another_local_model_has_is_refused_before_training(
    flat_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "weights"
    monkeypatch.setenv("STUDIO_WEIGHTS_DIR", str(weights))
    train(make_train_config(data=flat_folder, out=weights / "good-gan", steps=1, **TINY))
    clash = make_train_config(data=flat_folder, out=weights / "good-gan-2", name="good-gan", steps=1, **TINY)
    loaded: list[Path] = []
    with monkeypatch.context() as patch:
        patch.setattr("studio.training.trainer.ImageFolder", lambda folder, **_: loaded.append(folder))
        other = weights / "good-gan"
        message = f"'good-gan' is already the name of the model in {other}, so yours would not be listed; give yours "
        message += f"another name (--name), or train into {other} (--out) to resume or replace it"
        with pytest.raises(ValueError, match=re.escape(message)):
            train(clash)
    assert loaded == [] and not (weights / "good-gan-2").exists()
    # its own folder may be resumed; another name there, or the same name outside the weights folder, is fine
    resumed = train(make_train_config(data=flat_folder, out=weights / "good-gan", name="good-gan", steps=2, **TINY))
    assert resumed.resumed_from == 1
    train(make_train_config(data=flat_folder, out=weights / "good-gan-2", steps=1, **TINY))
    train(make_train_config(data=flat_folder, out=tmp_path / "elsewhere", name="good-gan", steps=1, **TINY))
    assert sorted(spec.name for spec in discover_local_models(weights)) == ["good-gan", "good-gan-2"]


def test_classes_are_linked_folders_followed_once_and_never_folders_of_unreadable_files(
    class_folder: Path, tmp_path: Path
) -> None:
    from studio.training.dataset import ImageFolder

    data = tmp_path / "links"
    data.mkdir()
    (data / "reds").symlink_to(class_folder / "reds", target_is_directory=True)
    (data / "blues").symlink_to(class_folder / "blues", target_is_directory=True)
    (data / "blues-again").symlink_to(class_folder / "blues", target_is_directory=True)  # the same pictures
    (class_folder / "reds" / "loop").symlink_to(data, target_is_directory=True)  # a link loop ends, too
    try:
        (data / "broken").mkdir()
        (data / "broken" / "x.jpg").write_text("not a picture")
        folder = ImageFolder(data, size=16)
    finally:
        (class_folder / "reds" / "loop").unlink()
    assert folder.classes == ("blues", "reds") and len(folder) == 12  # blues-again adds nothing, broken no class
    assert [skipped.path.name for skipped in folder.skipped] == ["x.jpg"]


@pytest.mark.parametrize(("classes", "task"), [((), "unconditional"), (("ink", "oil"), "class-conditional")])
def test_the_model_card_names_the_task_and_the_classes(classes: tuple[str, ...], task: str) -> None:
    from studio.training.export import model_card

    meta = {
        "name": "mine", "description": "DCGAN trained on your images, 32 px", "classes": list(classes),
        "config": {"resolution": 32, "z_dim": 64, "base_channels": 16}, "convention": "z ~ N(0, I) of 64",
        "weights": "model.safetensors", "sha256": "ab" * 32, "license": "CC0", "credit": "me",
    }  # fmt: skip
    card = model_card(meta, has_samples=False)
    front_matter = card.split("---")[1]
    assert f"{task}-image-generation" in front_matter and ("unconditional" in front_matter) == (not classes)
    assert ("Conditional on 2 classes: ink, oil" in card) == bool(classes)
