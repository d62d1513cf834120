"""The MLflow sink (`MLflowSink`): a run as one MLflow run, in a package of one module per concept.

Imported on whichever thread builds a sink; each module says which thread or process runs it:

- `sink`: `MLflowSink`, the sink contract (in the delivery agent, or on the caller's thread in sync mode);
- `encode`: events -> plain requests within MLflow's limits (the sink's thread);
- `backends`: where MLflow runs, on the sink's thread or in a helper process (the sink's thread);
- `helper`: the helper process's entry point (the helper process);
- `store`: the MLflow calls, the only module that imports mlflow (wherever MLflow runs);
- `uri`: what a tracking URI means here, with credentials redacted (the caller's thread).

The socket framing between the sink and its helper is `tracking.core.channel`; the exceptions are in
`tracking.errors`.
"""
from __future__ import annotations

import logging

from ...core.errors import MLflowSinkError, MLflowSinkWarning
from .encode import (
    FIGURES_ARTIFACT_DIR,
    MAX_ENTITIES_PER_REQUEST,
    MAX_KEY_CHARS,
    MAX_METRICS_PER_REQUEST,
    MAX_PARAM_VALUE_CHARS,
    MAX_PARAMS_PER_REQUEST,
    MAX_REQUEST_BYTES,
    MAX_TAG_VALUE_CHARS,
    MAX_TAGS_PER_REQUEST,
    TAG_RUN_DIR,
    TAG_RUN_ID,
)
from .sink import (
    DEFAULT_CALL_TIMEOUT_S,
    DEFAULT_HTTP_BACKOFF_FACTOR_S,
    DEFAULT_HTTP_MAX_RETRIES,
    DEFAULT_HTTP_TIMEOUT_S,
    DEFAULT_START_TIMEOUT_S,
    MLflowSink,
)

__all__ = [
    "MLflowSink",
    "MLflowSinkError",
    "MLflowSinkWarning",
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
    "DEFAULT_HTTP_TIMEOUT_S",
    "DEFAULT_HTTP_MAX_RETRIES",
    "DEFAULT_HTTP_BACKOFF_FACTOR_S",
    "DEFAULT_START_TIMEOUT_S",
    "DEFAULT_CALL_TIMEOUT_S",
]

_logger = logging.getLogger(__name__)
