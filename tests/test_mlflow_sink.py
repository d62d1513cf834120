"""The MLflow sink against real MLflow stores: sqlite files, file stores, and a real `mlflow server`.

Every check reads back through `MlflowClient`. One server serves the whole session (starting one
takes seconds); the test that stops it starts it again before it returns.
"""
from __future__ import annotations

import os
import signal
import threading
import time
import warnings
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

from mlflow_server import free_port  # noqa: E402
from tracking.journal.events import ARTIFACT, EXPERIMENT, FIGURE, METRICS, PARAMS, TAG  # noqa: E402
from tracking.journal.rundir import read_meta  # noqa: E402
from tracking.sinks.base import PermanentSinkError, Resume, RunContext  # noqa: E402
from tracking.sinks.mlflow import (  # noqa: E402
    MAX_ENTITIES_PER_REQUEST,
    MAX_METRICS_PER_REQUEST,
    MAX_PARAMS_PER_REQUEST,
    MAX_REQUEST_BYTES,
    MAX_TAGS_PER_REQUEST,
    MLflowSink,
    MLflowSinkError,
    MLflowSinkWarning,
    TAG_RUN_DIR,
    TAG_RUN_ID,
)
from tracking.sinks.mlflow.encode import _Encoder  # noqa: E402
from tracking.sinks.mlflow.uri import redact_uri, resolve_tracking_uri  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
T0 = 1_700_000_000.0  # event timestamps (s); MLflow gets int(ts * 1000)


# -- helpers -------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _restore_mlflow_env(monkeypatch):
    """Sinks on the test's thread set MLflow's HTTP and file-store variables; undo that per test."""
    for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "MLFLOW_ALLOW_FILE_STORE",
                 "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory) -> str:
    """One sqlite store for the module's sqlite tests (creating one takes a second or two)."""
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite_store') / 'mlflow.db'}"


def make_run(tmp_path: Path, run_id: str, experiment: str = "sink_tests", config=None, **kwargs) -> RunContext:
    run_dir = tmp_path / run_id
    (run_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    (run_dir / "figures").mkdir(exist_ok=True)
    return RunContext(
        run_id=run_id, run_name=f"name_{run_id}", run_dir=run_dir, experiment=experiment,
        config={} if config is None else config, start_time=T0, mode="async", **kwargs,
    )


def metric_events(keys, steps, value=lambda key, step: step / 10.0):
    return [(METRICS, {k: value(k, s) for k in keys}, s, T0 + s) for s in steps]


def every_kind(run: RunContext) -> list[tuple]:
    weights = run.run_dir / "artifacts" / "ckpt" / "weights.bin"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(b"\x01" * 64)
    figure = run.run_dir / "figures" / "curve.png"
    figure.write_bytes(PNG)
    return metric_events(["loss", "acc"], range(20)) + [
        (PARAMS, {"training": {"lr": 0.001, "epochs": 3}}, T0),
        (TAG, "status", "baseline", T0),
        (ARTIFACT, "ckpt/weights.bin", str(weights), T0),
        (FIGURE, "curve", str(figure), T0),
        (EXPERIMENT, "sink_tests_created", T0),
        (METRICS, {"nan_metric": float("nan")}, 0, T0),
    ]


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float, int]]:
    return sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key))


def sink_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, MLflowSinkWarning)]


# -- round trips -----------------------------------------------------------------------------------

@pytest.mark.parametrize("store", ["sqlite-thread", "sqlite-helper", "server"])
def test_a_full_run_arrives_in_mlflow(store, sqlite_uri, request, tmp_path):
    if store == "server":
        uri = request.getfixturevalue("mlflow_server").uri
    else:
        uri = sqlite_uri
    sink = MLflowSink(uri, process={"sqlite-thread": False, "sqlite-helper": True, "server": None}[store])
    assert sink.process == (store == "sqlite-helper")  # servers: the sink's thread by default
    run = make_run(tmp_path, f"full_{store}", config={"model": {"hidden_dims": [64, 32], "name": "mlp"}, "seed": 1},
                   experiments=("sink_tests_extra",))
    facts = sink.open(run)
    sink.write(every_kind(run))
    sink.flush()
    sink.close("FINISHED")

    assert set(facts) == {"mlflow_run_id", "tracking_uri", "experiment_id"}
    assert facts["tracking_uri"] == sink.tracking_uri
    client = MlflowClient(uri)
    got = client.get_run(facts["mlflow_run_id"])
    assert got.info.status == "FINISHED" and got.info.run_name == run.run_name
    assert client.get_experiment(facts["experiment_id"]).name == "sink_tests"
    assert got.data.params == {
        "model.hidden_dims": "[64, 32]", "model.name": "mlp", "seed": "1",
        "training.lr": "0.001", "training.epochs": "3",
    }
    assert got.data.tags[TAG_RUN_ID] == run.run_id
    assert got.data.tags[TAG_RUN_DIR] == str(run.run_dir)
    assert got.data.tags["status"] == "baseline"
    assert history(client, got.info.run_id, "loss") == [(s, s / 10.0, int((T0 + s) * 1000)) for s in range(20)]
    assert len(history(client, got.info.run_id, "acc")) == 20
    assert [m.value != m.value for m in client.get_metric_history(got.info.run_id, "nan_metric")] == [True]
    assert [a.path for a in client.list_artifacts(got.info.run_id, "ckpt")] == ["ckpt/weights.bin"]
    assert [a.path for a in client.list_artifacts(got.info.run_id, "figures")] == ["figures/curve.png"]
    for name in ("sink_tests_extra", "sink_tests_created"):
        assert client.get_experiment_by_name(name) is not None


def test_sqlite_artifacts_go_next_to_the_database(tmp_path):
    sink = MLflowSink(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}", process=False)
    run = make_run(tmp_path, "artifact_place", experiment="Default")
    facts = sink.open(run)
    sink.write(every_kind(run))
    sink.close("FINISHED")
    uri = MlflowClient(sink._resolved.uri).get_run(facts["mlflow_run_id"]).info.artifact_uri
    assert uri.startswith((tmp_path / "store" / "artifacts").as_uri())
    assert (tmp_path / "store" / "artifacts").is_dir() and not (tmp_path / "mlruns").exists()


_OPEN_AT_ONCE = """
import os, sys, time
sys.path[:0] = {path!r}
from test_mlflow_sink import make_run, metric_events
from tracking.sinks.mlflow import MLflowSink
from pathlib import Path
while not os.path.exists({go!r}):  # every process has imported MLflow: start together
    time.sleep(0.005)
sink = MLflowSink({uri!r}, process=False)
run = make_run(Path({tmp!r}), sys.argv[1])
facts = sink.open(run)
sink.write(metric_events(["loss"], range(3)))
sink.close("FINISHED")
print(facts["mlflow_run_id"])
"""


def test_processes_starting_on_one_new_sqlite_database_at_once_all_get_it(tmp_path):
    """Ranks of one job, parallel runs, or an agent replaced while its helper was still creating
    the database: MLflow's migrations, run by several processes at once, broke each other (2 or 3
    of 3 processes failed) until the sink took turns on a lock."""
    import subprocess
    import sys

    uri, go = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}", tmp_path / "go"
    code = _OPEN_AT_ONCE.format(path=[str(Path(__file__).parent), *sys.path], go=str(go), uri=uri, tmp=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", code, f"rank{i}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(3)]
    time.sleep(3)  # importing MLflow takes ~1-2 s
    go.touch()
    results = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], [err[-600:] for _, err in results]
    client = MlflowClient(uri)
    for out, _ in results:
        assert [s for s, _, _ in history(client, out.strip(), "loss")] == [0, 1, 2]


def test_the_default_uri_is_a_sqlite_file_under_artifacts_mlruns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sink = MLflowSink()
    db = tmp_path / "artifacts" / "mlruns" / "mlflow.db"
    assert sink.tracking_uri == f"sqlite:///{db}"
    assert sink.process  # local stores run MLflow in the helper process by default
    assert sink.ui_command == f"mlflow ui --backend-store-uri sqlite:///{db}"


# -- limits and fixes --------------------------------------------------------------------------------

def test_a_write_of_2500_metrics_and_250_params_arrives_in_full(sqlite_uri, tmp_path):
    sink = MLflowSink(sqlite_uri, process=False)
    facts = sink.open(make_run(tmp_path, "chunking"))
    events = metric_events([f"m{i}" for i in range(25)], range(100))
    events.append((PARAMS, {f"p{i}": i for i in range(250)}, T0))
    sink.write(events)
    sink.close("FINISHED")
    client = MlflowClient(sqlite_uri)
    run_id = facts["mlflow_run_id"]
    assert client.get_run(run_id).data.params == {f"p{i}": str(i) for i in range(250)}
    assert all(len(history(client, run_id, f"m{i}")) == 100 for i in (0, 12, 24))


def test_requests_stay_within_mlflows_limits():
    encoder = _Encoder(lambda *args, **kwargs: None)
    rows = [(f"m{i % 25}", 1.0, 0, i) for i in range(2500)]
    params = [(f"p{i}", "x" * 5000) for i in range(250)]
    tags = [(f"t{i}", "y" * 100) for i in range(150)]
    ops = encoder.batches(rows, params, tags)
    for _, metrics, ps, ts in ops:
        assert len(metrics) <= MAX_METRICS_PER_REQUEST and len(ps) <= MAX_PARAMS_PER_REQUEST
        assert len(ts) <= MAX_TAGS_PER_REQUEST
        assert len(metrics) + len(ps) + len(ts) <= MAX_ENTITIES_PER_REQUEST
        assert sum(len(k) + len(v) + 30 for k, v in ps + ts) + 100 * len(metrics) <= MAX_REQUEST_BYTES
    assert sum(len(op[1]) for op in ops) == 2500
    assert [p for op in ops for p in op[2]] == params and [t for op in ops for t in op[3]] == tags


def test_bad_keys_and_long_values_are_fixed_with_one_warning_each(sqlite_uri, tmp_path):
    sink = MLflowSink(sqlite_uri, process=False)
    facts = sink.open(make_run(tmp_path, "fixes"))
    long_key = "k" * 300
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for attempt in range(2):  # the second round must not warn again
            sink.write([
                (METRICS, {"bad key!": 1.0, "a:b": 2.0, "x/../y": 3.0, "/lead": 4.0, long_key: 5.0}, attempt, T0),
                (PARAMS, {f"long{attempt}": "v" * 7000}, T0),
                (TAG, f"tag{attempt}", "w" * 9000, T0),
            ])
    sink.close("FINISHED")
    messages = sink_warnings(record)
    assert len(messages) == 4, messages  # key characters, key length, param value, tag value
    assert sum("letters, digits" in m for m in messages) == 1
    assert sum("limited to 250 characters" in m for m in messages) == 1
    assert sum("param values are limited" in m for m in messages) == 1
    assert sum("tag values are limited" in m for m in messages) == 1

    got = MlflowClient(sqlite_uri).get_run(facts["mlflow_run_id"])
    assert {"bad key_", "a_b", "x/__/y", "lead"} <= set(got.data.metrics)
    (shortened,) = [k for k in got.data.metrics if k.startswith("kkk")]
    assert len(shortened) == 250
    assert len(got.data.params["long0"]) == 6000 and len(got.data.tags["tag1"]) == 8000


def test_a_param_logged_again_with_another_value_keeps_the_first_and_warns_once(sqlite_uri, tmp_path):
    sink = MLflowSink(sqlite_uri, process=False)
    facts = sink.open(make_run(tmp_path, "param_change", config={"lr": 0.1}))
    client = MlflowClient(sqlite_uri)
    client.log_param(facts["mlflow_run_id"], "other_writer", "a")  # MLflow holds it; the sink can't know
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        sink.write([(PARAMS, {"lr": 0.2}, T0), (METRICS, {"loss": 1.0}, 0, T0)])
        sink.write([(PARAMS, {"lr": 0.3, "other_writer": "b", "new": 1}, T0)])
    sink.close("FINISHED")
    assert len([m for m in sink_warnings(record) if "cannot change" in m]) == 1
    got = client.get_run(facts["mlflow_run_id"])
    assert got.data.params == {"lr": "0.1", "other_writer": "a", "new": "1"}
    assert got.data.metrics == {"loss": 1.0}


def test_a_request_mlflow_can_never_accept_is_skipped_and_the_rest_delivered(sqlite_uri, tmp_path):
    sink = MLflowSink(sqlite_uri, process=False)
    run = make_run(tmp_path, "permanent")
    facts = sink.open(run)
    events = metric_events(["loss"], range(5)) + [(ARTIFACT, "gone.bin", str(run.run_dir / "artifacts" / "gone.bin"), T0)]
    with pytest.raises(PermanentSinkError, match="refused 1 of 2 requests"):
        sink.write(events)
    sink.close("FINISHED")
    assert len(history(MlflowClient(sqlite_uri), facts["mlflow_run_id"], "loss")) == 5


def test_the_helper_process_runs_below_the_training_process(sqlite_uri, tmp_path):
    sink = MLflowSink(sqlite_uri, process=True)
    sink.open(make_run(tmp_path, "helper_priority"))
    try:
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, sink.helper_pid) == min(ours + 10, 19)
    finally:
        sink.close("FINISHED")


def test_a_helper_process_that_dies_is_restarted_and_nothing_is_lost(sqlite_uri, tmp_path):
    sink = MLflowSink(sqlite_uri, process=True)
    facts = sink.open(make_run(tmp_path, "helper_dies"))
    sink.write(metric_events(["loss"], range(5)))
    first = sink.helper_pid
    os.kill(first, signal.SIGKILL)
    batch = metric_events(["loss"], range(5, 10))
    with pytest.raises(MLflowSinkError, match="helper process exited"):
        sink.write(batch)
    sink.write(batch)  # the worker's retry: a new helper takes over
    assert sink.helper_pid not in (None, first)
    sink.close("FINISHED")
    assert sink.helper_pid is None
    assert [s for s, _, _ in history(MlflowClient(sqlite_uri), facts["mlflow_run_id"], "loss")] == list(range(10))


# -- runs: resume and idempotent open ------------------------------------------------------------

def test_open_again_for_the_same_run_continues_its_mlflow_run(sqlite_uri, tmp_path):
    run = make_run(tmp_path, "reopen", config={"lr": 0.1})
    first = MLflowSink(sqlite_uri, process=False)
    facts = first.open(run)
    first.write(metric_events(["loss"], range(3)))
    # A second delivery (a retry after a lost answer, or a replay): found by its tracking.run_id tag.
    second = MLflowSink(sqlite_uri, process=False)
    assert second.open(run)["mlflow_run_id"] == facts["mlflow_run_id"]
    second.write(metric_events(["loss"], range(3, 6)))
    second.close("FINISHED")
    assert [s for s, _, _ in history(MlflowClient(sqlite_uri), facts["mlflow_run_id"], "loss")] == list(range(6))


def test_resume_continues_the_recorded_mlflow_run(sqlite_uri, tmp_path):
    client = MlflowClient(sqlite_uri)
    existing = client.create_run(client.create_experiment("sink_tests_resume")).info.run_id
    sink = MLflowSink(sqlite_uri, process=False)
    run = make_run(tmp_path, "resumed", resume=Resume(0, None, {"mlflow_run_id": existing, "tracking_uri": sink.tracking_uri}))
    assert sink.open(run)["mlflow_run_id"] == existing
    sink.close("FAILED")
    assert client.get_run(existing).info.status == "FAILED"


# -- tracking URIs -----------------------------------------------------------------------------------

def test_a_file_uri_with_an_artifacts_folder_logs_to_sqlite_in_that_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        sink = MLflowSink("file:./artifacts/mlruns", process=False)
    db = tmp_path / "artifacts" / "mlruns" / "mlflow.db"
    (message,) = sink_warnings(record)
    assert f"mlflow ui --backend-store-uri sqlite:///{db}" in message
    assert sink.tracking_uri == f"sqlite:///{db}"
    facts = sink.open(make_run(tmp_path, "file_fallback"))
    sink.write(metric_events(["loss"], range(3)))
    sink.close("FINISHED")
    assert len(history(MlflowClient(f"sqlite:///{db}"), facts["mlflow_run_id"], "loss")) == 3


def test_a_file_uri_without_an_artifacts_folder_uses_a_real_file_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        sink = MLflowSink("file:./mlruns")
    assert sink_warnings(record) == []
    assert sink.process and sink.tracking_uri == (tmp_path / "mlruns").as_uri()
    assert sink.ui_command.startswith("MLFLOW_ALLOW_FILE_STORE=true mlflow ui")
    facts = sink.open(make_run(tmp_path, "file_store"))
    sink.write(metric_events(["loss"], range(3)))
    sink.close("FINISHED")
    run_dir = tmp_path / "mlruns" / facts["experiment_id"] / facts["mlflow_run_id"]
    assert (run_dir / "meta.yaml").is_file() and (run_dir / "metrics" / "loss").is_file()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # only the helper process had it
    assert MlflowClient(sink.tracking_uri).get_run(facts["mlflow_run_id"]).info.status == "FINISHED"


@pytest.mark.parametrize("uri, shown", [
    ("http://alice:s3cret@127.0.0.1:5000", "http://alice:***@127.0.0.1:5000"),
    ("https://s3cret@mlflow.example", "https://***@mlflow.example"),
    ("http://127.0.0.1:5000/?token=s3cret&x=1", "http://127.0.0.1:5000/?token=***&x=1"),
])
def test_credentials_in_uris_are_redacted(uri, shown):
    resolved = resolve_tracking_uri(uri)
    assert resolved.redacted == shown and redact_uri(uri) == shown
    assert "s3cret" not in repr(resolved)
    sink = MLflowSink(uri)
    assert sink.tracking_uri == shown and "s3cret" not in repr(sink)


def test_resolved_uris_are_absolute_and_say_how_to_see_the_runs(tmp_path):
    resolved = resolve_tracking_uri("sqlite:///rel/m.db", cwd=tmp_path)
    assert resolved.uri == f"sqlite:///{tmp_path}/rel/m.db" and resolved.note is None
    assert resolved.artifact_location == (tmp_path / "rel" / "artifacts").as_uri()
    assert resolve_tracking_uri("http://127.0.0.1:5000/").uri == "http://127.0.0.1:5000"
    fallback = resolve_tracking_uri(tmp_path / "artifacts" / "mlruns")
    assert fallback.kind == "sqlite" and "mlflow ui --backend-store-uri sqlite:///" in fallback.note


# -- a server that is down ---------------------------------------------------------------------------

def test_open_fails_within_seconds_when_the_server_is_down_and_hides_credentials(tmp_path):
    sink = MLflowSink(f"http://alice:s3cret@127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(MLflowSinkError) as caught:
        sink.open(make_run(tmp_path, "server_down"))
    assert time.monotonic() - started < 10
    assert not caught.value.permanent
    assert "s3cret" not in str(caught.value) and caught.value.__cause__ is None
    assert "alice:***@127.0.0.1" in str(caught.value)


def test_a_server_restart_mid_run_loses_nothing_and_duplicates_nothing(mlflow_server, tmp_path):
    sink = MLflowSink(mlflow_server.uri)
    facts = sink.open(make_run(tmp_path, "restart"))
    sink.write(metric_events(["before"], range(10)))
    keys = [f"k{i}" for i in range(20)]
    batch = metric_events(keys, range(1000))  # 20,000 points: 20 requests of 1,000
    accepted_before = mlflow_server.count_requests("/api/2.0/mlflow/runs/log-batch")
    stopped = threading.Event()

    def stop_after_three_requests() -> None:
        deadline = time.monotonic() + 60
        while mlflow_server.count_requests("/api/2.0/mlflow/runs/log-batch") < accepted_before + 3:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        mlflow_server.stop()
        stopped.set()

    stopper = threading.Thread(target=stop_after_three_requests)
    stopper.start()
    try:
        with pytest.raises(MLflowSinkError):
            sink.write(batch)  # fails part-way: the server went away
        assert stopped.wait(60)
        failed_at = time.monotonic()
        with pytest.raises(MLflowSinkError):
            sink.write(batch)  # the worker's retry, while the server is still down
        assert time.monotonic() - failed_at < 10
    finally:
        stopper.join(60)
        mlflow_server.start()
    sink.write(batch)  # the retry after the restart sends only what MLflow has not accepted
    sink.close("FINISHED")

    accepted = mlflow_server.count_requests("/api/2.0/mlflow/runs/log-batch") - accepted_before
    assert 20 <= accepted <= 21  # one more only if a request was cut off mid-answer
    client = MlflowClient(mlflow_server.uri)
    for key in (keys[0], keys[-1]):
        assert [s for s, _, _ in history(client, facts["mlflow_run_id"], key)] == list(range(1000))
    assert client.get_run(facts["mlflow_run_id"]).info.status == "FINISHED"


# -- end to end through the tracker ------------------------------------------------------------------

def test_a_tracker_run_reaches_mlflow_and_meta_json_names_the_mlflow_run(make_tracker, tmp_path, sqlite_uri):
    sink = MLflowSink(sqlite_uri)
    tracker = make_tracker([sink], experiment_name="tracker_e2e")
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"\x02" * 128)
    run_id = tracker.start_run("e2e", config={"model": {"hidden_dims": [64, 32]}})
    for step in range(50):
        tracker.log_metrics({"train_loss": 1.0 / (step + 1), "val_rmse": 0.5}, step=step)
    tracker.log_params({"pipeline": {"include_arrhenius": True}})
    tracker.set_tag("dataset_version", "v1.0")
    tracker.log_artifact(checkpoint, "checkpoints/best_model.pt")
    tracker.log_figure(PNG, "attention")
    report = tracker.end_run(timeout_s=60)
    assert report.complete, report.summary()

    meta = read_meta(report.run_dir)
    client = MlflowClient(sqlite_uri)
    got = client.get_run(meta["mlflow_run_id"])
    assert got.info.status == "FINISHED" and got.data.tags[TAG_RUN_ID] == run_id
    assert client.get_experiment(got.info.experiment_id).name == "tracker_e2e"
    assert got.data.params == {"model.hidden_dims": "[64, 32]", "pipeline.include_arrhenius": "True"}
    assert got.data.tags["dataset_version"] == "v1.0"
    assert len(history(client, got.info.run_id, "train_loss")) == 50
    assert [a.path for a in client.list_artifacts(got.info.run_id, "checkpoints")] == ["checkpoints/best_model.pt"]
    assert [a.path for a in client.list_artifacts(got.info.run_id, "figures")] == ["figures/attention.png"]
