"""`RunJournal`: turns drained events into journal entries, and holds what the disk refused.

Runs where a run's events are put in order: the training process's writer thread in async mode
(`tracking.recorder.writer_thread`), the caller's thread in sync mode. One per run; not shared between threads.

For each batch it reads CUDA snapshots, gives `step=None` its value, writes figure PNGs to
`figures/`, keeps the run's tags, and appends the batch to the journal. Nothing else: no sink code,
no encoding for a sink. When the disk refuses the journal (ENOSPC), the batch is held in memory,
up to `hold_events`, and appended before the next one once the disk takes it again, so seq
numbers keep the logging order; events past that bound are dropped and counted (`unrecorded`).
"""
from __future__ import annotations

import contextlib
import errno
import logging
from pathlib import Path
from typing import Any, Sequence

from ..journal.events import ARTIFACT, FIGURE, MODEL, SCALARS, TAG
from .capture import METRICS_DEFERRED
from .device import DeviceScalar
from ..journal import JournalWriter
from ..journal.rundir import FIGURES_DIR
from .steps import StepResolver

__all__ = ["RunJournal"]

_logger = logging.getLogger(__name__)

#: errors that mean "the disk is full (for now)": a figure that meets one is held and written later
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})


class RunJournal:
    """Prepares events and journals them, in order."""

    def __init__(self, run_dir: Path, header: dict[str, Any], fsync_interval_s: float, hold_events: int) -> None:
        self.run_dir = run_dir
        self.journal = JournalWriter(run_dir, header, fsync_interval_s)
        self.tags: dict[str, str] = {}
        self.errors = 0  #: appends the disk refused
        self.disk_dropped = 0  #: events neither journaled nor held (the disk stayed full too long)
        self.prepare_errors = 0  #: events that could not be prepared (a CUDA read or figure that failed)
        self._hold_events = max(int(hold_events), 1)
        self._held: list[tuple] = []
        self._held_paths = False
        self._batch_paths = False  # the batch being prepared holds artifact, figure or model paths
        self._steps = StepResolver()
        self._figure_counts: dict[str, int] = {}

    @property
    def last_seq(self) -> int:
        return self.journal.last_seq

    @property
    def held(self) -> int:
        """Events waiting for the disk."""
        return len(self._held)

    @property
    def unrecorded(self) -> int:
        """Events that will never be journaled: dropped while the disk stayed full, or not preparable
        or encodable (each logged)."""
        return self.disk_dropped + self.prepare_errors + self.journal.left_out

    def record(self, events: Sequence[tuple]) -> tuple[int, list[tuple]] | None:
        """Prepare and journal `events` (after any held ones); returns (first seq, events journaled),
        or None if the disk refused them (they are held). A list is prepared in place."""
        self._batch_paths = self._held_paths
        # The writer hands over the list it drained, so it is prepared in place.
        prepared = self._steps.resolve_all(events if type(events) is list else list(events), self._prepare_other)
        has_paths = self._batch_paths
        batch = self._held + prepared if self._held else prepared
        if not batch:
            return None
        if self._held:
            batch = [self._retry_figure(event) for event in batch]
        try:
            if has_paths and any(event[0] is FIGURE and type(event[2]) is not str for event in batch):
                raise OSError("a figure's PNG could not be written to figures/")
            result = self.journal.append(batch, has_paths=has_paths)
        except OSError as exc:
            self._hold(batch, has_paths, exc)
            return None
        if self._held:
            _logger.warning("the journal %s is writable again; %d held events are journaled",
                            self.journal.path, len(self._held))
            self._held, self._held_paths = [], False
        return result

    def close(self, status: str) -> None:
        """Journal what is held if the disk now takes it, then write the end line."""
        if self._held:
            self.record(())
        try:
            self.journal.close(status)
        except OSError as exc:
            self.errors += 1
            _logger.error("cannot end the journal %s (%s); readers treat the run as killed",
                          self.journal.path, exc)
            self.journal.abandon()
        if self._held:
            self.disk_dropped += len(self._held)
            _logger.error("%d events could not be journaled before the run ended (the disk "
                          "stayed full) and are lost", len(self._held))
            self._held = []

    def sync(self) -> None:
        try:
            self.journal.sync()
        except OSError as exc:
            _logger.warning("cannot fsync the journal %s: %s", self.journal.path, exc)

    # -- internals -----------------------------------------------------------------------------

    def _prepare_other(self, event: tuple) -> tuple | None:
        """Everything but a plain metrics event (the step resolver takes those); None leaves it out."""
        try:
            kind = event[0]
            if kind is METRICS_DEFERRED:
                return self._steps.resolve(_read_cuda(event))
            if kind is FIGURE:
                self._batch_paths = True
                return self._write_figure(event)
            if kind is ARTIFACT or kind is MODEL:
                self._batch_paths = True
            elif kind is TAG:
                self.tags[event[1]] = event[2]
            return event
        except Exception as exc:  # one event must never cost the batch, or the writer thread
            self._prepare_failed(event, exc)
            return None

    def _write_figure(self, event: tuple) -> tuple:
        """Write the PNG to a file no later figure reuses: sinks may read it after the next one.

        A figure the disk refused keeps its bytes (it is held with its batch) and is written again.
        """
        _, name, png, ts = event
        stem = name[:-4] if name.endswith(".png") else name
        count = self._figure_counts.get(stem, 0)
        path = self.run_dir / FIGURES_DIR / (f"{stem}.png" if count == 0 else f"{stem}_{count}.png")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png)
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            if exc.errno in _DISK_FULL:
                return event  # still bytes: held with its batch, written when the disk takes it
            raise  # this figure can never be written (a folder in the way, no permission): left out
        self._figure_counts[stem] = count + 1
        return (FIGURE, name, str(path), ts)

    def _retry_figure(self, event: tuple) -> tuple:
        if event[0] is FIGURE and isinstance(event[2], (bytes, bytearray)):
            return self._write_figure(event)
        return event

    def _hold(self, batch: list[tuple], has_paths: bool, exc: OSError) -> None:
        self.errors += 1
        if self.errors == 1 or not self._held:
            _logger.error("cannot write the journal %s (%s); up to %d events are held in memory "
                          "until the disk takes them again", self.journal.path, exc, self._hold_events)
        if len(batch) > self._hold_events:
            dropped = len(batch) - self._hold_events
            if self.disk_dropped == 0:
                _logger.error("the journal's disk stayed full; events past the first %d held "
                              "are dropped (counted in the run's report)", self._hold_events)
            self.disk_dropped += dropped
            batch = batch[: self._hold_events]
        self._held, self._held_paths = batch, has_paths

    def _prepare_failed(self, event: tuple, exc: BaseException) -> None:
        self.prepare_errors += 1
        _logger.error("an event could not be recorded and is left out (%s: %s): %.200r",
                      type(exc).__name__, exc, event)


def _read_cuda(event: tuple) -> tuple:
    """A METRICS_DEFERRED event as the SCALARS event it stands for, every CUDA snapshot read (this
    waits for the copies the caller queued, here on the writer thread, never on the caller's)."""
    _, values, step, ts = event
    read = tuple(v.read() if type(v) is DeviceScalar else v for v in values.values())
    return (SCALARS, tuple(values), read, step, ts)
