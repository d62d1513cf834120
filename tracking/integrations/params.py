"""Framework configs as params our trackers take: text, numbers, lists of them, nested dicts.

Runs on the caller's thread (the framework's training loop), once per run.
"""
from __future__ import annotations

import dataclasses
import enum
from argparse import Namespace
from typing import Any, Mapping

__all__ = ["plain_params"]

_PLAIN = (str, bool, int, float, type(None))


def plain_params(params: Mapping[str, Any] | Namespace) -> dict[str, Any]:
    """`params` with every value a plain one: a callable (a loss class, an activation) by its name,
    an enum by its value, anything else that isn't plain by its str(), as Lightning's and
    transformers' own loggers do; nested mappings, namespaces and dataclasses stay nested."""
    if isinstance(params, Namespace):
        params = vars(params)
    return {str(key): _plain(value) for key, value in params.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (Mapping, Namespace)):
        return plain_params(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain_params(dataclasses.asdict(value))
    if isinstance(value, (list, tuple)) and all(isinstance(v, _PLAIN) for v in value):
        return list(value)
    if callable(value):
        return getattr(value, "__name__", None) or type(value).__name__
    return str(value)
