"""Train a DCGAN on a folder of artworks, export it as a studio model, measure it.

    from studio.training import make_train_config, train
    result = train(make_train_config(data="my_paintings", size=64, steps=5000))
    result.export.folder  # weights/my_paintings/: model.safetensors + config.json + README.md

Importing this package is cheap; the names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "TrainConfig": "config",
    "TrainProgress": "config",
    "TrainResult": "config",
    "make_train_config": "config",
    "train": "trainer",
    "ImageFolder": "dataset",
    "SkippedFile": "dataset",
    "ExportResult": "export",
    "HubUploadError": "export",
    "export_generator": "export",
    "push_to_hub": "export",
    "FeatureStats": "metrics",
    "MetricUnavailable": "metrics",
    "QualityMeter": "metrics",
    "feature_stats": "metrics",
    "frechet_distance": "metrics",
}
__all__ = [
    "ExportResult",
    "FeatureStats",
    "HubUploadError",
    "ImageFolder",
    "MetricUnavailable",
    "QualityMeter",
    "SkippedFile",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "export_generator",
    "feature_stats",
    "frechet_distance",
    "make_train_config",
    "push_to_hub",
    "train",
]

if TYPE_CHECKING:
    from studio.training.config import TrainConfig, TrainProgress, TrainResult, make_train_config
    from studio.training.dataset import ImageFolder, SkippedFile
    from studio.training.export import ExportResult, HubUploadError, export_generator, push_to_hub
    from studio.training.metrics import FeatureStats, MetricUnavailable, QualityMeter, feature_stats, frechet_distance
    from studio.training.trainer import train


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"studio.training.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'studio.training' has no attribute {name!r}")
