"""Sink specs: how a sink the user named is described to the agent that builds it, and where it runs.

`plan_sink` runs on the caller's thread when a tracker is built; `SinkSpec.build` runs in the
agent (its process, or its thread). A sink named by entry point, or given as a class (with
arguments: `("name", {...})` or `(SinkClass, {...})`), is built inside the agent from that
description. A sink given as an instance is the object that receives the events: it is served on
a thread of the training process, unless its class says ``portable = True`` (an instance is only
its settings until `open`, as ours are) and it can be pickled; then the agent builds its own copy.
A sink whose class says ``stay_in_process = True`` (e.g. because the training process reads its
state) is served in the training process however it was given.
"""
from __future__ import annotations

import importlib
import pickle
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..sinks import Sink, resolve_sink

__all__ = ["SinkSpec", "plan_sink", "import_qualified"]


@dataclass(frozen=True)
class SinkSpec:
    """How to build one sink where it runs.

    how: "entry_point" (`target` is a sink name), "class" (`target` is "module:qualname"),
        "pickle" (`target` is the pickled instance) or "object" (`target` is the instance itself;
        only for an agent on a thread of the training process).
    """

    name: str
    how: str
    target: Any
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def portable(self) -> bool:
        """Can be sent to an agent process."""
        return self.how != "object"

    def build(self) -> Sink:
        if self.how == "object":
            return self.target
        if self.how == "pickle":
            return resolve_sink(pickle.loads(self.target))
        if self.how == "class":
            return resolve_sink(import_qualified(self.target)(**self.kwargs))
        return resolve_sink(_with_kwargs(self.target, self.kwargs))

    def __getstate__(self) -> dict[str, Any]:
        if self.how == "object" and self.target is not None:
            raise TypeError(f"sink {self.name!r} is served in the training process and can't be sent elsewhere")
        return self.__dict__.copy()


def _with_kwargs(name: str, kwargs: Mapping[str, Any]) -> Any:
    if not kwargs:
        return name
    from ..sinks import load_sink_class

    return load_sink_class(name)(**kwargs)


def plan_sink(given: Any) -> tuple[Sink, SinkSpec]:
    """The sink built here (it validates the arguments now, at the call that named it) and how the
    agent builds its own; an "object" spec when it can't leave this process."""
    name_or_class, kwargs = given, {}
    if isinstance(given, tuple) and len(given) == 2 and isinstance(given[1], Mapping):
        name_or_class, kwargs = given[0], dict(given[1])
    if isinstance(name_or_class, str):
        sink = resolve_sink(_with_kwargs(name_or_class, kwargs))
        return sink, _portable_or_object(sink, SinkSpec(sink.name, "entry_point", name_or_class, kwargs), kwargs)
    if isinstance(name_or_class, type):
        sink = resolve_sink(name_or_class(**kwargs))
        target = _import_path(name_or_class)
        if target is None:
            return sink, SinkSpec(sink.name, "object", sink)
        return sink, _portable_or_object(sink, SinkSpec(sink.name, "class", target, kwargs), kwargs)
    if kwargs:
        raise TypeError(f"sink arguments go with a sink name or class, not an instance: got ({given[0]!r}, {{...}})")
    sink = resolve_sink(given)
    return sink, _instance_spec(sink)


def _portable_or_object(sink: Sink, spec: SinkSpec, kwargs: Mapping[str, Any]) -> SinkSpec:
    if getattr(sink, "stay_in_process", False):
        return SinkSpec(sink.name, "object", sink)
    try:
        pickle.dumps(kwargs)
    except Exception:  # arguments that can't travel: the sink stays here
        return SinkSpec(sink.name, "object", sink)
    return spec


def _instance_spec(sink: Sink) -> SinkSpec:
    """A copy may go to the agent only where the class says its instances are settings (`portable`)."""
    if (not getattr(sink, "portable", False) or getattr(sink, "stay_in_process", False)
            or type(sink).__module__ == "__main__"):
        return SinkSpec(sink.name, "object", sink)
    try:
        data = pickle.dumps(sink)
    except Exception:  # a lock or a socket after all: it is served here, on a thread
        return SinkSpec(sink.name, "object", sink)
    return SinkSpec(sink.name, "pickle", data)


def _import_path(cls: type) -> str | None:
    """"module:qualname" if an agent process can import `cls` under that name, else None."""
    module, qualname = cls.__module__, cls.__qualname__
    if module == "__main__" or "<locals>" in qualname:
        return None
    path = f"{module}:{qualname}"
    try:
        found = import_qualified(path)
    except (ImportError, AttributeError):
        return None
    return path if found is cls else None


def import_qualified(path: str) -> Any:
    """The object named "module:qualname"; raises ImportError or AttributeError if there is none."""
    module, _, qualname = path.partition(":")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found
