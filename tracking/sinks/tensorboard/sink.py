"""The TensorBoard sink: one event file per run in `{run_dir}/tensorboard/`.

Runs in the delivery agent (or on the caller's thread in sync mode), as every sink; see
`tracking.sinks.base`. One call at a time per instance, so nothing here takes a lock.

What TensorBoard's own reader finds there:

- scalars: an `Event` per step holding the step's values, wall time = the first value's timestamp.
  Consecutive METRICS events at one step share an Event; Events keep logged order, never sorted
  (TensorBoard reads a lower step as a restart, as from tensorboardX's writer). NaN and ±inf are
  kept; a value beyond float32's range becomes ±inf, as protobuf makes it.
- images: each FIGURE's PNG, tagged with its name, at the latest metrics' step (0 before any).
- text: the config, updated by PARAMS events, as a markdown table of flattened `a.b` keys (tag
  `config`); TAG events as `tags/<key>`. ARTIFACT and EXPERIMENT events are ignored.

The records are built in `records` (framing, protobuf by hand) and written by `event_file`.

Exactly once across a killed deliverer: `checkpoint()` (called after a flush, saved with the
delivery cursor) names the event file and its size; a new deliverer's `open` continues that file
from that size, cutting off what was written after it, and gets every event after the cursor.
"""
from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ...core.errors import PermanentSinkError
from ...journal.events import FIGURE, METRICS, PARAMS, TAG
from ...core.redact import MASK, is_secret_key, redact_config
from ..base import RunContext
from .event_file import _EventFile

try:  # the `tensorboard` extra (crc32c, tensorboardX); what is missing is reported when a sink is built
    # `records` imports both, crc32c first
    from .records import _config_record, _frame, _image_record, _scalar_record, _text_record
    from tensorboardX.proto import event_pb2
except ImportError as exc:
    _MISSING: ImportError | None = exc
else:
    _MISSING = None

__all__ = ["TensorBoardSink", "TENSORBOARD_DIR", "TAG_PREFIX"]

_logger = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
TAG_PREFIX = "tags/"


_file_numbers = itertools.count()


class TensorBoardSink:
    """Scalars, figures, config and tags as a TensorBoard event file in `{run_dir}/tensorboard/`.

    flush_interval_s: the longest time written events wait in memory before reaching the file (they
        also go at flush(), close(), and when buffer_bytes are pending). TensorBoard itself reloads
        every 5 s by default.
    buffer_bytes: pending bytes that trigger a write before the interval is up.
    """

    name = "tensorboard"
    blocking = False  # local files only: the agent calls it on its loop's thread (see sinks.base)
    portable = True  # settings until open() (see __reduce__): the agent may build its own copy

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

    def __reduce__(self) -> tuple:
        # Sent to the delivery agent as its settings, never as open files.
        return (type(self), (self.flush_interval_s, self.buffer_bytes))

    def open(self, run: RunContext) -> Mapping[str, Any] | None:
        self._discard_file()  # a retried open() must not leave the previous attempt's file open
        self._run_dir = Path(run.run_dir)
        (self._run_dir / TENSORBOARD_DIR).mkdir(parents=True, exist_ok=True)
        self._secret_patterns = run.secret_key_patterns
        self._config = redact_config(run.config, self._secret_patterns)  # event files get shared
        self._step = 0
        checkpoint = run.resume.checkpoint if run.resume is not None else None
        if isinstance(checkpoint, Mapping) and self._resume(checkpoint):
            return {"event_file": checkpoint["event_file"]}
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
        if bad_figures:  # the rest of the batch is written; these figures can never be
            raise PermanentSinkError("; ".join(bad_figures), rejected=len(bad_figures))

    def checkpoint(self) -> dict[str, Any] | None:
        """Where the file stands after a flush: what a new deliverer continues from."""
        if self._file is None:
            return None
        return {"event_file": str(self._file.path.relative_to(self._run_dir)), "size": self._file.size,
                "step": self._step, "config": self._config}

    def _resume(self, checkpoint: Mapping[str, Any]) -> bool:
        """Continue the event file a killed deliverer left, from its last checkpoint."""
        path = self._run_dir / str(checkpoint.get("event_file", ""))
        size = checkpoint.get("size")
        if not path.is_file() or path.parent != self._run_dir / TENSORBOARD_DIR or not isinstance(size, int):
            return False
        self._file = _EventFile(path, self.flush_interval_s, self.buffer_bytes, truncate_to=size)
        self._step = int(checkpoint.get("step") or 0)
        if isinstance(checkpoint.get("config"), Mapping):
            self._config = dict(checkpoint["config"])
        return True

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
            self._file.close()  # if this raises, the file stays: the engine's retry writes the rest
            self._file = None

    def _discard_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                _logger.debug("could not close %s", self._file.path, exc_info=True)
            self._file = None
