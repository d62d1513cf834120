"""The presets as BatteryML's docs use them, against the real readers: json.load, TensorBoard's own
event reader, the MLflow client, `mlflow.search_runs`, and a real `mlflow ui` process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from tracking import DualTracker, LocalTracker, MLflowTracker, create_tracker
from tracking.journal import read_journal
from tracking.journal.rundir import read_meta

from mlflow_server import free_port

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _documented_run(tracker, tmp_path):
    run_id = tracker.start_run(run_name="experiment_001", config={
        "model": "mlp", "model.hidden_dims": [64, 32], "training.learning_rate": 1e-3, "training.batch_size": 32})
    for epoch in range(5):
        tracker.log_metric("train_loss", 0.5 / (epoch + 1), step=epoch)
        tracker.log_metrics({"train_rmse": 0.05 + 0.01 * epoch, "val_rmse": 0.06 - 0.005 * epoch,
                             "train_mae": 0.03, "val_mae": 0.025}, step=epoch)
    (tmp_path / "checkpoints").mkdir(exist_ok=True)
    (tmp_path / "checkpoints" / "best.pt").write_bytes(b"weights")
    tracker.log_artifact("checkpoints/best.pt", "model.pt")
    tracker.set_tag("status", "baseline")
    tracker.set_tag("dataset_version", "v1.0")
    report = tracker.end_run()
    assert report.complete, report.summary()
    return run_id


def _assert_same_points(got, expected, rel):
    assert [step for step, _ in got] == [step for step, _ in expected]
    assert [value for _, value in got] == pytest.approx([value for _, value in expected], rel=rel)


def _journal_points(run_dir):
    points = {}
    for _, ev in read_journal(run_dir).events:
        if ev[0] == "metrics":
            for key, value in ev[1].items():
                points.setdefault(key, []).append((ev[2], value))
    return points


def test_documented_dual_tracker_holds_the_same_data_everywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = DualTracker(local_base_dir="artifacts/runs", use_tensorboard=True,
                          mlflow_tracking_uri="file:./artifacts/mlruns", mlflow_experiment_name="battery_degradation")
    assert tracker.mlflow_tracking_uri.startswith("sqlite:///") and "artifacts/mlruns" in tracker.mlflow_tracking_uri
    tracker.create_experiment("temperature_generalization")
    run_id = _documented_run(tracker, tmp_path)
    run_dir = tmp_path / "artifacts" / "runs" / run_id
    journal = _journal_points(run_dir)

    with open(f"artifacts/runs/{run_id}/metrics.json") as f:
        metrics = json.load(f)
    assert metrics == {key: pts[-1][1] for key, pts in journal.items()}

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    for key, pts in journal.items():
        _assert_same_points([(s.step, s.value) for s in acc.Scalars(key)], pts, rel=1e-6)  # float32

    import mlflow
    from mlflow.tracking import MlflowClient

    meta = read_meta(run_dir)
    assert meta["tracking_uri"] == tracker.mlflow_tracking_uri
    client = MlflowClient(tracking_uri=tracker.mlflow_tracking_uri)
    run = client.get_run(meta["mlflow_run_id"])
    for key, pts in journal.items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        _assert_same_points(history, pts, rel=1e-12)
    assert run.data.tags["tracking.run_id"] == run_id and run.data.tags["status"] == "baseline"
    assert run.data.params["model.hidden_dims"] == "[64, 32]" and run.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["model.pt"]
    assert client.get_experiment_by_name("temperature_generalization") is not None

    mlflow.set_tracking_uri(tracker.mlflow_tracking_uri)
    experiment_id = client.get_experiment_by_name("battery_degradation").experiment_id
    runs = mlflow.search_runs(experiment_ids=[experiment_id], filter_string="metrics.val_rmse < 0.05")
    assert list(runs["run_id"]) == [run.info.run_id]
    best_run = runs.loc[runs["metrics.val_rmse"].idxmin()]
    assert best_run["metrics.val_rmse"] == pytest.approx(0.04)


def test_mlflow_ui_shows_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = MLflowTracker(tracking_uri="file:./artifacts/mlruns", experiment_name="battery_degradation")
    run_id = _documented_run(tracker, tmp_path)
    port = free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    ui = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracker.tracking_uri,
                           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        body = {"experiment_ids": ["0", "1", "2"], "max_results": 10}
        deadline = time.monotonic() + 90
        while True:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
                                                 data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
                runs = json.load(DIRECT.open(request, timeout=5)).get("runs", [])
                break
            except OSError:
                if time.monotonic() > deadline or ui.poll() is not None:
                    raise
                time.sleep(0.5)
        tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs]
        assert [t["tracking.run_id"] for t in tags] == [run_id]
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(timeout=20)


def test_local_tracker_and_registry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert [s.name for s in LocalTracker(base_dir="artifacts/runs").sinks] == ["json", "tensorboard"]
    assert [s.name for s in LocalTracker(use_tensorboard=False).sinks] == ["json"]
    assert type(create_tracker("dual", mlflow_tracking_uri=f"sqlite:///{tmp_path}/m.db")) is DualTracker
    with pytest.raises(ValueError, match="choose one of: local, mlflow, dual"):
        create_tracker("wandb")
