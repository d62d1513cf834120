"""The TensorBoard sink: one event file per run in `{run_dir}/tensorboard/`.

Runs on the worker (or on the caller's thread in sync mode), as every sink; see `tracking.sinks.base`.
One call at a time per instance, so nothing here takes a lock.

What TensorBoard's own reader finds there:

- scalars: an `Event` per step holding the step's values, wall time = the first value's timestamp.
  Consecutive METRICS events at one step share an Event; Events keep logged order, never sorted
  (TensorBoard reads a lower step as a restart, as from tensorboardX's writer). NaN and ±inf are
  kept; a value beyond float32's range becomes ±inf, as protobuf makes it.
- images: each FIGURE's PNG, tagged with its name, at the latest metrics' step (0 before any).
- text: the config, updated by PARAMS events, as a markdown table of flattened `a.b` keys (tag
  `config`); TAG events as `tags/<key>`. ARTIFACT and EXPERIMENT events are ignored.

Scalar Events are written in protobuf's wire format by hand (a cached prefix per key, then the
float): byte for byte what `Event.SerializeToString()` gives (a test checks it), at ~1/10 the cost.
The rare records use tensorboardX's protobuf classes, but not its `EventFileWriter`: behind our
worker that would add a queue (a pickle per event) and a thread of its own.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import socket
import struct
import time
from ctypes import c_float
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..events import FIGURE, METRICS, PARAMS, TAG
from ..redact import MASK, is_secret_key, redact_config
from .base import PermanentSinkError, RunContext

try:  # the `tensorboard` extra; what is missing is reported when a sink is built
    from crc32c import crc32c as _crc32c
    from tensorboardX.proto import event_pb2, summary_pb2, types_pb2
except ImportError as exc:
    _MISSING: ImportError | None = exc
else:
    _MISSING = None

__all__ = ["TensorBoardSink", "TENSORBOARD_DIR"]

_logger = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
CONFIG_TAG = "config"
TAG_PREFIX = "tags/"
_MAX_CACHED_TAGS = 10_000  #: scalar tags whose encoded prefix is kept
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # IHDR colour type -> Summary.Image.colorspace
# The text plugin's metadata; its content, TextPluginData(version=0), serialises to no bytes.
_TEXT_METADATA = {"plugin_data": {"plugin_name": "text", "content": b""}}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_F32 = struct.Struct("<f").pack
_WALL_TIME = struct.Struct("<Bd")  # Event field 1, a double: key byte 0x09, then 8 bytes
_NO_WALL_TIME = _WALL_TIME.pack(0x09, 0.0)  # proto3 leaves a field at its default out
_SMALL_VARINTS = [bytes((i,)) for i in range(0x80)]


def _masked_crc(data: bytes) -> bytes:
    """TFRecord's masked CRC-32C (so a CRC stored inside CRC'd data does not look like a CRC)."""
    crc = _crc32c(data)
    return _U32.pack((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


@functools.lru_cache(maxsize=4096)  # record lengths repeat: a scalar record's depends on its keys only
def _record_header(length: int) -> bytes:
    header = _U64.pack(length)
    return header + _masked_crc(header)


def _frame(data: bytes) -> bytes:
    """One TFRecord: length, its CRC, the data, its CRC."""
    return _record_header(len(data)) + data + _masked_crc(data)


def _varint(value: int) -> bytes:
    if value < 0x80:  # the common cases (steps, tag and value lengths) without the loop
        return _SMALL_VARINTS[value]
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = []
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@functools.lru_cache(maxsize=_MAX_CACHED_TAGS)  # thread-safe, and bounded: keys may never repeat
def _tag_prefix(key: str) -> bytes:
    """`key`'s `Summary.Value` up to its value: `0a <len> 0a <len> tag 15`, then the 4-byte float."""
    tag = key.encode()
    value = b"\x0a" + _varint(len(tag)) + tag + b"\x15"
    return b"\x0a" + _varint(len(value) + 4) + value


@functools.lru_cache(maxsize=1024)  # key sets repeat: a loop logs the same dict every step
def _values_packer(keys: tuple[str, ...]) -> tuple[Any, list[Any]]:
    """A struct that packs `Summary.Value`s for `keys` in one call, and its argument template.

    The format alternates each key's cached prefix (`Ns`) with its float32 (`f`); the template
    holds the prefixes at even positions, the values go at the odd ones.
    """
    prefixes = [_tag_prefix(k) for k in keys]
    template: list[Any] = [None] * (2 * len(keys))
    template[0::2] = prefixes
    return struct.Struct("<" + "".join(f"{len(p)}sf" for p in prefixes)).pack, template


def _values_body(values: dict) -> bytes:
    """The `Summary.Value`s of one METRICS event's values, in their order."""
    if len(values) == 1:  # log_metric's event: the prefix and the float, no packer to look up
        for key, value in values.items():
            try:
                return _tag_prefix(key) + _F32(value)
            except OverflowError:
                return _tag_prefix(key) + _F32(c_float(value).value)
    pack, template = _values_packer(tuple(values))
    args = template.copy()
    args[1::2] = values.values()
    try:
        return pack(*args)
    except OverflowError:  # struct refuses what float32 can't hold; C's cast (so protobuf) gives ±inf
        return b"".join([_tag_prefix(k) + _F32(c_float(v).value) for k, v in values.items()])


def _scalar_record(wall_time: float, step: int, *values: dict) -> bytes:
    """A framed `Event(wall_time, step, Summary(value=[...]))` holding every value of `values`."""
    body = _values_body(values[0]) if len(values) == 1 else b"".join(map(_values_body, values))
    wall = _WALL_TIME.pack(0x09, wall_time)
    return _frame(b"".join((
        b"" if wall == _NO_WALL_TIME else wall,
        b"\x10" + _varint(step) if step else b"",  # field 2, step: a varint
        b"\x2a", _varint(len(body)), body,  # field 5, summary: length-delimited
    )))


def _summary_record(step: int, wall_time: float, **value: Any) -> bytes:
    """A framed Event holding one `Summary.Value(**value)`."""
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(**value)])
    return _frame(event_pb2.Event(wall_time=wall_time, step=step, summary=summary).SerializeToString())


def _text_record(tag: str, text: str, step: int, wall_time: float) -> bytes:
    # An empty (but present) shape: a scalar string, shown as one markdown document, not a table.
    tensor = {"dtype": types_pb2.DT_STRING, "string_val": [text.encode()], "tensor_shape": {}}
    return _summary_record(step, wall_time, tag=tag, metadata=_TEXT_METADATA, tensor=tensor)


def _image_record(tag: str, png: bytes, step: int, wall_time: float) -> bytes:
    if len(png) < 26 or png[:8] != _PNG_SIGNATURE or png[12:16] != b"IHDR":
        raise PermanentSinkError(f"figure {tag!r} is not a PNG image (bad signature or header)")
    width, height = struct.unpack(">II", png[16:24])  # IHDR, the chunk a PNG must start with
    colorspace = _PNG_CHANNELS.get(png[25], 3)
    image = {"height": height, "width": width, "colorspace": colorspace, "encoded_image_string": png}
    return _summary_record(step, wall_time, tag=tag, image=image)


def _config_rows(config: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    def cell(value: Any) -> str:  # a '|' would end the cell and a newline the row
        return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")

    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            yield from _config_rows(value, f"{prefix}{key}.")
        else:
            yield f"| {cell(f'{prefix}{key}')} | {cell(value)} |"


def _config_record(config: Mapping[str, Any], step: int, wall_time: float) -> bytes:
    """The config as a two-column markdown table of flattened `a.b` keys."""
    table = "\n".join(["| key | value |", "| --- | --- |", *_config_rows(config)])
    return _text_record(CONFIG_TAG, table, step, wall_time)


class _EventFile:
    """An append-only event file that each `append` reaches whole or not at all.

    Appends wait in memory and reach the file in one `os.write` (sync mode would otherwise pay a
    system call per log call): once `interval_s` has passed since the last write, when
    `buffer_bytes` are pending, and on drain/close. A failed write is cut off the file again and its
    append dropped, so the worker's retry of that batch adds no duplicate.
    """

    def __init__(self, path: Path, interval_s: float, buffer_bytes: int) -> None:
        self.path, self._interval_s, self._buffer_bytes = path, interval_s, buffer_bytes
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size  # bytes of whole writes: where a failed one is cut
        self._pending = bytearray()
        self._due = 0.0  # the time.monotonic() from which an append writes
        self._pid = os.getpid()  # a forked child's copy must not write the parent's pending bytes

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


_file_numbers = itertools.count()


class TensorBoardSink:
    """Scalars, figures, config and tags as a TensorBoard event file in `{run_dir}/tensorboard/`.

    flush_interval_s: the longest time written events wait in memory before reaching the file (they
        also go at flush(), close(), and when buffer_bytes are pending). TensorBoard itself reloads
        every 5 s by default.
    buffer_bytes: pending bytes that trigger a write before the interval is up.
    """

    name = "tensorboard"
    blocking = False  # local files only: the worker calls it on its own thread (see sinks.base)

    def __init__(self, flush_interval_s: float = 1.0, buffer_bytes: int = 1 << 20) -> None:
        if _MISSING is not None:  # fail when the sink is built, naming the extra to install
            raise ImportError(
                f"the 'tensorboard' sink needs tensorboardX and crc32c ({_MISSING}): "
                "pip install 'batteryml-tracking[tensorboard]'"
            ) from _MISSING
        self.flush_interval_s = flush_interval_s
        self.buffer_bytes = buffer_bytes
        self._file: _EventFile | None = None
        self._run_dir = Path()
        self._config: dict[str, Any] = {}
        self._step = 0

    def open(self, run: RunContext) -> Mapping[str, Any] | None:
        self._discard_file()  # a retried open() must not leave the previous attempt's file open
        self._run_dir = Path(run.run_dir)
        (self._run_dir / TENSORBOARD_DIR).mkdir(parents=True, exist_ok=True)
        self._secret_patterns = run.secret_key_patterns
        self._config = redact_config(run.config, self._secret_patterns)  # event files get shared
        self._step = 0
        # TensorBoard finds files by "tfevents" in the name; time first so that names sort by age;
        # pid and a counter so that two opens of one run's folder (replay, retried open) never share one.
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        path = self._run_dir / TENSORBOARD_DIR / f"{name}.{next(_file_numbers)}"
        self._file = _EventFile(path, self.flush_interval_s, self.buffer_bytes)
        head = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString()
        head = _frame(head) + (_config_record(self._config, 0, run.start_time) if self._config else b"")
        self._file.drain(head)  # now, so that TensorBoard lists the run, with its config, from the start
        return {"event_file": str(path.relative_to(self._run_dir))}

    def write(self, events: Sequence[tuple]) -> None:
        scalars: list[list] = []  # per step: [wall_time, step, values, more values at that step, ...]
        extras: list[bytes] = []
        bad_figures: list[str] = []
        step, params_time = self._step, None
        for event in events:
            kind = event[0]
            if kind == METRICS:  # `==`, not `is`: replayed events carry kinds read back from JSON
                if scalars and event[2] == step:
                    scalars[-1].append(event[1])
                else:
                    step = event[2]
                    scalars.append([event[3], step, event[1]])
            elif kind == FIGURE:
                try:
                    extras.append(_image_record(event[1], self._png(event[2]), step, event[3]))
                except PermanentSinkError as exc:
                    bad_figures.append(str(exc))
            elif kind == TAG:
                value = MASK if is_secret_key(event[1], self._secret_patterns) else str(event[2])
                extras.append(_text_record(TAG_PREFIX + event[1], value, step, event[3]))
            elif kind == PARAMS:
                self._config.update(redact_config(event[1], self._secret_patterns))  # shallow, as config.json
                params_time = event[2]
        parts = [_scalar_record(*group) for group in scalars] + extras
        if params_time is not None:  # one config text per batch, however many PARAMS
            parts.append(_config_record(self._config, step, params_time))
        if parts:
            self._file.append(b"".join(parts))
        self._step = step  # only now: a retried batch must see the step it saw the first time
        if bad_figures:  # the rest of the batch is written; this part can never be
            raise PermanentSinkError("; ".join(bad_figures))

    def _png(self, figure: Any) -> bytes:
        """The PNG bytes of a FIGURE event: a path (absolute or run-relative) or the bytes."""
        if isinstance(figure, (bytes, bytearray, memoryview)):
            return bytes(figure)
        return (self._run_dir / figure).read_bytes()  # `/` keeps an absolute path as it is

    def flush(self) -> None:
        if self._file is not None:
            self._file.drain()

    def close(self, status: str) -> None:
        if self._file is not None:
            self._file.close()  # if this raises, the file stays: the worker's retry writes the rest
            self._file = None

    def _discard_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                _logger.debug("could not close %s", self._file.path, exc_info=True)
            self._file = None
