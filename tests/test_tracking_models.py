"""log_model and get_run_id (tracking.recorder.models, Tracker.log_model): real MLflow stores, real processes."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import mlflow
import mlflow.pytorch
import pytest
import torch
from mlflow.tracking import MlflowClient

from helpers.nets import Net, train_a_step
from tracking import DualTracker, LocalTracker, MLflowTracker, ModelInfo
from tracking.core.errors import InvalidModelError, InvalidNameError, RunIdPendingError
from tracking.journal.events import MODEL, Model
from tracking.journal import JournalReader
from tracking.sinks import RunContext
from tracking.sinks.mlflow import MLflowSink

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path}/mlruns/mlflow.db"


def _load(uri: str, model_uri: str) -> torch.nn.Module:
    mlflow.set_tracking_uri(uri)
    return mlflow.pytorch.load_model(model_uri)


def test_a_logged_model_loads_from_mlflow_as_it_was_logged_after_training_went_on(tmp_path, uri):
    tracker = DualTracker(local_base_dir=tmp_path / "runs", mlflow_tracking_uri=uri)
    tracker.start_run("model")
    model, x = Net(), torch.randn(5, 4)
    logged_output = model(x).detach()
    info = tracker.log_model(model, registered_model_name="battery-net")  # the agent is still starting
    for step in range(3):
        train_a_step(model)
        tracker.log_metric("loss", float(step), step=step)
    assert not torch.allclose(model(x), logged_output)  # the live model moved on
    run_id = tracker.get_run_id()
    report = tracker.end_run()

    assert info.model_uri == f"runs:/{run_id}/model"  # logged before MLflow had the run: the same URI
    assert isinstance(info, ModelInfo) and info.artifact_path == "model" and info.serialization_format == "pickle"
    assert info.local_path == tracker.get_run_dir() / "artifacts" / "model"
    assert all(s["rejected"] == 0 and s["errors"] == 0 and s["undelivered"] == 0 for s in report.sinks.values())
    assert run_id == report.sinks["mlflow"]["mlflow_run_id"] != tracker.run_id
    for model_uri in (f"runs:/{run_id}/model", "models:/battery-net/1", str(info.local_path)):
        assert torch.allclose(_load(uri, model_uri)(x), logged_output), model_uri
    client = MlflowClient(uri)
    [version] = client.search_model_versions("name = 'battery-net'")
    assert version.run_id == run_id and version.source == f"runs:/{run_id}/model"
    assert client.get_run(run_id).info.status == "FINISHED"


def test_each_model_at_one_artifact_path_keeps_its_own_folder_and_registry_version(tmp_path, uri):
    tracker = MLflowTracker(tracking_uri=uri, base_dir=tmp_path / "runs")
    tracker.start_run("two")
    model, x = Net(), torch.randn(3, 4)
    outputs = []
    for _ in range(2):
        outputs.append(model(x).detach())
        info = tracker.log_model(model, registered_model_name="net")
        train_a_step(model)
    assert info.artifact_path == "model-2"
    assert tracker.flush()
    run_id = tracker.get_run_id()
    assert tracker.log_model(model).model_uri == f"runs:/{run_id}/model-3"  # the MLflow run is known by now
    tracker.end_run()
    assert torch.allclose(_load(uri, "models:/net/1")(x), outputs[0])
    assert torch.allclose(_load(uri, "models:/net/2")(x), outputs[1])
    assert torch.allclose(_load(uri, f"runs:/{run_id}/model-2")(x), outputs[1])


def test_an_input_example_saves_the_pt2_format(tmp_path, uri):
    tracker = MLflowTracker(tracking_uri=uri, base_dir=tmp_path / "runs", mode="sync")
    tracker.start_run("pt2")
    model, x = Net(), torch.randn(3, 4)
    info = tracker.log_model(model, input_example=x)
    run_id = tracker.get_run_id()  # sync mode: MLflow opened the run in start_run
    tracker.end_run()
    assert info.serialization_format == "pt2" and info.model_uri == f"runs:/{run_id}/model"
    assert (info.local_path / "data" / "model.pt2").is_file()
    assert torch.allclose(_load(uri, info.model_uri)(x), model(x))


def test_a_model_whose_class_is_defined_in_main_loads_in_another_process(tmp_path, uri):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys, torch
        sys.path.insert(0, {str(REPO)!r})
        from tracking import MLflowTracker

        class MainNet(torch.nn.Module):  # defined in __main__: only cloudpickle can carry it
            def __init__(self):
                super().__init__()
                self.scale = torch.nn.Parameter(torch.full((4,), 3.0))
            def forward(self, x):
                return x * self.scale

        tracker = MLflowTracker(tracking_uri={uri!r}, base_dir={str(tmp_path / "runs")!r})
        tracker.start_run("main")
        tracker.log_model(MainNet(), registered_model_name="main-net")
        json.dump({{"run_id": tracker.get_run_id()}}, open({str(tmp_path / "out.json")!r}, "w"))
        tracker.end_run()
    """))
    subprocess.run([sys.executable, str(script)], check=True, timeout=300, cwd=tmp_path)
    run_id = json.loads((tmp_path / "out.json").read_text())["run_id"]
    x = torch.randn(2, 4)
    for model_uri in (f"runs:/{run_id}/model", "models:/main-net/1"):
        loaded = _load(uri, model_uri)
        assert type(loaded).__name__ == "MainNet" and torch.allclose(loaded(x), x * 3.0)


def test_a_local_tracker_keeps_a_loadable_model_and_reports_its_own_run_id(tmp_path):
    tracker = LocalTracker(base_dir=tmp_path / "runs")
    run_id = tracker.start_run("local")
    model, x = Net(), torch.randn(3, 4)
    info = tracker.log_model(model, artifact_path="best/model")
    assert tracker.get_run_id() == run_id
    tracker.end_run()
    assert info.model_uri == str(tracker.get_run_dir() / "artifacts" / "best" / "model")
    assert torch.allclose(mlflow.pytorch.load_model(info.model_uri)(x), model(x))
    [event] = [e for _, e in JournalReader(tracker.get_run_dir()).iter_events() if e[0] == MODEL]
    assert isinstance(event, Model) and event.path == str(info.local_path) and event.registered_model_name is None


def test_without_mlflow_the_model_and_its_state_dict_are_saved_with_torch(tmp_path):
    script = textwrap.dedent(f"""
        import sys, torch
        sys.modules["mlflow"] = None  # this interpreter has no mlflow
        sys.path.insert(0, {str(REPO)!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from helpers.nets import Net
        from tracking import LocalTracker
        tracker = LocalTracker(base_dir={str(tmp_path / "runs")!r})
        tracker.start_run("plain")
        torch.manual_seed(0)
        info = tracker.log_model(Net())
        tracker.end_run()
        print(info.local_path, info.serialization_format)
    """)
    out = subprocess.run([sys.executable, "-c", script], check=True, timeout=300, capture_output=True, text=True)
    folder, fmt = out.stdout.split()
    torch.manual_seed(0)
    expected = Net()
    assert fmt == "torch.save"
    whole = torch.load(Path(folder) / "model.pth", weights_only=False)
    state = torch.load(Path(folder) / "state_dict.pth")
    x = torch.randn(3, 4)
    assert torch.allclose(whole(x), expected(x))
    assert state.keys() == expected.state_dict().keys()


def test_what_cannot_be_logged_is_refused_at_the_call_and_the_run_goes_on(tmp_path):
    tracker = LocalTracker(base_dir=tmp_path / "runs")
    tracker.start_run("bad")

    class HoldsALock(Net):
        def __init__(self) -> None:
            super().__init__()
            self.lock = threading.Lock()

    with pytest.raises(InvalidModelError, match="model must be a torch.nn.Module, got dict"):
        tracker.log_model({"layer.weight": torch.zeros(2, 4)})
    with pytest.raises(InvalidModelError, match="could not save the HoldsALock model as 'pickle'.*lock"):
        tracker.log_model(HoldsALock())
    with pytest.raises(InvalidNameError, match="must not contain '/' or ':'"):
        tracker.log_model(Net(), registered_model_name="team/net")
    with pytest.raises(InvalidNameError, match="artifact_path must not contain '..'"):
        tracker.log_model(Net(), artifact_path="../outside")
    tracker.log_metric("loss", 1.0, step=0)
    report = tracker.end_run()
    artifacts = tracker.get_run_dir() / "artifacts"
    assert report.events == 1 and report.sinks["json"]["delivered"] == 1
    assert sorted(p.name for p in artifacts.iterdir()) == []  # no model folder, no half-written staging left


def test_a_model_event_sent_twice_makes_one_registry_version(tmp_path, uri):
    """A retry after a lost answer, or a resumed delivery, sends the same MODEL event again."""
    tracker = LocalTracker(base_dir=tmp_path / "runs")
    tracker.start_run("twice")
    info = tracker.log_model(Net(), registered_model_name="once")
    tracker.end_run()
    run_dir = tracker.get_run_dir()
    sink = MLflowSink(tracking_uri=uri, process=False)
    run = RunContext(run_id=tracker.run_id or "twice", run_name="twice", run_dir=run_dir, experiment="Default",
                     config={}, start_time=0.0, mode="async")
    facts = sink.open(run)
    event = Model(MODEL, info.artifact_path, str(info.local_path), "once", 0.0)
    sink.write([event])
    sink.write([event])
    sink.close("FINISHED")
    versions = MlflowClient(uri).search_model_versions("name = 'once'")
    assert [str(v.version) for v in versions] == ["1"] and versions[0].run_id == facts["mlflow_run_id"]


def test_replay_delivers_a_logged_model_from_the_journal(tmp_path, uri):
    tracker = LocalTracker(base_dir=tmp_path / "runs")
    tracker.start_run("replayed")
    model, x = Net(), torch.randn(3, 4)
    expected = model(x).detach()
    tracker.log_model(model, registered_model_name="replayed-net")
    train_a_step(model)
    tracker.end_run()
    replay = subprocess.run(
        [sys.executable, "-m", "tracking", "replay", str(tracker.get_run_dir()), "--to", "mlflow",
         "--tracking-uri", uri], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert replay.returncode == 0, replay.stderr
    assert "replayed 1 events to mlflow" in replay.stdout + replay.stderr
    assert torch.allclose(_load(uri, "models:/replayed-net/1")(x), expected)


def test_a_logged_model_is_never_written_into(tmp_path):
    tracker = LocalTracker(base_dir=tmp_path / "runs")
    tracker.start_run("nested")
    info = tracker.log_model(Net())
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(InvalidNameError, match="inside the model logged at 'model'"):
        tracker.log_model(Net(), artifact_path="model/sub")
    with pytest.raises(InvalidNameError, match="would change the model logged at 'model'"):
        tracker.log_artifact(other, "model/MLmodel")
    tracker.log_artifact(other, "model-notes/notes.txt")  # beside it is fine
    tracker.end_run()
    assert sorted(p.name for p in info.local_path.iterdir()) == sorted(
        ["MLmodel", "conda.yaml", "data", "python_env.yaml", "requirements.txt"])


def test_get_run_id_gives_up_at_its_deadline_while_mlflow_is_unreachable(tmp_path):
    with socket.socket() as probe:  # a port on 127.0.0.1 that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tracker = MLflowTracker(tracking_uri=f"http://127.0.0.1:{port}", base_dir=tmp_path / "runs",
                            end_timeout_s=1.0)
    tracker.start_run("down")
    started = time.monotonic()
    with pytest.raises(RunIdPendingError, match="MLflow has no run for"):
        tracker.get_run_id(timeout_s=2.0)
    assert 2.0 <= time.monotonic() - started < 10.0
    tracker.end_run()
