"""`TrackingCallback` under transformers' real `Trainer`, with a model built here (nothing is
downloaded): every `on_log` entry is counted back from our files, next to what a second, plain
callback saw; a training that raises ends FAILED through our exit handling (a real process)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("transformers")
from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from tracking.integrations.transformers import TrackingCallback  # noqa: E402
from tracking.journal.rundir import read_meta  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

MODEL = """
import torch

class Regressor(torch.nn.Module):
    def __init__(self, fail_at_call=None):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.calls, self.fail_at_call = 0, fail_at_call

    def forward(self, x, labels=None):
        self.calls += 1
        if self.calls == self.fail_at_call:
            raise RuntimeError("a step that fails")
        out = self.layer(x)
        return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}

def dataset(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = x.sum(dim=1, keepdim=True)
    return [{"x": x[i], "labels": y[i]} for i in range(n)]
"""
namespace: dict = {}
exec(MODEL, namespace)  # the same model the subprocess test runs
Regressor, dataset = namespace["Regressor"], namespace["dataset"]


def _args(tmp_path: Path, **kwargs) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_train_epochs=2,
                             logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
                             learning_rate=0.05, run_name="hf", **kwargs)


class Seen(TrainerCallback):
    """What the Trainer handed its callbacks: (global_step, logs)."""

    def __init__(self) -> None:
        self.logs: list[tuple[int, dict]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append((state.global_step, dict(logs)))


def test_every_on_log_entry_is_recorded_and_the_run_finishes(tmp_path):
    ours, seen = TrackingCallback(save_dir=tmp_path / "runs"), Seen()
    Trainer(model=Regressor(), args=_args(tmp_path), train_dataset=dataset(), callbacks=[ours, seen]).train()
    assert len(seen.logs) == 17 and ours.tracker is None  # 16 steps and the summary; the tracker is closed
    [run_dir] = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("hf_") and read_meta(run_dir)["status"] == "FINISHED"
    config = json.load(open(run_dir / "config.json"))
    assert config["learning_rate"] == 0.05 and config["per_device_train_batch_size"] == 8
    rows = csv.DictReader(open(run_dir / "step_metrics.csv"))  # a row per step: the summary joins step 16's
    recorded = {int(r["step"]): {k: float(v) for k, v in r.items() if k != "step" and v != ""} for r in rows}
    expected: dict[int, dict[str, float]] = {}
    for step, logs in seen.logs:
        expected.setdefault(step, {}).update({k: float(v) for k, v in logs.items()})
    assert sorted(recorded) == sorted(expected) == list(range(1, 17))
    for step, values in expected.items():
        assert recorded[step] == pytest.approx(values), step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("loss")] == list(range(1, 17))


def test_only_the_world_process_zero_records(tmp_path):
    callback = TrackingCallback(save_dir=tmp_path / "runs")

    class State:
        is_world_process_zero, global_step = False, 3

    callback.on_train_begin(_args(tmp_path), State(), None)
    callback.on_log(_args(tmp_path), State(), None, logs={"loss": 1.0})
    callback.on_train_end(_args(tmp_path), State(), None)
    assert not (tmp_path / "runs").exists()


def test_a_training_that_raises_ends_failed_through_our_exit_handling(tmp_path):
    script = MODEL + textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from transformers import Trainer, TrainingArguments
        from tracking.integrations.transformers import TrackingCallback
        args = TrainingArguments(output_dir={str(tmp_path / "out")!r}, per_device_train_batch_size=8, logging_steps=1,
                                 report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)
        callback = TrackingCallback(save_dir={str(tmp_path / "runs")!r}, run_name="raises")
        Trainer(model=Regressor(fail_at_call=4), args=args, train_dataset=dataset(),
                callbacks=[callback]).train()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "a step that fails" in done.stderr
    [run_dir] = (tmp_path / "runs").iterdir()
    assert read_meta(run_dir)["status"] == "FAILED"
    steps = [int(r["step"]) for r in csv.DictReader(open(run_dir / "step_metrics.csv"))]
    assert steps == [1, 2, 3]
