"""The delivery agent with real processes: the training process SIGKILLed, the agent SIGKILLed, a
background end that outlives the training process, a job's process group signalled. Every value is
counted back from where its reader finds it: json.load, TensorBoard's own reader, the MLflow client."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tracking import DualTracker
from tracking.journal import read_journal
from tracking.journal.rundir import read_meta

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = """
import os, sys, time
sys.path.insert(0, {root!r})
from tracking import DualTracker
tracker = DualTracker(local_base_dir={base!r}, mlflow_tracking_uri={uri!r}, mlflow_experiment_name="agent_tests")
run_id = tracker.start_run("child")
print(run_id, flush=True)
"""


def _spawn(tmp_path: Path, body: str, **popen) -> tuple[subprocess.Popen, str]:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    code = PRELUDE.format(root=str(ROOT), base=str(tmp_path / "runs"), uri=uri) + textwrap.dedent(body)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)
    run_id = proc.stdout.readline().strip()
    assert run_id, proc.stderr.read()
    return proc, run_id


def _wait_for_status(run_dir: Path, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        meta = read_meta(run_dir)
        if meta["status"] != "RUNNING":
            return meta
        time.sleep(0.2)
    raise AssertionError(f"the run is still RUNNING after {timeout_s} s: {read_meta(run_dir)}")


def _wait_journaled(run_dir: Path, events: int, timeout_s: float = 60) -> None:
    from tracking.journal import JournalReader

    reader, deadline = JournalReader(run_dir), time.monotonic() + timeout_s
    while reader.refresh() < events:
        assert time.monotonic() < deadline, f"fewer than {events} events journaled after {timeout_s} s"
        time.sleep(0.05)


def _wait_delivered(tracker, sink: str, events: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while tracker.stats().cursors.get(sink, 0) < events:
        assert time.monotonic() < deadline, f"sink {sink!r} has fewer than {events} events after {timeout_s} s"
        time.sleep(0.02)


def _tensorboard_steps(run_dir: Path, key: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    return [event.step for event in accumulator.Scalars(key)]


def _mlflow_steps(tmp_path: Path, run_dir: Path, key: str) -> tuple[list[int], str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow_run = read_meta(run_dir)["mlflow_run_id"]
    steps = sorted(m.step for m in client.get_metric_history(mlflow_run, key))
    return steps, client.get_run(mlflow_run).info.status


# ~2,000 steps a second: MLflow's sqlite store (~100 µs a point) can take all of it within the
# 30 s the agent is given to finish a killed run on this 2-core machine.
LOG_UNTIL_KILLED = """
tracker.flush(timeout_s=120)  # every sink is open (MLflow's helper started) before the clock runs
i = 0
while True:
    tracker.log_metrics({"x": float(i), "y": 2.0 * i}, step=i)
    i += 1
    if i == 2000:
        print("logging", flush=True)
    if i % 20 == 0:
        time.sleep(0.01)
"""


def test_sigkill_of_the_training_process_loses_nothing_and_ends_the_run_killed(tmp_path):
    """No replay: the agent delivers everything journaled, closes the sinks and ends the run KILLED
    in meta.json and in MLflow."""
    proc, run_id = _spawn(tmp_path, LOG_UNTIL_KILLED)
    assert proc.stdout.readline().strip() == "logging"
    run_dir = tmp_path / "runs" / run_id
    _wait_journaled(run_dir, 5000)  # mid-run, with a backlog behind MLflow
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    meta = _wait_for_status(run_dir, 30)
    journaled = [ev.step for _, ev in read_journal(run_dir).events]
    assert meta["status"] == "KILLED" and len(journaled) >= 2000 and journaled == list(range(len(journaled)))
    last = journaled[-1]
    assert json.load(open(run_dir / "metrics.json")) == {"x": float(last), "y": 2.0 * last}
    assert [int(r["step"]) for r in csv.DictReader(open(run_dir / "step_metrics.csv"))] == journaled
    assert _tensorboard_steps(run_dir, "x") == journaled
    steps, status = _mlflow_steps(tmp_path, run_dir, "y")
    assert steps == journaled and status == "KILLED"
    assert all(s["undelivered"] == 0 for s in meta["sinks"].values()), meta["sinks"]


def test_sigkill_of_the_agent_mid_run_a_new_one_takes_over_and_delivers_exactly_once(tmp_path):
    tracker = DualTracker(local_base_dir=tmp_path / "runs", mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                          mlflow_experiment_name="agent_tests", end_timeout_s=120)
    try:
        run_id = tracker.start_run("agent_killed")
        killed = []
        for step in range(6000):
            tracker.log_metrics({"x": float(step), "y": 1.0}, step=step)
            if step in (1500, 4000):  # twice: once mid-delivery, once after a restart
                _wait_delivered(tracker, "json", step - 500)  # the agent has delivered (and committed) some
                pid = tracker.stats().agent_pid
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        assert tracker.flush(timeout_s=120)
        stats = tracker.stats()
        assert stats.agent_pid not in killed and stats.placement["mlflow"] == "agent"
        report = tracker.end_run()
    finally:
        tracker.close()
    assert report.complete, report.summary()
    run_dir = tmp_path / "runs" / run_id
    expected = list(range(6000))
    assert _tensorboard_steps(run_dir, "x") == expected
    assert [int(r["step"]) for r in csv.DictReader(open(run_dir / "step_metrics.csv"))] == expected
    steps, status = _mlflow_steps(tmp_path, run_dir, "x")
    assert steps == expected and status == "FINISHED"


def test_end_run_in_the_background_returns_at_once_and_the_agent_finishes_alone(tmp_path):
    """MLflow's sqlite store takes ~100 µs a point: 50,000 points are seconds behind when the loop
    ends; the training process returns from end_run and exits, the agent finishes."""
    proc, run_id = _spawn(tmp_path, """
tracker.flush(timeout_s=120)  # MLflow's run exists: what follows is only the backlog
for step in range(5000):
    tracker.log_metrics({f"k{k}": float(step) for k in range(10)}, step=step)
started = time.monotonic()
report = tracker.end_run(background=True)
print(f"{time.monotonic() - started:.3f}", report.background, report.sinks["mlflow"]["undelivered"], flush=True)
""")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    seconds, background, behind = out.split()
    assert float(seconds) <= 1.0 and background == "True" and int(behind) > 0
    run_dir = tmp_path / "runs" / run_id
    shown = subprocess.run([sys.executable, "-m", "tracking", "show", str(run_dir), "--json"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    if info["status"] == "RUNNING":  # the agent is still at it: show says how far behind it is
        assert info["pending_status"] == "FINISHED" and info["sinks"]["mlflow"]["undelivered"] > 0
    meta = _wait_for_status(run_dir, 120)
    assert meta["status"] == "FINISHED" and "pending_status" not in meta
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    for key in ("k0", "k9"):
        assert sorted(m.step for m in client.get_metric_history(meta["mlflow_run_id"], key)) == list(range(5000))
    assert client.get_run(meta["mlflow_run_id"]).info.status == "FINISHED"


def test_a_script_that_exits_right_after_a_background_end_has_every_event_in_every_sink(tmp_path):
    """No flush, no wait: the script exits while its agent is still importing MLflow. The agent
    reads what the script said before it went (OpenRun, EndRun) and delivers the whole run."""
    proc, run_id = _spawn(tmp_path, """
for step in range(5000):
    tracker.log_metrics({f"k{k}": float(step) for k in range(10)}, step=step)
tracker.end_run(background=True)
""")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    run_dir = tmp_path / "runs" / run_id
    meta = _wait_for_status(run_dir, 120)
    assert meta["status"] == "FINISHED" and all(s["undelivered"] == 0 for s in meta["sinks"].values()), meta
    expected = list(range(5000))
    assert json.load(open(run_dir / "metrics.json")) == {f"k{k}": 4999.0 for k in range(10)}
    assert [int(r["step"]) for r in csv.DictReader(open(run_dir / "step_metrics.csv"))] == expected
    assert _tensorboard_steps(run_dir, "k9") == expected
    for key in ("k0", "k9"):
        steps, status = _mlflow_steps(tmp_path, run_dir, key)
        assert steps == expected and status == "FINISHED"


def test_a_training_process_killed_in_its_first_half_second_has_what_it_journaled_delivered(tmp_path):
    """SIGKILL as soon as 2,000 events are journaled (about 0.1 s after start_run), before the agent
    has even built its sinks: it still reads the run from its channel and the journal, delivers it,
    and ends it KILLED."""
    proc, run_id = _spawn(tmp_path, """
for step in range(2000):
    tracker.log_metric("loss", float(step), step=step)
time.sleep(60)
""")
    run_dir = tmp_path / "runs" / run_id
    _wait_journaled(run_dir, 2000)
    proc.send_signal(signal.SIGKILL)
    # Killed before the agent had taken a sink (it imports MLflow and TensorBoard for seconds first).
    assert not list(run_dir.glob("delivery/*.lock"))
    proc.wait(timeout=30)
    meta = _wait_for_status(run_dir, 120)
    assert meta["status"] == "KILLED" and meta["events"] == 2000
    assert all(s["undelivered"] == 0 for s in meta["sinks"].values()), meta["sinks"]
    expected = list(range(2000))
    assert json.load(open(run_dir / "metrics.json")) == {"loss": 1999.0}
    assert _tensorboard_steps(run_dir, "loss") == expected
    assert _mlflow_steps(tmp_path, run_dir, "loss") == (expected, "KILLED")


def test_a_signal_to_the_jobs_process_group_does_not_reach_the_agent(tmp_path):
    """`kill -TERM -PGID` (a scheduler, Ctrl-C in a terminal) ends the training process; its handler
    ends the run KILLED, and the agent, in a session of its own, is still there to deliver it."""
    proc, run_id = _spawn(tmp_path, """
for i in range(3000):
    tracker.log_metrics({"x": float(i)}, step=i)
print(tracker.stats().agent_pid, flush=True)
while True:
    time.sleep(0.05)
""", start_new_session=True)
    agent_pid = int(proc.stdout.readline())
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    run_dir = tmp_path / "runs" / run_id
    meta = _wait_for_status(run_dir, 60)  # the handler waits 10 s at most: the agent may finish alone
    assert meta["status"] == "KILLED" and all(s["undelivered"] == 0 for s in meta["sinks"].values()), meta
    assert _tensorboard_steps(run_dir, "x") == list(range(3000))
    deadline = time.monotonic() + 30  # with its training process gone, the agent exits on its own
    while time.monotonic() < deadline and _alive(agent_pid):
        time.sleep(0.1)
    assert not _alive(agent_pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is gone for our purposes
        return fh.read().split(")")[-1].split()[0] != "Z"


def test_stats_say_where_each_sink_runs_and_how_far_it_is(make_tracker, tmp_path):
    from helpers.sinks import RecordingSink

    tracker = make_tracker(["json", RecordingSink()])
    tracker.start_run()
    for step in range(100):
        tracker.log_metric("x", 1.0, step)
    assert tracker.flush(timeout_s=60)
    stats = tracker.stats()
    assert stats.placement == {"json": "agent", "recording": "thread"}
    assert stats.cursors == {"json": 100, "recording": 100} and stats.journaled == 100
    assert stats.agent_pid not in (None, os.getpid()) and _alive(stats.agent_pid)


@pytest.mark.parametrize("agent", ["process", "thread"])
def test_the_same_run_arrives_the_same_way_from_a_process_or_a_thread(make_tracker, agent):
    tracker = make_tracker(["json", "tensorboard"], agent=agent)
    run_id = tracker.start_run("where", config={"lr": 0.1})
    for step in range(500):
        tracker.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    tracker.set_tag("k", "v")
    report = tracker.end_run()
    assert report.complete and {s["placement"] for s in report.sinks.values()} == {"agent" if agent == "process" else "thread"}
    run_dir = tracker.base_dir / run_id
    assert _tensorboard_steps(run_dir, "loss") == list(range(500))
    assert read_meta(run_dir)["tags"] == {"k": "v"}
