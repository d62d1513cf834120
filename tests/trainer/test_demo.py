"""Tests for trainer.demo: default config, run_demo's result, and MLP versus linear baseline."""

from __future__ import annotations

from typing import Any

import pytest

from trainer.demo import build_demo_data, compare_baseline, default_config, run_demo
from trainer.trainer import HISTORY_KEYS


class _MetricsTracker:
    def __init__(self) -> None:
        self.metrics: list[dict[str, Any]] = []
        self.artifacts: list[tuple[str, str | None]] = []

    def log_metric(self, key: str, value: Any, step: int | None = None) -> None:
        self.metrics.append({key: value})

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.metrics.append(dict(metrics))

    def log_artifact(self, local_path: str, artifact_name: str | None = None) -> None:
        self.artifacts.append((local_path, artifact_name))

    def set_tag(self, key: str, value: Any) -> None:
        pass

    def log_params(self, params: dict[str, Any]) -> None:
        pass


def test_default_config_is_nested_and_fresh() -> None:
    config = default_config()
    assert {"model", "pipeline", "training", "data", "seed"} <= set(config)
    assert config["model"] == {"name": "mlp", "hidden_dims": [64, 32], "dropout": 0.1}
    assert config["pipeline"]["include_arrhenius"] is True
    config["model"]["name"] = "changed"
    assert default_config()["model"]["name"] == "mlp"


def test_demo_data_holds_out_temperature_and_splits_rest_by_cell() -> None:
    data = build_demo_data({"data": {"holdout_temps": [45.0]}})
    assert {s.meta["temperature_c"] for s in data.holdout} == {45.0}
    assert 45.0 not in {s.meta["temperature_c"] for s in data.train + data.val}
    assert not {s.meta["cell_id"] for s in data.train} & {s.meta["cell_id"] for s in data.val}


def test_run_demo_returns_history_final_metrics_and_logs_holdout(tmp_path) -> None:
    tracker = _MetricsTracker()
    config = {"training": {"epochs": 3, "checkpoint_dir": str(tmp_path)}, "data": {"cells_per_condition": 1}}
    result = run_demo(config, tracker=tracker)
    assert set(result["history"]) == set(HISTORY_KEYS) and len(result["history"]["val_loss"]) == 3
    assert {"val_rmse", "val_mae", "holdout_rmse", "holdout_mae", "best_epoch"} <= set(result["final"])
    assert result["final"]["val_rmse"] == pytest.approx(min(result["history"]["val_rmse"]), rel=1e-4)
    assert any("holdout_rmse" in m for m in tracker.metrics)
    assert tracker.artifacts[0][1] == "best_model.pt"


def test_mlp_beats_linear_baseline_on_temperature_holdout() -> None:
    rmse = compare_baseline(seed=0)
    assert rmse["mlp"] < 0.5 * rmse["linear"], rmse
