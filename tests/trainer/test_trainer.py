"""Tests for trainer.trainer: fit/history, early stopping, config handling, predict, save/load."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from trainer.models import build_model
from trainer.sample import Sample
from trainer.trainer import HISTORY_KEYS, Trainer, TrainingConfig

_WEIGHTS = np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)


def _samples(n: int, seed: int, sign: float = 1.0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = sign * (x @ _WEIGHTS)[:, None]
    return [Sample(meta={"cell_id": f"c{i}"}, x=x[i], y=y[i]) for i in range(n)]


def _trainer(tmp_path=None, **training) -> Trainer:
    torch.manual_seed(0)
    model = build_model("mlp", input_dim=4, hidden_dims=[16], dropout=0.0)
    config = {"batch_size": 16, "epochs": 4, "patience": None, "learning_rate": 1e-2, **training}
    if tmp_path is not None:
        config["checkpoint_dir"] = str(tmp_path)
    return Trainer(model, config, device="cpu")


def test_fit_returns_every_history_key_with_one_value_per_epoch() -> None:
    history = _trainer().fit(_samples(64, 0), _samples(32, 1), epochs=5)
    assert set(history) == set(HISTORY_KEYS)
    assert all(len(values) == 5 for values in history.values())
    assert all(isinstance(v, float) and np.isfinite(v) for values in history.values() for v in values)


def test_fit_reduces_validation_loss_on_learnable_data() -> None:
    history = _trainer().fit(_samples(128, 0), _samples(32, 1), epochs=10)
    assert history["val_loss"][-1] < 0.5 * history["val_loss"][0]


def test_rmse_and_mae_agree_with_loss_for_mse() -> None:
    history = _trainer().fit(_samples(64, 0), _samples(32, 1), epochs=2)
    for split in ("train", "val"):
        assert history[f"{split}_rmse"][-1] ** 2 == pytest.approx(history[f"{split}_loss"][-1], rel=1e-4)
        assert history[f"{split}_mae"][-1] <= history[f"{split}_rmse"][-1] + 1e-6


def test_learning_rate_follows_cosine_warm_restarts() -> None:
    history = _trainer(scheduler_T0=2).fit(_samples(32, 0), _samples(16, 1), epochs=4)
    lr = history["lr"]
    assert lr[0] == pytest.approx(1e-2) and lr[2] == pytest.approx(1e-2)
    assert lr[1] < lr[0]


def test_early_stopping_stops_after_patience_and_restores_best_weights(tmp_path) -> None:
    # Val targets are the negated train targets: the better the fit, the worse val gets, so the
    # best epoch is the first and training must stop `patience` epochs later.
    trainer = _trainer(tmp_path)
    val = _samples(32, 1, sign=-1.0)
    history = trainer.fit(_samples(128, 0), val, epochs=50, patience=3)
    best = int(np.argmin(history["val_loss"]))
    assert len(history["val_loss"]) == best + 3 + 1
    assert trainer.best_epoch == best
    assert trainer.evaluate(val)["loss"] == pytest.approx(history["val_loss"][best], rel=1e-5)
    assert min(history["val_loss"]) < history["val_loss"][-1]


def test_best_checkpoint_file_holds_the_restored_weights(tmp_path) -> None:
    trainer = _trainer(tmp_path)
    trainer.fit(_samples(64, 0), _samples(32, 1, sign=-1.0), epochs=6)
    saved = torch.load(trainer.best_checkpoint_path, weights_only=True)
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(saved[key], value)


def test_predict_returns_numpy_array_shaped_like_targets() -> None:
    trainer = _trainer()
    predictions = trainer.predict(_samples(10, 0))
    assert isinstance(predictions, np.ndarray)
    assert predictions.shape == (10, 1) and predictions.dtype == np.float32


def test_save_and_load_round_trip_gives_same_predictions(tmp_path) -> None:
    trainer = _trainer()
    trainer.fit(_samples(64, 0), _samples(16, 1), epochs=2)
    path = tmp_path / "model.pt"
    trainer.save(path)
    torch.manual_seed(123)
    fresh = Trainer(build_model("mlp", input_dim=4, hidden_dims=[16], dropout=0.0), device="cpu")
    data = _samples(8, 2)
    assert not np.allclose(fresh.predict(data), trainer.predict(data))
    fresh.load(path)
    assert np.array_equal(fresh.predict(data), trainer.predict(data))


def test_nested_flat_and_dotted_configs_are_read_alike() -> None:
    nested = TrainingConfig.from_config({"training": {"learning_rate": 0.1, "batch_size": 8}, "seed": 7})
    flat = TrainingConfig.from_config({"learning_rate": 0.1, "batch_size": 8, "seed": 7, "model": "mlp"})
    dotted = TrainingConfig.from_config({"training.learning_rate": 0.1, "training.batch_size": 8, "seed": 7})
    assert nested == flat == dotted
    assert nested.learning_rate == 0.1 and nested.seed == 7


def test_invalid_config_value_names_key_and_value() -> None:
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got int 0"):
        TrainingConfig.from_config({"training": {"batch_size": 0}})


def test_unknown_training_key_is_reported(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="trainer.trainer"):
        TrainingConfig.from_config({"training": {"learning_rte": 0.1}})
    assert "learning_rte" in caplog.text


def test_loss_is_read_from_config_when_not_given() -> None:
    model = build_model("linear", input_dim=4)
    trainer = Trainer(model, {"loss": {"name": "huber", "delta": 1.0}}, device="cpu")
    assert trainer.loss_fn(torch.tensor([10.0]), torch.tensor([0.0])).item() == pytest.approx(9.5)


def test_mask_excludes_entries_from_metrics() -> None:
    model = build_model("linear", input_dim=1, output_dim=2)
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.zero_()
    samples = [
        Sample(meta={}, x=np.zeros(1), y=np.array([3.0, 1e6]), mask=np.array([True, False])) for _ in range(4)
    ]
    metrics = Trainer(model, device="cpu").evaluate(samples)
    assert metrics["rmse"] == pytest.approx(3.0) and metrics["mae"] == pytest.approx(3.0)


def test_output_target_shape_mismatch_says_what_to_fix() -> None:
    samples = [Sample(meta={}, x=np.zeros(4), y=np.zeros(2)) for _ in range(4)]
    with pytest.raises(ValueError, match="output_dim"):
        _trainer().fit(samples, samples, epochs=1)


def test_progress_bar_is_quiet_when_stderr_is_not_a_tty(capsys) -> None:
    _trainer().fit(_samples(32, 0), _samples(8, 1), epochs=2)
    assert capsys.readouterr().err == ""


def test_progress_bar_shows_when_verbose(capsys) -> None:
    trainer = _trainer()
    trainer.verbose = True
    trainer.fit(_samples(32, 0), _samples(8, 1), epochs=2)
    assert "epochs" in capsys.readouterr().err


def test_amp_request_on_cpu_is_ignored_with_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="trainer.trainer"):
        trainer = _trainer(use_amp=True)
    assert "use_amp=True ignored" in caplog.text
    assert trainer.fit(_samples(16, 0), _samples(8, 1), epochs=1)["train_loss"]
