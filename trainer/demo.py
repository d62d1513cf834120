"""End-to-end demo: synthetic cells -> ``summary_set`` samples -> temperature holdout -> Trainer.

Runs on the caller's thread. The caller owns the tracker run: start it before
:func:`run_demo` and end it afterwards; the demo only logs into it.

Splits: the cells at ``data.holdout_temps`` form the *holdout* (never seen in training); the
other cells are split by cell into train and val, and val drives early stopping. Reporting the
holdout separately keeps model selection away from the temperature we claim to generalise to.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import torch

from trainer import distributed
from trainer.data import (
    FeatureScaler,
    build_summary_samples,
    generate_cells,
    split_by_cell,
    summary_feature_names,
    temperature_holdout,
)
from trainer.models import build_model
from trainer.sample import Sample
from trainer.trainer import Tracker, Trainer

__all__ = ["DemoData", "build_demo_data", "compare_baseline", "default_config", "run_demo"]

_logger = logging.getLogger(__name__)

_PIPELINES = ("summary_set",)


def default_config() -> dict[str, Any]:
    """Return a fresh nested config for :func:`run_demo` (safe to modify)."""
    return {
        "model": {"name": "mlp", "hidden_dims": [64, 32], "dropout": 0.1},
        "pipeline": {
            "name": "summary_set",
            "include_arrhenius": True,
            "window_cycles": 20,
            "horizon_cycles": 100,
            "stride_cycles": 10,
        },
        "training": {
            "learning_rate": 1e-3,
            "weight_decay": 1e-4,
            "batch_size": 32,
            "epochs": 100,
            "patience": 20,
            "scheduler_T0": 10,
            "gradient_clip": 1.0,
            "use_amp": False,
            "log_every_n_steps": 1,
        },
        "loss": {"name": "mse"},
        "data": {
            "seed": 0,
            "temperatures_c": [15.0, 25.0, 35.0, 45.0],
            "c_rates": [0.5, 1.0, 2.0],
            "cells_per_condition": 3,
            "n_cycles": 500,
            "noise_std_pct": 0.2,
            "spread_sigma": 0.03,
            "holdout_temps": [35.0],
            "val_fraction": 0.2,
        },
        "seed": 0,
        "device": "auto",
        # Tiny models train several times faster on one intra-op thread than on two busy
        # cores; None leaves torch's process-wide setting alone.
        "num_threads": 1,
    }


@dataclasses.dataclass(frozen=True)
class DemoData:
    """Standardised splits plus what is needed to interpret them."""

    train: list[Sample]
    val: list[Sample]
    holdout: list[Sample]
    feature_names: list[str]
    scaler: FeatureScaler


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _with_defaults(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge ``config`` over :func:`default_config`.

    The model section is taken whole when it names another model: the MLP's ``hidden_dims``
    mean nothing to ``linear``, and build_model rejects parameters a model does not take.
    """
    config = dict(config or {})
    merged = _merge(default_config(), config)
    model = config.get("model")
    if isinstance(model, Mapping) and model.get("name", "mlp") != default_config()["model"]["name"]:
        merged["model"] = copy.deepcopy(dict(model))
    return merged


def build_demo_data(config: Mapping[str, Any] | None = None) -> DemoData:
    """Generate cells, build samples, split, and standardise with train statistics."""
    config = _with_defaults(config)
    data, pipeline = config["data"], dict(config["pipeline"])
    name = pipeline.pop("name", "summary_set")
    if name not in _PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; valid choices: {', '.join(_PIPELINES)}")
    cells = generate_cells(
        seed=data["seed"],
        temperatures_c=data["temperatures_c"],
        c_rates=data["c_rates"],
        cells_per_condition=data["cells_per_condition"],
        n_cycles=data["n_cycles"],
        noise_std_pct=data["noise_std_pct"],
        spread_sigma=data["spread_sigma"],
    )
    samples = build_summary_samples(cells, **pipeline)
    rest, holdout = temperature_holdout(samples, data["holdout_temps"])
    train, val = split_by_cell(rest, val_fraction=data["val_fraction"], seed=data["seed"])
    scaler = FeatureScaler().fit(train)
    names = summary_feature_names(pipeline.get("include_arrhenius", True))
    return DemoData(
        scaler.transform(train), scaler.transform(val), scaler.transform(holdout), names, scaler
    )


def run_demo(config: Mapping[str, Any] | None = None, tracker: Tracker | None = None) -> dict[str, Any]:
    """Train the configured model on the demo data; return history, final metrics and model.

    ``config`` is merged over :func:`default_config`, so a partial config is enough.
    ``config["device"]`` (default ``"auto"``) picks the device; ``config["num_threads"]``, when
    not None, is passed to ``torch.set_num_threads`` (a process-wide setting).
    ``final`` holds ``val_*`` (cells at training temperatures, used for early stopping) and
    ``holdout_*`` (cells at the held-out temperatures) metrics of the restored best model.
    """
    config = _with_defaults(config)
    if config.get("num_threads") is not None:
        torch.set_num_threads(int(config["num_threads"]))
    torch.manual_seed(config["seed"])
    data = build_demo_data(config)
    model_config = dict(config["model"])
    model = build_model(model_config.pop("name"), input_dim=len(data.feature_names), **model_config)
    trainer = Trainer(model, config, tracker=tracker, device=config.get("device", "auto"))
    history = trainer.fit(data.train, data.val)
    val, holdout = trainer.evaluate(data.val), trainer.evaluate(data.holdout)
    final = {
        "val_rmse": val["rmse"],
        "val_mae": val["mae"],
        "holdout_rmse": holdout["rmse"],
        "holdout_mae": holdout["mae"],
        "best_epoch": trainer.best_epoch,
        "epochs_run": len(history["val_loss"]),
        "n_train": len(data.train),
        "n_val": len(data.val),
        "n_holdout": len(data.holdout),
    }
    if tracker is not None and distributed.is_rank_zero():
        tracker.log_metrics({key: final[key] for key in ("holdout_rmse", "holdout_mae")})
    return {
        "history": history,
        "final": final,
        "model": trainer.model,
        "trainer": trainer,
        "data": data,
    }


def compare_baseline(seed: int = 0, config: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Return the holdout RMSE of the configured model (``"mlp"`` key; the MLP by default) and of
    the linear baseline, trained the same way on the same data and seed."""
    base = _merge(_with_defaults(config), {"seed": seed, "data": {"seed": seed}})
    linear_config = {**base, "model": {"name": "linear"}}
    return {
        "mlp": run_demo(base)["final"]["holdout_rmse"],
        "linear": run_demo(linear_config)["final"]["holdout_rmse"],
    }
