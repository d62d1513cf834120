"""Encoding: events -> plain requests within MLflow's limits.

Runs on the sink's thread (in the delivery agent, or the caller's in sync mode), never where MLflow runs:
requests are plain tuples, so that only those cross to the helper process (`backends`), and MLflow's
entity objects are built on the other side (`store`).

What a ``write`` becomes (`_Encoder.encode`), in this order: EXPERIMENT events as experiments to
create; PARAMS flattened with "." as params (``model.hidden_dims``); TAG as tags; METRICS as metric
points with their steps and timestamps (ms); then ARTIFACT under its name (sub-folders kept),
FIGURE under ``figures/`` and MODEL (a saved MLflow Model's folder) at its artifact path, with a
registry version when it names one. Requests respect MLflow's limits: at most 1,000 metrics, 100 params,
100 tags and 1,000 entities per ``log_batch``, and about 1 MB of JSON.

What MLflow refuses is fixed here, each kind with a single `MLflowSinkWarning` per sink (the local
files keep the original): keys outside ``[/\\w.\\- ]`` or not a clean relative path (``_``), keys
over 250 characters (cut, with a hash to keep them apart), param values over 6,000 and tag values
over 8,000 characters (truncated), and a param logged again with another value (MLflow params are
immutable: the first value stays). NaN and ±inf are sent as they are: every MLflow store accepts
them; SQL stores keep NaN and store ±inf as ±1.8e308 (MLflow's own mapping).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from typing import Any, Mapping, Sequence

from ...journal.events import ARTIFACT, EXPERIMENT, FIGURE, METRICS, MODEL, PARAMS, TAG
from ...core.redact import DEFAULT_SECRET_KEY_PATTERNS, MASK, flatten_config, is_secret_key, redact_config

__all__ = [
    "MAX_METRICS_PER_REQUEST",
    "MAX_PARAMS_PER_REQUEST",
    "MAX_TAGS_PER_REQUEST",
    "MAX_ENTITIES_PER_REQUEST",
    "MAX_REQUEST_BYTES",
    "MAX_KEY_CHARS",
    "MAX_PARAM_VALUE_CHARS",
    "MAX_TAG_VALUE_CHARS",
    "TAG_RUN_ID",
    "TAG_RUN_DIR",
    "FIGURES_ARTIFACT_DIR",
]

_logger = logging.getLogger(__name__)

# MLflow's limits on one log_batch request (mlflow.utils.validation).
MAX_METRICS_PER_REQUEST = 1000
MAX_PARAMS_PER_REQUEST = 100
MAX_TAGS_PER_REQUEST = 100
MAX_ENTITIES_PER_REQUEST = 1000
#: the JSON body budget per request: MLflow documents ~1 MB (and proxies in front of servers often
#: cap bodies at 1 MiB); 10% is left for the envelope and for estimates that run short
MAX_REQUEST_BYTES = 900_000
MAX_KEY_CHARS = 250
MAX_PARAM_VALUE_CHARS = 6000
MAX_TAG_VALUE_CHARS = 8000

#: JSON bytes of one metric besides its key: {"key":"","value":-1.7976931348623157e+308,
#: "timestamp":"1700000000000","step":"9223372036854775807"} plus separators
_METRIC_FIXED_BYTES = 100
#: JSON bytes of one param or tag besides its key and value
_ENTITY_FIXED_BYTES = 30

#: the MLflow tags that tie an MLflow run to the local run
TAG_RUN_ID = "tracking.run_id"
TAG_RUN_DIR = "tracking.run_dir"
#: where FIGURE events go in the run's artifacts
FIGURES_ARTIFACT_DIR = "figures"

#: keys MLflow accepts on every platform (it also allows ':' except on Windows)
_KEY_BAD_CHARS = re.compile(r"[^/\w.\- ]")
#: sanitised keys remembered per sink; a run that invents keys without end must not grow memory
_KEY_CACHE_MAX = 100_000


def _json_len(text: str) -> int:
    # Exact: requests sends MLflow's bodies as json.dumps output (ASCII-escaped).
    return len(json.dumps(text))


def _clean_path(key: str) -> str:
    """`key` as MLflow wants it: a normalised relative path (no '', '.', '..' parts, no leading '/')."""
    parts = [("__" if part == ".." else part) for part in key.split("/") if part not in ("", ".")]
    cleaned = "/".join(parts) or "_"
    if cleaned.startswith(".."):
        cleaned = "_" + cleaned[1:]
    return cleaned


class _Encoder:
    """Turns events into MLflow requests (plain tuples) and fixes what MLflow would refuse."""

    def __init__(self, warn_once: Any) -> None:
        self._warn_once = warn_once
        self._keys: dict[str, str] = {}
        #: JSON bytes of the longest metric seen (sizes metric chunks without per-point accounting)
        self._metric_bytes = _METRIC_FIXED_BYTES + 2
        #: params MLflow holds for the current run: immutable there, so a new value is skipped
        self.params: dict[str, str] = {}
        #: keys whose values are masked before they are sent (set from the run at open)
        self.secret_patterns: tuple[str, ...] = DEFAULT_SECRET_KEY_PATTERNS

    def start_run(self, existing_params: Mapping[str, str]) -> None:
        self.params = dict(existing_params)

    # -- keys and values ------------------------------------------------------------------------

    def key(self, key: str) -> str:
        fixed = self._keys.get(key)
        if fixed is None:
            fixed = self._fix_key(key)
            if len(self._keys) >= _KEY_CACHE_MAX:
                self._keys.clear()
            self._keys[key] = fixed
            self._metric_bytes = max(self._metric_bytes, _METRIC_FIXED_BYTES + _json_len(fixed))
        return fixed

    def _fix_key(self, key: str) -> str:
        fixed = _clean_path(_KEY_BAD_CHARS.sub("_", key))
        if fixed != key:
            self._warn_once(
                "key_chars",
                f"MLflow keys may only contain letters, digits, '_', '-', '.', ' ' and '/' (as a "
                f"relative path): {key!r} is logged to MLflow as {fixed!r}, and keys like it likewise "
                f"(the local files keep the original keys)",
            )
        if len(fixed) > MAX_KEY_CHARS:
            digest = hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:8]
            short = fixed[: MAX_KEY_CHARS - 9] + "_" + digest
            self._warn_once(
                "key_length",
                f"MLflow keys are limited to {MAX_KEY_CHARS} characters: a {len(fixed)}-character key "
                f"({fixed[:40]!r}...) is logged to MLflow as {short!r} (its start and a hash), and "
                f"longer keys likewise (the local files keep the original keys)",
            )
            fixed = short
        return fixed

    def _truncate(self, kind: str, key: str, text: str, limit: int) -> str:
        if len(text) <= limit:
            return text
        self._warn_once(
            f"{kind}_length",
            f"MLflow {kind} values are limited to {limit} characters: {kind} {key!r} "
            f"({len(text)} characters) is truncated in MLflow, and longer values likewise "
            f"(the local files keep the full value)",
        )
        return text[:limit]

    def param_pairs(self, params: Mapping[str, Any], into: dict[str, str]) -> None:
        """Add `params` (flattened, as text, secrets masked) to `into`, skipping what MLflow holds."""
        held = self.params
        for raw_key, value in flatten_config(redact_config(params, self.secret_patterns)):
            key = self.key(raw_key)
            text = self._truncate("param", key, value if type(value) is str else str(value), MAX_PARAM_VALUE_CHARS)
            old = held.get(key)
            if old is None:
                held[key] = into[key] = text
            elif old != text:
                self.warn_param_changed(key, old, text)

    def warn_param_changed(self, key: str, old: str, new: str) -> None:
        self._warn_once(
            "param_changed",
            f"MLflow params cannot change once logged: {key!r} stays {old[:80]!r} in MLflow "
            f"(the new value {new[:80]!r} is kept in the local files); log values that change as "
            f"metrics or tags (warned once)",
        )

    # -- events -> requests ---------------------------------------------------------------------

    def encode(self, events: Sequence[tuple]) -> list[tuple]:
        """The requests for `events`, in the order to send them: experiments, batches, files."""
        experiments: list[tuple] = []
        files: list[tuple] = []
        rows: list[tuple] = []
        params: dict[str, str] = {}
        tags: dict[str, str] = {}
        keys = self._keys
        append = rows.append
        for event in events:
            kind = event[0]
            if kind == METRICS:
                # The hot loop: a dict lookup and a tuple per point (MLflow's Metric objects are
                # built where MLflow runs, from these tuples).
                _, values, step, ts = event
                ms = int(ts * 1000)
                for key, value in values.items():
                    fixed = keys.get(key)
                    if fixed is None:
                        fixed = self.key(key)
                    append((fixed, value, ms, step))
            elif kind == PARAMS:
                self.param_pairs(event[1], params)
            elif kind == TAG:
                key = self.key(event[1])
                tags.pop(key, None)  # the last value wins, as it would one request at a time
                value = MASK if is_secret_key(event[1], self.secret_patterns) else str(event[2])
                tags[key] = self._truncate("tag", key, value, MAX_TAG_VALUE_CHARS)
            elif kind == ARTIFACT:
                files.append(("artifact", event[2], event[1]))
            elif kind == FIGURE:
                files.append(("artifact", event[2], _figure_name(event[1], event[2])))
            elif kind == MODEL:  # (artifact_path, folder, registered_model_name)
                files.append(("model", event[2], event[1], event[3]))
            elif kind == EXPERIMENT:
                experiments.append(("experiment", event[1]))
            else:
                _logger.debug("ignoring an event of unknown kind %r", kind)
        return experiments + self.batches(rows, list(params.items()), list(tags.items())) + files

    def batches(self, rows: list[tuple], params: list[tuple], tags: list[tuple]) -> list[tuple]:
        """("batch", metrics, params, tags) requests within MLflow's count and size limits."""
        ops: list[tuple] = []
        next_metric = next_param = next_tag = 0
        while next_param < len(params) or next_tag < len(tags) or next_metric < len(rows):
            budget = MAX_REQUEST_BYTES
            param_chunk, next_param, budget = _take(params, next_param, MAX_PARAMS_PER_REQUEST, budget, True)
            tag_chunk, next_tag, budget = _take(tags, next_tag, MAX_TAGS_PER_REQUEST, budget, not param_chunk)
            room = min(
                MAX_METRICS_PER_REQUEST,
                MAX_ENTITIES_PER_REQUEST - len(param_chunk) - len(tag_chunk),
                budget // self._metric_bytes,
            )
            if room <= 0 and not param_chunk and not tag_chunk:
                room = 1  # never loop without progress
            metric_chunk = rows[next_metric:next_metric + room]
            next_metric += len(metric_chunk)
            ops.append(("batch", metric_chunk, param_chunk, tag_chunk))
        return ops


def _take(items: list[tuple], start: int, limit: int, budget: int, first: bool) -> tuple[list[tuple], int, int]:
    """Up to `limit` (key, text) pairs from `start` that fit `budget` JSON bytes.

    `first`: take one even if it does not fit (the request holds nothing else yet; one param or tag
    is at most ~100 kB of JSON, so it always fits a request of its own).
    """
    end = start
    stop = min(len(items), start + limit)
    while end < stop:
        key, text = items[end]
        size = _ENTITY_FIXED_BYTES + _json_len(key) + _json_len(text)
        if size > budget and not (first and end == start):
            break
        budget -= size
        end += 1
    return items[start:end], end, budget


def _figure_name(name: str, path: str) -> str:
    suffix = os.path.splitext(str(path))[1]
    return f"{FIGURES_ARTIFACT_DIR}/{name if not suffix or name.endswith(suffix) else name + suffix}"


class _Plan:
    """The requests of one write() (or of open's config) and which of them MLflow has accepted.

    Kept across a failed call so that the engine's retry of the same batch sends only the rest.
    """

    __slots__ = ("events", "ops", "done")

    def __init__(self, events: Sequence[tuple] | None, ops: list[tuple]) -> None:
        self.events = events
        self.ops = ops
        self.done = [False] * len(ops)

    def matches(self, events: Sequence[tuple]) -> bool:
        mine = self.events
        if mine is events:
            return True
        # The engine retries with the same list; a batch read back from the journal is an equal
        # copy. (NaN values make equal copies compare unequal: then the batch is sent again and
        # MLflow's SQL stores drop the points they already hold.)
        return (
            mine is not None and len(mine) == len(events) and len(events) > 0
            and mine[0] == events[0] and mine[-1] == events[-1]
        )
