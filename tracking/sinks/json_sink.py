"""The JSON sink: `config.json`, `metrics.json` and `step_metrics.csv` in the run directory.

Runs on the worker (or on the caller's thread in sync mode), as every sink; see `tracking.sinks.base`.

- `config.json`: the run's config as given, updated by `log_params`; rewritten when it changed.
- `metrics.json`: the latest value of every metric, a flat `{key: value}` dict (BatteryML's reference
  format). Replaced atomically, at most every `metrics_interval_s` and at flush/close, so its cost
  depends on the number of keys, not on the length of the run. Non-finite values are written as the
  `NaN` / `Infinity` literals that Python's `json.load` reads back.
- `step_metrics.csv`: a row per step, a column per metric, written when the run ends.

The journal, artifacts and figures are written by the core (`tracking.rundir`), not here.
"""
from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..events import METRICS, PARAMS, is_finite_all
from ..rundir import dumps, write_json_atomic
from .base import RunContext

__all__ = ["JsonSink"]

_logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
STEP_METRICS_FILE = "step_metrics.csv"


class JsonSink:
    """Latest metrics as JSON, the config as JSON, and the per-step history as CSV."""

    name = "json"

    def __init__(self, metrics_interval_s: float = 1.0) -> None:
        self.metrics_interval_s = metrics_interval_s
        self._run_dir: Path | None = None

    def open(self, run: RunContext) -> Mapping[str, Any] | None:
        self._run_dir = Path(run.run_dir)
        self._config: dict[str, Any] = dict(run.config)
        self._latest: dict[str, float] = {}
        self._rows: dict[int, dict[str, float]] = {}
        self._columns: dict[str, None] = {}  # insertion-ordered set of metric keys
        self._metrics_dirty = False
        self._last_metrics_write = time.monotonic()
        write_json_atomic(self._run_dir / CONFIG_FILE, self._config)
        self._write_metrics()
        return None

    def write(self, events: Sequence[tuple]) -> None:
        latest, rows, columns = self._latest, self._rows, self._columns
        config_changed = False
        for event in events:
            kind = event[0]
            if kind is METRICS:
                values = event[1]
                latest.update(values)
                row = rows.get(event[2])
                if row is None:
                    rows[event[2]] = dict(values)
                else:
                    row.update(values)
                if len(columns) < len(latest):
                    columns.update(dict.fromkeys(values))
                self._metrics_dirty = True
            elif kind is PARAMS:
                self._config.update(event[1])
                config_changed = True
        if config_changed:
            write_json_atomic(self._run_dir / CONFIG_FILE, self._config)
        if self._metrics_dirty and time.monotonic() - self._last_metrics_write >= self.metrics_interval_s:
            self._write_metrics()

    def flush(self) -> None:
        if self._metrics_dirty:
            self._write_metrics()

    def close(self, status: str) -> None:
        self._write_metrics()
        self._write_step_csv()

    def _write_metrics(self) -> None:
        latest = self._latest
        if is_finite_all(latest):
            raw = dumps(latest)
        else:
            raw = json.dumps(latest, indent=2).encode()
        write_json_atomic(self._run_dir / METRICS_FILE, latest, raw=raw)
        self._metrics_dirty = False
        self._last_metrics_write = time.monotonic()

    def _write_step_csv(self) -> None:
        columns = list(self._columns)
        path = self._run_dir / STEP_METRICS_FILE
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["step", *columns])
            for step in sorted(self._rows):
                row = self._rows[step]
                writer.writerow([step, *(_csv_value(row.get(c)) for c in columns)])
        tmp.replace(path)


def _csv_value(value: float | None) -> Any:
    return "" if value is None else repr(value)
