"""`JournalWriter`: appends a run's batches to `journal.jsonl`; the one owner of seq numbers.

Runs on the training process's writer thread (`tracking.recorder.writer_thread`), or on the caller's thread in sync
mode: one writer per run, never two threads at once.

A batch gets its seq numbers only once its line is in the file whole. A write the disk refuses
(ENOSPC, EIO) is cut off again with `ftruncate`, so the file keeps ending with a whole line and the
next append starts on a fresh one; the caller keeps the batch and appends it again later, with the
same seq numbers it would have had.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import orjson

from ..core.speedups import speedups
from .events import ARTIFACT, FIGURE, METRICS, MODEL, SCALARS, is_finite_all
from .rundir import JOURNAL_FILE, json_default

if speedups is not None:  # C: whether a batch of metrics holds no NaN or inf, without a search
    all_finite = speedups.all_finite
else:
    def all_finite(events: Any) -> bool:
        return False  # don't know: search the line

__all__ = ["JournalWriter"]

_logger = logging.getLogger(__name__)

_NONFINITE = {float("inf"): "Infinity", float("-inf"): "-Infinity"}


class JournalWriter:
    """Appends batch lines and fsyncs at least every `fsync_interval_s` while batches arrive.

    Attributes read by other threads (plain ints, so a torn read is at worst one batch old):
    `last_seq` (the seq of the last event journaled) and `size` (bytes of whole lines).
    """

    def __init__(self, run_dir: Path, header: dict[str, Any], fsync_interval_s: float = 1.0) -> None:
        self.path = Path(run_dir) / JOURNAL_FILE
        self._run_dir = str(run_dir) + os.sep
        self._fsync_interval_s = fsync_interval_s
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = 0
        self.last_seq = 0
        self.left_out = 0  #: events no batch line could hold (each logged)
        self._last_sync = time.monotonic()
        self._write_line(orjson.dumps(["run", header], default=json_default))
        self.sync()

    def append(self, events: Sequence[tuple], has_paths: bool = False) -> tuple[int, list[tuple]]:
        """Write `events` as one line; returns (seq of the first, the events written).

        An event JSON can't hold (which the log calls' checks should have refused) is left out and
        logged, so one bad value never costs the batch. Raises OSError, with the file unchanged,
        if the disk refuses the line. `has_paths`: the batch holds artifact or figure events.
        """
        first = self.last_seq + 1
        line, written = self._encode(first, events, has_paths)
        self.left_out += len(events) - len(written)
        if not written:
            return first, written
        self._write_line(line)
        self.last_seq += len(written)
        if time.monotonic() - self._last_sync >= self._fsync_interval_s:
            self.sync()
        return first, written

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
        self._last_sync = time.monotonic()

    def close(self, status: str) -> None:
        """Write the end line, fsync and close; a second call does nothing."""
        if self._fd is None:
            return
        try:
            self._write_line(orjson.dumps(["end", status, time.time()]))
            self.sync()
        finally:
            os.close(self._fd)
            self._fd = None

    def abandon(self) -> None:
        """Close without an end line (the disk is full at the end of the run)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    # -- internals -----------------------------------------------------------------------------

    def _write_line(self, data: bytes) -> None:
        """`data` and a newline in the file whole, or (OSError) not at all."""
        if self._fd is None:
            raise OSError(f"the journal {self.path} is closed")
        view = memoryview(data + b"\n")
        written = 0
        try:
            while written < len(view):
                written += os.write(self._fd, view[written:])
        except BaseException:
            # Whatever reached the file of this line is cut off again (a short write before the
            # error), so the next line does not continue a torn one.
            try:
                os.ftruncate(self._fd, self.size)
            except OSError:
                _logger.error("could not cut a torn write off %s; readers will skip the torn "
                              "line", self.path)
            raise
        self.size += len(view)

    def _encode(self, first: int, events: Sequence[tuple], has_paths: bool) -> tuple[bytes, list[tuple]]:
        """The batch line, and the events it holds (as given: paths stay absolute for sinks)."""
        on_disk = [self._relative(ev) for ev in events] if has_paths else events
        try:
            line = orjson.dumps(["batch", first, len(on_disk), on_disk], default=json_default)
        except (TypeError, orjson.JSONEncodeError):
            return self._encode_each(first, events, on_disk)
        if not (type(on_disk) is list and all_finite(on_disk)) and b"null" in line:
            # orjson writes NaN and ±inf as null, and no metric value is ever None: rewrite the
            # metric events that hold one. Rare, so the common batch pays one substring search
            # (where the batch is all metrics and C found no NaN or inf, not even that).
            line = orjson.dumps(["batch", first, len(on_disk), [_finite(ev) for ev in on_disk]],
                                default=json_default)
        return line, list(events)

    @staticmethod
    def _encode_each(first: int, events: Sequence[tuple], on_disk: Sequence[tuple]) -> tuple[bytes, list[tuple]]:
        """The slow path: encode event by event and leave out what can't be encoded."""
        kept: list[tuple] = []
        kept_on_disk: list[tuple] = []
        for event, stored in zip(events, on_disk):
            try:
                orjson.dumps(stored, default=json_default)
            except (TypeError, orjson.JSONEncodeError) as exc:
                _logger.error("an event could not be journaled and is left out (%s): %.200r",
                              exc, event)
                continue
            kept.append(event)
            kept_on_disk.append(stored)
        if not kept:
            return b"", kept
        line = orjson.dumps(["batch", first, len(kept), [_finite(ev) for ev in kept_on_disk]], default=json_default)
        return line, kept

    def _relative(self, event: tuple) -> tuple:
        kind = event[0]
        if (kind is ARTIFACT or kind is FIGURE or kind is MODEL) and event[2].startswith(self._run_dir):
            return (kind, event[1], event[2][len(self._run_dir):], *event[3:])
        return event


def _finite(event: tuple) -> tuple:
    """The event with NaN and ±inf as the strings the reader turns back into floats."""
    if event[0] is SCALARS and not is_finite_all(event[2]):
        return (SCALARS, event[1], tuple(_finite_value(v) for v in event[2]), event[3], event[4])
    if event[0] is METRICS and not is_finite_all(event[1]):
        return (METRICS, {k: _finite_value(v) for k, v in event[1].items()}, event[2], event[3])
    return event


def _finite_value(value: float) -> float | str:
    return value if value == value and value not in _NONFINITE else _NONFINITE.get(value, "NaN")
