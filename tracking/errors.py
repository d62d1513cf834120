"""The exceptions this package raises, in one place.

Raised on the caller's thread, at the call that was wrong: the worker never raises into user code.
The sink errors at the end are raised by sinks, on whichever thread calls the sink (the worker's, or
the caller's in sync mode), and are caught there. Every message names the bad value and says what
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
    "PermanentSinkError",
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
    """A param or config value can't be recorded: a string that is not valid text, an int past 64 bits."""


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
    """The worker is gone (closed or dead), so an event could not be enqueued."""


# A plain Exception, as it was in tracking.sinks.base: under TrackingError, code that catches
# TrackingError around sink calls (the CLI's replay) would start catching it too.
class PermanentSinkError(Exception):
    """Raised by `Sink.write` for a batch the sink will never accept; it is skipped, not retried."""


class MLflowSinkError(TrackingError, RuntimeError):
    """An MLflow call failed; the message has credentials redacted. Transient unless `permanent`."""

    def __init__(self, message: str, error_code: str | None = None, permanent: bool = False) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.permanent = permanent


class MLflowSinkWarning(UserWarning):
    """Something logged was changed to fit MLflow (shown once per kind per sink)."""
