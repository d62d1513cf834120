"""Run lifecycle with real processes: signals, interpreter exit, uncaught exceptions, fork."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers.extras import needs
from tracking.journal import read_journal
from tracking.journal.rundir import read_meta

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = """
import os, sys, time
sys.path.insert(0, {root!r})
from tracking import Tracker
tracker = Tracker(["json"], base_dir={base!r})
run_id = tracker.start_run("child")
print(run_id, flush=True)
"""


def _spawn(tmp_path: Path, body: str) -> tuple[subprocess.Popen, str]:
    code = PRELUDE.format(root=str(ROOT), base=str(tmp_path)) + textwrap.dedent(body)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_id = proc.stdout.readline().strip()
    assert run_id, proc.stderr.read()
    return proc, run_id


def _values(run_dir: Path) -> list[float]:
    return [ev[1]["x"] for _, ev in read_journal(run_dir).events if ev[0] == "metrics"]


LOG_THEN_WAIT = """
for i in range(5000):
    tracker.log_metric("x", float(i), step=i)
print("logged", flush=True)
while True:
    time.sleep(0.05)
"""


@pytest.mark.parametrize("signum, returncode", [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, -signal.SIGINT)])
def test_signal_marks_the_run_killed_and_loses_nothing(tmp_path, signum, returncode):
    proc, run_id = _spawn(tmp_path, LOG_THEN_WAIT)
    assert proc.stdout.readline().strip() == "logged"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == returncode, err
    if signum == signal.SIGINT:
        assert "KeyboardInterrupt" in err
    run_dir = tmp_path / run_id
    assert read_meta(run_dir)["status"] == "KILLED"
    assert read_journal(run_dir).end_status == "KILLED"
    assert _values(run_dir) == [float(i) for i in range(5000)]


def test_run_left_open_is_flushed_and_finished_at_exit(tmp_path):
    proc, run_id = _spawn(tmp_path, """
for i in range(3000):
    tracker.log_metric("x", float(i), step=i)
""")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    run_dir = tmp_path / run_id
    assert read_meta(run_dir)["status"] == "FINISHED"
    assert _values(run_dir) == [float(i) for i in range(3000)]
    assert (run_dir / "metrics.json").read_text().count("2999.0") == 1


def test_uncaught_exception_marks_the_open_run_failed(tmp_path):
    proc, run_id = _spawn(tmp_path, """
for i in range(100):
    tracker.log_metric("x", float(i), step=i)
raise RuntimeError("training diverged")
""")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "training diverged" in err
    run_dir = tmp_path / run_id
    assert read_meta(run_dir)["status"] == "FAILED"
    assert _values(run_dir) == [float(i) for i in range(100)]


def test_fork_child_is_inert_and_can_start_its_own_run(tmp_path):
    proc, run_id = _spawn(tmp_path, """
for i in range(100):
    tracker.log_metric("x", float(i), step=i)
pid = os.fork()
if pid == 0:
    tracker.log_metric("x", -1.0)          # inert: discarded, no error
    child_run = tracker.start_run("forked")  # its own run works
    tracker.log_metric("y", 1.0)
    tracker.end_run()
    os._exit(0)
os.waitpid(pid, 0)
for i in range(100, 200):
    tracker.log_metric("x", float(i), step=i)
tracker.end_run()
""")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert _values(tmp_path / run_id) == [float(i) for i in range(200)]
    forked = [p for p in tmp_path.iterdir() if p.name.startswith("forked_")]
    assert len(forked) == 1 and read_meta(forked[0])["status"] == "FINISHED"


@needs("torch")
def test_dataloader_fork_workers_neither_deadlock_nor_duplicate(tmp_path):
    proc, run_id = _spawn(tmp_path, """
import torch
from torch.utils.data import DataLoader, TensorDataset
ds = TensorDataset(torch.arange(64, dtype=torch.float32))
loader = DataLoader(ds, batch_size=8, num_workers=2, multiprocessing_context="fork")
step = 0
for epoch in range(2):
    for (batch,) in loader:
        tracker.log_metric("x", batch.sum(), step=step)
        step += 1
tracker.end_run()
""")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    values = _values(tmp_path / run_id)
    assert len(values) == 16
    assert sum(values) == 2 * sum(range(64))
