"""The recorder: turns drained events into what sinks receive, and keeps the run's own files.

Runs where events are processed in order: the worker thread in async mode, the caller's thread in
sync mode. One recorder per run; nothing here is shared between threads.

For each batch it resolves CUDA snapshots and missing steps, writes figures to `figures/`, keeps the
tags for `meta.json`, and appends the batch to the journal *before* any sink sees it, so whatever a
sink misses can be replayed. A journal that cannot be written (disk full) is reported, and the
events still go to the sinks.
"""
from __future__ import annotations

import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .events import ARTIFACT, FIGURE, METRICS, METRICS_DEFERRED, TAG, StepResolver, resolve_deferred
from .journal import JournalWriter
from .rundir import FIGURES_DIR, write_meta
from .stats import RunReport, SinkState

__all__ = ["Recorder"]

_logger = logging.getLogger(__name__)


class Recorder:
    """Per-run preparation of events, the journal and the meta file."""

    def __init__(self, run_dir: Path, header: dict[str, Any], meta: dict[str, Any], fsync_interval_s: float) -> None:
        self.run_dir = run_dir
        self.meta = meta
        self.last_seq = 0
        self.journal_errors = 0
        self._has_paths = False  # set by _prepare when a batch holds artifact/figure paths
        self._steps = StepResolver()
        self._figure_counts: dict[str, int] = {}
        self.journal: JournalWriter | None = JournalWriter(run_dir, header, fsync_interval_s)

    def note_facts(self, facts_by_sink: dict[str, Any]) -> None:
        """Record what sinks said when they opened (e.g. the MLflow run id) in meta.json, now.

        Under `sinks.<name>`, and at the top level too, where users look for `mlflow_run_id`.
        """
        for name, facts in facts_by_sink.items():
            self.meta["sinks"].setdefault(name, {}).update(facts)
            self.meta.update(facts)
        try:
            write_meta(self.run_dir, self.meta)
        except OSError as exc:
            _logger.error("tracking: cannot write %s/meta.json: %s", self.run_dir, exc)

    @property
    def journal_ok(self) -> bool:
        return self.journal is not None and self.journal_errors == 0

    def record(self, events: Sequence[tuple]) -> tuple[int, list[tuple]]:
        """Prepare `events` for sinks and journal them; returns (seq of the first, prepared events)."""
        self._has_paths = False
        prepared = [self._prepare(event) for event in events]
        first = self.last_seq + 1
        if self.journal is not None:
            try:
                self.journal.append(prepared, has_paths=self._has_paths)
            except OSError as exc:
                self._journal_failed(exc, len(prepared))
        self.last_seq += len(prepared)
        return first, prepared

    def _prepare(self, event: tuple) -> tuple:
        kind = event[0]
        if kind is METRICS:
            return self._steps.resolve(event)
        if kind is METRICS_DEFERRED:
            return self._steps.resolve(resolve_deferred(event))
        if kind is FIGURE:
            self._has_paths = True
            return self._write_figure(event)
        if kind is ARTIFACT:
            self._has_paths = True
        elif kind is TAG:
            self.meta["tags"][event[1]] = event[2]
        return event

    def _write_figure(self, event: tuple) -> tuple:
        """Write the PNG to a file no later figure reuses: sinks may read it after the next one."""
        _, name, png, ts = event
        stem = name[:-4] if name.endswith(".png") else name
        count = self._figure_counts.get(stem, 0)
        self._figure_counts[stem] = count + 1
        path = self.run_dir / FIGURES_DIR / (f"{stem}.png" if count == 0 else f"{stem}_{count}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        return (FIGURE, name, str(path), ts)

    def _journal_failed(self, exc: OSError, count: int) -> None:
        self.journal_errors += 1
        if self.journal_errors == 1:
            _logger.error(
                "tracking: cannot write the journal %s (%s); %d events are not journaled and can't be "
                "replayed, but still go to the sinks. Free disk space to resume journaling.",
                self.journal.path if self.journal else "?", exc, count,
            )

    def finish(self, status: str, sinks: Sequence[SinkState], dropped: int, timed_out: bool) -> RunReport:
        """Close the journal and write the final meta; returns the run's report."""
        if self.journal is not None:
            try:
                self.journal.close(status)
            except OSError as exc:
                self._journal_failed(exc, 0)
            self.journal = None
        reports = {s.name: s.report(self.last_seq) for s in sinks}
        self.meta.update(status=status, end_time=time.time(), events=self.last_seq, dropped=dropped, sinks=reports)
        try:
            write_meta(self.run_dir, self.meta)
        except OSError as exc:
            _logger.error("tracking: cannot write %s/meta.json: %s", self.run_dir, exc)
        report = RunReport(
            run_id=self.meta["run_id"], run_dir=self.run_dir, status=status, events=self.last_seq,
            dropped=dropped, sinks=reports, timed_out=timed_out,
        )
        report.replay_commands = [replay_command(self.run_dir, n) for n, s in reports.items() if s["undelivered"]]
        return report


def replay_command(run_dir: Path, sink: str) -> str:
    """The shell command that delivers a run's journal to `sink` (credentials never appear here)."""
    return f"{shlex.quote(sys.executable)} -m tracking replay {shlex.quote(str(run_dir))} --to {shlex.quote(sink)}"
