"""Generation through the Studio facade with the real offline eye DCGAN (fast: 128 px, CPU)."""

from __future__ import annotations

import itertools
import math
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from studio import Studio, read_png_settings
from studio.api import METADATA_KEY, STYLIZE_METADATA_KEY
from studio.cli import main as cli_main
from studio.imaging import load_image, png_text_before_pixels


@pytest.fixture(scope="module")
def studio() -> Studio:
    return Studio(device="cpu")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_images_have_the_models_shape_and_use_the_full_range(studio: Studio) -> None:
    result = studio.generate(model="omniart-eyes", seed=1, batch=3, class_name="brown")
    assert result.seeds == (1, 2, 3)
    assert [image.size for image in result.images] == [(128, 128)] * 3
    assert all(image.mode == "RGB" for image in result.images)
    assert tuple(result.latents.shape) == (3, 100)
    values = np.stack([pixels(image) for image in result.images])
    assert values.min() >= 0 and values.max() <= 255
    assert values.std() > 20, "a real generator produces structured images, not a flat colour"


def test_same_seed_same_image_alone_or_in_a_batch(studio: Studio) -> None:
    alone = studio.generate(model="omniart-eyes", seed=42, class_name="blue").images[0]
    again = studio.generate(model="omniart-eyes", seed=42, class_name="blue").images[0]
    in_batch = studio.generate(model="omniart-eyes", seeds=[7, 42], class_name="blue").images[1]
    assert np.array_equal(pixels(alone), pixels(again))
    assert np.array_equal(pixels(alone), pixels(in_batch))
    other = studio.generate(model="omniart-eyes", seed=43, class_name="blue").images[0]
    assert np.abs(pixels(alone) - pixels(other)).mean() > 5


def test_a_batch_past_the_last_seed_wraps_to_zero(studio: Studio) -> None:
    wrapped = studio.generate(model="omniart-eyes", seed=2**32 - 2, batch=3, class_name="blue")
    assert wrapped.seeds == (2**32 - 2, 2**32 - 1, 0)
    zero = studio.generate(model="omniart-eyes", seed=0, class_name="blue").images[0]
    assert np.array_equal(pixels(wrapped.images[2]), pixels(zero))


def test_random_seed_is_reported_and_reproduces(studio: Studio) -> None:
    first = studio.generate(model="omniart-eyes")
    (seed,) = first.seeds
    assert 0 <= seed < 2**32
    assert np.array_equal(pixels(first.images[0]), pixels(studio.generate(model="omniart-eyes", seed=seed).images[0]))


def test_truncation_zero_gives_the_mean_image_for_every_seed(studio: Studio) -> None:
    result = studio.generate(model="omniart-eyes", seeds=[0, 1, 99, 12345], psi=0.0, class_name="green")
    reference = pixels(result.images[0])
    for image in result.images[1:]:
        assert np.array_equal(pixels(image), reference)


def test_truncation_pulls_images_together(studio: Studio) -> None:
    def spread(psi: float) -> float:
        images = studio.generate(model="omniart-eyes", seeds=range(8), psi=psi).images
        stack = np.stack([pixels(image) for image in images]).astype(float)
        return float(stack.std(axis=0).mean())

    assert spread(0.3) < spread(0.7) < spread(1.0)


def test_class_conditioning_changes_the_output(studio: Studio) -> None:
    blue = studio.generate(model="omniart-eyes", seed=5, class_name="blue").images[0]
    brown = studio.generate(model="omniart-eyes", seed=5, class_name="brown").images[0]
    assert np.abs(pixels(blue) - pixels(brown)).mean() > 2


def test_direction_amount_zero_is_the_identity_and_nonzero_moves(studio: Studio) -> None:
    plain = studio.generate(model="omniart-eyes", seed=11)
    zero = studio.generate(model="omniart-eyes", seed=11, directions={0: 0.0, 3: 0.0})
    assert np.array_equal(pixels(plain.images[0]), pixels(zero.images[0]))
    assert torch.equal(plain.latents, zero.latents)
    moved = studio.generate(model="omniart-eyes", seed=11, directions={0: 3.0})
    shift = moved.latents - plain.latents
    assert math.isclose(float(shift.norm()), 3.0, rel_tol=1e-4), "directions are unit vectors scaled by the amount"
    assert np.abs(pixels(moved.images[0]) - pixels(plain.images[0])).mean() > 2


def test_directions_are_cached_on_disk_by_weight_digest(studio: Studio, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STUDIO_CACHE_DIR", str(tmp_path))
    fresh = Studio(device="cpu")
    directions = fresh.directions("omniart-eyes")
    assert tuple(directions.vectors.shape) == (8, 100)
    assert torch.allclose(directions.vectors.norm(dim=1), torch.ones(8), atol=1e-5)
    assert torch.all(directions.explained[:-1] >= directions.explained[1:]), "strongest direction first"
    cached = list((tmp_path / "directions").glob("omniart-eyes-*.pt"))
    assert len(cached) == 1 and fresh.weight_digest("omniart-eyes")[:16] in cached[0].name
    reloaded = Studio(device="cpu").directions("omniart-eyes")
    assert torch.equal(reloaded.vectors, directions.vectors)


@pytest.mark.parametrize("damage", ["wrong shape", "not finite"])
def test_cached_directions_that_do_not_fit_are_computed_again(tmp_path, monkeypatch, damage: str) -> None:
    monkeypatch.setenv("STUDIO_CACHE_DIR", str(tmp_path))
    computed = Studio(device="cpu").directions("omniart-eyes")
    (cached,) = (tmp_path / "directions").glob("omniart-eyes-*.pt")
    vectors = torch.zeros(8, 7) if damage == "wrong shape" else torch.full((8, 100), float("nan"))
    torch.save({"vectors": vectors, "explained": computed.explained}, cached)
    again = Studio(device="cpu").directions("omniart-eyes")
    assert tuple(again.vectors.shape) == (8, 100) and bool(again.vectors.isfinite().all())
    assert torch.allclose(again.vectors.norm(dim=1), torch.ones(8), atol=1e-5)
    assert float((again.vectors[0] @ computed.vectors[0]).abs()) > 0.99  # the strongest direction found again


def test_a_model_retrained_under_a_running_studio_is_loaded_again(tmp_path, monkeypatch) -> None:
    """A model exported again into its folder (a resumed training) while a Studio runs: the next call uses the new
    weights, and the digest and the directions follow them."""
    from studio.models.dcgan import DCGANConfig, DCGANGenerator
    from studio.training.export import export_generator

    monkeypatch.setenv("STUDIO_CACHE_DIR", str(tmp_path / "cache"))
    weights = tmp_path / "weights"
    torch.manual_seed(0)
    generator = DCGANGenerator(DCGANConfig(z_dim=8, num_classes=0, resolution=16, base_channels=8)).eval()
    export_generator(generator, out_dir=weights / "mine", name="mine")
    studio = Studio(device="cpu", weights_dir=weights)
    before = studio.generate(model="mine", seed=4).images[0]
    first_digest, first_directions = studio.weight_digest("mine"), studio.directions("mine", count=2)
    with torch.no_grad():
        for parameter in generator.parameters():
            parameter.normal_(0.0, 0.5)
    export_generator(generator, out_dir=weights / "mine", name="mine")
    after = studio.generate(model="mine", seed=4).images[0]
    assert np.abs(pixels(after) - pixels(before)).mean() > 1
    assert studio.weight_digest("mine") != first_digest
    assert studio.directions("mine", count=2) is not first_directions
    fresh = Studio(device="cpu", weights_dir=weights).generate(model="mine", seed=4)
    assert np.array_equal(pixels(after), pixels(fresh.images[0]))


def test_directions_work_when_the_cache_folder_cannot_be_written(studio: Studio, tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("STUDIO_CACHE_DIR", str(blocker / "cache"))
    fresh = Studio(device="cpu")
    moved = fresh.generate(model="omniart-eyes", seed=3, directions={0: 2.0})
    plain = fresh.generate(model="omniart-eyes", seed=3)
    assert np.abs(pixels(moved.images[0]) - pixels(plain.images[0])).mean() > 1
    assert fresh.directions("omniart-eyes") is fresh.directions("omniart-eyes")  # kept in memory instead


def test_png_metadata_round_trips_to_the_same_image(studio: Studio, tmp_path) -> None:
    result = studio.generate(model="omniart-eyes", seed=21, psi=0.7, class_name="hazel", directions={1: -1.5})
    path = result.save(tmp_path / "art.png")
    settings = read_png_settings(path)
    assert settings == result.settings
    again = studio.regenerate(path)
    assert np.array_equal(pixels(again.images[0]), pixels(Image.open(path).convert("RGB")))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_a_generation_saved_as_jpeg_is_a_jpeg(studio: Studio, tmp_path) -> None:
    result = studio.generate(model="omniart-eyes", seed=21)
    with Image.open(result.save(tmp_path / "art.jpg")) as saved:
        assert saved.format == "JPEG" and saved.size == (128, 128)


def test_settings_are_read_from_a_grid_too_large_to_decode(studio: Studio, tmp_path) -> None:
    result = studio.generate(model="omniart-eyes", seed=4, batch=2)
    stored = result.settings.to_json().encode()
    header = struct.pack(">IIBBBBB", 9000, 9000, 8, 2, 0, 0, 0)  # 81 megapixels: over the 64 MP decoding limit
    grid = tmp_path / "grid.png"
    settings_chunk = _png_chunk(b"tEXt", METADATA_KEY.encode() + b"\0" + stored)
    pixels_chunk = _png_chunk(b"IDAT", zlib.compress(b"\0" * 100))
    grid.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + settings_chunk + pixels_chunk)
    assert read_png_settings(grid) == result.settings
    with pytest.raises(ValueError, match=r"9000x9000 \(81 megapixels\); the limit is 64"):
        load_image(grid)  # its pixels stay refused


@pytest.mark.parametrize("chunk", ["tEXt", "zTXt", "iTXt", "compressed iTXt"])
def test_png_text_is_read_from_every_text_chunk_kind(chunk: str, tmp_path) -> None:
    info = PngImagePlugin.PngInfo()
    value = "seeds 1, 2 · ψ 0.7"
    if chunk == "tEXt":
        value = value.encode("latin-1", "replace").decode("latin-1")
        info.add_text("note", value)
    elif chunk == "zTXt":
        value = value.encode("latin-1", "replace").decode("latin-1")
        info.add_text("note", value, zip=True)
    else:
        info.add_itxt("note", value, zip=chunk.startswith("compressed"))
    path = tmp_path / "note.png"
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)
    assert png_text_before_pixels(path) == {"note": value}
    assert png_text_before_pixels(tmp_path / "note.png") == Image.open(path).text
    jpeg = tmp_path / "note.jpg"
    Image.new("RGB", (4, 4)).save(jpeg)
    assert png_text_before_pixels(jpeg) == {}
    damaged = path.read_bytes().replace(b"note", b"nute", 1)  # fails the chunk's checksum
    path.write_bytes(damaged)
    assert png_text_before_pixels(path) == {}
    path.write_bytes(damaged[: damaged.index(b"nute") + 6])  # cut inside the chunk
    assert png_text_before_pixels(path) == {}


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        ('{"seeds": [1]}', "model name is missing"),
        ('{"model": "omniart-eyes", "seeds": []}', "seeds are missing"),
        ('{"model": "omniart-eyes", "seeds": 5}', "seeds are missing"),
        ('{"model": "omniart-eyes", "seeds": [1180591620717411303424]}', "seed must be between"),
        ('{"model": "omniart-eyes", "seeds": [-5]}', "seed must be between"),
        ('{"model": "omniart-eyes", "seeds": ["12"]}', "seed must be a whole number"),
        ('{"model": "omniart-eyes", "seeds": [1], "psi": 100}', "psi must be between"),
        ('{"model": "omniart-eyes", "seeds": [1], "psi": NaN}', "psi must be between"),
        ('{"model": "omniart-eyes", "seeds": [1], "directions": {"x": 1}}', "whole number from 0, got 'x'"),
        ('{"model": "omniart-eyes", "seeds": [1], "directions": {"0": "far"}}', "amount must be a number"),
        ('{"model": "omniart-eyes", "seeds": [1], "size": -3}', "size"),
        ("[1, 2, 3]", "not a JSON object"),
        ("{'model': 1}", "Expecting property name"),
    ],
)
def test_damaged_png_settings_are_refused_with_what_is_wrong(stored: str, message: str, tmp_path) -> None:
    path = tmp_path / "damaged.png"
    info = PngImagePlugin.PngInfo()
    info.add_text(METADATA_KEY, stored)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    with pytest.raises(ValueError, match="settings stored in this PNG are damaged") as raised:
        read_png_settings(path)
    assert message in str(raised.value)


def test_reading_settings_from_files_that_are_not_studio_pngs(studio: Studio, tmp_path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    jpeg = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8)).save(jpeg)
    stylized = tmp_path / "stylized.png"
    info = PngImagePlugin.PngInfo()
    info.add_text(STYLIZE_METADATA_KEY, "{}")
    Image.new("RGB", (8, 8)).save(stylized, pnginfo=info)
    for path, message in (
        (text, "not a picture file this studio can read; give a PNG saved from Generate"),
        (jpeg, "this is a JPEG file"),
        (stylized, "this is a stylized picture"),
        (tmp_path / "missing.png", "not found"),
        (tmp_path, "is a folder"),
    ):
        with pytest.raises(ValueError, match=message):
            studio.regenerate(path)


def test_output_size_resizes(studio: Studio) -> None:
    assert studio.generate(model="omniart-eyes", seed=1, size=256).images[0].size == (256, 256)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "no-such-model"}, "unknown model"),
        ({"seed": -1}, "seed must be between"),
        ({"seed": 2**32}, "seed must be between"),
        ({"seed": 1.5}, "whole number"),
        ({"psi": float("nan")}, "psi must be between"),
        ({"psi": 2.0}, "psi must be between"),
        ({"batch": 0}, "batch must be"),
        ({"batch": 65}, "above the limit of 64"),
        ({"batch": 10**11}, "batch of 100000000000 is above the limit of 64"),  # refused before any seed is made
        ({"seeds": range(10**12)}, "batch of 1000000000000 is above the limit of 64"),
        ({"seeds": itertools.count()}, "batch of 65 is above the limit of 64"),  # endless: read one past the limit
        ({"seeds": 5}, "seeds must be a list of whole numbers, got 5"),
        ({"class_name": "purple"}, "has no class 'purple'"),
        ({"directions": {0: float("inf")}}, "amount must be between"),
        ({"directions": {99: 1.0}}, "direction 99 does not exist"),
        ({"model": "vgg19-caffe"}, "not an image generator"),
        ({"size": 100000}, "output size"),
    ],
)
def test_bad_input_gives_a_clear_error(studio: Studio, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        studio.generate(**{"model": "omniart-eyes", "seed": 0, **kwargs})


def test_batch_cap_is_configurable(studio: Studio, monkeypatch) -> None:
    monkeypatch.setenv("STUDIO_MAX_BATCH", "2")
    with pytest.raises(ValueError, match="above the limit of 2"):
        studio.generate(model="omniart-eyes", seed=0, batch=3)
    for bad in ("0", "-4", "many"):
        monkeypatch.setenv("STUDIO_MAX_BATCH", bad)
        with pytest.raises(ValueError, match="STUDIO_MAX_BATCH must be a whole number of at least 1"):
            studio.generate(model="omniart-eyes", seed=0)


def test_numpy_and_whole_float_numbers_are_accepted(studio: Studio) -> None:
    plain = studio.generate(model="omniart-eyes", seed=5, batch=2, size=64)
    numpy = studio.generate(model="omniart-eyes", seed=np.int64(5), batch=np.int32(2), size=64.0)
    assert numpy.seeds == plain.seeds == (5, 6) and numpy.settings == plain.settings
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(numpy.images, plain.images, strict=True))
    assert numpy.images[0].size == (64, 64)
    for bad in ({"batch": 2.5}, {"size": 64.5}, {"seed": np.float64("nan")}, {"batch": True}):
        with pytest.raises(ValueError, match="whole number"):
            studio.generate(model="omniart-eyes", **{"seed": 5, **bad})


def test_cli_generate_writes_a_grid_with_metadata(tmp_path) -> None:
    out = tmp_path / "grid.png"
    code = cli_main(["generate", "--seed", "7", "--batch", "4", "--class", "blue", "--psi", "0.8", "--out", str(out)])
    assert code == 0
    settings = read_png_settings(out)
    assert settings.seeds == (7, 8, 9, 10) and settings.class_name == "blue" and settings.psi == 0.8
    assert Image.open(out).size == (2 * 128 + 2, 2 * 128 + 2)


def test_cli_reports_bad_input_without_a_traceback(capsys) -> None:
    assert cli_main(["generate", "--psi", "nan", "--out", "unused.png"]) == 2
    assert "psi must be between" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--seed", "3"], ["--batch", "5"]])
def test_cli_generate_refuses_seeds_with_seed_or_batch(tmp_path, capsys, extra: list[str]) -> None:
    out = tmp_path / "out.png"
    assert cli_main(["generate", "--seeds", "1,2", *extra, "--out", str(out)]) == 2
    assert "--seeds lists every seed to make; leave out --seed and --batch" in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture
def small_projected_gan(tmp_path, monkeypatch) -> str:
    """A narrow projected-GAN generator with random weights, exported into the weights folder like a user model."""
    import json

    from safetensors.torch import save_file

    from studio.models.projected_gan import ProjectedGanConfig, ProjectedGanGenerator

    config = {"z_dim": 256, "ngf": 16, "resolution": 256}
    torch.manual_seed(3)
    module = ProjectedGanGenerator(ProjectedGanConfig(**config)).train()
    with torch.no_grad():  # a few training-mode passes settle the spectral-norm vectors and BatchNorm statistics
        for _ in range(15):
            module(torch.randn(4, 256))
        for parameter in module.parameters():
            if parameter.numel() == 1:  # noise strengths start at zero; a trained model has learnt non-zero ones
                parameter.fill_(0.3)
    folder = tmp_path / "weights" / "tiny-projected"
    folder.mkdir(parents=True)
    save_file(module.state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(
        json.dumps({"architecture": "projected-fastgan", "key_format": "projected-gan", "config": config})
    )
    monkeypatch.setenv("STUDIO_WEIGHTS_DIR", str(tmp_path / "weights"))
    return "tiny-projected"


def test_projected_gan_truncates_in_feature_space_and_noise_follows_the_seed(small_projected_gan: str) -> None:
    from studio.ops.generation import seeded_latents, synthesize

    studio = Studio(device="cpu")
    assert studio.generate(model=small_projected_gan, seed=5).images[0].size == (256, 256)
    generator = studio.load(small_projected_gan)
    latents = seeded_latents([9, 5, 1, 2], z_dim=256)
    batch = synthesize(generator, latents, seeds=[9, 5, 1, 2])
    alone = synthesize(generator, latents[1:2], seeds=[5])
    torch.testing.assert_close(batch[1:2], alone, atol=1e-4, rtol=0), "noise is drawn per image from its seed"
    other_noise = synthesize(generator, latents[1:2], seeds=[6])
    assert (other_noise - alone).abs().max() > 1e-3, "the injected noise really comes from the seed"
    # psi = 0 replaces every first feature map by the average one: with the same noise, every latent gives one image.
    means = synthesize(generator, latents, seeds=[7, 7, 7, 7], psi=0.0)
    torch.testing.assert_close(means, means[:1].expand_as(means), atol=1e-5, rtol=0)
    halfway = synthesize(generator, latents, seeds=[7, 7, 7, 7], psi=0.5)
    full = synthesize(generator, latents, seeds=[7, 7, 7, 7], psi=1.0)
    assert 0 < halfway.std(dim=0).mean() < full.std(dim=0).mean()


def test_a_walk_of_a_noise_model_passes_through_each_seeds_generated_image(small_projected_gan: str, tmp_path) -> None:
    """Injected noise blends from one keyframe seed's to the next's, so every keyframe frame is the picture Generate
    makes of its seed, not only the first one."""
    import io
    import zipfile

    studio = Studio(device="cpu")
    walk = studio.walk(model=small_projected_gan, seeds=[5, 9, 2], frames=8, loop=False, out=tmp_path / "w.zip")
    with zipfile.ZipFile(walk.path) as archive:
        frames = [pixels(Image.open(io.BytesIO(archive.read(name)))) for name in sorted(archive.namelist())]
    assert len(frames) == 8
    for index, seed in ((0, 5), (4, 9), (7, 2)):  # 7 frames between keyframes: segments of 4 and 3
        generated = pixels(studio.generate(model=small_projected_gan, seed=seed).images[0])
        assert np.abs(frames[index] - generated).max() <= 1, f"frame {index} should be seed {seed}'s picture"
    assert np.abs(frames[2] - frames[0]).mean() > 1 and np.abs(frames[2] - frames[4]).mean() > 1  # in between


def test_blended_noise_keeps_unit_variance_and_its_ends_exact() -> None:
    from studio.models.noise import draw_noise
    from studio.ops.generation import blended_noise, noise_generators

    like = torch.zeros(3, 8, 64, 64)
    blends = draw_noise(like, blended_noise([1, 1, 1], [2, 2, 2], [0.0, 0.5, 1.0]), global_rng_on_cpu=False)
    own = draw_noise(like, noise_generators([1, 0, 2]), global_rng_on_cpu=False)
    assert torch.equal(blends[0], own[0]) and torch.equal(blends[2], own[2])
    halfway = blends[1]
    torch.testing.assert_close(halfway, (own[0] + own[2]) / 2**0.5, atol=1e-6, rtol=0)  # cos = sin = 1/sqrt(2)
    assert 0.9 < float(halfway.std()) < 1.1
    # neighbouring keyframes of one seed (seeds 5, 5, 9): that seed's noise, not a blend of it with itself
    same = draw_noise(like[:1], blended_noise([1], [1], [0.5]), global_rng_on_cpu=False)
    assert torch.equal(same[0], own[0])
