"""Tests for trainer.sample: conversions to float32 tensors and devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.sample import Sample


def _sample() -> Sample:
    return Sample(
        meta={"cell_id": "c1", "temperature_c": 25.0},
        x=np.arange(6, dtype=np.float64).reshape(2, 3),
        y=np.array([1], dtype=np.int64),
        mask=np.array([True]),
        t=np.arange(2),
    )


def test_to_tensor_gives_float32_tensors_and_keeps_bool_mask() -> None:
    converted = _sample().to_tensor()
    assert isinstance(converted.x, torch.Tensor) and converted.x.dtype == torch.float32
    assert converted.y.dtype == torch.float32 and converted.t.dtype == torch.float32
    assert converted.mask.dtype == torch.bool
    assert torch.equal(converted.x, torch.arange(6, dtype=torch.float32).reshape(2, 3))


def test_to_tensor_leaves_the_original_sample_unchanged() -> None:
    original = _sample()
    converted = original.to_tensor()
    assert isinstance(original.x, np.ndarray) and original.x.dtype == np.float64
    assert converted.meta == original.meta and converted.meta is not original.meta


def test_to_tensor_converts_every_entry_of_dict_features() -> None:
    sample = Sample(meta={}, x={"a": np.ones(3), "b": torch.zeros(2, dtype=torch.float64)}, y=np.zeros(1))
    converted = sample.to_tensor()
    assert set(converted.x) == {"a", "b"}
    assert all(v.dtype == torch.float32 for v in converted.x.values())


def test_optional_fields_stay_none() -> None:
    converted = Sample(meta={}, x=np.ones(2), y=np.ones(1)).to_tensor()
    assert converted.mask is None and converted.t is None


def test_to_device_moves_tensors() -> None:
    moved = _sample().to_device("cpu")
    assert moved.x.device.type == "cpu" and moved.x.dtype == torch.float32


def test_non_numeric_features_raise_type_error_naming_the_field() -> None:
    sample = Sample(meta={}, x=np.array(["a", "b"]), y=np.ones(1))
    with pytest.raises(TypeError, match="x must hold real numbers"):
        sample.to_tensor()
