"""A Lightning fit logging every step: Lightning's own `TensorBoardLogger` + `MLFlowLogger` (sqlite)
against our `TrackingLogger(preset="dual")` (JSON + TensorBoard + MLflow on sqlite), and a fit with
no logger, in one run.

Runs on the benchmark's main thread: Lightning's loop there (CPU, one torch thread, a small MLP,
`log_every_n_steps=1`, 10 metrics a step through `self.log_dict`). Lightning's loggers write from
that thread (MLflow's client synchronously); ours append to the queue there, and the writer thread
and the delivery agent process do the rest.

Per case and round: steps/s inside the loop (`on_train_start` to `on_train_end`, so Lightning's
set-up is out of it), and the seconds from `fit()` until every value is durable: `fit()`
returned (both finalize in it: ours waits for its sinks), and every metric point of the run is
counted back from MLflow. Cases rotate from round to round; medians, and ratios against the
no-logger fit of the same rounds.
"""
from __future__ import annotations

import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from .harness import median

CASES = ("no logger", "Lightning TensorBoardLogger + MLFlowLogger", "ours TrackingLogger(dual)")
KEYS = 10


def _module(steps: int) -> Any:
    import torch
    from lightning.pytorch import LightningModule

    class MLP(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log_dict({"loss": loss, **{f"m{k}": loss * k for k in range(1, KEYS)}})
            return loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    return MLP()


def _data(steps: int) -> Any:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps * 64, 32, generator=g)
    return DataLoader(TensorDataset(x, x[:, :1].clone()), batch_size=64)


class _Clock:
    """A Lightning callback: when the loop started and ended."""

    def __new__(cls) -> Any:
        from lightning.pytorch import Callback

        class Clock(Callback):
            started = ended = 0.0

            def on_train_start(self, trainer, pl_module):
                self.started = time.perf_counter()

            def on_train_end(self, trainer, pl_module):
                self.ended = time.perf_counter()

        return Clock()


def _loggers(case: str, base: Path, uri: str, round_: int) -> list[Any] | bool:
    if case == CASES[0]:
        return False
    if case == CASES[1]:
        from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger

        return [TensorBoardLogger(save_dir=str(base / "tb"), name=f"r{round_}"),
                MLFlowLogger(experiment_name=f"theirs_{round_}", tracking_uri=uri)]
    from tracking.integrations.lightning import TrackingLogger

    return [TrackingLogger(save_dir=base / "ours", preset="dual", mlflow_tracking_uri=uri,
                           mlflow_experiment_name=f"ours_{round_}", end_timeout_s=600)]


def _mlflow_points(uri: str, run_id: str) -> int:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return sum(len(client.get_metric_history(run_id, f"m{k}" if k else "loss")) for k in range(KEYS))


def _fit(case: str, steps: int, base: Path, uri: str, round_: int) -> dict[str, float]:
    from lightning.pytorch import Trainer

    loggers = _loggers(case, base, uri, round_)
    clock = _Clock()
    trainer = Trainer(logger=loggers, callbacks=[clock], max_steps=steps, log_every_n_steps=1, accelerator="cpu",
                      devices=1, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      default_root_dir=str(base))
    started = time.perf_counter()
    trainer.fit(_module(steps), _data(steps))
    durable = time.perf_counter() - started
    points = 0
    if loggers:
        mlflow_logger = loggers[-1]
        run_id = mlflow_logger.run_id if hasattr(mlflow_logger, "run_id") else _our_mlflow_run(mlflow_logger)
        points = _mlflow_points(uri, run_id)
    return {"steps_per_s": steps / (clock.ended - clock.started), "durable_s": durable, "points": points}


def _our_mlflow_run(logger: Any) -> str:
    from tracking.journal.rundir import read_meta

    return read_meta(Path(logger.save_dir) / logger._handle.run_id)["mlflow_run_id"]


def run(quick: bool = False) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    steps, rounds = (60, 1) if quick else (500, 3)
    base = Path(tempfile.mkdtemp(prefix="bench-lightning-"))
    uri = f"sqlite:///{base}/mlflow.db"
    _fit(CASES[0], 20, base, uri, -1)  # imports and first-fit costs out of the way
    samples: dict[str, list[dict[str, float]]] = {case: [] for case in CASES}
    for round_ in range(rounds):
        order = CASES[round_ % len(CASES):] + CASES[:round_ % len(CASES)]
        for case in order:
            samples[case].append(_fit(case, steps, base, uri, round_))
    none = median([s["steps_per_s"] for s in samples[CASES[0]]])
    rows = {}
    for case, values in samples.items():
        rate = median([v["steps_per_s"] for v in values])
        rows[case] = {"steps_per_s": rate, "x_no_logger": rate / none,
                      "durable_s": median([v["durable_s"] for v in values]),
                      "points": min(v["points"] for v in values)}
    ours, theirs = rows[CASES[2]], rows[CASES[1]]
    return {
        "steps": steps, "rounds": rounds, "metrics_per_step": KEYS, "rows": rows,
        "ours_x_theirs_steps_per_s": ours["steps_per_s"] / theirs["steps_per_s"],
        "targets": {
            "every point in MLflow, both loggers": ours["points"] >= steps * KEYS and theirs["points"] >= steps * KEYS,
            "ours faster than Lightning's loggers": ours["steps_per_s"] > theirs["steps_per_s"],
        },
    }


def render(result: dict[str, Any]) -> str:
    lines = [f"Lightning fit, {result['steps']} steps x {result['metrics_per_step']} metrics, log_every_n_steps=1 "
             f"(median of {result['rounds']})",
             f"  {'case':<46}{'steps/s':>9}{'× none':>8}{'durable s':>11}{'MLflow points':>15}"]
    for case, row in result["rows"].items():
        lines.append(f"  {case:<46}{row['steps_per_s']:>9.1f}{row['x_no_logger']:>8.2f}{row['durable_s']:>11.2f}"
                     f"{row['points']:>15}")
    lines.append(f"  ours / Lightning's loggers, steps/s: {result['ours_x_theirs_steps_per_s']:.2f}x")
    for target, ok in result["targets"].items():
        lines.append(f"  target {target}: {'met' if ok else 'MISSED'}")
    return "\n".join(lines)
