"""The training process's link to its agent (tracking.recorder.link) with a real agent process: the
caller's deadlines hold while the agent is hung or dead, and what the agent warns and logs reaches
the training process as an in-process library's would."""
from __future__ import annotations

import logging
import os
import signal
import time
import warnings

import pytest

from helpers.sinks import TalkativeSink
from tracking.core.errors import MLflowSinkWarning

# Given as a class: built in the agent process (it imports helpers.sinks as this process does).
AGENT_SIDE_SINK = TalkativeSink


def _log_steps(tracker, start: int, count: int) -> None:
    for step in range(start, start + count):
        tracker.log_metric("x", float(step), step=step)


def test_flush_keeps_its_deadline_while_the_agent_is_stopped_and_its_channel_full(make_tracker):
    """A stopped agent (SIGSTOP: a wedged process, a debugger) reads nothing: thousands of flush
    requests from 30 threads fill its channel. Every flush() still returns by its deadline."""
    import threading

    tracker = make_tracker(["json"])
    tracker.start_run()
    _log_steps(tracker, 0, 100)
    assert tracker.flush(timeout_s=60)
    agent = tracker.stats().agent_pid
    took: list[float] = []

    def flush_often() -> None:
        for _ in range(100):
            started = time.monotonic()
            tracker.flush(timeout_s=0.01)
            took.append(time.monotonic() - started)

    os.kill(agent, signal.SIGSTOP)
    try:
        _log_steps(tracker, 100, 1000)
        threads = [threading.Thread(target=flush_often) for _ in range(30)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        os.kill(agent, signal.SIGCONT)
    assert len(took) == 3000 and max(took) < 1.0, f"a flush(timeout_s=0.01) took {max(took):.2f} s"
    assert tracker.flush(timeout_s=60)
    assert tracker.stats().cursors["json"] == 1100


def test_end_run_keeps_its_deadline_while_the_agent_is_stopped(make_tracker):
    tracker = make_tracker(["json"])
    tracker.start_run()
    _log_steps(tracker, 0, 100)
    assert tracker.flush(timeout_s=60)
    agent = tracker.stats().agent_pid
    os.kill(agent, signal.SIGSTOP)
    try:
        _log_steps(tracker, 100, 100)
        started = time.monotonic()
        report = tracker.end_run(timeout_s=1.0)
        took = time.monotonic() - started
    finally:
        os.kill(agent, signal.SIGCONT)
    # The deadline, plus the margin the tracker gives an agent's answer (active_run._ANSWER_MARGIN_S).
    assert took < 1.0 + 2.0 + 1.0, took
    assert report.timed_out and report.sinks["json"]["undelivered"] == 100


def test_flush_keeps_its_deadline_while_the_agent_is_killed_again_and_again(make_tracker):
    """Each restart reaps the dead agent, backs off and starts the next on the link's own thread:
    the caller never waits for any of it beyond its deadline, and nothing is lost."""
    tracker = make_tracker(["json"])
    tracker.start_run()
    step, worst, killed = 0, 0.0, []
    for _ in range(3):
        _log_steps(tracker, step, 200)
        step += 200
        assert tracker.flush(timeout_s=60)
        killed.append(tracker.stats().agent_pid)
        os.kill(killed[-1], signal.SIGKILL)
        for _ in range(20):
            _log_steps(tracker, step, 10)
            step += 10
            started = time.monotonic()
            tracker.flush(timeout_s=0.05)
            worst = max(worst, time.monotonic() - started)
    assert worst < 1.0, f"a flush(timeout_s=0.05) took {worst:.2f} s"
    assert tracker.flush(timeout_s=60)
    stats = tracker.stats()
    assert stats.cursors["json"] == step and stats.agent_pid not in killed
    assert tracker.end_run().complete


def test_a_warning_from_the_agent_is_caught_by_catch_warnings_in_the_training_process(make_tracker, tmp_path):
    """MLflow can't take the config key "bad key!": the MLflow sink warns in the agent; the training
    process sees the same category, as if MLflow ran here."""
    sink = ("mlflow", {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = make_tracker([sink])
        tracker.start_run(config={"bad key!": 1, "good": 2})
        assert tracker.end_run().complete
    assert tracker.stats().placement == {"mlflow": "agent"}
    found = [w for w in caught if issubclass(w.category, MLflowSinkWarning)]
    assert found and "bad key!" in str(found[0].message), [str(w.message) for w in caught]


def test_warnings_filters_of_the_training_process_silence_the_agents_warnings(make_tracker):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message="talkative sink")
        tracker = make_tracker(["json", AGENT_SIDE_SINK])
        tracker.start_run()
        _log_steps(tracker, 0, 10)
        assert tracker.end_run().complete
    assert tracker.stats().placement["talkative"] == "agent"
    assert not [w for w in caught if "talkative" in str(w.message)], [str(w.message) for w in caught]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.start_run()
        assert tracker.end_run().complete
    assert [(w.category, str(w.message)) for w in caught if "talkative" in str(w.message)] == [
        (UserWarning, "talkative sink opened")]


def test_the_agents_log_records_keep_their_logger_names_levels_and_pid(make_tracker, caplog):
    """A user sink logs under its own logger in the agent: the records reach that logger here."""
    caplog.set_level(logging.DEBUG)
    tracker = make_tracker([AGENT_SIDE_SINK, "json"])
    tracker.start_run()
    _log_steps(tracker, 0, 10)
    assert tracker.end_run().complete
    agent = tracker.stats().agent_pid
    records = [r for r in caplog.records if r.name == "talkative_sink"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.DEBUG, "opened for 0 events so far"), (logging.INFO, "closed after 10 events")]
    assert {r.process for r in records} == {agent} and agent != os.getpid()


def test_the_agent_sends_only_the_records_the_training_process_logs(make_tracker, caplog, monkeypatch):
    from tracking.agent.protocol import LogRecord

    received: list[tuple[str, int]] = []
    emit = LogRecord.emit
    monkeypatch.setattr(LogRecord, "emit", lambda self: (received.append((self.attributes["name"],
                                                                          self.attributes["levelno"])), emit(self)))
    caplog.set_level(logging.INFO)
    tracker = make_tracker([AGENT_SIDE_SINK])
    tracker.start_run()
    assert tracker.end_run().complete
    assert ("talkative_sink", logging.INFO) in received
    assert not [level for _, level in received if level < logging.INFO], received


def test_no_message_of_ours_repeats_the_package_name(make_tracker, caplog):
    """The logger's name says "tracking" already: a failing sink's warnings, from the agent."""
    from helpers.sinks import AgentFailingSink
    from tracking import RetryPolicy

    tracker = make_tracker(["json", AgentFailingSink], retry=RetryPolicy(initial_s=0.01, max_s=0.02))
    tracker.start_run()
    _log_steps(tracker, 0, 10)
    tracker.end_run(timeout_s=1.0)
    ours = [r for r in caplog.records if r.name.startswith("tracking")]
    assert any(r.process != os.getpid() for r in ours)  # some came from the agent process
    assert ours and not [r.getMessage() for r in ours if r.getMessage().startswith(("tracking", "mlflow sink"))]


@pytest.mark.parametrize("agent", ["process", "thread"])
def test_a_closed_link_leaves_no_thread_and_no_descriptor_behind(make_tracker, agent):
    """A sweep makes hundreds of trackers in one process: each must give back what it opened."""
    import gc
    import threading

    def descriptors() -> int:
        gc.collect()
        return len(os.listdir("/proc/self/fd"))

    before_threads = set(threading.enumerate())
    for _ in range(3):  # the first may open what stays open for good (a module's own files)
        before = descriptors()
        tracker = make_tracker(["json"], agent=agent)
        tracker.start_run()
        _log_steps(tracker, 0, 10)
        tracker.close(timeout_s=10)
        del tracker
    assert descriptors() <= before
    left = [t.name for t in set(threading.enumerate()) - before_threads if t.is_alive()]
    assert not left, left


def test_a_run_started_while_the_agent_restarts_is_opened_once_and_delivered(make_tracker, caplog, monkeypatch):
    """The link says everything again to a new agent: a run opened meanwhile must not be said twice
    (a second service of one run gives up on the sink locks the first one holds)."""
    from tracking.recorder import restarts

    monkeypatch.setattr(restarts, "BACKOFF_S", 1.0)  # a window the run surely starts in
    tracker = make_tracker(["json", "tensorboard"])
    tracker.start_run()
    _log_steps(tracker, 0, 10)
    assert tracker.end_run().complete
    (link,) = tracker._links  # the link itself: when its restart is under way is what matters here
    os.kill(tracker.stats().agent_pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while link.restarts == 0:  # counted once the dead agent is reaped, before the back-off
        assert time.monotonic() < deadline
        time.sleep(0.001)
    tracker.start_run()
    _log_steps(tracker, 0, 100)
    report = tracker.end_run(timeout_s=60)
    assert report.complete, report.summary()
    assert "is being delivered by process" not in caplog.text  # no second service of the run
