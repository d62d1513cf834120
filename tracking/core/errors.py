"""The exceptions this package raises, in one place.

Raised on the caller's thread, at the call that was wrong: the writer thread and the delivery agent
never raise into user code. The sink errors at the end are raised by sinks, wherever the sink runs
(the delivery agent, or the caller's thread in sync mode), and are caught there by the engine. Every message names the bad value and says what
would be accepted instead.
"""
from __future__ import annotations

__all__ = [
    "TrackingError",
    "InvalidMetricError",
    "InvalidKeyError",
    "InvalidStepError",
    "InvalidNameError",
    "InvalidParamError",
    "NoActiveRunError",
    "RunEndedError",
    "RunAlreadyActiveError",
    "ArtifactNotFoundError",
    "UnknownSinkError",
    "QueueClosedError",
    "SinkBusyError",
    "ReplayError",
    "PermanentSinkError",
    "InvalidModelError",
    "RunIdPendingError",
    "MLflowSinkError",
    "MLflowSinkWarning",
]


class TrackingError(Exception):
    """Base class of every error raised by the tracker."""


class InvalidMetricError(TrackingError, TypeError):
    """A metric value is not a real number (bool, str, None, containers and complex are refused)."""


class InvalidKeyError(TrackingError, TypeError):
    """A metric, param or tag key is not a non-empty string."""


class InvalidStepError(TrackingError, ValueError):
    """A step is not a non-negative integer."""


class InvalidNameError(TrackingError, ValueError):
    """A run, artifact, figure or experiment name would leave its directory, is too long for a file
    name, or is not valid text."""


class InvalidParamError(TrackingError, ValueError):
    """A param, config or tag value can't be recorded: a string that is not valid text, an int past 64 bits."""


class NoActiveRunError(TrackingError, RuntimeError):
    """A log call was made before `start_run()`."""


class RunEndedError(NoActiveRunError):
    """A log call was made after `end_run()`."""


class RunAlreadyActiveError(TrackingError, RuntimeError):
    """`start_run()` was called while this tracker already has an active run."""


class ArtifactNotFoundError(TrackingError, FileNotFoundError):
    """`log_artifact()` was given a path that is not an existing file."""


class UnknownSinkError(TrackingError, LookupError):
    """A sink name matches no built-in sink and no `tracking.sinks` entry point."""


class QueueClosedError(TrackingError, RuntimeError):
    """The writer thread is gone (the run ended, or it died), so an event could not be enqueued."""


class SinkBusyError(TrackingError, RuntimeError):
    """Another live process delivers this run to this sink (an agent, or a replay)."""


class InvalidModelError(TrackingError, TypeError):
    """`log_model` was given something it cannot keep: not a torch module, or one that can't be serialised."""


class RunIdPendingError(TrackingError, TimeoutError):
    """`get_run_id()` waited out its deadline before the MLflow sink had created the MLflow run."""


class ReplayError(TrackingError):
    """A replay could not finish; the message is one line that says why and what to do."""


# A plain Exception, not a TrackingError: it is a sink's word to the engine, never raised to the
# training loop, and third-party sinks raise it.
class PermanentSinkError(Exception):
    """Raised by a sink for what it will never accept: from `write`, those events (not retried).

    rejected: how many of the batch's events were refused, when the sink delivered the others
        itself; None (the default) means the batch as a whole, and the engine splits it to find
        the refused events and deliver the rest.
    """

    def __init__(self, message: str = "", rejected: int | None = None) -> None:
        super().__init__(message)
        self.rejected = rejected


class MLflowSinkError(TrackingError, RuntimeError):
    """An MLflow call failed; the message has credentials redacted. Transient unless `permanent`."""

    def __init__(self, message: str, error_code: str | None = None, permanent: bool = False) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.permanent = permanent


class MLflowSinkWarning(UserWarning):
    """Something logged was changed to fit MLflow (shown once per kind per sink)."""
