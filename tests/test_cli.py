"""`python -m tracking`: replay, runs, show — run as a user would, in a subprocess."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tracking.journal.rundir import read_meta

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tracking", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def _run(make_tracker, **kw):
    tracker = make_tracker(["json"], **kw)
    run_id = tracker.start_run("cli", config={"lr": 0.1})
    for step in range(30):
        tracker.log_metrics({"loss": 1.0 / (step + 1), "val_rmse": 0.5 - step / 100}, step=step)
    tracker.set_tag("k", "v")
    tracker.end_run()
    return tracker.base_dir, tracker.base_dir / run_id


def test_replay_rebuilds_a_sink_that_missed_everything_and_is_idempotent(make_tracker):
    base, run_dir = _run(make_tracker)
    out = _cli("replay", str(run_dir), "--to", "tensorboard")
    assert out.returncode == 0, out.stderr
    assert "replayed 31 events to tensorboard" in out.stdout
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [s.step for s in acc.Scalars("loss")] == list(range(30))
    again = _cli("replay", str(run_dir), "--to", "tensorboard")
    assert "replayed 0 events" in again.stdout
    assert read_meta(run_dir)["sinks"]["tensorboard"]["delivered_seq"] == 31  # 30 metrics events and a tag


def test_runs_lists_runs_with_chosen_metrics(make_tracker):
    base, run_dir = _run(make_tracker)
    out = _cli("runs", str(base), "--metrics", "val_rmse")
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.strip().splitlines()
    assert header.split()[:5] == ["run_id", "name", "status", "start", "duration_s"] and "val_rmse" in header
    assert run_dir.name in row and "FINISHED" in row and "0.21" in row
    rows = json.loads(_cli("runs", str(base), "--json").stdout)
    assert rows[0]["run_id"] == run_dir.name and rows[0]["metrics"]["loss"] == 1 / 30


def test_show_prints_config_tags_metrics_and_delivery(make_tracker):
    base, run_dir = _run(make_tracker)
    info = json.loads(_cli("show", str(run_dir), "--json").stdout)
    assert info["config"] == {"lr": 0.1} and info["tags"] == {"k": "v"}
    assert info["sinks"]["json"]["undelivered"] == 0 and info["status"] == "FINISHED"
    text = _cli("show", run_dir.name, "--base-dir", str(base)).stdout
    assert "lr: 0.1" in text and "json: delivered 31" in text
    missing = _cli("show", "nope", "--base-dir", str(base))
    assert missing.returncode == 2 and "no run at" in missing.stderr


def test_replay_skips_a_journal_entry_that_would_leave_the_run_directory(make_tracker, tmp_path):
    """A journal is data from disk: an entry pointing outside the run is skipped with a warning and
    counted as lost; everything else is delivered; no traceback, nothing read or written outside."""
    base, run_dir = _run(make_tracker)
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"\x89PNG\r\n\x1a\n not ours")
    journal = run_dir / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    evil = b'["batch",32,[["figure","x","../../outside.png",0.0],["metrics",{"loss":9.0},30,0.0]]]\n'
    journal.write_bytes(b"".join(lines[:-1]) + evil + lines[-1])
    out = _cli("replay", str(run_dir), "--to", "tensorboard")
    assert out.returncode == 0 and "replayed 32 events to tensorboard (1 unreadable in the journal, skipped)" in out.stdout, out.stderr
    assert "was skipped" in out.stderr and "Traceback" not in out.stderr
    assert read_meta(run_dir)["sinks"]["tensorboard"]["lost"] == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    assert [s.step for s in acc.Scalars("loss")] == list(range(31)) and acc.Tags()["images"] == []


ORPHAN = """
import sys
sys.path.insert(0, {root!r})
from tracking import LocalTracker
tracker = LocalTracker(base_dir={base!r}, use_tensorboard=True)
print(tracker.start_run("orphan"), flush=True)
for step in range(1000):
    tracker.log_metric("x", float(step), step=step)
assert tracker.flush(timeout_s=60)
print(tracker.stats().agent_pid, flush=True)
sys.stdin.readline()  # the test stops the agent meanwhile
for step in range(1000, 2000):
    tracker.log_metric("x", float(step), step=step)
print("logged", flush=True)
sys.stdin.readline()
"""


def test_a_run_nothing_delivers_any_more_says_so_and_prints_the_command_that_delivers_it(tmp_path):
    """The training process and its agent die together (a node lost, a cgroup OOM-killed): `show`
    and `runs` say the run is undelivered and print the replay commands, which deliver it and end it."""
    import os
    import shlex
    import signal
    import time

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tracking.journal import JournalReader

    base = tmp_path / "runs"
    child = subprocess.Popen([sys.executable, "-c", ORPHAN.format(root=str(ROOT), base=str(base))],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    run_id, agent = child.stdout.readline().strip(), int(child.stdout.readline())
    os.kill(agent, signal.SIGSTOP)  # it has committed 1,000 events and takes no more
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "logged"
    run_dir = base / run_id
    deadline = time.monotonic() + 30
    while JournalReader(run_dir).refresh() < 2000:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGSTOP)  # no restart of the agent: both go at once
    os.kill(agent, signal.SIGKILL)
    child.kill()
    child.wait(30)

    info = json.loads(_cli("show", str(run_dir), "--json").stdout)
    assert info["status"] == "RUNNING" and info["delivering"] is False
    assert {n: s["undelivered"] for n, s in info["sinks"].items()} == {"json": 1000, "tensorboard": 1000}
    text = _cli("show", str(run_dir)).stdout
    assert "nothing delivers it" in text and text.count("deliver the rest with:") == 2, text
    listed = _cli("runs", str(base)).stdout
    assert "nothing delivers it" in listed and all(c in listed for c in info["replay_commands"]), listed

    for command in info["replay_commands"]:
        done = subprocess.run(shlex.split(command), cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    meta = read_meta(run_dir)
    assert meta["status"] == "KILLED" and json.loads(_cli("show", str(run_dir), "--json").stdout)["replay_commands"] == []
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    assert [event.step for event in accumulator.Scalars("x")] == list(range(2000))
    assert json.load(open(run_dir / "metrics.json")) == {"x": 1999.0}
