"""Training loop, demo data and models for battery-degradation experiments.

Runs on the caller's thread; nothing in this package starts threads or processes. Trackers
come from ``tracking`` (or anything with the same methods) and are passed to :class:`Trainer`.
"""

from __future__ import annotations

from trainer import demo, distributed
from trainer.data import (
    CellRecord,
    FeatureScaler,
    build_summary_samples,
    generate_cells,
    split_by_cell,
    summary_feature_names,
    temperature_holdout,
)
from trainer.losses import available_losses, build_loss
from trainer.models import MLP, LinearRegressor, available_models, build_model
from trainer.sample import Sample
from trainer.trainer import HISTORY_KEYS, Tracker, Trainer, TrainingConfig

__all__ = [
    "HISTORY_KEYS",
    "MLP",
    "CellRecord",
    "FeatureScaler",
    "LinearRegressor",
    "Sample",
    "Tracker",
    "Trainer",
    "TrainingConfig",
    "available_losses",
    "available_models",
    "build_loss",
    "build_model",
    "build_summary_samples",
    "demo",
    "distributed",
    "generate_cells",
    "split_by_cell",
    "summary_feature_names",
    "temperature_holdout",
]
