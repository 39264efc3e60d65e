"""Fixtures shared by the unit tests: sample pictures and AdaIN weights in the official layout."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from studio.loader import ADAIN_ENCODER_CONV_INDICES
from studio.models.adain import AdaINDecoder
from studio.models.vgg import CONV_NAMES, VGG19Features


@pytest.fixture
def photo(shared_data) -> Image.Image:
    return Image.open(shared_data / "content" / "chelsea.png").convert("RGB").resize((96, 64))


@pytest.fixture
def painting(shared_data) -> Image.Image:
    return Image.open(shared_data / "styles" / "woman_with_hat_matisse.jpg").convert("RGB").resize((64, 80))


@pytest.fixture
def adain_weights(tmp_path, monkeypatch) -> None:
    """Seeded random AdaIN weights in the official file layouts, dropped into weights/<name>/ as a user would."""
    torch.manual_seed(0)
    encoder = VGG19Features("adain")
    official = {"0.weight": encoder.input_conv.weight, "0.bias": encoder.input_conv.bias}
    for name, index in zip(CONV_NAMES, ADAIN_ENCODER_CONV_INDICES, strict=True):
        official[f"{index}.weight"] = encoder.convs[name].weight
        official[f"{index}.bias"] = encoder.convs[name].bias
    decoder = {key.removeprefix("layers."): value for key, value in AdaINDecoder().state_dict().items()}
    weights = tmp_path / "weights"
    (weights / "adain-encoder").mkdir(parents=True)
    (weights / "adain-decoder").mkdir(parents=True)
    torch.save({k: v.detach().clone() for k, v in official.items()}, weights / "adain-encoder" / "vgg_normalised.pth")
    torch.save(decoder, weights / "adain-decoder" / "decoder.pth")
    monkeypatch.setenv("STUDIO_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
