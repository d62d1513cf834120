"""Our threads against the check Lightning's test fixtures apply after every test: a thread left
behind must be a daemon whose `stop()` ends it (their `thread_police_duuu_daaa_duuu_daaa`)."""
from __future__ import annotations

import gc
import json
import threading

from tracking import Tracker
from tracking.journal import read_journal
from tracking.journal.rundir import read_meta


def _left_behind(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.is_alive()]


def _police(before: set[threading.Thread]) -> None:
    """What Lightning's fixture does with each thread a test left running."""
    for thread in _left_behind(before):
        stop = getattr(thread, "stop", None) or getattr(thread, "exit", None)
        assert thread.daemon and callable(stop), f"left a thread that can't be stopped: {thread}"
        stop()
        assert not thread.is_alive(), f"{thread} is still running after stop()"


def test_close_leaves_no_thread_of_ours_running(make_tracker):
    before = set(threading.enumerate())
    tracker = make_tracker(["json", "tensorboard"])
    tracker.start_run()
    tracker.log_metric("x", 1.0, 0)
    tracker.close()
    assert _left_behind(before) == []


def test_a_tracker_dropped_with_its_run_open_is_stopped_by_the_check_and_loses_nothing(tmp_path):
    before = set(threading.enumerate())
    tracker = Tracker(["json"], base_dir=tmp_path / "runs")  # no fixture holding on to it
    run_id = tracker.start_run()
    run_dir = tracker.base_dir / run_id
    for step in range(100):
        tracker.log_metric("x", float(step), step)
    del tracker
    gc.collect()  # the writer thread keeps its tracker alive while the run is open
    names = {t.name for t in _left_behind(before)}
    assert {"tracking-writer", "tracking-agent-link"} <= names, names
    _police(before)
    assert read_meta(run_dir)["status"] == "FINISHED"
    assert [e.step for _, e in read_journal(run_dir).events] == list(range(100))
    assert json.load(open(run_dir / "metrics.json")) == {"x": 99.0}
