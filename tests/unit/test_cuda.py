"""On a CUDA GPU the studio makes the same pictures as on the CPU: generation and walks (bf16 autocast on CUDA),
Gatys and AdaIN (cuDNN's TF32 convolutions), and a training run (bf16, channels_last). Each result is compared with
the CPU's at a tolerance that allows for those number formats. CI has no GPU, so these are skipped there; on a GPU
machine run `python -m pytest tests/unit/test_cuda.py`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio import Studio
from tests.frames import zip_frames

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")


def unit_pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255


@pytest.fixture(scope="module")
def studios() -> dict[str, Studio]:
    return {"cpu": Studio(device="cpu"), "cuda": Studio(device="cuda")}


def test_generation_matches_the_cpu(studios: dict[str, Studio]) -> None:
    asked = dict(model="omniart-eyes", seeds=[0, 1, 2, 3], psi=0.7, class_name="blue", directions={0: 1.5})
    cpu, cuda = studios["cpu"].generate(**asked), studios["cuda"].generate(**asked)
    assert cuda.seeds == cpu.seeds and torch.equal(cuda.latents, cpu.latents)
    for ours, reference in zip(cuda.images, cpu.images, strict=True):
        difference = np.abs(unit_pixels(ours) - unit_pixels(reference))
        assert difference.mean() < 0.01 and np.quantile(difference, 0.99) < 0.06


def test_walk_matches_the_cpu(studios: dict[str, Studio], tmp_path: Path) -> None:
    asked = dict(model="omniart-eyes", seeds=[3, 14], frames=6, loop=True, format="zip")
    cpu = zip_frames(studios["cpu"].walk(**asked, out=tmp_path / "cpu.zip").path)
    cuda = zip_frames(studios["cuda"].walk(**asked, out=tmp_path / "cuda.zip").path)
    assert len(cuda) == len(cpu) == 6
    for ours, reference in zip(cuda, cpu, strict=True):
        assert np.abs(ours.astype(np.float32) - reference).mean() / 255 < 0.01


def test_gatys_matches_the_cpu(studios: dict[str, Studio], photo: Image.Image, painting: Image.Image) -> None:
    from studio.ops.style_transfer import GatysSettings, stylize_gatys

    settings = GatysSettings(size=64, steps=10)
    results = {
        device: stylize_gatys(content=photo, styles=[painting], vgg=studio.load("vgg19-caffe"), settings=settings)
        for device, studio in studios.items()
    }
    cpu, cuda = results["cpu"].history, results["cuda"].history
    assert results["cuda"].image.size == results["cpu"].image.size == (64, 43)
    # the same start picture, then one step of a fixed size along the gradient: the loss and its gradient agree
    assert cuda[0]["loss"] == pytest.approx(cpu[0]["loss"], rel=1e-3)
    assert cuda[1]["loss"] == pytest.approx(cpu[1]["loss"], rel=1e-2)
    # later steps amplify rounding differences (TF32 here, the CPU's own convolution choice there), so only the
    # progress is compared: both runs must cut the loss alike
    best = {device: min(entry["loss"] for entry in history) for device, history in (("cpu", cpu), ("cuda", cuda))}
    assert best["cuda"] < 0.5 * cuda[0]["loss"]
    assert best["cuda"] == pytest.approx(best["cpu"], rel=0.15)


def test_adain_matches_the_cpu(
    adain_weights: None, studios: dict[str, Studio], photo: Image.Image, painting: Image.Image
) -> None:
    mask = Image.new("L", photo.size, 0)
    mask.paste(255, (0, 0, photo.size[0] // 2, photo.size[1]))
    asked = dict(content=photo, styles=[painting, photo], method="adain", size=96, strength=0.8, mask=mask)
    # fresh studios: the module-scoped ones may have cached weights from another test's weights folder
    cpu, cuda = Studio(device="cpu").stylize(**asked), Studio(device="cuda").stylize(**asked)
    assert cuda.image.size == cpu.image.size == (96, 64)
    assert np.abs(unit_pixels(cuda.image) - unit_pixels(cpu.image)).mean() < 0.005


def test_training_runs_on_the_gpu_and_exports_a_loadable_model(tmp_path: Path) -> None:
    from studio.loader import load_model
    from studio.training import make_train_config, train
    from studio.weights import discover_local_models

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for index in range(8):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(data / f"{index}.png")
    weights = tmp_path / "weights"
    config = make_train_config(
        data=data, out=weights / "gpu", size=16, batch_size=4, z_dim=8, g_channels=4, d_channels=4, steps=6,
        sample_every=0, checkpoint_every=0, sample_count=4, metric_samples=0, progress_bar=False,
    )  # fmt: skip
    torch.cuda.reset_peak_memory_stats()
    result = train(config)
    assert torch.cuda.max_memory_allocated() > 0, "training should run on the GPU when there is one"
    assert result.step == 6 and all(math.isfinite(value) for value in result.losses.values())
    model = load_model({spec.name: spec for spec in discover_local_models(weights)}["gpu"])
    with torch.inference_mode():
        images = model(torch.randn(2, 8))
    assert images.shape == (2, 3, 16, 16) and images.abs().max() <= 1 and images.std() > 0
