"""`python -m trainer` as a user runs it, the documented Trainer lines with each preset, and
`torchrun --nproc_per_node=2 -m trainer` with real processes."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracking import create_tracker
from tracking.journal import read_journal
from tracking.journal.rundir import read_meta
from trainer import Trainer, build_model
from trainer.demo import build_demo_data, default_config

ROOT = Path(__file__).resolve().parents[2]
EPOCH_KEYS = ["train_loss", "val_loss", "lr", "train_rmse", "val_rmse", "train_mae", "val_mae"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _python_m(tmp_path: Path, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", *args], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _epoch_history_from_journal(run_dir: Path) -> dict[str, list[float]]:
    history: dict[str, list[float]] = {}
    for _, event in read_journal(run_dir).events:
        if event[0] == "metrics" and "val_loss" in event[1]:
            for key, value in event[1].items():
                history.setdefault(key, []).append(value)
    return history


@pytest.mark.parametrize("preset", ["local", "mlflow", "dual"])
def test_documented_two_lines_store_exactly_the_returned_history(preset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kwargs = {"local": {"base_dir": "artifacts/runs"},
              "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment_name": "battery_degradation"},
              "dual": {"mlflow_tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
                       "mlflow_experiment_name": "battery_degradation"}}[preset]
    tracker = create_tracker(preset, **kwargs)
    config = default_config()
    config["training"]["epochs"] = 4
    data = build_demo_data(config)
    model = build_model("mlp", input_dim=len(data.feature_names), hidden_dims=[16], dropout=0.0)
    run_id = tracker.start_run("docs", config=config)

    trainer = Trainer(model, config, tracker)
    history = trainer.fit(data.train, data.val)

    tracker.end_run()
    run_dir = tracker.get_run_dir()
    stored = _epoch_history_from_journal(run_dir)
    for key in EPOCH_KEYS:
        assert stored[key] == pytest.approx(history[key], rel=1e-12), key
    assert (run_dir / "artifacts" / "best_model.pt").is_file()
    if preset != "mlflow":
        rows = list(csv.DictReader(open(run_dir / "step_metrics.csv")))
        epoch_rows = [r for r in rows if r["val_loss"]]
        assert [float(r["val_loss"]) for r in epoch_rows] == pytest.approx(history["val_loss"])
    if preset != "local":
        from mlflow.tracking import MlflowClient

        meta = read_meta(run_dir)
        client = MlflowClient(tracking_uri=meta["tracking_uri"])
        points = client.get_metric_history(meta["mlflow_run_id"], "val_rmse")
        assert [p.value for p in sorted(points, key=lambda p: p.step)] == pytest.approx(history["val_rmse"])
        assert client.get_run(meta["mlflow_run_id"]).data.tags["tracking.run_id"] == run_id


def test_main_command_trains_logs_and_prints_how_to_look(tmp_path):
    out = _python_m(tmp_path, "--epochs", "3", "--run-name", "cli", "training.learning_rate=3e-4")
    assert out.returncode == 0, out.stderr
    runs = list((tmp_path / "artifacts" / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("cli_")
    assert f"run directory: artifacts/runs/{runs[0].name}" in out.stdout
    assert "tensorboard --logdir artifacts/runs" in out.stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in out.stdout
    config = json.load(open(runs[0] / "config.json"))
    assert config["training"]["learning_rate"] == 3e-4 and config["training"]["epochs"] == 3
    metrics = json.load(open(runs[0] / "metrics.json"))
    assert {"val_rmse", "train/loss", "train/grad_norm", "holdout_rmse"} <= set(metrics)
    assert read_meta(runs[0])["sinks"]["mlflow"]["undelivered"] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tracker", "wandb"], "invalid choice: 'wandb' (choose from 'local', 'mlflow', 'dual')"),
        (["--mode", "fast"], "invalid choice: 'fast' (choose from 'async', 'sync')"),
        (["training.learnin_rate=1"], "unknown config key 'training.learnin_rate': training has batch_size"),
        (["nosuchsection.x=1"], "unknown config key 'nosuchsection.x': the config has data"),
        (["training.epochs"], "is not of the form section.key=value"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_flags_and_overrides_get_one_line_errors(tmp_path, args, message):
    out = _python_m(tmp_path, *args, timeout=60)
    assert out.returncode == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_torchrun_two_processes_log_one_run_with_averaged_metrics(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    out = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "trainer", "--epochs", "3",
                          "--tracker", "local"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = list((tmp_path / "artifacts" / "runs").iterdir())
    assert len(runs) == 1, runs  # rank 1's tracker is inert
    meta = read_meta(runs[0])
    assert meta["tags"]["world_size"] == "2" and meta["rank"] == 0
    history = _epoch_history_from_journal(runs[0])
    assert len(history["val_rmse"]) == 3
    # rank 0 printed the averaged (all-reduced) holdout metric it logged; both ranks agree on it
    printed = float(next(l.split()[1] for l in out.stdout.splitlines() if l.strip().startswith("holdout_rmse")))
    assert json.load(open(runs[0] / "metrics.json"))["holdout_rmse"] == pytest.approx(printed, abs=1e-4)
    assert out.stdout.count("trained 3 epochs") == 1
