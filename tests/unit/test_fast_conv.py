"""Tuned 3x3 convolutions for frozen weights: each algorithm equals torch's convolution, forward and backward."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.models.adain import AdaINDecoder
from studio.models.fast_conv import (
    ALGORITHMS,
    FrozenConv3x3,
    TunedConv2d,
    can_use_frozen_conv3x3,
    winograd_conv3x3,
    winograd_weights,
)
from studio.models.nnpack import nnpack_available
from studio.models.vgg import VGG19Features

NNPACK = nnpack_available()
AVAILABLE = [name for name in ALGORITHMS if NNPACK or not name.startswith("nnpack")]
METHODS = {"direct": "_direct", "winograd": "_winograd_conv", "nnpack_winograd": "_nnpack", "nnpack_fft": "_nnpack"}


def _close(value: Tensor, expected: Tensor, tolerance: float = 1e-4) -> bool:
    value, expected = value.detach(), expected.detach()
    return float((value - expected).abs().max()) <= tolerance * float(expected.abs().max())


def _tuned_layers(network: nn.Module) -> list[FrozenConv3x3]:
    """The tuned convolutions of `network`'s TunedConv2d modules that have run the tuned path."""
    return [module._frozen for module in network.modules() if isinstance(module, TunedConv2d) and module._frozen]


def _frozen_conv(in_channels: int, out_channels: int, seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(in_channels, out_channels, 3, padding=1).requires_grad_(False)


@pytest.mark.parametrize(
    ("batch", "channels", "filters", "height", "width"),
    [(1, 3, 8, 17, 23), (2, 8, 5, 9, 4), (1, 4, 4, 1, 1), (3, 6, 2, 8, 8), (1, 16, 16, 5, 13)],
)
def test_winograd_equals_direct_convolution(batch: int, channels: int, filters: int, height: int, width: int) -> None:
    torch.manual_seed(height * width)
    x, weight = torch.randn(batch, channels, height, width), torch.randn(filters, channels, 3, 3)
    for padding in (1, 0, 2):  # same size, valid (after a reflection padding), full (valid's input gradient)
        if min(height, width) + 2 * padding < 3:
            with pytest.raises(ValueError, match="leaves no output"):
                winograd_conv3x3(x, winograd_weights(weight), padding)
            continue
        output = winograd_conv3x3(x, winograd_weights(weight), padding)
        expected = F.conv2d(x, weight, padding=padding)
        assert output.shape == expected.shape
        assert _close(output, expected), padding


def test_winograd_weights_of_a_centre_tap_pass_the_input_through() -> None:
    weight = torch.zeros(2, 2, 3, 3)
    weight[0, 0, 1, 1] = weight[1, 1, 1, 1] = 1.0  # identity filter
    x = torch.randn(1, 2, 7, 6)
    assert winograd_weights(weight).shape == (36, 2, 2)
    assert torch.allclose(winograd_conv3x3(x, winograd_weights(weight)), x, atol=1e-5)


@pytest.mark.parametrize("padding", [1, 0])
@pytest.mark.parametrize("algorithm", AVAILABLE)
def test_each_algorithm_gives_the_convolution_and_its_input_gradient(algorithm: str, padding: int) -> None:
    conv = _frozen_conv(6, 10)
    layer = FrozenConv3x3(conv, padding=padding)
    x = torch.randn(2, 6, 11, 14)
    out_shape = (2, 10, 9 + 2 * padding, 12 + 2 * padding)
    for direction, shape in (("forward", x.shape), ("backward", out_shape)):
        layer.chosen[(direction, tuple(shape))] = algorithm  # skip the trials
    upstream = torch.randn(out_shape)

    fast_input = x.clone().requires_grad_(True)
    output = layer(fast_input)
    (output * upstream).sum().backward()
    assert set(layer.chosen.values()) == {algorithm}
    reference_input = x.clone().requires_grad_(True)
    expected = F.conv2d(reference_input, conv.weight, conv.bias, padding=padding)
    (expected * upstream).sum().backward()

    assert _close(output, expected)
    assert fast_input.grad is not None and reference_input.grad is not None
    assert _close(fast_input.grad, reference_input.grad)


def test_the_first_call_for_a_shape_chooses_an_algorithm_and_later_calls_repeat_it() -> None:
    conv = _frozen_conv(4, 4)
    layer = FrozenConv3x3(conv)
    x = torch.randn(1, 4, 12, 12)
    candidates = layer.candidates()
    assert candidates == tuple(AVAILABLE)
    with torch.no_grad():
        first = layer(x)
        assert layer.chosen[("forward", (1, 4, 12, 12))] in candidates
        assert torch.equal(layer(x), first)
        layer(torch.randn(2, 4, 12, 12))
    assert set(layer.chosen) == {("forward", (1, 4, 12, 12)), ("forward", (2, 4, 12, 12))}
    assert _close(first, F.conv2d(x, conv.weight, conv.bias, padding=1))


def test_a_failing_candidate_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: FrozenConv3x3, *arguments: object) -> Tensor:
        raise RuntimeError("NNPACK refused the convolution of a 9x9 input (nnp_status 20)")

    monkeypatch.setattr(FrozenConv3x3, "_nnpack", refuse)
    monkeypatch.setattr(FrozenConv3x3, "_winograd_conv", refuse)
    conv = _frozen_conv(3, 4)
    x = torch.randn(1, 3, 9, 9)
    with torch.no_grad():
        output = FrozenConv3x3(conv)(x)
    assert _close(output, F.conv2d(x, conv.weight, conv.bias, padding=1))


def test_changed_weights_are_picked_up() -> None:
    conv = _frozen_conv(3, 5)
    layer = FrozenConv3x3(conv)
    x = torch.randn(1, 3, 8, 8)
    layer.chosen[("forward", tuple(x.shape))] = "winograd"
    with torch.no_grad():
        before = layer(x)  # transforms the weights once and keeps them
        conv.weight.mul_(-2.0)
        assert _close(layer(x), -2.0 * (before - conv.bias.view(1, -1, 1, 1)) + conv.bias.view(1, -1, 1, 1))
        conv.load_state_dict({"weight": torch.randn(5, 3, 3, 3), "bias": torch.randn(5)})
        assert _close(layer(x), F.conv2d(x, conv.weight, conv.bias, padding=1))


def test_only_frozen_float32_cpu_weights_take_the_tuned_path() -> None:
    conv = nn.Conv2d(3, 4, 3)
    x = torch.randn(1, 3, 8, 8)
    assert not can_use_frozen_conv3x3(conv, x)  # trainable weights: no gradient would reach them
    conv.requires_grad_(False)
    assert can_use_frozen_conv3x3(conv, x)
    assert not can_use_frozen_conv3x3(conv, x.double())
    with pytest.raises(ValueError, match="3x3 convolution"):
        FrozenConv3x3(nn.Conv2d(3, 4, 3, stride=2))
    with pytest.raises(ValueError, match="pads with 0 or 1 zeros"):
        FrozenConv3x3(conv, padding=2)


@pytest.mark.parametrize(
    ("preprocessing", "algorithm"), [("caffe", "winograd"), ("imagenet", "nnpack_winograd"), ("caffe", "nnpack_fft")]
)
def test_vgg_features_and_picture_gradient_agree_with_direct_convolution(preprocessing: str, algorithm: str) -> None:
    if algorithm not in AVAILABLE:
        pytest.skip("this torch build has no NNPACK")
    torch.manual_seed(1)
    vgg = VGG19Features(preprocessing)
    for conv in vgg.convs.values():
        nn.init.normal_(conv.weight, std=(2.0 / (9 * conv.in_channels)) ** 0.5)
    vgg.requires_grad_(False)
    picture = torch.rand(1, 3, 48, 40)
    taps = ("relu1_1", "relu3_1", "relu4_2", "relu5_1")

    def features_and_gradient() -> tuple[dict[str, Tensor], Tensor]:
        x = picture.clone().requires_grad_(True)
        found = vgg(x, taps)
        sum(feature.square().mean() for feature in found.values()).backward()
        assert x.grad is not None
        return found, x.grad

    features_and_gradient()  # chooses an algorithm per layer and direction
    assert len(_tuned_layers(vgg)) == 13 and all(len(layer.chosen) == 2 for layer in _tuned_layers(vgg))
    for layer in _tuned_layers(vgg):
        layer.chosen = dict.fromkeys(layer.chosen, algorithm)
    fast, fast_gradient = features_and_gradient()
    vgg.convolution = "direct"
    direct, direct_gradient = features_and_gradient()
    for tap in taps:
        assert _close(fast[tap], direct[tap]), tap
    assert _close(fast_gradient, direct_gradient, 1e-3)


def test_vgg_with_trainable_weights_keeps_weight_gradients() -> None:
    vgg = VGG19Features("caffe")
    vgg(torch.rand(1, 3, 32, 32), ("relu1_2",))["relu1_2"].sum().backward()
    assert vgg.convs["conv1_1"].weight.grad is not None
    assert not _tuned_layers(vgg)


@pytest.mark.parametrize("algorithm", AVAILABLE)
def test_adain_encoder_and_decoder_agree_with_direct_convolution(algorithm: str) -> None:
    """AdaIN's networks pad by reflection and then convolve without padding: the tuned path takes those too."""
    torch.manual_seed(2)
    encoder, decoder = VGG19Features("adain"), AdaINDecoder()
    for network in (encoder, decoder):
        for conv in network.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.normal_(conv.weight, std=(2.0 / (conv.in_channels * conv.kernel_size[0] ** 2)) ** 0.5)
        network.requires_grad_(False)
    plain_decoder = copy.deepcopy(decoder)
    for conv in plain_decoder.modules():
        if isinstance(conv, TunedConv2d):
            conv.__class__ = nn.Conv2d  # torch's own convolution, for reference
    picture = torch.rand(1, 3, 40, 48)

    def stylized(decoder: nn.Module) -> Tensor:
        with torch.inference_mode():
            return decoder(encoder(picture, ("relu4_1",))["relu4_1"])

    stylized(decoder)  # chooses an algorithm per layer
    tuned = [module._frozen for module in decoder.modules() if isinstance(module, TunedConv2d)]
    assert len(_tuned_layers(encoder)) == len(tuned) == 9 and None not in tuned  # conv1_1 ... conv4_1, mirrored
    for layer in (*_tuned_layers(encoder), *tuned):
        layer.chosen = dict.fromkeys(layer.chosen, algorithm)
    fast = stylized(decoder)
    encoder.convolution = "direct"
    assert fast.shape == (1, 3, 40, 48) and _close(fast, stylized(plain_decoder))


def test_a_tuned_conv2d_is_an_nn_conv2d_that_steps_aside_when_it_cannot_help() -> None:
    torch.manual_seed(3)
    tuned = TunedConv2d(3, 4, padding=1)
    plain = nn.Conv2d(3, 4, 3, padding=1)
    plain.load_state_dict(tuned.state_dict())  # the same keys
    x = torch.randn(1, 3, 12, 12)
    assert _close(tuned(x), plain(x)) and tuned._frozen is None  # trainable weights: torch's path, gradients flow
    tuned.requires_grad_(False)
    with torch.inference_mode():
        assert _close(tuned(x), plain(x)) and tuned._frozen is not None
    normed = nn.utils.spectral_norm(TunedConv2d(4, 4, padding=1)).eval().requires_grad_(False)
    with torch.inference_mode():
        normed(torch.randn(1, 4, 8, 8))
    assert normed._frozen is None  # its hook writes a new weight on every call: no tuning against it
    with pytest.raises(ValueError, match="pads with 0 or 1 zeros"):
        TunedConv2d(3, 4, padding=2)


def _record_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[int, ...]]]:
    """(algorithm, input height and width) of every convolution that runs from now on."""
    calls: list[tuple[str, tuple[int, ...]]] = []
    for name in set(METHODS.values()):
        original = getattr(FrozenConv3x3, name)

        def recording(self: FrozenConv3x3, *arguments: Any, original=original, name=name) -> Tensor:
            calls.append((name, tuple(arguments[-1].shape[-2:])))  # the input is the last argument
            return original(self, *arguments)

        monkeypatch.setattr(FrozenConv3x3, name, recording)
    return calls


def test_large_inputs_are_timed_on_a_corner_and_the_winner_runs_on_the_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    import studio.models.fast_conv as fast_conv

    monkeypatch.setattr(fast_conv, "TRIAL_SIDE", 8)
    monkeypatch.setattr(fast_conv, "TRIAL_FLOPS", 0)  # corners of TRIAL_SIDE, however cheap the layer
    seen = _record_calls(monkeypatch)
    conv = _frozen_conv(3, 4)
    x = torch.randn(1, 3, 20, 12)
    with torch.no_grad():
        output = FrozenConv3x3(conv)(x)
    *trials, (_, run_shape) = seen
    assert all(shape == (8, 8) for _, shape in trials)
    assert {name for name, _ in trials} >= {"_direct", "_winograd_conv"}
    assert run_shape == (20, 12) and _close(output, F.conv2d(x, conv.weight, conv.bias, padding=1))


def test_an_input_with_an_already_timed_corner_reuses_that_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    import studio.models.fast_conv as fast_conv

    monkeypatch.setattr(fast_conv, "TRIAL_SIDE", 8)
    monkeypatch.setattr(fast_conv, "TRIAL_FLOPS", 0)  # corners of TRIAL_SIDE, however cheap the layer
    calls = _record_calls(monkeypatch)
    conv = _frozen_conv(3, 4)
    layer = FrozenConv3x3(conv)
    with torch.no_grad():
        layer(torch.randn(1, 3, 20, 12))
        winner = layer.chosen[("forward", (1, 3, 20, 12))]
        calls.clear()
        x = torch.randn(1, 3, 9, 30)  # another shape, the same 8 x 8 corner: no new trials
        output = layer(x)
        assert [shape for _, shape in calls] == [(9, 30)] and layer.chosen[("forward", (1, 3, 9, 30))] == winner
        calls.clear()
        layer(torch.randn(1, 3, 6, 30))  # 6 rows: a 6 x 10 corner (8 x 8's pixels), timed afresh
    assert {shape for _, shape in calls} == {(6, 10), (6, 30)} and len(calls) >= 3
    assert _close(output, F.conv2d(x, conv.weight, conv.bias, padding=1))


def test_layers_of_one_shape_share_trials_and_a_new_process_reuses_them(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import studio.models.fast_conv as fast_conv
    from studio.weights import studio_cache_dir

    calls = _record_calls(monkeypatch)
    x = torch.randn(1, 3, 10, 10)
    with torch.no_grad():
        first = FrozenConv3x3(_frozen_conv(3, 4, seed=1))
        first(x)
        winner = first.chosen[("forward", (1, 3, 10, 10))]
        assert len(calls) >= 2  # timed
        calls.clear()
        FrozenConv3x3(_frozen_conv(3, 4, seed=2))(x)  # other weights, the same shape
        assert calls == [(METHODS[winner], (10, 10))]

        recorded = json.loads((studio_cache_dir() / "convolutions.json").read_text())
        assert recorded["winners"] == {"3-4 forward pad 1 1x3x10x10 bias": winner}
        assert f"{torch.get_num_threads()} threads; torch {torch.__version__}" in recorded["machine"]
        monkeypatch.setattr(fast_conv, "TRIALS", fast_conv.TrialRecord())  # as a new process starts
        calls.clear()
        again = FrozenConv3x3(_frozen_conv(3, 4, seed=1))
        assert torch.equal(again(x), first(x)) and len(calls) == 2  # no trials: one run each
        assert again.chosen[("forward", (1, 3, 10, 10))] == winner


@pytest.mark.parametrize("contents", ['{"machine": "another CPU", "winners": {}}', "{not json", ""])
def test_a_record_from_another_machine_or_unreadable_is_timed_afresh(
    monkeypatch: pytest.MonkeyPatch, contents: str
) -> None:
    import json

    import studio.models.fast_conv as fast_conv
    from studio.weights import studio_cache_dir

    record_file = studio_cache_dir() / "convolutions.json"
    record_file.parent.mkdir(parents=True, exist_ok=True)
    record_file.write_text(contents.replace("{}", '{"3-4 forward pad 1 1x3x10x10 bias": "direct"}'))
    monkeypatch.setattr(fast_conv, "TRIALS", fast_conv.TrialRecord())
    calls = _record_calls(monkeypatch)
    with torch.no_grad():
        FrozenConv3x3(_frozen_conv(3, 4))(torch.randn(1, 3, 10, 10))
    assert len(calls) >= 3  # every candidate timed, then nothing more (the trial input is the whole input)
    assert json.loads(record_file.read_text())["machine"] == fast_conv._machine_fingerprint()


def test_an_unwritable_cache_folder_only_costs_the_trials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import studio.models.fast_conv as fast_conv

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("STUDIO_CACHE_DIR", str(blocker))
    monkeypatch.setattr(fast_conv, "TRIALS", fast_conv.TrialRecord())
    conv = _frozen_conv(3, 4)
    x = torch.randn(1, 3, 10, 10)
    with torch.no_grad():
        assert _close(FrozenConv3x3(conv)(x), F.conv2d(x, conv.weight, conv.bias, padding=1))
        calls = _record_calls(monkeypatch)
        FrozenConv3x3(conv)(x)
    assert len(calls) == 1  # remembered in memory for this process


def test_a_winner_that_fails_on_the_whole_input_gives_way_to_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    import studio.models.fast_conv as fast_conv

    monkeypatch.setattr(fast_conv, "TRIAL_SIDE", 8)
    monkeypatch.setattr(fast_conv, "TRIAL_FLOPS", 0)  # corners of TRIAL_SIDE, however cheap the layer

    def fast_on_corners_only(self: FrozenConv3x3, *arguments: Any) -> Tensor:
        x = arguments[-1]
        if x.shape[-1] > 8:
            raise RuntimeError("NNPACK refused the convolution of a 16x16 input (nnp_status 20)")
        return torch.zeros(x.shape[0], 4, *x.shape[-2:])

    def slow(self: FrozenConv3x3, direction: str, x: Tensor) -> Tensor:
        time.sleep(0.05)
        return F.conv2d(x, *self._filters(direction), padding=1)

    monkeypatch.setattr(FrozenConv3x3, "_nnpack", fast_on_corners_only)
    monkeypatch.setattr(FrozenConv3x3, "_winograd_conv", fast_on_corners_only)
    monkeypatch.setattr(FrozenConv3x3, "_direct", slow)
    conv = _frozen_conv(3, 4)
    layer = FrozenConv3x3(conv)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        output = layer(x)
    assert layer.chosen[("forward", (1, 3, 16, 16))] == "direct"
    assert _close(output, F.conv2d(x, conv.weight, conv.bias, padding=1))


@pytest.mark.parametrize(
    ("shape", "budget", "trial"),
    [
        ((1, 3, 100, 100), 1e9, (100, 100)),  # cheap: timed whole
        ((1, 3, 100, 100), 216 * 600, (24, 25)),  # 600 pixels' worth: a 24 x 25 corner
        ((1, 3, 10, 300), 216 * 600, (10, 60)),  # a short input: the corner widens instead
        ((2, 3, 100, 100), 216 * 600, (17, 17)),  # a batch of two costs twice a picture: 300 pixels
    ],
)
def test_trials_grow_the_corner_while_the_layer_is_cheap(
    monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...], budget: float, trial: tuple[int, int]
) -> None:
    import studio.models.fast_conv as fast_conv

    monkeypatch.setattr(fast_conv, "TRIAL_SIDE", 16)
    monkeypatch.setattr(fast_conv, "TRIAL_FLOPS", budget)
    layer = FrozenConv3x3(_frozen_conv(3, 4))  # 2 * 9 * 3 * 4 = 216 FLOPs a pixel
    x = torch.randn(shape)
    corner = layer._trial_input(x)
    assert tuple(corner.shape[-2:]) == trial and torch.equal(corner, x[..., : trial[0], : trial[1]])


def test_each_candidate_counts_its_faster_of_two_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first call with one-off set-up must not lose the trial for an algorithm that is faster from then on."""
    import studio.models.fast_conv as fast_conv

    monkeypatch.setattr(fast_conv, "TRIALS", fast_conv.TrialRecord())
    first_calls: set[str] = set()

    def timed_as(name: str, first: float, later: float):
        def run(self: FrozenConv3x3, direction: str, x: Tensor) -> Tensor:
            time.sleep(later if name in first_calls else first)
            first_calls.add(name)
            return F.conv2d(x, *self._filters(direction), padding=1)

        return run

    monkeypatch.setattr(FrozenConv3x3, "candidates", lambda self: ("direct", "winograd"))
    monkeypatch.setattr(FrozenConv3x3, "_direct", timed_as("direct", first=0.2, later=0.0))
    monkeypatch.setattr(FrozenConv3x3, "_winograd_conv", timed_as("winograd", first=0.05, later=0.05))
    layer = FrozenConv3x3(_frozen_conv(3, 4))
    with torch.no_grad():
        layer(torch.randn(1, 3, 10, 10))
    assert layer.chosen[("forward", (1, 3, 10, 10))] == "direct"


def test_records_of_an_older_trial_rule_are_timed_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    import studio.models.fast_conv as fast_conv

    fingerprint = fast_conv._machine_fingerprint()
    assert fingerprint.endswith(f"trials {fast_conv.TRIAL_RULES}")
    monkeypatch.setattr(fast_conv, "TRIAL_RULES", fast_conv.TRIAL_RULES + 1)
    assert fast_conv._machine_fingerprint() != fingerprint
