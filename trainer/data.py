"""Synthetic battery-ageing data, the ``summary_set`` feature pipeline, scaling and splits.

Runs on the caller's thread; everything is plain numpy and is seeded through
``numpy.random.Generator``, so one seed always gives the same cells and samples.

Capacity fade follows the semi-empirical form of Wang et al. (J. Power Sources 196, 2011):
``Q_loss[%] = B * exp(-(Ea - alpha * C) / (R * T)) * Ah**z``, an Arrhenius term in temperature
times a power law in charge throughput. ``alpha`` is larger than in the paper so that C-rate
matters and the demo has interactions (temperature x C-rate x age) that a linear model cannot fit.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence

import numpy as np

from trainer.sample import Sample

__all__ = [
    "ACTIVATION_ENERGY_J_PER_MOL",
    "GAS_CONSTANT_J_PER_MOL_K",
    "CellRecord",
    "FeatureScaler",
    "arrhenius_factor",
    "build_summary_samples",
    "generate_cells",
    "split_by_cell",
    "summary_feature_names",
    "temperature_holdout",
]

_logger = logging.getLogger(__name__)

GAS_CONSTANT_J_PER_MOL_K = 8.314
ACTIVATION_ENERGY_J_PER_MOL = 31_700.0
#: Reduction of the activation energy per unit C-rate (Wang et al. report 370.3 J/mol).
_C_RATE_ENERGY_J_PER_MOL = 1_500.0
_POWER_LAW_EXPONENT = 0.55
#: Pre-factor B (percent per Ah**z) chosen so the hottest, fastest cells lose ~25 % in 500 cycles.
_PRE_FACTOR = 25_000.0
_REFERENCE_TEMPERATURE_C = 25.0
_KELVIN_OFFSET = 273.15
_RATED_CAPACITY_AH = 2.0
#: Relative standard deviation of a fresh cell's capacity around the rating.
_INITIAL_CAPACITY_SPREAD = 0.005


@dataclasses.dataclass(frozen=True)
class CellRecord:
    """One simulated cell: its test condition and per-cycle arrays (one entry per cycle).

    ``capacity_ah`` is what a cycler would measure (with noise); ``true_capacity_ah`` is the
    noise-free model value, kept for tests and plots. ``throughput_ah`` is cumulative charge
    plus discharge throughput at the end of each cycle.
    """

    cell_id: str
    temperature_c: float
    c_rate: float
    rated_capacity_ah: float
    initial_capacity_ah: float
    cycle: np.ndarray
    throughput_ah: np.ndarray
    capacity_ah: np.ndarray
    true_capacity_ah: np.ndarray


def arrhenius_factor(temperature_c: float | np.ndarray) -> np.ndarray:
    """Return ``exp(-Ea/(R T))`` divided by its value at 25 degC (nominal Ea, no C-rate term).

    This is the feature a modeller would compute from the temperature alone; it deliberately
    leaves out the C-rate term of the simulator, which the model has to learn.
    """
    temperature_k = np.asarray(temperature_c, dtype=np.float64) + _KELVIN_OFFSET
    reference_k = _REFERENCE_TEMPERATURE_C + _KELVIN_OFFSET
    inverse_difference = 1.0 / temperature_k - 1.0 / reference_k
    return np.exp(-ACTIVATION_ENERGY_J_PER_MOL / GAS_CONSTANT_J_PER_MOL_K * inverse_difference)


def _capacity_loss_pct(temperature_c: float, c_rate: float, throughput_ah: np.ndarray) -> np.ndarray:
    temperature_k = temperature_c + _KELVIN_OFFSET
    energy = ACTIVATION_ENERGY_J_PER_MOL - _C_RATE_ENERGY_J_PER_MOL * c_rate
    rate = _PRE_FACTOR * np.exp(-energy / (GAS_CONSTANT_J_PER_MOL_K * temperature_k))
    return rate * throughput_ah**_POWER_LAW_EXPONENT


def _simulate_cell(
    rng: np.random.Generator,
    cell_id: str,
    temperature_c: float,
    c_rate: float,
    n_cycles: int,
    noise_std_pct: float,
    spread_sigma: float,
) -> CellRecord:
    rated = _RATED_CAPACITY_AH
    cell_spread = rng.lognormal(0.0, spread_sigma)
    initial = rated * (1.0 + rng.normal(0.0, _INITIAL_CAPACITY_SPREAD))
    cycle = np.arange(1, n_cycles + 1)
    true = np.empty(n_cycles)
    throughput = np.empty(n_cycles)
    total_ah = 0.0
    capacity = initial
    for i in range(n_cycles):
        total_ah += 2.0 * capacity  # one charge and one discharge of the present capacity
        throughput[i] = total_ah
        loss = cell_spread * _capacity_loss_pct(temperature_c, c_rate, np.asarray(total_ah))
        capacity = initial * (1.0 - float(loss) / 100.0)
        true[i] = capacity
    measured = true + rng.normal(0.0, noise_std_pct / 100.0 * rated, size=n_cycles)
    return CellRecord(
        cell_id, float(temperature_c), float(c_rate), rated, initial, cycle, throughput, measured, true
    )


def generate_cells(
    seed: int = 0,
    temperatures_c: Sequence[float] = (15.0, 25.0, 35.0, 45.0),
    c_rates: Sequence[float] = (0.5, 1.0, 2.0),
    cells_per_condition: int = 3,
    n_cycles: int = 500,
    noise_std_pct: float = 0.2,
    spread_sigma: float = 0.03,
) -> list[CellRecord]:
    """Simulate ``cells_per_condition`` cells for every (temperature, C-rate) pair.

    ``noise_std_pct`` is the capacity measurement noise in percent of rated capacity;
    ``spread_sigma`` is the log-normal sigma of the cell-to-cell spread of the fade rate.
    """
    if cells_per_condition < 1 or n_cycles < 2:
        raise ValueError(
            f"need cells_per_condition >= 1 and n_cycles >= 2, got {cells_per_condition} and {n_cycles}"
        )
    rng = np.random.default_rng(seed)
    cells = []
    for temperature in temperatures_c:
        for c_rate in c_rates:
            for replicate in range(cells_per_condition):
                cell_id = f"T{temperature:g}_C{c_rate:g}_{replicate}"
                cells.append(_simulate_cell(
                    rng, cell_id, temperature, c_rate, n_cycles, noise_std_pct, spread_sigma
                ))
    return cells


def summary_feature_names(include_arrhenius: bool = True) -> list[str]:
    """Return the feature names of the ``summary_set`` pipeline, in column order."""
    names = [
        "cycle",
        "throughput_ah",
        "soh_mean_pct",
        "soh_slope_pct_per_100",
        "c_rate",
        "temperature_c",
    ]
    if include_arrhenius:
        names += ["inv_temperature_1000_per_k", "arrhenius_factor"]
    return names


def _window_features(
    cell: CellRecord, end: int, window_cycles: int, include_arrhenius: bool
) -> np.ndarray:
    soh = 100.0 * cell.capacity_ah[end - window_cycles : end] / cell.rated_capacity_ah
    slope = np.polyfit(np.arange(window_cycles), soh, 1)[0] * 100.0
    values = [
        float(cell.cycle[end - 1]),
        float(cell.throughput_ah[end - 1]),
        float(soh.mean()),
        float(slope),
        cell.c_rate,
        cell.temperature_c,
    ]
    if include_arrhenius:
        values += [
            1000.0 / (cell.temperature_c + _KELVIN_OFFSET),
            float(arrhenius_factor(cell.temperature_c)),
        ]
    return np.asarray(values, dtype=np.float32)


def build_summary_samples(
    cells: Iterable[CellRecord],
    window_cycles: int = 20,
    horizon_cycles: int = 100,
    stride_cycles: int = 10,
    include_arrhenius: bool = True,
) -> list[Sample]:
    """Cut every cell into windows and return one :class:`Sample` per window.

    Features summarise the last ``window_cycles`` cycles (see :func:`summary_feature_names`).
    The target ``y`` (shape ``(1,)``) is the state-of-health drop, in percentage points of
    rated capacity, between this window and the window ``horizon_cycles`` later: a
    forecast of how fast the cell is ageing right now. Features are not standardised here;
    fit a :class:`FeatureScaler` on the training split.
    """
    if min(window_cycles, horizon_cycles, stride_cycles) < 1:
        raise ValueError(
            "window_cycles, horizon_cycles and stride_cycles must be >= 1, got "
            f"{window_cycles}, {horizon_cycles}, {stride_cycles}"
        )
    samples = []
    for cell in cells:
        n_cycles = len(cell.cycle)
        for end in range(window_cycles, n_cycles - horizon_cycles + 1, stride_cycles):
            samples.append(_window_sample(cell, end, window_cycles, horizon_cycles, include_arrhenius))
    return samples


def _window_sample(
    cell: CellRecord, end: int, window_cycles: int, horizon_cycles: int, include_arrhenius: bool
) -> Sample:
    x = _window_features(cell, end, window_cycles, include_arrhenius)
    now = cell.capacity_ah[end - window_cycles : end].mean()
    later = cell.capacity_ah[end + horizon_cycles - window_cycles : end + horizon_cycles].mean()
    drop_pct = 100.0 * (now - later) / cell.rated_capacity_ah
    meta = {
        "cell_id": cell.cell_id,
        "temperature_c": cell.temperature_c,
        "c_rate": cell.c_rate,
        "cycle": int(cell.cycle[end - 1]),
        "soh_pct": float(x[2]),
    }
    return Sample(meta=meta, x=x, y=np.asarray([drop_pct], dtype=np.float32))


class FeatureScaler:
    """Standardise array features with the mean and standard deviation of a training split."""

    def __init__(self) -> None:
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, samples: Sequence[Sample]) -> FeatureScaler:
        """Learn per-feature mean and std from ``samples`` (constant features get std 1)."""
        if not samples:
            raise ValueError("FeatureScaler.fit needs at least one sample, got an empty list")
        matrix = np.stack([np.asarray(sample.x, dtype=np.float64) for sample in samples])
        self.mean = matrix.mean(axis=0)
        std = matrix.std(axis=0)
        self.std = np.where(std > 0.0, std, 1.0)
        return self

    def transform(self, samples: Sequence[Sample]) -> list[Sample]:
        """Return new samples whose ``x`` is standardised; ``meta`` and ``y`` are kept."""
        if self.mean is None or self.std is None:
            raise RuntimeError(
                "FeatureScaler.transform called before fit(); call fit(train_samples) first"
            )
        return [self._scaled(sample) for sample in samples]

    def _scaled(self, sample: Sample) -> Sample:
        x = ((np.asarray(sample.x, dtype=np.float64) - self.mean) / self.std).astype(np.float32)
        return dataclasses.replace(sample, x=x)


def split_by_cell(
    samples: Sequence[Sample], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Split samples into (train, val) so that no cell appears in both.

    At least one cell goes to each side when there are two or more cells.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    cell_ids = sorted({sample.meta["cell_id"] for sample in samples})
    if len(cell_ids) < 2:
        raise ValueError(f"split_by_cell needs at least 2 cells, got {len(cell_ids)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(cell_ids))
    n_val = min(max(1, round(val_fraction * len(cell_ids))), len(cell_ids) - 1)
    val_ids = {cell_ids[i] for i in order[:n_val]}
    train = [s for s in samples if s.meta["cell_id"] not in val_ids]
    val = [s for s in samples if s.meta["cell_id"] in val_ids]
    return train, val


def temperature_holdout(
    samples: Sequence[Sample], holdout_temps: Iterable[float]
) -> tuple[list[Sample], list[Sample]]:
    """Split samples into (train, holdout): holdout holds exactly the cells at ``holdout_temps``."""
    held = {float(t) for t in holdout_temps}
    present = {float(s.meta["temperature_c"]) for s in samples}
    missing = held - present
    if not held or missing:
        raise ValueError(
            f"holdout_temps must be a non-empty subset of the temperatures in the data "
            f"{sorted(present)}, got {sorted(held)}"
        )
    train = [s for s in samples if float(s.meta["temperature_c"]) not in held]
    holdout = [s for s in samples if float(s.meta["temperature_c"]) in held]
    return train, holdout
