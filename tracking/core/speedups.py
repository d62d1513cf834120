"""Whether the C fast paths (`tracking/_speedups.c`) are used: the one place that decides.

Read at import by each module that has a C twin (`tracking.recorder.capture`, `tracking.recorder.
steps`, `tracking.journal.writer`), in whichever process imports them. The C module is optional at
install (no compiler: the Python path takes every call, with the same events); setting
`BATTERYML_TRACKING_PURE_PYTHON=1` forces that pure path where it was built, as msgpack's
`MSGPACK_PUREPYTHON` does, so that what users without a compiler get is tested too (CI runs the
capture and journal tests both ways).
"""
from __future__ import annotations

import os
from types import ModuleType

__all__ = ["PURE_PYTHON_VARIABLE", "speedups"]

#: set to anything but "" or "0" to use the Python path even where the C module was built
PURE_PYTHON_VARIABLE = "BATTERYML_TRACKING_PURE_PYTHON"


def _load() -> ModuleType | None:
    if os.environ.get(PURE_PYTHON_VARIABLE, "") not in ("", "0"):
        return None
    try:
        from .. import _speedups
    except ImportError:  # not built
        return None
    return _speedups


#: the C module, or None where the Python path is taken
speedups = _load()
