"""3x3 convolutions with frozen weights on the CPU, run by whichever of four algorithms is fastest on this machine.

Gatys style transfer spends about 80% of its time in VGG19's 3x3 convolutions, forward and then backward to the
picture, with weights that never change; an AdaIN run on the CPU spends about 87% of its time in the 3x3
convolutions of its encoder and decoder. On CPUs, fast algorithms (fewer multiplications per output) beat torch's
direct oneDNN convolution on most of those layers:
- "nnpack_winograd": NNPACK's Winograd F(6x6, 3x3) on 8x8 tiles, and "nnpack_fft": NNPACK's Fourier transform on
  16x16 tiles, both with the weights transformed once (`studio.models.nnpack`, which calls the NNPACK inside
  torch's CPU library). Measured on 2 AVX2 cores, per call at the sizes of a 256 px Gatys picture (170x256 px):
  64 channels at full size 11.8 ms (Fourier) against 18.7 direct; 256 channels at 1/4 size 7.1 against 17.8;
  512 channels at 1/8 size 7.9 against 18.3 (Winograd). torch's own NNPACK call transforms every weight on every
  call: 16, 11 and 23 ms there.
- "winograd": our Winograd F(4x4, 3x3) in torch's matrix products, with the weights transformed once
  (`winograd_weights`): 10.3 ms on those 512-channel layers; the fallback where NNPACK is missing.
- "direct": torch's own convolution, the reference. It wins VGG's first layer (3 channels in) forward.
Not used: a fifth algorithm for layers with 3 channels on one side (one matrix product and nine shifted copies or
sums) ran VGG's first layer backward at 256 px in 4.0 instead of 7.5 ms and AdaIN's last decoder layer at 512 px in
24 instead of 40 ms, but a Gatys step did not change beyond its noise (0.32-0.33 s); 1% of an AdaIN run did not pay
for another code path.
On 2 AMD EPYC (AVX2) cores direct convolution runs at 170-200 GFLOP/s, close to the cores' peak; the fast algorithms
do the same work in 1.6-2.5x less time. A grouped 1x1 convolution in place of our Winograd's matrix products (to
run them in oneDNN) was 2-10x slower.
The price of transforming once is memory: NNPACK's Winograd keeps 64/9 of the weights' size, its Fourier transform
256/9 and ours 36/9; VGG19's layers up to conv5_1 keep about 0.75 GB, forward and backward, once Gatys has run.
The winner depends on the CPU, the layer and the picture size, so on the first call for an input shape
`FrozenConv3x3` times every algorithm twice on that input and counts each one's faster run (a first call can include
one-off set-up), returns the fastest one's output and uses that algorithm from then on. The trials run on a corner of
a large input (`FrozenConv3x3._trial_input`: at least 64 px a side, more while the layer is cheap): timing every
algorithm on a 512 px AdaIN run whole made its first run 7.4 s instead of 2.5 s. Corners of a fixed 64 px, timed
once, had picked NNPACK for VGG's first layer, where it is twice as slow at full size, and our Winograd for the
512-channel layer at 1/16 scale, where direct is faster: a 256 px Gatys step took 0.326 s with those picks and 0.297 s
with the present trials' (medians of five runs each, taken in turn).
A trial's winner is recorded (`TrialRecord`, in the studio's cache folder) by the layer's channels and the trial's
shape, and reused by every later input with that trial: another layer of the same shape, another photo's aspect
ratio or output size, and later processes on this machine. So results repeat exactly across runs and processes;
with per-process trials, three 30-step Gatys runs at 256 px in three processes gave two different pictures (pixels
up to 31 levels apart), as timing noise picked NNPACK on one layer in one process and Winograd in the others. The
first step of a 512 px Gatys run came 5.1 s after the call with per-layer trials, 3.4 s with shared ones, 2.6 s in
the next process (1.4 s once the style's Grams are cached too; measured with the earlier one-run, 64 px trials).
All four algorithms agree with torch's convolution to about 1e-5 relative (NNPACK's Fourier transform 1e-6).
Such comparisons need idle OpenMP threads to sleep, as `studio` sets up when it is imported before torch: with them
spinning, the trials picked direct or Winograd over NNPACK on several layers and a step took 0.36-0.38 s (measured
with torch's NNPACK call, which runs on a thread pool of its own as `studio.models.nnpack` does).

The gradient with respect to the input of a 3x3 convolution with zero padding p is a convolution of the output
gradient with the weights flipped in space and transposed in channels and padding 2 - p, so the backward pass is
tuned the same way. No gradient flows to the weights: this path is only for frozen ones. AdaIN's layers (reflection
padding, then a convolution without padding) take it too: a 512 px AdaIN run took 1.09 s, against 2.49 s with
direct convolutions and 1.29-1.48 s with torch's NNPACK call.

Users: `TunedConv2d`, the convolutions of `studio.models.vgg.VGG19Features` (Gatys, AdaIN's encoder) and of AdaIN's
decoder. The GAN generators do not use it: on their 1024-2048-channel layers at 4-32 px it gained 8% on a 256 px
Projected-GAN image and cost 2.4 s of timing for every new batch size.
"""

from __future__ import annotations

import functools
import json
import math
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.files import write_text_when_done
from studio.models.nnpack import NnpackAlgorithm, nnpack_available, nnpack_conv3x3, nnpack_kernels

__all__ = [
    "ALGORITHMS",
    "FrozenConv3x3",
    "TunedConv2d",
    "can_use_frozen_conv3x3",
    "winograd_conv3x3",
    "winograd_weights",
]

Algorithm = Literal["direct", "winograd", "nnpack_winograd", "nnpack_fft"]
Direction = Literal["forward", "backward"]
ALGORITHMS: tuple[Algorithm, ...] = ("direct", "winograd", "nnpack_winograd", "nnpack_fft")
_NNPACK_ALGORITHMS: dict[Algorithm, NnpackAlgorithm] = {"nnpack_winograd": "winograd", "nnpack_fft": "fft"}

# Winograd F(4, 3) with interpolation points 0, 1, -1, 2, -2 and infinity (Lavin & Gray 2016): for a 6-sample input
# tile d and a 3-tap filter g, the 4 outputs of the correlation are A^T [(G g) * (B^T d)].
_INPUT_TRANSFORM = (  # B^T
    (4, 0, -5, 0, 1, 0),
    (0, -4, -4, 1, 1, 0),
    (0, 4, -4, -1, 1, 0),
    (0, -2, -1, 2, 1, 0),
    (0, 2, -1, -2, 1, 0),
    (0, 4, 0, -5, 0, 1),
)
_FILTER_TRANSFORM = (  # G
    (1 / 4, 0, 0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0, 0, 1),
)
_OUTPUT_TRANSFORM = (  # A^T
    (1, 1, 1, 1, 1, 0),
    (0, 1, -1, 2, -2, 0),
    (0, 1, 1, 4, 4, 0),
    (0, 1, -1, 8, -8, 1),
)
_TILE = 6  # input tile side
# The algorithms are timed on a corner of a layer's input: at least TRIAL_SIDE pixels a side (or all of a smaller
# input), and larger, up to the whole input, while torch's direct convolution of it stays under TRIAL_FLOPS.
TRIAL_SIDE = 64
TRIAL_FLOPS = 1e9
TRIAL_RULES = 3  # raised whenever the trials change how they choose, so that recorded winners are chosen again
_STEP = 4  # output tile side


@functools.cache
def _transform_2d(rows: tuple[tuple[float, ...], ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """The 1-D transform applied along both axes of a tile, as one matrix acting on row-major flattened tiles."""
    matrix = torch.tensor(rows, dtype=torch.float64)
    return torch.kron(matrix, matrix).to(device=device, dtype=dtype)


def winograd_weights(weight: Tensor) -> Tensor:
    """(K, C, 3, 3) filters -> (36, K, C): G g G^T of each filter, the 36 tile positions first (made in float64)."""
    k, c = weight.shape[:2]
    g = torch.tensor(_FILTER_TRANSFORM, dtype=torch.float64, device=weight.device)
    transformed = torch.kron(g, g) @ weight.double().reshape(k * c, 9).T  # (36, K * C)
    return transformed.view(_TILE * _TILE, k, c).to(weight.dtype)


def winograd_conv3x3(x: Tensor, transformed_weight: Tensor, padding: int = 1) -> Tensor:
    """3x3 convolution (cross-correlation, stride 1, no bias) with zero `padding` by Winograd F(4x4, 3x3).

    x: (N, C, H, W); transformed_weight: (36, K, C) from `winograd_weights`. Returns (N, K, H + 2p - 2, W + 2p - 2).
    """
    n, c, h, w = x.shape
    k = transformed_weight.shape[1]
    out_h, out_w = h + 2 * padding - 2, w + 2 * padding - 2
    if out_h < 1 or out_w < 1:
        raise ValueError(f"a {h}x{w} input with padding {padding} leaves no output of a 3x3 convolution")
    tiles_h, tiles_w = -(-out_h // _STEP), -(-out_w // _STEP)
    # Pad so that the overlapping 6x6 tiles, 4 apart, cover the padded picture exactly.
    right, bottom = _STEP * tiles_w + 2 - w - padding, _STEP * tiles_h + 2 - h - padding
    padded = F.pad(x, (padding, right, padding, bottom))
    tiles = padded.unfold(2, _TILE, _STEP).unfold(3, _TILE, _STEP)  # (N, C, th, tw, 6, 6), a view
    columns = tiles.permute(4, 5, 1, 0, 2, 3).reshape(_TILE * _TILE, -1)  # (36, C * N * th * tw)
    transformed = (_transform_2d(_INPUT_TRANSFORM, x.device, x.dtype) @ columns).view(_TILE * _TILE, c, -1)
    products = torch.bmm(transformed_weight, transformed)  # (36, K, N * th * tw)
    output_transform = _transform_2d(_OUTPUT_TRANSFORM, x.device, x.dtype)
    outputs = output_transform @ products.view(_TILE * _TILE, -1)  # (16, K * N * th * tw)
    outputs = outputs.view(_STEP, _STEP, k, n, tiles_h, tiles_w).permute(3, 2, 4, 0, 5, 1)
    return outputs.reshape(n, k, _STEP * tiles_h, _STEP * tiles_w)[:, :, :out_h, :out_w]


@functools.cache
def _cpu_name() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), name)
    except OSError:
        return name


def _machine_fingerprint() -> str:
    """What a trial's outcome depends on besides the layer's shape: the CPU, the thread count, torch's build and how
    trials are run (TRIAL_RULES: records of an older rule are timed afresh)."""
    return (
        f"{_cpu_name()}; {torch.get_num_threads()} threads; torch {torch.__version__}; nnpack {nnpack_available()}; "
        f"trials {TRIAL_RULES}"
    )


class TrialRecord:
    """The winners of the algorithm trials, shared by every layer of the same shape and kept in
    `convolutions.json` in the studio's cache folder, so that later processes on this machine (the next CLI run, an
    app restart) choose the same algorithms without timing them again and their results repeat exactly.

    The file is tied to `_machine_fingerprint()`: on another CPU, thread count or torch it is ignored and replaced.
    A file that cannot be read or written only costs the trials again.
    """

    FILE_NAME = "convolutions.json"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._winners: dict[str, Algorithm] = {}

    def _file(self) -> Path:
        from studio.weights import studio_cache_dir

        return studio_cache_dir() / self.FILE_NAME

    def _load(self) -> None:
        """(Re)read the file when the cache folder is not the one read last (STUDIO_CACHE_DIR changed)."""
        path = self._file()
        if path == self._path:
            return
        self._path, self._winners = path, {}
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(recorded, dict) and recorded.get("machine") == _machine_fingerprint():
            winners = recorded.get("winners")
            if isinstance(winners, dict):
                self._winners = {key: value for key, value in winners.items() if value in ALGORITHMS}

    def get(self, key: str) -> Algorithm | None:
        with self._lock:
            self._load()
            return self._winners.get(key)

    def put(self, key: str, algorithm: Algorithm) -> None:
        with self._lock:
            self._load()
            self._winners[key] = algorithm
            assert self._path is not None
            record = {"machine": _machine_fingerprint(), "winners": self._winners}
            try:
                write_text_when_done(self._path, json.dumps(record, indent=0, sort_keys=True), make_folder=True)
            except OSError:
                pass  # a read-only cache: the winners stay in memory for this process


TRIALS = TrialRecord()


class FrozenConv3x3:
    """A 3x3, stride 1 convolution whose weights never change, tuned per input shape.

    Wraps an `nn.Conv2d` without copying it; the derived tensors (flipped weights, Winograd transforms) are rebuilt
    when its weights are replaced or changed in place. `padding`: zeros added on each side, 1 ("same" size, as in
    Gatys' VGG) or 0 (after an explicit reflection padding, as in AdaIN's networks); the module's own padding
    setting is not used. Call it like a function: `layer(x)`. Use it only on the CPU in float32 with weights that
    do not require gradients (`can_use_frozen_conv3x3` checks).
    """

    def __init__(self, conv: nn.Conv2d, *, padding: int = 1) -> None:
        if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1:
            raise ValueError("FrozenConv3x3 takes a 3x3 convolution with stride 1, dilation 1 and one group")
        if padding not in (0, 1):
            raise ValueError(f"FrozenConv3x3 pads with 0 or 1 zeros per side, got {padding}")
        self.conv = conv
        # The input gradient of a 3x3 convolution with padding p is a convolution of the output gradient with padding
        # 2 - p: 1 stays 1 ("same"), 0 ("valid") becomes 2 ("full").
        self._padding: dict[Direction, int] = {"forward": padding, "backward": 2 - padding}
        self._source: tuple[Any, ...] = ()
        self._weights: dict[Direction, tuple[Tensor, Tensor | None]] = {}
        # Filters transformed once for the algorithms that take them so ("winograd" and NNPACK's).
        self._transformed: dict[tuple[Algorithm, Direction], Tensor] = {}
        self.chosen: dict[tuple[Direction, tuple[int, ...]], Algorithm] = {}
        self._refresh()

    def __call__(self, x: Tensor) -> Tensor:
        return _FrozenConv3x3Function.apply(x, self)

    def candidates(self) -> tuple[Algorithm, ...]:
        return ALGORITHMS if nnpack_available() else ("direct", "winograd")

    def run(self, direction: Direction, x: Tensor) -> Tensor:
        """The convolution for `direction` ("forward": x -> output; "backward": output gradient -> input gradient)."""
        self._refresh()
        key = (direction, tuple(x.shape))
        chosen = self.chosen.get(key)
        if chosen is not None:
            return self._algorithm(chosen)(direction, x)
        chosen, output = self._fastest(direction, x)
        self.chosen[key] = chosen
        return output

    def _trial_input(self, x: Tensor) -> Tensor:
        """The corner of `x` that the algorithms are timed on (see TRIAL_SIDE and TRIAL_FLOPS): a large input would
        make the trials cost several runs' time, and a small corner misjudges the layers whose time grows unlike
        the corner's (on VGG's first layer at 256 px, NNPACK won on 64 px but took twice direct's time)."""
        height, width = x.shape[-2:]
        flops_per_pixel = 2 * 9 * self.conv.in_channels * self.conv.out_channels * x.shape[0]
        pixels = max(TRIAL_SIDE * TRIAL_SIDE, int(TRIAL_FLOPS // flops_per_pixel))
        if height * width <= pixels:
            return x
        trial_height = min(height, math.isqrt(pixels))
        trial_width = min(width, pixels // trial_height)
        return x[..., :trial_height, :trial_width].contiguous()

    def _fastest(self, direction: Direction, x: Tensor) -> tuple[Algorithm, Tensor]:
        """Time every candidate on `self._trial_input(x)`, unless a trial of that shape was timed before; return the
        fastest and its output on `x`. Each candidate runs twice and counts its faster run: a first call can include
        one-off set-up for the new shape, and single first runs had direct lose layers it wins from then on. A
        candidate that fails is left out."""
        trial = self._trial_input(x)
        conv = self.conv
        shape = "x".join(map(str, trial.shape))
        trial_key = f"{conv.in_channels}-{conv.out_channels} {direction} pad {self._padding[direction]} {shape}"
        trial_key += "" if conv.bias is None or direction == "backward" else " bias"
        best = TRIALS.get(trial_key)
        outputs: dict[Algorithm, Tensor] = {}
        if best is None:
            seconds: dict[Algorithm, float] = {}
            for name in self.candidates():
                runs = []
                try:
                    if name != "direct":
                        self._transformed_filters(name, direction)  # a one-off cost, left out of the timing
                    for _ in range(2):
                        started = time.perf_counter()
                        outputs[name] = self._algorithm(name)(direction, trial)
                        runs.append(time.perf_counter() - started)
                except RuntimeError:
                    if name == "direct":
                        raise
                    continue  # NNPACK refuses some shapes and machines; the others remain
                seconds[name] = min(runs)
            best = min(seconds, key=seconds.__getitem__)
            TRIALS.put(trial_key, best)
        if trial is not x or best not in outputs:
            try:
                outputs[best] = self._algorithm(best)(direction, x)
            except RuntimeError:  # refused at the full size only
                best = "direct"
                outputs[best] = self._direct(direction, x)
        in_use = {best} | {name for (used_for, _), name in self.chosen.items() if used_for == direction}
        for name, used_for in list(self._transformed):  # 4-28x the weights' memory: kept only while a shape uses it
            if used_for == direction and name not in in_use:
                del self._transformed[(name, used_for)]
        return best, outputs[best]

    def _algorithm(self, name: Algorithm) -> Callable[[Direction, Tensor], Tensor]:
        if name == "direct":
            return self._direct
        if name == "winograd":
            return self._winograd_conv
        return functools.partial(self._nnpack, name)

    def _refresh(self) -> None:
        weight = self.conv.weight
        source = (weight.data_ptr(), weight._version, weight.device, weight.dtype, self.conv.bias is None)
        if source != self._source:
            self._source = source
            self._weights.clear()
            self._transformed.clear()
            self.chosen.clear()

    def _filters(self, direction: Direction) -> tuple[Tensor, Tensor | None]:
        if direction not in self._weights:
            weight = self.conv.weight.detach()
            bias = None if self.conv.bias is None else self.conv.bias.detach()
            if direction == "backward":
                weight, bias = weight.transpose(0, 1).flip(2, 3).contiguous(), None
            self._weights[direction] = (weight, bias)
        return self._weights[direction]

    def _direct(self, direction: Direction, x: Tensor) -> Tensor:
        weight, bias = self._filters(direction)
        return F.conv2d(x, weight, bias, padding=self._padding[direction])

    def _transformed_filters(self, name: Algorithm, direction: Direction) -> Tensor:
        if (name, direction) not in self._transformed:
            weight = self._filters(direction)[0]
            if name == "winograd":
                self._transformed[(name, direction)] = winograd_weights(weight)
            else:
                self._transformed[(name, direction)] = nnpack_kernels(weight, _NNPACK_ALGORITHMS[name])
        return self._transformed[(name, direction)]

    def _winograd_conv(self, direction: Direction, x: Tensor) -> Tensor:
        output = winograd_conv3x3(x, self._transformed_filters("winograd", direction), self._padding[direction])
        bias = self._filters(direction)[1]
        return output if bias is None else output + bias.view(1, -1, 1, 1)

    def _nnpack(self, name: Algorithm, direction: Direction, x: Tensor) -> Tensor:
        weight, bias = self._filters(direction)
        kernels = self._transformed_filters(name, direction)
        padding = self._padding[direction]
        return nnpack_conv3x3(x, kernels, weight.shape[0], _NNPACK_ALGORITHMS[name], padding=padding, bias=bias)


class _FrozenConv3x3Function(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, layer: FrozenConv3x3) -> Tensor:
        ctx.layer = layer
        return layer.run("forward", x.contiguous())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return ctx.layer.run("backward", grad.contiguous()), None


def can_use_frozen_conv3x3(conv: nn.Conv2d, x: Tensor) -> bool:
    """Whether `FrozenConv3x3` may stand in for `conv` on input `x`: CPU, float32, weights without gradients."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and conv.weight.dtype == torch.float32
        and not conv.weight.requires_grad
        and (conv.bias is None or not conv.bias.requires_grad)
    )


class TunedConv2d(nn.Conv2d):
    """An `nn.Conv2d` (3x3, stride 1, zero padding 0 or 1, one group) that runs through `FrozenConv3x3` where
    `can_use_frozen_conv3x3` allows and no hook rewrites its weight on each call (old-style spectral norm);
    otherwise exactly as `nn.Conv2d`. Same parameters and state-dict keys as `nn.Conv2d`."""

    def __init__(self, in_channels: int, out_channels: int, *, padding: int = 0, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 3, padding=padding, bias=bias)
        if padding not in (0, 1):
            raise ValueError(f"TunedConv2d pads with 0 or 1 zeros per side, got {padding}")
        self._frozen: FrozenConv3x3 | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self._forward_pre_hooks or not can_use_frozen_conv3x3(self, x):
            return super().forward(x)
        if self._frozen is None:
            self._frozen = FrozenConv3x3(self, padding=self.padding[0])
        return self._frozen(x)
