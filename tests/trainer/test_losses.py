"""Tests for trainer.losses: the registry and its error messages."""

from __future__ import annotations

import pytest
import torch

from trainer.losses import available_losses, build_loss

_PRED = torch.tensor([0.0, 1.0, 5.0])
_TARGET = torch.tensor([0.0, 0.5, 1.0])


def test_registry_names() -> None:
    assert available_losses() == ["huber", "mae", "mse"]


def test_default_is_elementwise_mse() -> None:
    assert torch.allclose(build_loss(None)(_PRED, _TARGET), (_PRED - _TARGET) ** 2)


def test_mae_is_elementwise_absolute_error() -> None:
    assert torch.allclose(build_loss("mae")(_PRED, _TARGET), (_PRED - _TARGET).abs())


def test_huber_uses_delta_from_config_dict() -> None:
    loss = build_loss({"name": "huber", "delta": 2.0})(_PRED, _TARGET)
    # |error| = 4 > delta: linear branch delta * (|e| - delta / 2); 0.5 <= delta: quadratic.
    assert loss[2].item() == pytest.approx(2.0 * (4.0 - 1.0))
    assert loss[1].item() == pytest.approx(0.5 * 0.5**2)


def test_unknown_name_lists_valid_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown loss 'rmsle'; valid choices: huber, mae, mse"):
        build_loss("rmsle")


def test_unknown_parameter_lists_valid_parameters() -> None:
    with pytest.raises(ValueError, match=r"unknown parameters \['beta'\]; valid parameters: delta"):
        build_loss({"name": "huber", "beta": 1.0})
