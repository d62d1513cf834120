"""Tests for how trainer.Trainer talks to a tracker: what it logs, at which step, in which type."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import torch

from trainer.models import build_model
from trainer.sample import Sample
from trainer.trainer import HISTORY_KEYS, Trainer


class RecordingTracker:
    """Stores every call; has exactly the duck-typed tracker methods (no start_run/end_run)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def log_metric(self, key: str, value: Any, step: int | None = None) -> None:
        self.calls.append(("log_metric", (key, value), {"step": step}))

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.calls.append(("log_metrics", (dict(metrics),), {"step": step}))

    def log_artifact(self, local_path: str, artifact_name: str | None = None) -> None:
        self.calls.append(("log_artifact", (local_path, artifact_name), {}))

    def set_tag(self, key: str, value: Any) -> None:
        self.calls.append(("set_tag", (key, value), {}))

    def log_params(self, params: dict[str, Any]) -> None:
        self.calls.append(("log_params", (dict(params),), {}))

    def metric_calls(self, key: str) -> list[tuple[dict[str, Any], int | None]]:
        return [
            (args[0], kw["step"])
            for name, args, kw in self.calls
            if name == "log_metrics" and key in args[0]
        ]


def _samples(n: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return [Sample(meta={}, x=row, y=np.array([row.sum()], dtype=np.float32)) for row in x]


def _fit(tmp_path, epochs: int = 3, **training: Any) -> tuple[RecordingTracker, dict[str, list[float]]]:
    torch.manual_seed(0)
    tracker = RecordingTracker()
    model = build_model("mlp", input_dim=3, hidden_dims=[8], dropout=0.0)
    config = {"training": {"batch_size": 10, "epochs": epochs, "checkpoint_dir": str(tmp_path), **training}}
    history = Trainer(model, config, tracker=tracker, device="cpu").fit(_samples(40, 0), _samples(20, 1))
    return tracker, history


def test_per_step_values_are_zero_dim_tensors_not_python_floats(tmp_path) -> None:
    tracker, _ = _fit(tmp_path)
    step_calls = tracker.metric_calls("train/loss")
    assert len(step_calls) == 3 * 4  # 3 epochs x 40 samples / batch 10
    for metrics, _ in step_calls:
        assert set(metrics) == {"train/loss", "train/grad_norm"}
        for value in metrics.values():
            assert isinstance(value, torch.Tensor) and value.dim() == 0
            assert not value.requires_grad


def test_per_step_metrics_use_consecutive_global_steps(tmp_path) -> None:
    tracker, _ = _fit(tmp_path)
    assert [step for _, step in tracker.metric_calls("train/loss")] == list(range(12))


def test_log_every_n_steps_thins_per_step_logging(tmp_path) -> None:
    tracker, _ = _fit(tmp_path, log_every_n_steps=5)
    assert [step for _, step in tracker.metric_calls("train/grad_norm")] == [0, 5, 10]


def test_every_history_value_is_logged_at_step_epoch(tmp_path) -> None:
    tracker, history = _fit(tmp_path)
    epoch_calls = tracker.metric_calls("val_loss")
    assert [step for _, step in epoch_calls] == [0, 1, 2]
    for metrics, step in epoch_calls:
        for key in HISTORY_KEYS:
            assert metrics[key] == pytest.approx(history[key][step])


def test_best_model_is_logged_once_as_artifact_after_training(tmp_path) -> None:
    tracker, _ = _fit(tmp_path)
    artifacts = [args for name, args, _ in tracker.calls if name == "log_artifact"]
    assert artifacts == [(os.path.join(str(tmp_path), "best_model.pt"), "best_model.pt")]
    assert tracker.calls[-1][0] == "log_artifact"
    assert os.path.isfile(artifacts[0][0])


def test_without_tracker_nothing_is_logged_and_fit_still_works(tmp_path) -> None:
    torch.manual_seed(0)
    trainer = Trainer(build_model("linear", input_dim=3), {"epochs": 2}, tracker=None, device="cpu")
    history = trainer.fit(_samples(20, 0), _samples(10, 1))
    assert len(history["train_loss"]) == 2
    assert trainer.best_checkpoint_path is None
