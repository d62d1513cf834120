"""`TrackingLogger` under Lightning's real `Trainer` (CPU, a model built here): every value Lightning
hands its loggers is counted back from metrics.json, TensorBoard's own reader and MLflow, next to
Lightning's own CSVLogger fed by the same Trainer; statuses, threads, pickling, ddp_spawn."""
from __future__ import annotations

import csv
import json
import pickle
import threading
from pathlib import Path

import pytest

pytest.importorskip("lightning")
import torch  # noqa: E402
from lightning.pytorch import LightningModule, Trainer  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from lightning.pytorch.utilities import rank_zero_only  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from tracking import LocalTracker  # noqa: E402
from tracking.integrations.lightning import TrackingLogger  # noqa: E402
from tracking.journal.rundir import read_meta  # noqa: E402


class TinyModel(LightningModule):
    def __init__(self, fail_at_step: int | None = None, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        if self.hparams.fail_at_step is not None and self.global_step == self.hparams.fail_at_step:
            raise RuntimeError("a step that fails")
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        self.log("half_loss", loss / 2)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def _data(n: int = 64) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8)


def _trainer(tmp_path: Path, loggers, **kwargs) -> Trainer:
    kwargs.setdefault("max_epochs", 2)
    kwargs.setdefault("devices", 1)
    return Trainer(logger=loggers, log_every_n_steps=1, accelerator="cpu", enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=tmp_path, **kwargs)


def _lightning_csv(csv_logger: CSVLogger) -> dict[str, dict[int, float]]:
    """What Lightning handed its loggers, as its own CSVLogger wrote it: key -> {step: value}."""
    out: dict[str, dict[int, float]] = {}
    with open(Path(csv_logger.log_dir) / "metrics.csv") as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key != "step" and value != "":
                    out.setdefault(key, {})[int(row["step"])] = float(value)
    return out


def _ours_tensorboard(run_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {key: {e.step: e.value for e in accumulator.Scalars(key)} for key in accumulator.Tags()["scalars"]}


def _ours_mlflow(uri: str, mlflow_run_id: str, keys) -> dict[str, dict[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return {key: {m.step: m.value for m in client.get_metric_history(mlflow_run_id, key)} for key in keys}


def _ours_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tracking-") and t.is_alive()]


def test_fit_with_the_dual_preset_puts_every_value_everywhere(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ours = TrackingLogger(save_dir=tmp_path / "runs", preset="dual", mlflow_tracking_uri=uri,
                          mlflow_experiment_name="lightning")
    theirs = CSVLogger(tmp_path / "csv")
    _trainer(tmp_path, [ours, theirs]).fit(TinyModel(), _data(), _data(16))
    expected = _lightning_csv(theirs)
    assert {"train_loss", "half_loss", "val_loss", "epoch"} <= set(expected) and len(expected["train_loss"]) == 16

    run_dir = tmp_path / "runs" / ours.version
    assert Path(ours.log_dir) == run_dir
    meta = read_meta(run_dir)
    config = json.load(open(run_dir / "config.json"))
    assert meta["status"] == "FINISHED" and config["lr"] == 0.05 and config["fail_at_step"] is None
    last = {key: values[max(values)] for key, values in expected.items()}
    assert json.load(open(run_dir / "metrics.json")) == pytest.approx(last)
    tensorboard = _ours_tensorboard(run_dir)
    mlflow = _ours_mlflow(uri, meta["mlflow_run_id"], expected)
    for key, values in expected.items():
        assert tensorboard[key] == pytest.approx(values), key
        assert mlflow[key] == pytest.approx(values), key
    from mlflow.tracking import MlflowClient

    mlflow_run = MlflowClient(uri).get_run(meta["mlflow_run_id"])
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.data.params["lr"] == "0.05"
    # ModelCheckpoint writes into the run's checkpoints/ and keeps the latest; each one it saved was
    # logged as it was then
    logged = sorted(c.name for c in (run_dir / "artifacts" / "checkpoints").glob("*.ckpt"))
    assert logged == ["epoch=0-step=8.ckpt", "epoch=1-step=16.ckpt"]
    assert [p.name for p in (run_dir / "checkpoints").glob("*.ckpt")] == ["epoch=1-step=16.ckpt"]
    assert _ours_threads() == []


def test_a_step_that_raises_ends_the_run_failed(tmp_path):
    logger = TrackingLogger(save_dir=tmp_path / "runs")
    with pytest.raises(RuntimeError, match="a step that fails"):
        _trainer(tmp_path, logger).fit(TinyModel(fail_at_step=3), _data())
    run_dir = tmp_path / "runs" / logger.version
    meta = read_meta(run_dir)
    assert meta["status"] == "FAILED"
    steps = [int(r["step"]) for r in csv.DictReader(open(run_dir / "step_metrics.csv"))]
    assert steps == [0, 1, 2]
    assert _ours_threads() == []


def test_the_experiment_starts_lazily_and_is_a_dummy_on_other_ranks(tmp_path):
    logger = TrackingLogger(save_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
    rank = rank_zero_only.rank
    rank_zero_only.rank = 1
    try:
        assert type(logger.experiment).__name__.endswith("DummyExperiment") and logger.version is None
        logger.log_metrics({"x": 1.0}, step=0)
        assert not (tmp_path / "runs").exists()
    finally:
        rank_zero_only.rank = rank
    tracker = logger.experiment
    assert isinstance(tracker, LocalTracker) and [p.name for p in (tmp_path / "runs").iterdir()] == [logger.version]
    logger.finalize("success")


def test_save_never_flushes_and_finalize_maps_the_status(tmp_path, monkeypatch):
    logger = TrackingLogger(save_dir=tmp_path / "runs", name="exp", version="v1")
    logger.log_metrics({"x": 1.0}, step=0)
    run_dir = Path(logger.log_dir)
    assert run_dir.parent == tmp_path / "runs" / "exp" and logger.version.startswith("v1_")
    tracker, flushes = logger.experiment, []
    real_flush = tracker.flush
    monkeypatch.setattr(tracker, "flush", lambda *a, **k: flushes.append(1) or real_flush(*a, **k))
    for _ in range(100):
        logger.save()  # Lightning calls it after every log_metrics
    assert flushes == []
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        logger.finalize("failed")  # what Lightning does on Ctrl-C
    assert read_meta(run_dir)["status"] == "KILLED"


def test_the_logger_and_a_trainer_holding_it_pickle_before_and_after_logging(tmp_path):
    logger = TrackingLogger(save_dir=tmp_path / "runs")
    trainer = _trainer(tmp_path, logger)
    for _ in range(2):  # before logging, then after
        copy = pickle.loads(pickle.dumps(trainer))
        assert copy.logger.save_dir == logger.save_dir and pickle.loads(pickle.dumps(logger)).name == ""
        logger.log_metrics({"x": 1.0}, step=0)
    copy.logger.log_metrics({"y": 2.0}, step=0)  # an unpickled logger records a run of its own
    assert copy.logger.version != logger.version
    copy.logger.finalize("success")
    logger.finalize("success")
    assert json.load(open(Path(logger.log_dir) / "metrics.json")) == {"x": 1.0}


def test_a_run_the_caller_started_is_the_callers_to_end(tmp_path):
    tracker = LocalTracker(base_dir=tmp_path / "runs")
    run_id = tracker.start_run("mine")
    logger = TrackingLogger(tracker=tracker)
    _trainer(tmp_path, logger, max_epochs=1).fit(TinyModel(), _data())
    assert logger.version == run_id and tracker.run_id == run_id
    tracker.log_metric("after_fit", 1.0)  # still going
    assert tracker.end_run().complete
    tracker.close()


def test_a_given_tracker_is_ended_but_left_open(tmp_path):
    tracker = LocalTracker(base_dir=tmp_path / "runs")
    logger = TrackingLogger(tracker=tracker)
    _trainer(tmp_path, logger, max_epochs=1).fit(TinyModel(), _data())
    assert logger.save_dir == str(tmp_path / "runs") and read_meta(Path(logger.log_dir))["status"] == "FINISHED"
    second = tracker.start_run("after")  # still usable: it is the caller's to close
    tracker.close()
    assert second is not None


def test_a_logger_dropped_without_finalize_passes_lightnings_thread_check(tmp_path):
    from test_threads import _police

    before = set(threading.enumerate())
    logger = TrackingLogger(save_dir=tmp_path / "runs")
    logger.log_metrics({"x": 1.0}, step=0)
    run_dir = Path(logger.log_dir)
    del logger
    _police(before)
    assert read_meta(run_dir)["status"] == "FINISHED" and _ours_threads() == []


def test_ddp_spawn_on_two_cpu_processes_records_one_run(tmp_path):
    logger = TrackingLogger(save_dir=tmp_path / "runs")
    trainer = _trainer(tmp_path, logger, max_epochs=1, strategy="ddp_spawn", devices=2)
    trainer.fit(TinyModel(), _data())
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, runs
    meta = read_meta(runs[0])
    assert meta["status"] == "FINISHED"
    steps = [int(r["step"]) for r in csv.DictReader(open(runs[0] / "step_metrics.csv"))]
    assert steps == list(range(4))  # 64 samples, 8 a batch, split over 2 ranks
