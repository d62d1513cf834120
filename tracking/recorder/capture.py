"""Capture: a log call's arguments checked and its values taken as they are now, as one event tuple.

Runs on the caller's thread, inside every log call (any thread; several at once): validation and
value capture only, no I/O, no serialisation, no device synchronisation. A log call's event comes
from `scalar_event` / `scalars_event`: the C fast path (`tracking/_speedups.c`) for plain calls (a
str key, float values or a one-element tensor on the CPU, an int step), and `metric_event` /
`metrics_event`, the Python path with every check and error, for the rest (and for every call where
the C module was not built). The kinds are `tracking.journal.events`'.

On the caller's side an event is a plain tuple whose first item names its kind, its time last.
Plain tuples cost about half what a NamedTuple costs to build, and building one is most of what a
log call does:

    (SCALARS,    keys: tuple[str, ...], values: tuple[float, ...], step: int | None, timestamp_s)
    (PARAMS,     params: dict[str, object], timestamp_s)
    (TAG,        key: str, value: str, timestamp_s)
    (ARTIFACT,   name: str, path: str, timestamp_s)      path: the snapshot inside the run directory
    (FIGURE,     name: str, png: bytes, timestamp_s)     the writer thread writes the PNG to figures/
    (EXPERIMENT, name: str, timestamp_s)                 an experiment to create (MLflow maps it)
    (MODEL,      artifact_path: str, path: str, registered_model_name: str | None, timestamp_s)
                                                         path: the saved model's folder in the run directory

Metric values travel as SCALARS, two flat tuples of strings and floats, not as a dict inside the
event tuple: CPython's garbage collector stops tracking a tuple that holds only such atoms at its
first collection, but never one that holds a dict. Events wait up to `batch_interval_s` in the
queue, long enough to be moved into the oldest generation, and each full collection then walks the
user's whole heap: with dicts inside, collections took 0.45 µs a scalar of the training process's
CPU (`benchmarks/delivery_cpu.py`). The journal keeps SCALARS as they are (the delivery agent builds
the dicts). `METRICS_DEFERRED` is the caller-side form of metrics holding device snapshots
(`tracking.recorder.device`, rare): the writer thread reads them (`tracking.recorder.batch`).
"""
from __future__ import annotations

import numbers
import operator
import sys
import time
from typing import Any, Mapping

from ..core.errors import InvalidKeyError, InvalidMetricError, InvalidParamError, InvalidStepError
from ..core.names import describe as _describe
from ..core.names import is_text as _is_text
from ..core.speedups import speedups
from ..journal.events import SCALARS
from .device import DeviceScalar

#: the clock of every event (what the C fast path reads too)
_time = time.time

__all__ = [
    "METRICS_DEFERRED",
    "scalar_event",
    "scalars_event",
    "metric_event",
    "metrics_event",
    "coerce_value",
    "capture_metrics",
    "check_key",
    "check_step",
    "MAX_STEP",
    "copy_params",
]

#: the caller-side form of metrics that hold device snapshots (never journaled as such)
METRICS_DEFERRED = "metrics_deferred"
#: the largest step: a signed 64-bit int, as MLflow's stores and TensorBoard's Event.step hold it
MAX_STEP = 2**63 - 1
#: what orjson (so the journal) can hold of an int
_MIN_INT, _MAX_UINT = -(2**63), 2**64 - 1


def metric_event(key: Any, value: Any, step: Any) -> tuple:
    """The event of a `log_metric` call, the Python way: every check, and the error that says what to fix.

    Called on the caller's thread for what `scalar_event` (the C fast path) did not take: a
    numpy scalar, an int, a tensor on an accelerator, a bad argument; for every call where the C module was not built.
    """
    if not _plain_key(key):
        check_key(key)
    if step is not None and (type(step) is not int or not 0 <= step <= MAX_STEP):
        step = check_step(step)
    if type(value) is not float:
        value = coerce_value(key, value)
        if type(value) is DeviceScalar:
            return (METRICS_DEFERRED, {key: value}, step, _time())
    return (SCALARS, (key,), (value,), step, _time())


def metrics_event(metrics: Any, step: Any) -> tuple | None:
    """The event of a `log_metrics` call the Python way (see `metric_event`); None for no metrics."""
    if type(metrics) is not dict and not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a dict of name -> number, got {type(metrics).__name__}")
    if step is not None and (type(step) is not int or not 0 <= step <= MAX_STEP):
        step = check_step(step)
    kind, keys, values = capture_metrics(metrics)
    if not keys:
        return None
    if kind is SCALARS:
        return (SCALARS, keys, values, step, _time())
    return (METRICS_DEFERRED, dict(zip(keys, values)), step, _time())


def capture_metrics(metrics: Mapping[str, Any]) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
    """`(kind, keys, values)` for a `log_metrics` call: every value captured as it is now.

    Called on the caller's thread once per call. Floats under key sets seen before (what a loop
    that calls `.item()` itself logs, step after step) are checked in C: two tuples, a type test
    over the values, a set lookup for the keys. Anything else goes key by key (`_capture_each`,
    `coerce_value`): a CPU 0-d tensor (the trainer's case) is read with one `item()`. The kind is
    METRICS_DEFERRED if a value is a device snapshot, else SCALARS.
    """
    if type(metrics) is not dict:  # another Mapping: key by key (its keys may not even hash)
        items = tuple(metrics.items())
        return _capture_each(tuple(k for k, _ in items), tuple(v for _, v in items))
    keys, values = tuple(metrics), tuple(metrics.values())
    if _ONLY_FLOAT.issuperset(map(type, values)) and (keys in _KNOWN_KEYS or _learn_keys(keys)):
        return SCALARS, keys, values
    return _capture_each(keys, values)


#: types a value may have to skip `coerce_value`
_ONLY_FLOAT = frozenset({float})
#: key tuples that passed `check_key`: a loop logs the same few sets every step
_KNOWN_KEYS: set[tuple[str, ...]] = set()
_MAX_KNOWN_KEYS = 4096

if speedups is not None:  # the C fast path: the same events for plain calls, None for the rest
    scalar_event, scalars_event = speedups.scalar_event, speedups.scalars_event
    speedups.configure(SCALARS, _KNOWN_KEYS)
else:  # not built, or the pure path asked for (tracking.core.speedups): Python takes every call
    scalar_event, scalars_event = metric_event, metrics_event


def _plain_key(key: Any) -> bool:
    """A key that needs no `check_key`: non-empty ASCII text (what the C fast path takes too)."""
    return type(key) is str and bool(key) and key.isascii()


def _learn_keys(keys: tuple[Any, ...]) -> bool:
    """True if every key is plain ASCII text (remembered); False sends the call the slow way."""
    for key in keys:
        if not _plain_key(key):
            return False
    if len(_KNOWN_KEYS) < _MAX_KNOWN_KEYS:
        _KNOWN_KEYS.add(keys)
    return True


def _capture_each(keys: tuple[Any, ...], raw: tuple[Any, ...]) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
    values: list[Any] = []
    kind = SCALARS
    for key, value in zip(keys, raw):
        if not _plain_key(key):
            check_key(key)
        if type(value) is not float:
            value = coerce_value(key, value)
            if type(value) is DeviceScalar:
                kind = METRICS_DEFERRED
        values.append(value)
    return kind, tuple(str(k) for k in keys), tuple(values)


def coerce_value(key: str, value: Any) -> float | DeviceScalar:
    """The float to log for `value` (or a device snapshot); raises InvalidMetricError otherwise.

    Called on the caller's thread for anything that is not already a `float`.
    """
    tp = type(value)
    torch = sys.modules.get("torch")
    if torch is not None and tp is torch.Tensor:  # the trainer's case: first, without isinstance
        if value.is_cpu:
            # Reading a CPU scalar now is the cheapest way to keep the value as it is at the call
            # (`running_loss += loss` right after must not change what was logged): ~0.5 µs vs
            # ~4 µs for a clone. item() refuses tensors of more than one element.
            try:
                number = value.item()
            except (RuntimeError, ValueError):
                number = None
            if type(number) is float:
                return number
        return _coerce_tensor(key, value, torch)
    if tp is int:
        return _to_float(key, value)
    if tp is bool or tp.__name__ in ("bool_", "bool"):  # numpy 2 names np.bool_ "bool"
        raise InvalidMetricError(
            f"metric value must be a real number, got {_describe(value)} for key {key!r}; "
            "log booleans as 0/1 or with set_tag()"
        )
    if torch is not None and isinstance(value, torch.Tensor):
        return _coerce_tensor(key, value, torch)
    if isinstance(value, numbers.Real):  # numpy scalars, Fraction, Decimal-free reals
        return _to_float(key, value)
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray) and value.ndim == 0:
        if value.dtype.kind in "fiu":
            return _to_float(key, value)
    raise InvalidMetricError(
        f"metric value must be a real number (int, float, numpy scalar or 0-d tensor), "
        f"got {_describe(value)} for key {key!r}"
    )


def _to_float(key: str, value: Any) -> float:
    try:
        return float(value)
    except OverflowError:
        raise InvalidMetricError(
            f"metric value must fit in a float (a double), got {_describe(value)} for key {key!r}"
        ) from None


def _coerce_tensor(key: str, tensor: Any, torch: Any) -> float | DeviceScalar:
    """A snapshot of a tensor on an accelerator (never `.item()` here: that waits for the device);
    for a CPU one, what `coerce_value`'s fast path did not take."""
    if not tensor.is_cpu:
        _check_tensor(key, tensor, torch)
        if tensor.is_meta:
            raise InvalidMetricError(f"metric value must hold a number, got a tensor on the meta device "
                                     f"(shapes only) for key {key!r}")
        return DeviceScalar(tensor)
    try:
        value = tensor.item()
    except (RuntimeError, ValueError):
        _check_tensor(key, tensor, torch)
        raise
    if type(value) is float:
        return value
    if type(value) is int:
        return _to_float(key, value)
    _check_tensor(key, tensor, torch)  # bool or complex: raises with the reason
    raise InvalidMetricError(f"metric value must be a real number, got a {tensor.dtype} tensor for key {key!r}")


def _check_tensor(key: str, tensor: Any, torch: Any) -> None:
    if tensor.numel() != 1:
        raise InvalidMetricError(
            f"metric value must be a 0-d tensor, got a tensor of shape {tuple(tensor.shape)} for "
            f"key {key!r}; reduce it first (e.g. .mean())"
        )
    if tensor.dtype.is_complex or tensor.dtype is torch.bool:
        raise InvalidMetricError(
            f"metric value must be a real number, got a {tensor.dtype} tensor for key {key!r}"
        )


def check_key(key: Any, what: str = "metric") -> str:
    """`key` if it is a non-empty string that can be written as text; raises InvalidKeyError otherwise."""
    if type(key) is not str and not isinstance(key, str):
        raise InvalidKeyError(f"{what} key must be a non-empty str, got {_describe(key)}")
    if not key:
        raise InvalidKeyError(f"{what} key must be a non-empty str, got ''")
    if not key.isascii() and not _is_text(key):
        raise InvalidKeyError(f"{what} key must be valid text, got {key!r} (it holds a lone surrogate, "
                              "which no file or server can store; decode bytes with errors='replace')")
    return key


def check_step(step: Any) -> int:
    """`step` as an int if it is an integer in 0 .. 2**63-1; raises InvalidStepError otherwise."""
    if isinstance(step, bool):
        raise InvalidStepError(f"step must be a non-negative int or None, got {_describe(step)}")
    try:
        value = operator.index(step)
    except TypeError:
        raise InvalidStepError(
            f"step must be a non-negative int or None, got {_describe(step)}"
        ) from None
    if value < 0:
        raise InvalidStepError(f"step must be a non-negative int or None, got {value}")
    if value > MAX_STEP:
        raise InvalidStepError(f"step must be at most 2**63-1 (a signed 64-bit int, as MLflow and "
                               f"TensorBoard store it), got {value}")
    return value


def copy_params(params: Any, what: str = "params") -> dict[str, Any]:
    """A structural copy of a params/config mapping, so later mutation doesn't change what was logged.

    Refuses, at the call, what could not be recorded: keys and strings that are not text, ints
    outside 64 bits (InvalidParamError names the key).
    """
    if not isinstance(params, dict):
        raise TypeError(f"{what} must be a dict, got {_describe(params)}")
    for key in params:
        check_key(key, what="param")
    return _copy(params, what)


def _copy(value: Any, where: str) -> Any:
    tp = type(value)
    if tp is str:
        if not value.isascii() and not _is_text(value):
            raise InvalidParamError(f"{where}: {value!r} is not valid text (a lone surrogate); "
                                    "decode bytes with errors='replace'")
        return value
    if tp is int:
        if not _MIN_INT <= value <= _MAX_UINT:
            raise InvalidParamError(f"{where}: the int {value} does not fit in 64 bits; log it as a str")
        return value
    if isinstance(value, dict):
        return {_copy_key(k, where): _copy(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _copy_key(key: Any, where: str) -> str:
    text = key if type(key) is str else str(key)
    if not text.isascii() and not _is_text(text):
        raise InvalidParamError(f"{where}: the key {text!r} is not valid text (a lone surrogate)")
    return text
