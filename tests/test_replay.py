"""`python -m tracking replay` (tracking.delivery.replay), run as a user would, in a subprocess: bounded
memory however long the run, one-line errors, nothing marked delivered that was not."""
from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

from tracking.journal.events import METRICS
from tracking.journal import JournalWriter
from tracking.journal.rundir import base_meta, create_run_dir, write_meta

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tracking", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _journaled_run(base: Path, events: int, batch: int = 10_000) -> Path:
    """A run directory whose journal holds `events` metric events, as a killed run leaves it."""
    run_dir = create_run_dir(base, "long_run")
    write_meta(run_dir, base_meta("long_run", "long_run", "Default", 0.0))
    writer = JournalWriter(run_dir, {"run_id": "long_run", "config": {}}, fsync_interval_s=60)
    for first in range(0, events, batch):
        writer.append([(METRICS, {"loss": 0.5}, step, 1.0) for step in range(first, min(first + batch, events))])
    writer.close("FINISHED")
    return run_dir


def test_replaying_two_million_events_stays_under_300_mib(tmp_path):
    run_dir = _journaled_run(tmp_path, 2_000_000)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = _cli("replay", str(run_dir), "--to", "tensorboard", timeout=600)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert out.returncode == 0 and "replayed 2000000 events" in out.stdout, out.stderr
    assert peak_mib < 300 or before / 1024 >= 300, f"replay peaked at {peak_mib:.0f} MiB"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    steps = [s.step for s in accumulator.Scalars("loss")]
    assert len(steps) == 2_000_000 and steps[-1] == 1_999_999


def test_replay_to_an_mlflow_server_that_is_down_fails_in_one_line_and_changes_nothing(mlflow_server, tmp_path):
    run_dir = _journaled_run(tmp_path, 1000, batch=100)
    meta_before = (run_dir / "meta.json").read_bytes()
    mlflow_server.stop()
    try:
        started = time.monotonic()
        out = _cli("replay", str(run_dir), "--to", "mlflow", "--tracking-uri", mlflow_server.uri, "--timeout-s", "20")
        seconds = time.monotonic() - started
    finally:
        mlflow_server.start()
    assert out.returncode == 2 and seconds < 60
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "cannot replay" in out.stderr and "still failing" in out.stderr
    assert (run_dir / "meta.json").read_bytes() == meta_before
    again = _cli("replay", str(run_dir), "--to", "mlflow", "--tracking-uri", mlflow_server.uri)
    assert again.returncode == 0 and "replayed 1000 events" in again.stdout, again.stderr


def test_replay_refuses_a_sink_a_live_agent_serves(make_tracker):
    from helpers.sinks import GateSink

    gate = GateSink()
    tracker = make_tracker(["json", gate])
    run_id = tracker.start_run()
    assert tracker.flush(timeout_s=60)  # both sinks are open: the agent holds the json sink's claim
    tracker.log_metric("x", 1.0)
    assert gate.entered.wait(30)
    try:
        out = _cli("replay", str(tracker.base_dir / run_id), "--to", "json")
    finally:
        gate.gate.set()
    assert out.returncode == 2 and "is being delivered by process" in out.stderr, out.stderr


def test_replay_passes_over_a_damaged_line_with_a_warning_and_delivers_the_rest(tmp_path):
    run_dir = _journaled_run(tmp_path, 1000, batch=100)
    journal = run_dir / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    assert len(lines) == 12  # the header, ten batches of 100, the end line
    lines[5] = b"#" * (len(lines[5]) - 1) + b"\n"  # seqs 401-500 (steps 400-499): bytes gone bad on disk
    journal.write_bytes(b"".join(lines))
    out = _cli("replay", str(run_dir), "--to", "tensorboard")
    assert out.returncode == 0, out.stderr
    assert "replayed 900 events to tensorboard (100 unreadable in the journal, skipped)" in out.stdout
    assert "unreadable" in out.stderr and "Traceback" not in out.stderr
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    assert [s.step for s in accumulator.Scalars("loss")] == [*range(400), *range(500, 1000)]
    again = _cli("replay", str(run_dir), "--to", "tensorboard")
    assert again.returncode == 0 and "replayed 0 events" in again.stdout, again.stdout
