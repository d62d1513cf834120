"""Start a fresh Python process that runs one of this package's modules, whatever the user's path holds.

Runs on whichever thread starts a process of ours: the training process's agent link (the delivery
agent), the MLflow sink's thread in the agent (the MLflow helper). The child is a new interpreter
(not a fork: the parent has threads, locks and a CUDA context), started as

    python -c BOOTSTRAP PACKAGE_DIR MODULE ARGS...

and not as ``python -m tracking.agent``: ``-m`` looks the package up on a path whose first entry is
the working directory, so a user's own folder named ``tracking`` (object tracking is a common
project) would be imported instead of ours. The bootstrap imports *this* package from the folder
it was imported from here, before anything else can, and then runs ``MODULE.main(ARGS)``.

The child's ``sys.path`` is the parent's (made absolute), so a user's sink class, or a pickled
sink instance, imports in the child exactly as it does in the training process. It travels in an
environment variable that the bootstrap takes out again, not in ``PYTHONPATH``: processes the
child starts in turn, and the user's own tools, see the environment the user set.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["start_process", "command", "reap", "SpawnError"]

#: the environment variable that carries the parent's sys.path to the bootstrap (removed there)
PATH_VARIABLE = "BATTERYML_TRACKING_SYS_PATH"
#: where this package was imported from: what every child imports as `tracking`
PACKAGE_DIR = str(Path(__file__).resolve().parents[1])

# `-c` puts the working directory first on the path (unless -P / PYTHONSAFEPATH): it goes before
# the first import, and `tracking` is ours before anything can import another.
_BOOTSTRAP = """\
import sys
if not getattr(sys.flags, "safe_path", False): del sys.path[0]
import importlib, importlib.util as u, json, os
package, module = sys.argv.pop(1), sys.argv.pop(1)
sys.path[:] = json.loads(os.environ.pop({variable!r}, "null")) or sys.path
spec = u.spec_from_file_location("tracking", os.path.join(package, "__init__.py"), submodule_search_locations=[package])
sys.modules["tracking"] = tracking = u.module_from_spec(spec)
spec.loader.exec_module(tracking)
sys.exit(importlib.import_module(module).main(sys.argv[1:]))
""".format(variable=PATH_VARIABLE)


class SpawnError(OSError):
    """A process of ours could not be started (no interpreter to start, or the OS refused)."""


def command(module: str, args: Sequence[str] = ()) -> list[str]:
    """The argv that runs `module.main(args)` in a fresh interpreter, with this package as `tracking`."""
    if not sys.executable:
        raise SpawnError("sys.executable is empty (an embedded interpreter): no Python to start")
    if not os.path.isfile(os.path.join(PACKAGE_DIR, "__init__.py")):  # a zip, a frozen app
        raise SpawnError(f"this package is not in a folder a new interpreter can import it from ({PACKAGE_DIR})")
    return [sys.executable, "-c", _BOOTSTRAP, PACKAGE_DIR, module, *args]


def start_process(module: str, args: Sequence[str] = (), *, env: dict[str, str] | None = None,
                  **popen: Any) -> subprocess.Popen:
    """Start `module.main(args)` in a fresh interpreter; `popen` goes to `subprocess.Popen`.

    `env` adds to (and overrides) this process's environment. Raises `SpawnError` when no process
    could be started.
    """
    argv = command(module, args)
    try:
        environment = {**os.environ, **(env or {}), PATH_VARIABLE: json.dumps(_absolute_path())}
        return subprocess.Popen(argv, env=environment, **popen)
    except (OSError, TypeError, ValueError) as exc:  # no such interpreter, fork refused, a bad path entry
        raise SpawnError(f"cannot start {module} with {sys.executable}: {exc}") from exc


def _absolute_path() -> list[str]:
    """This process's sys.path with relative entries (``''`` is the working directory) made absolute:
    the child may change directory; the entries must keep meaning what they meant here. Without a
    working directory (it was deleted) they mean nothing, and are left out."""
    try:
        cwd: str | None = os.getcwd()
    except OSError:
        cwd = None
    entries = []
    for entry in sys.path:
        entry = os.fsdecode(os.fspath(entry))
        if os.path.isabs(entry):
            entries.append(entry)
        elif cwd is not None:
            entries.append(os.path.join(cwd, entry))
    return entries


def reap(proc: subprocess.Popen, timeout_s: float) -> int | None:
    """Wait up to `timeout_s` for `proc` to exit, then terminate it, then kill it; its exit code
    (None if even that did not end it). A process of ours that closed its channel is done with."""
    for stop in (None, proc.terminate, proc.kill):
        if stop is not None:
            try:
                stop()
            except OSError:
                pass
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll()
