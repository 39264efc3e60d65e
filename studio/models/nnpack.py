"""NNPACK's single-image 3x3 convolution with the kernels transformed once, through the NNPACK inside torch.

torch's CPU wheels carry NNPACK, but `torch._nnpack_spatial_convolution` asks it to transform every kernel on every
call: on VGG19's 512-channel layers at 1/8 of a 256 px picture that transform took 14 of a call's 22 ms (NNPACK's own
profile, 2 AVX2 cores), which is why NNPACK lost those layers to direct convolution. NNPACK's C function
`nnp_convolution_inference` can also transform the kernels once ("precompute") and take them transformed on later
calls ("reuse"); torch does not expose that, so this module calls the function in torch's CPU library through
ctypes. Measured per call there, against torch's NNPACK call: 7.7 instead of 23.7 ms (512 channels, 21x32 px),
6.9 instead of 11.0 ms (256 channels, 42x64 px), and with NNPACK's 16x16 Fourier tiles 11.7 instead of 15.6 ms
(64 channels, 170x256 px). The price is memory: Winograd's 8x8 tiles keep 64/9 of the weights' size, the Fourier
tiles 256/9 (67 and 268 MB for one 512x512-channel layer).

Two algorithms (`NnpackAlgorithm`): "winograd", Winograd F(6x6, 3x3) on 8x8 tiles, and "fft", the Fourier transform
on 16x16 tiles. Both agree with torch's convolution to about 1e-5 relative. The binding checks that torch's library
exports the two functions it needs; where it does not (or torch has no NNPACK), `nnpack_available()` is False and
`studio.models.fast_conv` times only its other algorithms.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

__all__ = ["NnpackAlgorithm", "nnpack_available", "nnpack_conv3x3", "nnpack_kernels"]

NnpackAlgorithm = Literal["winograd", "fft"]
_ALGORITHM_CODES: dict[NnpackAlgorithm, int] = {"winograd": 3, "fft": 2}  # nnp_convolution_algorithm_wt8x8, _ft16x16
_PRECOMPUTE, _REUSE = 2, 3  # nnp_convolution_transform_strategy
_SUCCESS = 0
_IDENTITY = 0  # nnp_activation_identity


class _Size(ctypes.Structure):
    _fields_ = [("width", ctypes.c_size_t), ("height", ctypes.c_size_t)]


class _Padding(ctypes.Structure):
    _fields_ = [(side, ctypes.c_size_t) for side in ("top", "right", "bottom", "left")]


@dataclass(frozen=True)
class _Nnpack:
    convolution: ctypes._CFuncPtr  # nnp_convolution_inference
    threadpool: int  # a pthreadpool_t of torch's thread count


_lock = threading.Lock()
_binding: _Nnpack | None = None
_unavailable = False  # binding failed, or its results were wrong: not tried again


def _nnpack() -> _Nnpack | None:
    """torch's NNPACK with a thread pool of its own; None where this torch has none, hides it, or its results differ
    from torch's own convolution (checked once)."""
    global _binding, _unavailable
    with _lock:
        if _unavailable:
            return None
        if _binding is None:
            _binding = _bind()
            if _binding is None or not _agrees_with_torch(_binding):
                _binding, _unavailable = None, True
        return _binding


def _torch_cpu_library() -> Path | None:
    folder = Path(torch.__file__).parent / "lib"
    return next(iter(sorted(folder.glob("libtorch_cpu.*"))), None)


def _bind() -> _Nnpack | None:
    if not torch.backends.nnpack.is_available():  # this also initialises NNPACK
        return None
    path = _torch_cpu_library()
    if path is None:
        return None
    try:
        library = ctypes.CDLL(str(path))
        convolution = library.nnp_convolution_inference
        create_threadpool = library.pthreadpool_create
    except (OSError, AttributeError):
        return None
    pointer = ctypes.c_void_p
    convolution.restype = ctypes.c_int
    convolution.argtypes = [
        ctypes.c_int,  # algorithm
        ctypes.c_int,  # transform strategy
        ctypes.c_size_t,  # input channels
        ctypes.c_size_t,  # output channels
        _Size,  # input size
        _Padding,  # input padding
        _Size,  # kernel size
        _Size,  # output subsampling (stride)
        pointer,  # input
        pointer,  # kernel, or its transform
        pointer,  # bias
        pointer,  # output
        pointer,  # workspace buffer
        ctypes.POINTER(ctypes.c_size_t),  # workspace size
        ctypes.c_int,  # activation
        pointer,  # activation parameters
        pointer,  # thread pool
        pointer,  # profile
    ]
    create_threadpool.restype = pointer
    create_threadpool.argtypes = [ctypes.c_size_t]
    threadpool = create_threadpool(torch.get_num_threads())
    if not threadpool:
        return None
    return _Nnpack(convolution, threadpool)


def _agrees_with_torch(nnpack: _Nnpack) -> bool:
    """Whether both algorithms convolve a small seeded input as torch does: a guard against a torch whose NNPACK
    takes other arguments than this binding passes."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 11, 9, generator=generator)
    weight, bias = torch.randn(7, 5, 3, 3, generator=generator), torch.randn(7, generator=generator)
    expected = torch.nn.functional.conv2d(x, weight, bias, padding=1)
    try:
        for algorithm in _ALGORITHM_CODES:
            output = _convolve(nnpack, x, _transform(nnpack, weight, algorithm), 7, algorithm, 1, bias)
            if not torch.allclose(output, expected, rtol=1e-4, atol=1e-4):
                return False
    except RuntimeError:
        return False
    return True


def nnpack_available() -> bool:
    """Whether `nnpack_kernels` and `nnpack_conv3x3` can run here."""
    return _nnpack() is not None


def nnpack_kernels(weight: Tensor, algorithm: NnpackAlgorithm) -> Tensor:
    """(K, C, 3, 3) float32 CPU filters -> their transform for `algorithm`, in NNPACK's layout (a flat tensor)."""
    return _transform(_required(), weight, algorithm)


def nnpack_conv3x3(
    x: Tensor,
    kernels: Tensor,
    out_channels: int,
    algorithm: NnpackAlgorithm,
    *,
    padding: int,
    bias: Tensor | None = None,
) -> Tensor:
    """3x3 convolution (cross-correlation, stride 1) of float32 CPU `x` (N, C, H, W) with zero `padding` (0-2),
    using `kernels` from `nnpack_kernels(weight, algorithm)`. Returns (N, out_channels, H + 2p - 2, W + 2p - 2)."""
    return _convolve(_required(), x, kernels, out_channels, algorithm, padding, bias)


def _required() -> _Nnpack:
    nnpack = _nnpack()
    if nnpack is None:
        raise RuntimeError("NNPACK is not available in this torch build")
    return nnpack


@dataclass(frozen=True)
class _Layer:
    """What every call describes: the channels, the input's size and its zero padding (3x3 kernels, stride 1)."""

    in_channels: int
    out_channels: int
    height: int
    width: int
    padding: int


def _call(
    nnpack: _Nnpack,
    algorithm: NnpackAlgorithm,
    strategy: int,
    layer: _Layer,
    *,
    what: str,
    kernels: Tensor,
    buffer: Tensor | None = None,
    image: Tensor | None = None,
    bias: Tensor | None = None,
    output: Tensor | None = None,
) -> int:
    """One `nnp_convolution_inference` call; returns the size in bytes of the buffer it needs (the transformed
    kernels, or a workspace). Without `buffer` NNPACK only reports that size. Raises RuntimeError naming `what` if
    NNPACK refuses."""
    buffer_size = ctypes.c_size_t(0 if buffer is None else buffer.numel() * buffer.element_size())
    status = nnpack.convolution(
        _ALGORITHM_CODES[algorithm],
        strategy,
        layer.in_channels,
        layer.out_channels,
        _Size(layer.width, layer.height),
        _Padding(layer.padding, layer.padding, layer.padding, layer.padding),
        _Size(3, 3),
        _Size(1, 1),
        *(None if tensor is None else tensor.data_ptr() for tensor in (image, kernels, bias, output, buffer)),
        ctypes.byref(buffer_size),
        _IDENTITY,
        None,
        nnpack.threadpool,
        None,
    )
    if status != _SUCCESS:
        raise RuntimeError(f"NNPACK refused the {what} (nnp_status {status})")
    return buffer_size.value


def _float_buffer(size: int) -> Tensor:
    return torch.empty(-(-size // 4), dtype=torch.float32)  # torch's CPU memory is 64-byte aligned


def _transform(nnpack: _Nnpack, weight: Tensor, algorithm: NnpackAlgorithm) -> Tensor:
    out_channels, in_channels = weight.shape[:2]
    weight = weight.detach().contiguous()
    # The transform's layout depends on the channels and the cache sizes only; the input size is a placeholder.
    layer = _Layer(in_channels, out_channels, height=8, width=8, padding=1)
    size = _call(nnpack, algorithm, _PRECOMPUTE, layer, what="kernel transform's size", kernels=weight)
    transformed = _float_buffer(size)
    _call(nnpack, algorithm, _PRECOMPUTE, layer, what="kernel transform", kernels=weight, buffer=transformed)
    return transformed


_zero_biases: dict[int, Tensor] = {}
_zero_biases_lock = threading.Lock()


def _zero_bias(channels: int) -> Tensor:
    with _zero_biases_lock:
        if channels not in _zero_biases:
            _zero_biases[channels] = torch.zeros(channels)
        return _zero_biases[channels]


def _convolve(
    nnpack: _Nnpack,
    x: Tensor,
    kernels: Tensor,
    out_channels: int,
    algorithm: NnpackAlgorithm,
    padding: int,
    bias: Tensor | None,
) -> Tensor:
    batch, in_channels, height, width = x.shape
    out_height, out_width = height + 2 * padding - 2, width + 2 * padding - 2
    if out_height < 1 or out_width < 1:
        raise ValueError(f"a {height}x{width} input with padding {padding} leaves no output of a 3x3 convolution")
    x = x.contiguous()
    bias = _zero_bias(out_channels) if bias is None else bias.detach().contiguous()
    output = torch.empty(batch, out_channels, out_height, out_width, dtype=x.dtype)
    layer = _Layer(in_channels, out_channels, height, width, padding)
    # Without a workspace NNPACK maps fresh memory for every call and faults it all in (MAP_POPULATE): 64 channels at
    # 170x256 px took 33 instead of 16 ms that way. torch's allocator hands back memory freed by the last call.
    workspace = _float_buffer(_call(nnpack, algorithm, _REUSE, layer, what="workspace's size", kernels=kernels))
    what = f"convolution of a {height}x{width} input"
    for image, image_output in zip(x, output, strict=True):  # one image a call; ctypes releases the GIL meanwhile
        _call(
            nnpack,
            algorithm,
            _REUSE,
            layer,
            what=what,
            kernels=kernels,
            buffer=workspace,
            image=image,
            bias=bias,
            output=image_output,
        )
    return output
