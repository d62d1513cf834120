"""The JSON sink: `config.json`, `metrics.json` and `step_metrics.csv` in the run directory.

Runs in the delivery agent (or on the caller's thread in sync mode), as every sink; see
`tracking.sinks.base`.

- `config.json`: the run's config as given, updated by `log_params`; rewritten when it changed.
- `metrics.json`: the latest value of every metric, a flat `{key: value}` dict (BatteryML's reference
  format). Replaced atomically, at most every `metrics_interval_s` and at flush/close, so its cost
  depends on the number of keys, not on the length of the run. Non-finite values are written as the
  `NaN` / `Infinity` literals that Python's `json.load` reads back.
- `step_metrics.csv`: a row per step, a column per metric, written when the run ends. Rows wait in
  memory up to `max_rows_in_memory` steps; past that they are spilled, sorted, to a side file
  (`.step_metrics.spill`), and the CSV is merged from the spilled runs at the end, so a run of
  millions of steps holds a bounded number of rows in memory.

The journal, artifacts and figures are written by the core (`tracking.journal.rundir`), not here.
"""
from __future__ import annotations

import csv
import heapq
import json
import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..journal.events import METRICS, PARAMS, is_finite_all
from ..journal.rundir import dumps, write_json_atomic
from .base import RunContext

__all__ = ["JsonSink"]

_logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
STEP_METRICS_FILE = "step_metrics.csv"
SPILL_FILE = ".step_metrics.spill"
_SPILL_BLOCK_ROWS = 128  #: rows pickled together in the spill file (what the merge holds per run)


class JsonSink:
    """Latest metrics as JSON, the config as JSON, and the per-step history as CSV."""

    name = "json"
    blocking = False  # local files only: the agent calls it on its loop's thread (see sinks.base)
    rebuild_on_resume = True  # its files are rebuilt from the whole journal, not appended to
    portable = True  # settings until open() (see __reduce__): the agent may build its own copy

    def __init__(self, metrics_interval_s: float = 1.0, max_rows_in_memory: int = 50_000) -> None:
        if type(max_rows_in_memory) is not int or max_rows_in_memory < 1:
            raise ValueError(f"max_rows_in_memory must be an int >= 1, got {max_rows_in_memory!r}")
        self.metrics_interval_s = metrics_interval_s
        self.max_rows_in_memory = max_rows_in_memory
        self._run_dir: Path | None = None

    def __reduce__(self) -> tuple:
        # Sent to the delivery agent as its settings, never with a run's rows.
        return (type(self), (self.metrics_interval_s, self.max_rows_in_memory))

    def open(self, run: RunContext) -> Mapping[str, Any] | None:
        self._run_dir = Path(run.run_dir)
        self._config: dict[str, Any] = dict(run.config)
        self._latest: dict[str, float] = {}
        self._rows: dict[int, dict[str, float]] = {}
        self._columns: dict[str, None] = {}  # insertion-ordered set of metric keys
        self._metrics_dirty = False
        self._last_metrics_write = time.monotonic()
        self._spilled: list[list[tuple[int, int]]] = []  # each sorted run's blocks in the spill file
        (self._run_dir / SPILL_FILE).unlink(missing_ok=True)  # a previous open's leftovers
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
        if len(rows) >= self.max_rows_in_memory:
            self._spill()
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
            for step, row in self._sorted_rows():
                writer.writerow([step, *(_csv_value(row.get(c)) for c in columns)])
        tmp.replace(path)
        (self._run_dir / SPILL_FILE).unlink(missing_ok=True)

    def _spill(self) -> None:
        """Append the rows in memory to the spill file as one run sorted by step, then forget them."""
        items = sorted(self._rows.items())
        blocks: list[tuple[int, int]] = []  # (offset, length) of each pickled block of the run
        with open(self._run_dir / SPILL_FILE, "ab") as fh:
            start = offset = fh.tell()
            try:
                for first in range(0, len(items), _SPILL_BLOCK_ROWS):  # read back a block at a time
                    data = pickle.dumps(items[first:first + _SPILL_BLOCK_ROWS], protocol=pickle.HIGHEST_PROTOCOL)
                    fh.write(data)
                    blocks.append((offset, len(data)))
                    offset += len(data)
                fh.flush()
            except BaseException:
                fh.truncate(start)  # a retried write/close spills these rows again
                raise
        self._spilled.append(blocks)
        self._rows = {}

    def _sorted_rows(self) -> Iterator[tuple[int, dict[str, float]]]:
        """Every (step, row) in step order: the rows in memory merged with the spilled runs.

        One file descriptor for all runs (`os.pread`), and one block of each run in memory at a
        time: ~`len(runs) * _SPILL_BLOCK_ROWS` rows however long the run was.
        """
        in_memory = sorted(self._rows.items())
        if not self._spilled:
            yield from in_memory
            return
        fd = os.open(self._run_dir / SPILL_FILE, os.O_RDONLY)
        try:
            runs = [_read_run(fd, blocks) for blocks in self._spilled]
            merged = heapq.merge(*runs, in_memory, key=lambda item: item[0])
            current = next(merged, None)
            for step, row in merged:  # a step spilled in two runs gets one row, the later value wins
                if step == current[0]:
                    current = (step, {**current[1], **row})
                    continue
                yield current
                current = (step, row)
            if current is not None:
                yield current
        finally:
            os.close(fd)


def _read_run(fd: int, blocks: list[tuple[int, int]]) -> Iterator[tuple[int, dict[str, float]]]:
    for offset, length in blocks:
        yield from pickle.loads(os.pread(fd, length, offset))


def _csv_value(value: float | None) -> Any:
    return "" if value is None else repr(value)
