"""The agent's run service (tracking.agent.run_service) against real sinks and a real agent process:
flush answered while a slow sink is still behind, a second run beside one ending in the background,
an agent killed while it finishes a run alone."""
from __future__ import annotations

import os
import signal
import threading
import time

from helpers.sinks import SlowSink
from test_agent import _mlflow_steps, _tensorboard_steps, _wait_for_status
from tracking import DualTracker


def test_flush_is_answered_while_a_slow_sink_is_still_behind_the_loop(make_tracker):
    """A sink slower than the loop never catches up while the loop runs: flush() must not wait for
    it to be current, only for it to have committed what was logged before the call."""
    slow = SlowSink(per_event_s=5e-4)  # 2,000 events a second
    tracker = make_tracker([slow], end_timeout_s=120)
    tracker.start_run()
    logged, stop = [0], threading.Event()

    def produce() -> None:  # ~10,000 events a second, from a thread of its own
        while not stop.is_set():
            tracker.log_metric("x", 1.0, logged[0])
            logged[0] += 1
            if logged[0] % 100 == 0:
                time.sleep(0.01)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        time.sleep(0.5)
        before = logged[0]
        flushed = tracker.flush(timeout_s=60)
        received, ahead = len(slow.events), logged[0]
    finally:
        stop.set()
        producer.join()
    assert flushed and received >= before
    assert ahead > received, "the sink caught up with the loop: the case under test did not happen"
    report = tracker.end_run()
    assert report.complete and [e[2] for e in slow.events] == list(range(logged[0]))


def _dual(tmp_path) -> DualTracker:
    return DualTracker(local_base_dir=tmp_path / "runs", mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                       mlflow_experiment_name="service_tests", end_timeout_s=120)


def _log_behind(tracker: DualTracker, name: str, steps: int) -> str:
    """A run whose MLflow sink is seconds behind when it ends (10 keys a step, ~100 µs a point)."""
    run_id = tracker.start_run(name)
    assert tracker.flush(timeout_s=120)  # MLflow's run exists: what follows is only the backlog
    for step in range(steps):
        tracker.log_metrics({f"k{k}": float(step) for k in range(10)}, step=step)
    return run_id


def test_a_second_run_starts_while_the_first_ends_in_the_background(tmp_path):
    """Each run has its own sink instances: opening the next run's sinks must not touch the one the
    agent is still finishing."""
    tracker = _dual(tmp_path)
    try:
        first = _log_behind(tracker, "first", 3000)
        report = tracker.end_run(background=True)
        assert report.background and report.sinks["mlflow"]["undelivered"] > 0
        second = tracker.start_run("second")
        for step in range(200):
            tracker.log_metrics({"k0": -float(step)}, step=step)
        assert tracker.end_run().complete
        meta = _wait_for_status(tmp_path / "runs" / first, 120)
    finally:
        tracker.close()
    assert meta["status"] == "FINISHED"
    for run_id, steps in ((first, 3000), (second, 200)):
        run_dir = tmp_path / "runs" / run_id
        assert _tensorboard_steps(run_dir, "k0") == list(range(steps))
        assert _mlflow_steps(tmp_path, run_dir, "k0") == (list(range(steps)), "FINISHED")


def test_an_agent_killed_during_a_background_end_is_replaced_and_the_run_still_finishes(tmp_path):
    tracker = _dual(tmp_path)
    try:
        run_id = _log_behind(tracker, "bg_killed", 3000)
        report = tracker.end_run(background=True)
        assert report.background and report.sinks["mlflow"]["undelivered"] > 0
        killed = tracker.stats().agent_pid
        os.kill(killed, signal.SIGKILL)
        meta = _wait_for_status(tmp_path / "runs" / run_id, 120)
        assert tracker.stats().agent_pid not in (None, killed)
    finally:
        tracker.close()
    run_dir = tmp_path / "runs" / run_id
    assert meta["status"] == "FINISHED" and all(s["undelivered"] == 0 for s in meta["sinks"].values()), meta
    assert _tensorboard_steps(run_dir, "k9") == list(range(3000))
    assert _mlflow_steps(tmp_path, run_dir, "k9") == (list(range(3000)), "FINISHED")
