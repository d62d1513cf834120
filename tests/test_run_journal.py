"""The run journal on a disk that fills up and is freed again: a real tmpfs the test mounts (root
only; elsewhere the test says why it is skipped)."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracking.journal import JournalReader
from tracking.journal.rundir import read_meta

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs at tmp_path/disk, unmounted at teardown."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(path: Path) -> None:
    """Write zeros to `path` until the file system is full (down to its last byte)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_a_disk_that_fills_up_and_is_freed_loses_nothing_and_keeps_the_order(make_tracker, small_disk):
    tracker = make_tracker(["json"], base_dir=small_disk / "runs", batch_interval_s=0.02)
    run_id = tracker.start_run("full_disk")
    run_dir = small_disk / "runs" / run_id
    for step in range(500):
        tracker.log_metrics({"x": float(step), "pad": 0.5}, step=step)
    assert tracker.flush(timeout_s=30)
    _fill(small_disk / "ballast")
    for step in range(500, 2000):  # logged while the disk is full: held in memory, not lost
        tracker.log_metrics({"x": float(step), "pad": 0.5}, step=step)
    assert not tracker.flush(timeout_s=1.0)
    stats = tracker.stats()
    assert stats.journal_errors >= 1 and stats.held > 0
    os.unlink(small_disk / "ballast")  # space again: what was held is journaled, with nothing new logged
    assert tracker.flush(timeout_s=30) and tracker.stats().held == 0
    for step in range(2000, 3000):
        tracker.log_metrics({"x": float(step), "pad": 0.5}, step=step)
    report = tracker.end_run(timeout_s=60)
    assert report.complete and report.events == 3000, report.summary()

    reader = JournalReader(run_dir)
    steps = [event.step for _, event in reader.iter_events()]
    assert steps == list(range(3000)) and reader.corrupt_lines == 0 and reader.end_status == "FINISHED"
    journal = run_dir.joinpath("journal.jsonl").read_bytes()
    assert journal.endswith(b"\n") and journal.count(b"\n") == len(_lines(run_dir))
    meta = read_meta(run_dir)
    assert meta["events"] == 3000 and meta["sinks"]["json"]["delivered_seq"] == 3000
    assert json.load(open(run_dir / "metrics.json")) == {"x": 2999.0, "pad": 0.5}
    out = subprocess.run([sys.executable, "-m", "tracking", "replay", str(run_dir), "--to", "tensorboard"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "replayed 3000 events" in out.stdout, out.stderr
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    assert [s.step for s in accumulator.Scalars("x")] == list(range(3000))


def _lines(run_dir: Path) -> list[bytes]:
    """Every line of the journal: each one whole JSON (no torn line, no line glued onto another)."""
    lines = run_dir.joinpath("journal.jsonl").read_bytes().splitlines()
    for line in lines:
        json.loads(line)
    return lines


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_end_run_on_a_disk_that_is_full_returns_its_report_and_says_what_it_could_not_write(
        make_tracker, small_disk, caplog, mode):
    tracker = make_tracker(["json"], mode=mode, base_dir=small_disk / "runs")
    run_id = tracker.start_run("full_at_the_end")
    for step in range(100):
        tracker.log_metric("x", float(step), step=step)
    assert tracker.flush(timeout_s=30)
    _fill(small_disk / "ballast")
    report = tracker.end_run(timeout_s=2.0)  # no OSError: the run ends, what could not be written is said
    assert report.status == "FINISHED" and report.events == 100
    assert f"cannot write {small_disk / 'runs' / run_id}/meta.json" in caplog.text
    assert not [p.name for p in (small_disk / "runs" / run_id).iterdir() if p.name.endswith(".tmp")]
