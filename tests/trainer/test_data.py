"""Tests for trainer.data: the synthetic ageing model, the summary_set pipeline and splits."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.data import (
    FeatureScaler,
    build_summary_samples,
    generate_cells,
    split_by_cell,
    summary_feature_names,
    temperature_holdout,
)


@pytest.fixture(scope="module")
def cells():
    return generate_cells(seed=0)


@pytest.fixture(scope="module")
def samples(cells):
    return build_summary_samples(cells)


def test_same_seed_gives_same_cells_and_other_seed_differs(cells) -> None:
    again = generate_cells(seed=0)
    other = generate_cells(seed=1)
    assert np.array_equal(cells[0].capacity_ah, again[0].capacity_ah)
    assert not np.array_equal(cells[0].capacity_ah, other[0].capacity_ah)


def test_hotter_cells_fade_faster_at_every_c_rate(cells) -> None:
    for c_rate in (0.5, 1.0, 2.0):
        final_soh = [
            np.mean([c.capacity_ah[-20:].mean() / c.rated_capacity_ah for c in cells
                     if c.c_rate == c_rate and c.temperature_c == temp])
            for temp in (15.0, 25.0, 35.0, 45.0)
        ]
        assert final_soh == sorted(final_soh, reverse=True), (c_rate, final_soh)


def test_fade_follows_power_law_in_throughput(cells) -> None:
    cell = cells[-1]
    loss = 1.0 - cell.true_capacity_ah / cell.initial_capacity_ah
    exponent = np.polyfit(np.log(cell.throughput_ah[10:]), np.log(loss[10:]), 1)[0]
    assert exponent == pytest.approx(0.55, abs=0.01)


def test_summary_samples_have_named_features_and_scalar_target(samples) -> None:
    sample = samples[0]
    assert sample.x.shape == (len(summary_feature_names(True)),)
    assert sample.y.shape == (1,)
    assert {"cell_id", "temperature_c", "c_rate", "cycle"} <= set(sample.meta)
    without = build_summary_samples(generate_cells(seed=0, cells_per_condition=1), include_arrhenius=False)
    assert without[0].x.shape == (len(summary_feature_names(False)),) == (6,)


def test_target_is_positive_fade_ahead(samples) -> None:
    targets = np.array([s.y[0] for s in samples])
    assert np.mean(targets > 0) > 0.95


def test_split_by_cell_puts_no_cell_on_both_sides(samples) -> None:
    train, val = split_by_cell(samples, val_fraction=0.25, seed=3)
    train_cells = {s.meta["cell_id"] for s in train}
    val_cells = {s.meta["cell_id"] for s in val}
    assert train_cells and val_cells and not train_cells & val_cells
    assert len(train) + len(val) == len(samples)


def test_temperature_holdout_excludes_holdout_temps_from_train(samples) -> None:
    train, holdout = temperature_holdout(samples, [35.0, 45.0])
    assert {s.meta["temperature_c"] for s in holdout} == {35.0, 45.0}
    assert {s.meta["temperature_c"] for s in train} == {15.0, 25.0}


def test_temperature_holdout_rejects_absent_temperature(samples) -> None:
    with pytest.raises(ValueError, match="subset of the temperatures"):
        temperature_holdout(samples, [60.0])


def test_scaler_standardises_with_train_statistics(samples) -> None:
    train, val = split_by_cell(samples, 0.2, 0)
    scaler = FeatureScaler().fit(train)
    scaled = np.stack([s.x for s in scaler.transform(train)])
    varying = np.stack([s.x for s in train]).std(axis=0) > 0
    assert np.allclose(scaled.mean(axis=0), 0.0, atol=1e-4)
    assert np.allclose(scaled.std(axis=0)[varying], 1.0, atol=1e-4)
    assert scaler.transform(val)[0].y is val[0].y


def test_scaler_transform_before_fit_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match="call fit"):
        FeatureScaler().transform([])
