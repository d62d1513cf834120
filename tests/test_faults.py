"""Faults with real processes: SIGKILL then replay, an MLflow server down for a whole run, a full
disk under the JSON sink. Nothing logged may be lost; nothing may hang past its deadline."""
from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path


from tracking import RetryPolicy
from tracking.journal import JournalReader, read_journal
from tracking.journal.rundir import read_meta

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tracking", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)


def test_sigkill_then_replay_keeps_every_flushed_event(tmp_path):
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from tracking import Tracker
        tracker = Tracker(["json"], base_dir={str(tmp_path)!r})
        run_id = tracker.start_run("killed")
        for i in range(20000):
            tracker.log_metric("x", float(i), step=i)
        assert tracker.flush(timeout_s=60)
        print(run_id, flush=True)
        i = 20000
        while True:  # keeps logging until it is killed
            tracker.log_metric("x", float(i), step=i)
            i += 1
            if i % 1000 == 0:
                time.sleep(0.001)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    run_id = proc.stdout.readline().strip()
    reader, deadline = JournalReader(tmp_path / run_id), time.monotonic() + 60
    while reader.refresh() < 25000:  # killed mid-run, past the flushed part
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    run_dir = tmp_path / run_id
    values = [ev[1]["x"] for _, ev in read_journal(run_dir).events]
    assert len(values) >= 20000 and values == [float(i) for i in range(len(values))]
    deadline = time.monotonic() + 30  # the agent ends the run for the killed process
    while read_meta(run_dir)["status"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert read_meta(run_dir)["status"] == "KILLED"
    out = _cli("replay", str(run_dir), "--to", "tensorboard")  # a sink the run did not have
    assert out.returncode == 0 and f"replayed {len(values)} events" in out.stdout, out.stderr


def test_mlflow_server_down_for_the_whole_run_then_replay_delivers_once(mlflow_server, make_tracker, tmp_path):
    from mlflow.tracking import MlflowClient

    from tracking.sinks.mlflow import MLflowSink

    mlflow_server.stop()
    try:
        tracker = make_tracker(["json", MLflowSink(tracking_uri=mlflow_server.uri)],
                               retry=RetryPolicy(initial_s=0.2, max_s=1.0))
        run_id = tracker.start_run("server_down")
        started = time.perf_counter()
        for step in range(2000):
            tracker.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 2000}, step=step)
        loop_s = time.perf_counter() - started
        ended = time.perf_counter()
        report = tracker.end_run(timeout_s=3)
        end_s = time.perf_counter() - ended
    finally:
        mlflow_server.start()
    assert loop_s < 5, "logging must not wait for the server"
    assert end_s < 3 + 2, "end_run must return within its deadline"
    assert report.sinks["mlflow"]["undelivered"] == 2000 and report.sinks["json"]["undelivered"] == 0
    assert report.replay_commands and "--to mlflow" in report.replay_commands[0]
    run_dir = tracker.base_dir / run_id

    for attempt in range(2):  # replaying twice must not duplicate a point
        out = _cli("replay", str(run_dir), "--to", "mlflow", "--tracking-uri", mlflow_server.uri)
        assert out.returncode == 0, out.stderr
        assert f"replayed {2000 if attempt == 0 else 0} events" in out.stdout
        meta = read_meta(run_dir)
        client = MlflowClient(tracking_uri=mlflow_server.uri)
        history = client.get_metric_history(meta["mlflow_run_id"], "loss")
        assert sorted(p.step for p in history) == list(range(2000))
    run = client.get_run(meta["mlflow_run_id"])
    assert run.data.tags["tracking.run_id"] == run_id and run.info.status == "FINISHED"


def test_disk_full_under_the_json_sink_is_reported_and_other_sinks_go_on(make_tracker, monkeypatch):
    from helpers.sinks import RecordingSink
    from tracking.sinks import json_sink

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    good = RecordingSink("good")
    # Sync mode: the JSON sink runs in this process, where the test fills the disk under it.
    tracker = make_tracker(["json", good], mode="sync", retry=RetryPolicy(initial_s=0.05, max_s=0.1))
    run_id = tracker.start_run("enospc")
    monkeypatch.setattr(json_sink, "write_json_atomic", no_space)  # the disk fills up mid-run
    for step in range(100):
        tracker.log_metric("x", float(step), step=step)
    tracker.flush(timeout_s=2)
    report = tracker.end_run(timeout_s=1)
    assert len(good.events) == 100 and report.sinks["good"]["undelivered"] == 0
    assert report.sinks["json"]["errors"] >= 1 and "No space left on device" in report.sinks["json"]["last_error"]
    assert report.replay_commands == [f"{Path(sys.executable).with_name('batteryml-tracking')} replay "
                                      f"{tracker.base_dir / run_id} --to json"]
    monkeypatch.undo()  # space again: the replay rebuilds metrics.json
    out = _cli("replay", str(tracker.base_dir / run_id), "--to", "json")
    assert out.returncode == 0, out.stderr
    assert json.load(open(tracker.base_dir / run_id / "metrics.json")) == {"x": 99.0}
