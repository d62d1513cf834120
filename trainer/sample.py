"""The canonical training sample: metadata, features, targets, optional mask and time axis.

Runs on the caller's thread (data pipelines and the training loop); nothing here starts a thread.
A :class:`Sample` is a small immutable value: conversions return a new sample and never modify
the one they were called on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, Union

import numpy as np
import torch

__all__ = ["Array", "Features", "Sample", "to_float_tensor"]

_logger = logging.getLogger(__name__)

Array = Union[torch.Tensor, np.ndarray]
#: Features are one array or a mapping of named arrays (e.g. ``{"cycles": ..., "static": ...}``).
Features = Union[Array, Mapping[str, Array]]


def to_float_tensor(value: Any, *, name: str = "value") -> torch.Tensor:
    """Return ``value`` as a torch tensor: floats and integers become float32, booleans stay bool.

    Booleans are kept because a mask is used for indexing and weighting, where bool is what
    torch expects; every other number becomes float32 so that models see one dtype.
    """
    if isinstance(value, torch.Tensor):
        tensor = value
    elif isinstance(value, (np.ndarray, np.generic, list, tuple, int, float, bool)):
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(
                f"{name} must hold real numbers or booleans, got numpy dtype {array.dtype}"
            )
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor, a numpy array or a number, got {type(value).__name__}"
        )
    if tensor.dtype == torch.bool:
        return tensor
    if tensor.is_complex():
        raise TypeError(f"{name} must hold real numbers or booleans, got dtype {tensor.dtype}")
    return tensor.to(torch.float32)


def _map_features(x: Features, fn: Any) -> Features:
    if isinstance(x, Mapping):
        return {key: fn(value, f"x[{key!r}]") for key, value in x.items()}
    return fn(x, "x")


def _map_optional(value: Array | None, fn: Any, name: str) -> Array | None:
    return None if value is None else fn(value, name)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One training example.

    ``meta`` describes where the example comes from (cell id, temperature, cycle, ...) and is
    never converted. ``x`` is a tensor, a numpy array, or a dict of them; ``y`` is the target;
    ``mask`` (same shape as ``y``) marks which target entries count in the loss; ``t`` is an
    optional time axis for sequence models.
    """

    meta: dict[str, Any]
    x: Features
    y: Array
    mask: Array | None = None
    t: Array | None = None

    def to_tensor(self) -> Sample:
        """Return a sample whose arrays are torch tensors (float32; a bool mask stays bool)."""

        def convert(value: Any, name: str) -> torch.Tensor:
            return to_float_tensor(value, name=name)

        return self._mapped(convert)

    def to_device(self, device: torch.device | str) -> Sample:
        """Return a sample converted with :meth:`to_tensor` and moved to ``device``."""
        target = torch.device(device)

        def move(value: Any, name: str) -> torch.Tensor:
            return to_float_tensor(value, name=name).to(target)

        return self._mapped(move)

    def _mapped(self, fn: Any) -> Sample:
        return Sample(
            meta=dict(self.meta),
            x=_map_features(self.x, fn),
            y=fn(self.y, "y"),
            mask=_map_optional(self.mask, fn, "mask"),
            t=_map_optional(self.t, fn, "t"),
        )
