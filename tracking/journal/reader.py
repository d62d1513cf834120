"""`JournalReader`: streams a run's journal in bounded chunks, from any seq, as typed events.

Runs wherever delivery runs: the agent's event loop (its tail of fresh batches) and its pool
threads (a lagging sink reading its own way forward), `python -m tracking replay`, sync mode, the
CLI. One reader may be shared by threads: its index of batch lines is guarded by a lock, and every
read opens its own file handle.

The reader never raises for what it finds in the file: a line that can't be decoded, or an event
that points outside the run directory, is skipped, counted in `corrupt_lines` / `corrupt_events`
and warned about once per reader. A last line without its newline is one the writer has not
finished (or never will, if it was killed): it is left for a later read.
"""
from __future__ import annotations

import bisect
import logging
import os
import threading
from collections import OrderedDict
from array import array
from pathlib import Path
from typing import Any, Iterator

import orjson

from ..core.errors import InvalidNameError
from .events import ARTIFACT, EVENT_TYPES, FIGURE, KINDS, METRICS, MODEL, SCALARS, Metrics, SinkEvent
from ..core.names import check_name
from .rundir import JOURNAL_FILE

__all__ = ["JournalReader", "JournalContents", "read_journal", "DEFAULT_CHUNK_EVENTS"]

_logger = logging.getLogger(__name__)

#: events a `read` returns at most by default: a lagging sink's chunk (bounded memory), at least a
#: batch line's worth so that a line is decoded about once
DEFAULT_CHUNK_EVENTS = 20_000
#: one batch line every this many bytes is remembered in the reader's sparse index
_INDEX_EVERY_BYTES = 1 << 16
_BATCH_PREFIX = b'["batch",'
_RUN_PREFIX = b'["run",'
_END_PREFIX = b'["end",'
_KIND_OBJECTS = {kind: kind for kind in KINDS}
_new = tuple.__new__
#: events of recently decoded lines kept for the reader's other threads
_DECODED_MAX_EVENTS = 50_000


class JournalReader:
    """A run's journal: its header, its end status, and its events from any seq.

    `refresh()` indexes the lines written since the last call: a batch line's first seq is read
    from its first bytes, and one line every `_INDEX_EVERY_BYTES` is remembered (a sparse index:
    a sync-mode run writes a line per log call). `read(from_seq)` seeks to the nearest indexed line
    and decodes only the lines that hold what it returns.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / JOURNAL_FILE
        self.header: dict[str, Any] = {}
        self.end_status: str | None = None
        self.end_time: float | None = None
        self.corrupt_lines = 0
        self.corrupt_events = 0
        # Guards everything below and the counters above: the agent reads from pool threads
        # while its event loop indexes fresh lines.
        self._lock = threading.Lock()
        self._index_seqs = array("q")  # first seq of every indexed batch line, ascending
        self._index_offsets = array("q")  # byte offset of that line
        self._scanned = 0  # bytes of whole lines indexed so far
        self._last_first = 0  # first seq of the last batch line
        self._uncounted: bytes | None = None  # the last batch line, if its format has no count
        self._last_seq = 0
        self._warned = False
        self._bad_lines: set[int] = set()  # first seqs of batch lines found damaged (counted once)
        # The lines decoded last, by first seq: (line length, events), oldest first.
        self._decoded: OrderedDict[int, tuple[int, list[SinkEvent | None]]] = OrderedDict()
        self._decoded_events = 0
        self._root = str(self.run_dir)

    # -- the index ----------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Bytes of whole lines indexed so far."""
        return self._scanned

    @property
    def indexed_seq(self) -> int:
        """The last seq of the lines indexed so far (no new read of the file)."""
        return self._last_seq

    def refresh(self) -> int:
        """Index the whole lines written since the last call; returns the last seq journaled."""
        with self._lock:
            self._scan_unlocked()
            return self._last_seq

    def header_only(self) -> dict[str, Any]:
        """The run header (the first line), without indexing the rest of the file."""
        if not self.header:
            try:
                with open(self.path, "rb") as fh:
                    line = fh.readline()
            except FileNotFoundError:
                return {}
            record = self._loads(line) if line.startswith(_RUN_PREFIX) else None
            if record is not None and len(record) > 1 and isinstance(record[1], dict):
                self.header = record[1]
        return self.header

    def _scan_unlocked(self, collect: bool = False) -> list[tuple[int, bytes]]:
        """Index the whole lines past what is indexed; with `collect`, return the new batch lines."""
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            return []
        collected: list[tuple[int, bytes]] = []
        with fh:
            fh.seek(self._scanned)
            offset = self._scanned
            for line in _whole_lines(fh):
                first = self._index_line(line, offset)
                if collect and first is not None:
                    collected.append((first, line))
                offset += len(line)
            self._scanned = offset
        if self._uncounted is not None:  # a line in the format without a count, last in the file
            count = self._count_events(self._uncounted)
            self._last_seq = self._last_first + count - 1 if count is not None else self._last_first - 1
            self._uncounted = None
        return collected

    def _index_line(self, line: bytes, offset: int) -> int | None:
        """Index one whole line; returns its first seq if it is a batch line."""
        if line.startswith(_BATCH_PREFIX):
            first, count = _batch_prefix(line)
            if first is not None and first > self._last_first:
                if self._uncounted is not None:  # the previous line's events end where this one starts
                    self._last_seq, self._uncounted = first - 1, None
                if not self._index_offsets or offset - self._index_offsets[-1] >= _INDEX_EVERY_BYTES:
                    self._index_seqs.append(first)
                    self._index_offsets.append(offset)
                self._last_first = first
                if count is None:
                    self._uncounted = line
                else:
                    self._last_seq = first + count - 1
                return first
        elif line.startswith(_RUN_PREFIX):
            record = self._loads(line)
            if record is not None and len(record) > 1 and isinstance(record[1], dict):
                self.header = record[1]
                return None
        elif line.startswith(_END_PREFIX):
            record = self._loads(line)
            if record is not None and len(record) > 2:
                self.end_status, self.end_time = str(record[1]), record[2]
                return None
        elif not line.strip():
            return None
        self._corrupt(f"an unreadable line at byte {offset}")
        return None

    def _count_events(self, line: bytes) -> int | None:
        record = self._loads(line)
        events = _batch_events(record)
        return None if events is None else len(events)

    def tail(self) -> list[tuple[int, list[SinkEvent | None]]]:
        """The batches written since the last `refresh`/`tail`, indexed and decoded in one pass:
        how the agent reads fresh events once for every sink that keeps up."""
        with self._lock:
            lines = self._scan_unlocked(collect=True)
        out = []
        for first, line in lines:
            decoded = self._decode_line(line, first)
            if decoded is not None:
                out.append((first, decoded))
        return out

    # -- reading ------------------------------------------------------------------------------

    def read(self, from_seq: int, max_events: int = DEFAULT_CHUNK_EVENTS, to_seq: int | None = None
             ) -> tuple[int, list[SinkEvent | None]]:
        """Events from `from_seq` on (about `max_events`: whole lines, so at most one line more;
        none past `to_seq`), contiguous.

        Returns (seq of the first event returned, events). The first seq is past `from_seq` when
        the events in between can't be read (a corrupt line): the caller skips them. An event that
        can't be decoded inside a readable line is None (counted): the caller skips it. An empty
        list with first seq `from_seq` means nothing more is journaled yet.
        """
        with self._lock:
            if from_seq > self._last_seq:
                self._scan_unlocked()
            limit = self._scanned
            position = bisect.bisect_right(self._index_seqs, from_seq) - 1
            offset = self._index_offsets[position] if position >= 0 else 0
        first_returned: int | None = None
        events: list[SinkEvent | None] = []
        expected = from_seq
        for first, line in self._batch_lines(offset, limit, from_seq):
            if to_seq is not None and first > to_seq:
                break
            if first_returned is not None and first != expected:
                break  # a gap (a corrupt line) after what we have: return what is contiguous
            decoded = self._decode_line(line, first)
            if decoded is None:
                continue  # counted; the caller skips its seqs
            skip = max(expected - first, 0)
            if skip >= len(decoded):
                continue
            keep = decoded[skip:] if skip else decoded
            if to_seq is not None and first + len(decoded) - 1 > to_seq:
                keep = keep[: max(to_seq - (first + skip) + 1, 0)]
            # Whole lines, not cut at max_events: the next read then starts on a line boundary
            # instead of decoding the rest of this line again.
            if first_returned is None:
                first_returned = first + skip
            events.extend(keep)
            expected = first + skip + len(keep)
            if len(events) >= max_events or (to_seq is not None and expected > to_seq):
                break
        return (first_returned if first_returned is not None else from_seq), events

    def _batch_lines(self, offset: int, limit: int, from_seq: int) -> Iterator[tuple[int, bytes]]:
        """(first seq, line) of the batch lines from `offset` up to `limit` that may hold seqs from
        `from_seq` on: lines wholly before it are passed over on their prefix alone."""
        previous: tuple[int, bytes] | None = None
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            for line in _whole_lines(fh, limit - offset):
                if not line.startswith(_BATCH_PREFIX):
                    continue
                first = _batch_prefix(line)[0]
                if first is None:
                    continue
                if first <= from_seq:
                    previous = (first, line)  # may hold from_seq: decided by the next line's first
                    continue
                if previous is not None:
                    yield previous
                    previous = None
                yield first, line
        if previous is not None:
            yield previous

    def iter_events(self, from_seq: int = 1, chunk_events: int = DEFAULT_CHUNK_EVENTS
                    ) -> Iterator[tuple[int, SinkEvent]]:
        """Every readable (seq, event) from `from_seq` to what is journaled now, a chunk at a time."""
        last = self.refresh()
        seq = from_seq
        while seq <= last:
            first, events = self.read(seq, chunk_events, to_seq=last)
            if not events:
                break
            for offset, event in enumerate(events):
                if event is not None:
                    yield first + offset, event
            seq = first + len(events)

    def tags(self) -> dict[str, str]:
        """The run's tags, last value per key: only lines holding a tag event are decoded."""
        tags: dict[str, str] = {}
        self.refresh()
        with self._lock:
            limit = self._scanned
        for first, line in self._batch_lines(0, limit, 0):
            if b'["tag",' not in line:
                continue
            for event in self._decode_line(line, first) or ():
                if event is not None and event[0] == "tag":
                    tags[event[1]] = event[2]
        return tags

    # -- decoding -----------------------------------------------------------------------------

    @staticmethod
    def _loads(line: bytes) -> Any:
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            return None

    def _decode_line(self, line: bytes, first: int) -> list[SinkEvent | None] | None:
        """The events of a batch line, decoded once for every reader thread (several sinks
        catching up over the same lines share the work)."""
        with self._lock:
            cached = self._decoded.get(first)
        if cached is not None and cached[0] == len(line):
            return cached[1]
        out = self._decode_line_uncached(line, first)
        if out is not None:
            with self._lock:
                previous = self._decoded.pop(first, None)  # another thread decoded it meanwhile
                if previous is not None:
                    self._decoded_events -= len(previous[1])
                self._decoded[first] = (len(line), out)
                self._decoded_events += len(out)
                while self._decoded_events > _DECODED_MAX_EVENTS and len(self._decoded) > 1:
                    _, (_, dropped) = self._decoded.popitem(last=False)
                    self._decoded_events -= len(dropped)
        return out

    def _decode_line_uncached(self, line: bytes, first: int) -> list[SinkEvent | None] | None:
        events = _batch_events(self._loads(line))
        if events is None:
            with self._lock:
                if first not in self._bad_lines:  # count a line once, however often it is read
                    self._bad_lines.add(first)
                    self._corrupt(f"an unreadable batch line (seq {first} on)")
            return None
        finite = b'NaN"' not in line and b'Infinity"' not in line
        out = None
        if finite and b'["figure",' not in line and b'["artifact",' not in line:
            try:  # the common line, metrics (and params, tags) only: no call per event
                # A 1-key event (log_metric) is the common one: a dict display costs half a zip.
                # (zip stops at the shorter of keys and values: only a hand-edited journal has those.)
                out = [_new(Metrics, (METRICS, {raw[1][0]: raw[2][0]} if len(raw[1]) == 1
                                      else dict(zip(raw[1], raw[2])), raw[3], raw[4]))
                       if raw[0] == SCALARS else self._decode_event(raw, True) for raw in events]
            except (TypeError, IndexError, KeyError, ValueError):
                out = None  # something malformed: event by event, so only it is lost
        if out is None:
            out = [self._decode_event(raw, finite) for raw in events]
        if None in out:
            with self._lock:
                if first not in self._bad_lines:
                    self._bad_lines.add(first)
                    self.corrupt_events += out.count(None)
                    self._corrupt(f"an unreadable event in the batch from seq {first}", count_line=False)
        return out

    def _decode_event(self, raw: Any, finite: bool) -> SinkEvent | None:
        try:
            kind = raw[0]
            if kind == SCALARS:
                _, keys, values, step, ts = raw
                if len(keys) != len(values):
                    return None
                if not finite:
                    values = [float(v) if type(v) is str else v for v in values]
                return _new(Metrics, (METRICS, dict(zip(keys, values)), step, ts))
            if kind == METRICS:
                values = raw[1]
                if not finite:
                    for key, value in values.items():
                        if type(value) is str:
                            values[key] = float(value)
                return _new(Metrics, (METRICS, values, raw[2], raw[3]))
            if kind == ARTIFACT or kind == FIGURE or kind == MODEL:
                # A journal is data from disk: an entry must not point a sink outside the run.
                cls = EVENT_TYPES[kind]
                if len(raw) != len(cls._fields):
                    return None
                relative = check_name(raw[2], f"journal {kind} path")
                check_name(raw[1], f"journal {kind} name")
                path = os.path.join(self._root, relative)
                return _new(cls, (_KIND_OBJECTS[kind], raw[1], path, *raw[3:]))
            cls = EVENT_TYPES.get(kind)
            if cls is None or len(raw) != len(cls._fields):
                return None
            return _new(cls, (_KIND_OBJECTS[kind], *raw[1:]))
        except (InvalidNameError, TypeError, ValueError, IndexError, KeyError, AttributeError):
            return None

    def _corrupt(self, what: str, count_line: bool = True) -> None:
        """Count a corrupt line (the lock is held); warn once per reader."""
        if count_line:
            self.corrupt_lines += 1
        if not self._warned:
            self._warned = True
            _logger.warning("%s in %s was skipped (the file is damaged); further damage in "
                            "this journal is counted without a warning", what, self.path)


def _whole_lines(fh: Any, limit: int | None = None) -> Iterator[bytes]:
    """The lines of `fh` from where it stands that end with a newline (and end before `limit` bytes)."""
    read = 0
    for line in fh:
        if not line.endswith(b"\n"):
            return  # not finished (or never will be: the writer was killed mid-line)
        read += len(line)
        if limit is not None and read > limit:
            return
        yield line


def _batch_prefix(line: bytes) -> tuple[int | None, int | None]:
    """(first seq, count) from a batch line's first bytes: `["batch",12,3,[` (count None in the
    older `["batch",12,[` format); (None, None) if they are not a batch line's."""
    start = len(_BATCH_PREFIX)
    comma = line.find(b",", start)
    try:
        first = int(line[start:comma])
    except ValueError:
        return None, None
    if first < 1:
        return None, None
    if line[comma + 1:comma + 2] == b"[":
        return first, None
    end = line.find(b",", comma + 1)
    try:
        count = int(line[comma + 1:end])
    except ValueError:
        return None, None
    return first, count


def _batch_events(record: Any) -> list | None:
    """The event list of a decoded batch line, in either format; None if it is not one."""
    if not isinstance(record, list):
        return None
    if len(record) == 4 and isinstance(record[2], int) and isinstance(record[3], list) and len(record[3]) == record[2]:
        return record[3]
    if len(record) == 3 and isinstance(record[2], list):
        return record[2]
    return None


class JournalContents:
    """What `read_journal` found: the run header, every event with its seq, and the end status."""

    def __init__(self, header: dict[str, Any], events: list[tuple[int, SinkEvent]], end_status: str | None) -> None:
        self.header = header
        self.events = events
        self.end_status = end_status


def read_journal(run_dir: str | os.PathLike) -> JournalContents:
    """The whole journal in memory: for small runs (tests, `show`); delivery streams with `read`."""
    reader = JournalReader(run_dir)
    events = list(reader.iter_events())
    return JournalContents(reader.header, events, reader.end_status)

