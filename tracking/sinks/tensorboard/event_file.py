"""The event file: appends that reach the file whole or not at all, batched into few system calls.

Runs where the sink runs (the delivery agent, or the caller's thread in sync mode), one call at a
time per sink, so nothing here takes a lock; a forked child's copy only closes its descriptor.

Not tensorboardX's `EventFileWriter`: behind our delivery loop that would add a queue (a pickle
per event) and a thread of its own.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

# Private to the package: the sink writes through it.
__all__ = ["_EventFile"]

_logger = logging.getLogger(__name__)


class _EventFile:
    """An append-only event file that each `append` reaches whole or not at all.

    Appends wait in memory and reach the file in one `os.write` (sync mode would otherwise pay a
    system call per log call): once `interval_s` has passed since the last write, when
    `buffer_bytes` are pending, and on drain/close. A failed write is cut off the file again and its
    append dropped, so the engine's retry of that batch adds no duplicate.
    """

    def __init__(self, path: Path, interval_s: float, buffer_bytes: int, truncate_to: int | None = None) -> None:
        """`truncate_to`: continue an existing file from that size (what a checkpoint committed)."""
        self.path, self._interval_s, self._buffer_bytes = path, interval_s, buffer_bytes
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if truncate_to is not None:
            os.ftruncate(self._fd, truncate_to)  # what a killed writer added after its last checkpoint
        self._size = os.fstat(self._fd).st_size  # bytes of whole writes: where a failed one is cut
        self._pending = bytearray()
        self._due = 0.0  # the time.monotonic() from which an append writes
        self._pid = os.getpid()  # a forked child's copy must not write the parent's pending bytes

    @property
    def size(self) -> int:
        """Bytes in the file (whole appends only; what is pending is not counted)."""
        return self._size

    def append(self, data: bytes) -> None:
        if len(self._pending) + len(data) >= self._buffer_bytes or time.monotonic() >= self._due:
            self.drain(data)
        else:
            self._pending += data

    def drain(self, data: bytes = b"") -> None:
        """Write what is pending, then `data`: visible to readers (not fsynced), or on error not at all."""
        view = memoryview(self._pending + data)
        try:
            written = 0
            while written < len(view):
                written += os.write(self._fd, view[written:])
        except BaseException:
            with contextlib.suppress(OSError):  # the write's error is the one to raise
                os.ftruncate(self._fd, self._size)  # (if this fails too, readers skip a torn tail)
            raise
        self._size += len(view)
        self._pending = bytearray()
        self._due = time.monotonic() + self._interval_s

    def close(self) -> None:
        """Drain, fsync and close; a second call does nothing. In a forked child: close only."""
        if self._fd is not None and os.getpid() != self._pid:
            os.close(self._fd)  # the parent writes what is pending, at its own size
            self._fd, self._pending = None, bytearray()
        if self._fd is not None:
            self.drain()
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
