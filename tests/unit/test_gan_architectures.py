"""Layout and behaviour of the two art-GAN generators whose checkpoints live on the Hub (unreachable in CI).

The expected state-dict layouts are written out here from the architectures' channel tables, independently of the
modules, and are checked against the published file sizes:

- `huggan/projected_gan_*` `pytorch_model.bin`: 423 MB. Our layout: 105,844,882 float32 values (105,684,175
  parameters + 160,707 BatchNorm running stats and spectral-norm u/v vectors) + 13 int64 BatchNorm counters
  -> 423.4 MB once pickled.
- `huggan/fastgan-few-shot-painting` `pytorch_model.bin`: 117 MB. Our layout: 29,255,438 float32 values
  (29,176,512 parameters + 78,926 buffers) + 13 int64 counters -> 117.1 MB.

The golden output slices were produced by the reference implementations (autonomousvision/projected_gan's
`Generator`; the HugGAN FastGAN port's `Generator`) loaded with the same `filled_state_dict` weights, with their
noise drawn from the global RNG seeded with NOISE_SEED: the same stream a CPU `torch.Generator` seeded alike gives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from studio.models.fastgan import FastGanConfig, FastGanGenerator
from studio.models.projected_gan import ProjectedGanConfig, ProjectedGanGenerator

Layout = dict[str, tuple[int, ...]]

# Feature channels per resolution of the published models (after each block's GLU).
PROJECTED_GAN_CHANNELS = {4: 2048, 8: 1024, 16: 512, 32: 256, 64: 256, 128: 128, 256: 64}  # ngf=128
FASTGAN_CHANNELS = {4: 1024, 8: 512, 16: 256, 32: 128, 64: 128, 128: 64, 256: 32, 512: 16, 1024: 8}  # ngf=64
Z_DIM = 256
NOISE_SEED = 1234


# ---- expected layouts, from the channel tables -----------------------------------------------------------------


def spectral_conv(prefix: str, in_ch: int, out_ch: int, kernel: int, *, transposed: bool = False) -> Layout:
    """Old-style spectral norm: weight_orig, u over output channels, v over the flattened rest."""
    weight = (in_ch, out_ch, kernel, kernel) if transposed else (out_ch, in_ch, kernel, kernel)
    return {
        f"{prefix}weight_orig": weight,
        f"{prefix}weight_u": (out_ch,),
        f"{prefix}weight_v": (in_ch * kernel * kernel,),
    }


def batchnorm(prefix: str, ch: int) -> Layout:
    names = ("weight", "bias", "running_mean", "running_var")
    return {**{f"{prefix}{n}": (ch,) for n in names}, f"{prefix}num_batches_tracked": ()}


def projected_gan_layout(ch: dict[int, int], z_dim: int = Z_DIM) -> Layout:
    p = "synthesis."
    layout = {
        **spectral_conv(f"{p}init.init.0.", z_dim, 2 * ch[4], 4, transposed=True),
        **batchnorm(f"{p}init.init.1.", 2 * ch[4]),
    }
    for res in (8, 16, 32, 64, 128, 256):  # UpBlockBig: up, conv, noise, BN, GLU, conv, noise, BN, GLU
        b = f"{p}feat_{res}."
        layout |= spectral_conv(f"{b}1.", ch[res // 2], 2 * ch[res], 3)
        layout |= {f"{b}2.weight": (1,), f"{b}6.weight": (1,)}
        layout |= batchnorm(f"{b}3.", 2 * ch[res]) | batchnorm(f"{b}7.", 2 * ch[res])
        layout |= spectral_conv(f"{b}5.", ch[res], 2 * ch[res], 3)
    for res in (64, 128, 256):  # SEBlock: pool, conv4, swish, conv1, sigmoid
        layout |= spectral_conv(f"{p}se_{res}.main.1.", ch[res // 16], ch[res], 4)
        layout |= spectral_conv(f"{p}se_{res}.main.3.", ch[res], ch[res], 1)
    layout |= spectral_conv(f"{p}to_big.", ch[256], 3, 3) | {f"{p}to_big.bias": (3,)}
    return layout


def fastgan_layout(ch: dict[int, int], z_dim: int = Z_DIM) -> Layout:
    layout = {
        **spectral_conv("_init._layers.0._conv.", z_dim, 2 * ch[4], 4, transposed=True),
        **batchnorm("_init._layers.1.", 2 * ch[4]),
    }
    for res in (8, 16, 32, 64, 128, 256, 512, 1024):
        b = f"_upsample_{res}._layers."
        layout |= spectral_conv(f"{b}1._conv.", ch[res // 2], 2 * ch[res], 3)
        if res in (8, 32, 128, 512):  # up, conv, noise, BN, GLU, conv, noise, BN, GLU
            layout |= {f"{b}2._weight": (1,), f"{b}6._weight": (1,)}
            layout |= batchnorm(f"{b}3.", 2 * ch[res]) | batchnorm(f"{b}7.", 2 * ch[res])
            layout |= spectral_conv(f"{b}5._conv.", ch[res], 2 * ch[res], 3)
        else:  # up, conv, BN, GLU
            layout |= batchnorm(f"{b}2.", 2 * ch[res])
    for res in (64, 128, 256, 512):  # pool, conv4, SiLU, conv1, sigmoid
        layout |= spectral_conv(f"_sle_{res}._layers.1._conv.", ch[res // 16], ch[res], 4)
        layout |= spectral_conv(f"_sle_{res}._layers.3._conv.", ch[res], ch[res], 1)
    layout |= spectral_conv("_out_128.0._conv.", ch[128], 3, 1)
    layout |= spectral_conv("_out_1024.0._conv.", ch[1024], 3, 3)
    return layout


def float_count(layout: Layout, *, exclude: tuple[str, ...] = ()) -> int:
    return sum(
        math.prod(shape)
        for key, shape in layout.items()
        if not key.endswith("num_batches_tracked") and not key.endswith(exclude)
    )


BUFFER_SUFFIXES = ("running_mean", "running_var", "weight_u", "weight_v")


def layout_of(module: nn.Module) -> Layout:
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def filled_state_dict(layout: Layout, seed: int = 0) -> dict[str, Tensor]:
    """Deterministic, well-scaled weights for a layout: the same tensors for any module with these keys."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for key in sorted(layout):
        shape = layout[key]
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith(("running_mean", "bias")) or len(shape) == 1 and shape == (1,):
            state[key] = 0.2 * torch.randn(shape, generator=g)  # includes the noise strengths
        elif key.endswith("weight_v"):
            state[key] = nn.functional.normalize(torch.randn(shape, generator=g), dim=0)
        elif key.endswith("weight_orig"):
            state[key] = torch.randn(shape, generator=g)
        elif key.endswith("weight_u"):
            continue  # set below from weight_orig and weight_v
        else:  # BatchNorm affine weight
            state[key] = 1 + 0.1 * torch.randn(shape, generator=g)
    for key in layout:
        if key.endswith("weight_u"):  # converged power iteration, so that weight_orig / sigma has spectral norm 1
            w = state[key.replace("weight_u", "weight_orig")]
            if "init" in key:  # transposed conv: spectral norm over dim 1
                w = w.transpose(0, 1)
            matrix, v = w.reshape(w.shape[0], -1), state[key.replace("weight_u", "weight_v")]
            for _ in range(20):
                u = nn.functional.normalize(matrix @ v, dim=0)
                v = nn.functional.normalize(matrix.T @ u, dim=0)
            state[key], state[key.replace("weight_u", "weight_v")] = u, v
    return state


def cpu_generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


# ---- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_projected_gan() -> Iterator[ProjectedGanGenerator]:
    yield ProjectedGanGenerator(ProjectedGanConfig()).eval()


@pytest.fixture(scope="module")
def full_fastgan() -> Iterator[FastGanGenerator]:
    yield FastGanGenerator(FastGanConfig()).eval()


def small_projected_gan(ngf: int = 8) -> ProjectedGanGenerator:
    """Narrow model (ngf=8: channels 128@4 ... 4@256 px) loaded with `filled_state_dict` weights."""
    model = ProjectedGanGenerator(ProjectedGanConfig(ngf=ngf)).eval()
    model.load_state_dict(filled_state_dict(layout_of(model)), strict=True)
    return model


def small_fastgan(ngf: int = 8) -> FastGanGenerator:
    """Narrow model (ngf=8: channels 128@4 ... 1@1024 px) loaded with `filled_state_dict` weights."""
    model = FastGanGenerator(FastGanConfig(ngf=ngf)).eval()
    model.load_state_dict(filled_state_dict(layout_of(model)), strict=True)
    return model


def latents(batch: int, seed: int = 7) -> Tensor:
    return torch.randn(batch, Z_DIM, generator=torch.Generator().manual_seed(seed))


# ---- published layouts ------------------------------------------------------------------------------------------


def test_projected_gan_matches_published_layout(full_projected_gan: ProjectedGanGenerator) -> None:
    expected = projected_gan_layout(PROJECTED_GAN_CHANNELS)
    assert len(expected) == 138
    assert layout_of(full_projected_gan) == expected
    assert float_count(expected) == 105_844_882
    assert float_count(expected, exclude=BUFFER_SUFFIXES) == 105_684_175
    assert sum(p.numel() for p in full_projected_gan.parameters()) == 105_684_175
    assert all(key.startswith("synthesis.") for key in expected)  # the reference mapping has no parameters


def test_fastgan_matches_published_layout(full_fastgan: FastGanGenerator) -> None:
    expected = fastgan_layout(FASTGAN_CHANNELS)
    assert len(expected) == 142
    assert layout_of(full_fastgan) == expected
    assert float_count(expected) == 29_255_438
    assert float_count(expected, exclude=BUFFER_SUFFIXES) == 29_176_512
    assert sum(p.numel() for p in full_fastgan.parameters()) == 29_176_512


@pytest.mark.parametrize(
    ("model_fixture", "layout", "published_mb"),
    [
        ("full_projected_gan", projected_gan_layout(PROJECTED_GAN_CHANNELS), 423),
        ("full_fastgan", fastgan_layout(FASTGAN_CHANNELS), 117),
    ],
)
def test_hub_style_bin_loads_strictly(
    request: pytest.FixtureRequest, tmp_path: Path, model_fixture: str, layout: Layout, published_mb: int
) -> None:
    """A pickled plain state dict with the published keys (no spectral-norm metadata) loads with strict=True."""
    model: nn.Module = request.getfixturevalue(model_fixture)
    state = {
        key: torch.zeros(shape, dtype=torch.int64 if key.endswith("tracked") else torch.float32)
        for key, shape in layout.items()
    }
    probe = next(key for key in layout if key.endswith("weight_orig"))
    state[probe] = torch.full(layout[probe], 0.5)
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)
    assert round(path.stat().st_size / 1e6) == published_mb  # the size the Hub lists for the real file

    loaded = torch.load(path, weights_only=True, mmap=True)
    result = model.load_state_dict(loaded, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.state_dict()[probe], state[probe])


# ---- behaviour (narrow models) ----------------------------------------------------------------------------------


def test_projected_gan_forward_shapes_and_convention() -> None:
    model = small_projected_gan()
    with torch.inference_mode():
        images = model(latents(2), noise_generator=cpu_generators(1, 2))
        features = model.early_features(latents(2))
    assert images.shape == (2, 3, 256, 256) and images.dtype == torch.float32
    assert torch.isfinite(images).all()
    assert features.shape == (2, 128, 4, 4)  # 16 * ngf channels
    assert model.z_dim == 256 and model.resolution == 256
    assert model.output_range == (-1.0, 1.0) and not model.output_is_bounded


def test_fastgan_forward_shapes_and_convention() -> None:
    model = small_fastgan()
    z = latents(2)
    with torch.inference_mode():
        image, preview = model.forward_with_preview(z, noise_generator=torch.Generator().manual_seed(3))
        features = model.early_features(z)
        features_4d = model.early_features(z[:, :, None, None])
    assert image.shape == (2, 3, 1024, 1024) and preview.shape == (2, 3, 128, 128)
    assert torch.isfinite(image).all()
    assert image.abs().max() <= 1 and preview.abs().max() <= 1  # tanh
    assert features.shape == (2, 128, 4, 4)  # 16 * ngf channels
    assert torch.equal(features, features_4d)  # (B, 256) and (B, 256, 1, 1) latents are the same thing
    assert model.output_is_bounded and model.resolution == 1024


@pytest.mark.parametrize("make", [small_projected_gan, small_fastgan])
def test_same_latents_and_noise_seed_give_the_same_image(make: Callable[[], nn.Module]) -> None:
    model = make()
    z = latents(1)
    with torch.inference_mode():
        first = model(z, noise_generator=torch.Generator().manual_seed(5))
        again = model(z, noise_generator=torch.Generator().manual_seed(5))
        other_noise = model(z, noise_generator=torch.Generator().manual_seed(6))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other_noise)  # the noise strengths are non-zero in these weights


@pytest.mark.parametrize("make", [small_projected_gan, small_fastgan])
def test_per_sample_noise_generators_make_images_batch_independent(make: Callable[[], nn.Module]) -> None:
    model = make()
    z = latents(2)
    with torch.inference_mode():
        batch = model(z, noise_generator=cpu_generators(10, 11))
        alone = model(z[1:2], noise_generator=cpu_generators(11))
    torch.testing.assert_close(batch[1:2], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [small_projected_gan, small_fastgan])
def test_eval_forward_leaves_spectral_norm_and_batchnorm_state_alone(make: Callable[[], nn.Module]) -> None:
    model = make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.inference_mode():
        model(latents(1), noise_generator=cpu_generators(1))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bad_latent_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(B, 256\)"):
        small_projected_gan()(torch.zeros(1, 128))
    with pytest.raises(ValueError, match="one per sample"):
        small_projected_gan()(latents(2), noise_generator=cpu_generators(1))
    with pytest.raises(ValueError, match=r"\(B, 256, 1, 1\)"):
        small_fastgan().early_features(torch.zeros(1, 256, 2, 2))
    with pytest.raises(ValueError, match="resolution"):
        ProjectedGanConfig(resolution=300)


# ---- numerical parity with the reference implementations ---------------------------------------------------------

# Output slices (B=2, latents(2), noise seeded with NOISE_SEED) computed by the reference code with the same weights.
PROJECTED_GAN_GOLDEN = torch.tensor(
    [
        [[-0.210809, -0.246185, -0.206331], [0.213861, 0.292501, 0.248626], [-0.037935, -0.011118, 0.040120]],
        [[-0.210253, -0.339376, -0.213633], [0.356945, 0.310947, 0.213879], [0.109860, -0.023250, 0.112589]],
    ]
)
FASTGAN_GOLDEN = torch.tensor(
    [
        [[0.079657, 0.068158, 0.027152], [0.081659, 0.066387, 0.108619], [0.146393, 0.135315, 0.143457]],
        [[0.039938, 0.057408, 0.055828], [0.097879, 0.113499, 0.094236], [0.182044, 0.198003, 0.173749]],
    ]
)
FASTGAN_PREVIEW_GOLDEN = torch.tensor(
    [
        [[0.078569, 0.054004, 0.037085], [-0.028191, -0.013797, 0.011191], [-0.094704, -0.087168, -0.020644]],
        [[0.043249, 0.016814, -0.015355], [-0.060802, -0.022251, -0.043940], [-0.070544, -0.001785, 0.042253]],
    ]
)


def test_projected_gan_matches_reference_output() -> None:
    model = small_projected_gan(ngf=16)
    with torch.inference_mode():
        images = model(latents(2), noise_generator=torch.Generator().manual_seed(NOISE_SEED))
    torch.testing.assert_close(images[:, :, 120, 120:123], PROJECTED_GAN_GOLDEN, rtol=1e-4, atol=1e-5)


def test_fastgan_matches_reference_output() -> None:
    model = small_fastgan(ngf=16)
    with torch.inference_mode():
        noise = torch.Generator().manual_seed(NOISE_SEED)
        image, preview = model.forward_with_preview(latents(2), noise_generator=noise)
    torch.testing.assert_close(image[:, :, 480, 480:483], FASTGAN_GOLDEN, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(preview[:, :, 60, 60:63], FASTGAN_PREVIEW_GOLDEN, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make", [small_projected_gan, small_fastgan])
def test_state_dict_saved_from_the_module_reloads_with_weights_only(
    make: Callable[[], nn.Module], tmp_path: Path
) -> None:
    """`torch.save(model.state_dict())` (as the Hub mixins did) keeps spectral-norm metadata; it loads safely."""
    model = make()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    loaded = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    assert "spectral_norm" in str(getattr(loaded, "_metadata", ""))
    fresh = type(model)(model.config)  # type: ignore[call-arg, arg-type]
    fresh.load_state_dict(loaded, strict=True)
    original = model.state_dict()
    assert all(torch.equal(value, original[key]) for key, value in fresh.state_dict().items())


@pytest.mark.parametrize(
    ("make", "architecture", "key_format"),
    [(small_projected_gan, "projected-fastgan", "projected-gan"), (small_fastgan, "fastgan", "fastgan-huggan")],
)
def test_loaded_for_inference_the_spectral_norms_are_baked(
    make: Callable[[], nn.Module], architecture: str, key_format: str, tmp_path: Path
) -> None:
    from studio.loader import load_model
    from studio.registry import LocalFile, ModelSpec

    model = make()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    config = {"z_dim": Z_DIM, "ngf": 8} | ({"resolution": 256} if architecture == "projected-fastgan" else {})
    spec = ModelSpec(
        "small", "generator", architecture, key_format, (LocalFile(str(tmp_path / "pytorch_model.bin")),), config
    )
    loaded = load_model(spec)
    assert not any(key.endswith("weight_orig") for key in loaded.state_dict())  # weight_orig / sigma, once
    assert not any(parameter.requires_grad for parameter in loaded.parameters()) and not loaded.training
    with torch.inference_mode():
        expected = model(latents(2), noise_generator=cpu_generators(1, 2))
        assert torch.equal(loaded(latents(2), noise_generator=cpu_generators(1, 2)), expected)  # the same numbers
