"""The binding to NNPACK inside torch: kernels transformed once, then convolutions equal to torch's."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import studio.models.nnpack as nnpack
from studio.models.fast_conv import FrozenConv3x3
from studio.models.nnpack import NnpackAlgorithm, nnpack_available, nnpack_conv3x3, nnpack_kernels

needs_nnpack = pytest.mark.skipif(not nnpack_available(), reason="this torch build has no NNPACK")
ALGORITHMS: tuple[NnpackAlgorithm, ...] = ("winograd", "fft")


@needs_nnpack
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(("batch", "channels", "filters", "height", "width"), [(1, 3, 8, 17, 23), (2, 16, 5, 9, 30)])
def test_each_algorithm_equals_torch_for_every_padding(
    algorithm: NnpackAlgorithm, batch: int, channels: int, filters: int, height: int, width: int
) -> None:
    generator = torch.Generator().manual_seed(height * width)
    x = torch.randn(batch, channels, height, width, generator=generator)
    weight, bias = torch.randn(filters, channels, 3, 3, generator=generator), torch.randn(filters, generator=generator)
    kernels = nnpack_kernels(weight, algorithm)
    for padding in (0, 1, 2):  # valid (after a reflection padding), same size, full (valid's input gradient)
        for with_bias in (bias, None):
            output = nnpack_conv3x3(x, kernels, filters, algorithm, padding=padding, bias=with_bias)
            expected = F.conv2d(x, weight, with_bias, padding=padding)
            assert output.shape == expected.shape
            assert torch.allclose(output, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


@needs_nnpack
def test_one_kernel_transform_serves_inputs_of_every_size() -> None:
    generator = torch.Generator().manual_seed(5)
    weight = torch.randn(4, 6, 3, 3, generator=generator)
    kernels = nnpack_kernels(weight, "winograd")
    for height, width in ((40, 33), (5, 5), (1, 64)):
        x = torch.randn(1, 6, height, width, generator=generator)
        expected = F.conv2d(x, weight, padding=1)
        assert torch.allclose(nnpack_conv3x3(x, kernels, 4, "winograd", padding=1), expected, atol=1e-4)


@needs_nnpack
def test_an_input_too_small_for_any_output_is_refused() -> None:
    kernels = nnpack_kernels(torch.randn(2, 2, 3, 3), "winograd")
    with pytest.raises(ValueError, match="leaves no output"):
        nnpack_conv3x3(torch.randn(1, 2, 2, 5), kernels, 2, "winograd", padding=0)


@needs_nnpack
def test_threads_may_convolve_at_once() -> None:
    """The app runs jobs in worker threads, which share NNPACK's one thread pool."""
    generator = torch.Generator().manual_seed(7)
    weight = torch.randn(16, 8, 3, 3, generator=generator)
    kernels = {algorithm: nnpack_kernels(weight, algorithm) for algorithm in ALGORITHMS}
    inputs = [torch.randn(1, 8, 40, 36, generator=generator) for _ in range(8)]

    def convolve(index: int) -> Tensor:
        algorithm = ALGORITHMS[index % 2]
        return nnpack_conv3x3(inputs[index], kernels[algorithm], 16, algorithm, padding=1)

    one_at_a_time = [convolve(index) for index in range(len(inputs))]
    for x, output in zip(inputs, one_at_a_time, strict=True):
        expected = F.conv2d(x, weight, padding=1)
        assert torch.allclose(output, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(5):
            at_once = list(pool.map(convolve, range(len(inputs))))
            assert all(torch.equal(a, b) for a, b in zip(at_once, one_at_a_time, strict=True))


def test_without_nnpack_the_tuned_convolutions_use_the_other_algorithms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.nnpack, "is_available", lambda: False)
    monkeypatch.setattr(nnpack, "_binding", None)
    monkeypatch.setattr(nnpack, "_unavailable", False)
    assert not nnpack_available()
    with pytest.raises(RuntimeError, match="NNPACK is not available"):
        nnpack_kernels(torch.randn(2, 2, 3, 3), "winograd")
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).requires_grad_(False)
    layer = FrozenConv3x3(conv)
    assert layer.candidates() == ("direct", "winograd")
    x = torch.randn(1, 3, 10, 10)
    with torch.no_grad():
        assert torch.allclose(layer(x), conv(x), atol=1e-5)
