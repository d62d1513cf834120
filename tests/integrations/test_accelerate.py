"""`AccelerateTracker` under a real `Accelerator` (CPU): init_trackers, log with 0-d tensors, text
and dicts, end_training; every value counted back from our files."""
from __future__ import annotations

import csv
import json

import pytest

pytest.importorskip("accelerate")
import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from tracking.integrations.accelerate import AccelerateTracker  # noqa: E402
from tracking.journal.rundir import read_meta  # noqa: E402


def test_init_log_and_end_training_record_every_value(tmp_path):
    ours = AccelerateTracker("acc", logging_dir=tmp_path / "runs")
    accelerator = Accelerator(log_with=[ours], cpu=True)
    accelerator.init_trackers("project", config={"lr": 0.1, "layers": [4, 1], "optimizer": torch.optim.SGD})
    assert accelerator.get_tracker("batteryml-tracking", unwrap=True) is ours.tracker
    for step in range(20):
        loss = torch.tensor(1.0 / (step + 1))  # a 0-d tensor, as a loop hands it over
        accelerator.log({"loss": loss, "lr": 0.1, "phase": "warmup" if step < 5 else "main",
                         "norms": {"grad": float(step), "weight": 2.0}, "done": step == 19, "skipped": None},
                        step=step)
    run_dir = ours.tracker.get_run_dir()
    accelerator.end_training()
    assert ours.tracker is None  # built from the preset, closed by finish()
    meta = read_meta(run_dir)
    assert run_dir.name.startswith("acc_") and meta["status"] == "FINISHED" and meta["tags"] == {"phase": "main"}
    assert json.load(open(run_dir / "config.json")) == {"lr": 0.1, "layers": [4, 1], "optimizer": "SGD"}
    rows = list(csv.DictReader(open(run_dir / "step_metrics.csv")))
    assert [int(r["step"]) for r in rows] == list(range(20))
    assert [float(r["loss"]) for r in rows] == pytest.approx([1.0 / (s + 1) for s in range(20)])
    assert [float(r["norms/grad"]) for r in rows] == [float(s) for s in range(20)]
    assert [float(r["done"]) for r in rows] == [0.0] * 19 + [1.0] and "skipped" not in rows[0]
