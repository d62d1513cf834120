"""Tests for trainer.models: the model registry."""

from __future__ import annotations

import pytest
import torch

from trainer.models import MLP, LinearRegressor, available_models, build_model


def test_mlp_maps_batch_to_output_dim() -> None:
    model = build_model("mlp", input_dim=8, output_dim=2, hidden_dims=[16, 8], dropout=0.0)
    assert isinstance(model, MLP)
    assert model(torch.zeros(5, 8)).shape == (5, 2)


def test_linear_is_one_affine_layer() -> None:
    model = build_model("linear", input_dim=3)
    assert isinstance(model, LinearRegressor)
    assert sum(p.numel() for p in model.parameters()) == 4


def test_unknown_model_lists_valid_choices() -> None:
    assert available_models() == ["linear", "mlp"]
    with pytest.raises(ValueError, match="valid choices: linear, mlp"):
        build_model("transformer", input_dim=3)


def test_parameter_of_another_model_is_rejected_with_valid_list() -> None:
    with pytest.raises(ValueError, match=r"model 'linear' got unknown parameters \['hidden_dims'\]"):
        build_model("linear", input_dim=3, hidden_dims=[4])
