"""Loss registry: ``"mse"``, ``"huber"`` and ``"mae"``, chosen by name or by a small config dict.

Runs on the caller's thread (the training loop). Every loss returns *element-wise* values
(``reduction="none"``) so that the trainer can apply a sample mask and reduce exactly once.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, Union

import torch
import torch.nn.functional as F

__all__ = ["LossConfig", "LossFn", "available_losses", "build_loss"]

_logger = logging.getLogger(__name__)

#: ``loss_fn(prediction, target) -> element-wise loss`` with the shape of ``prediction``.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: A loss name (``"huber"``) or a mapping with ``name`` and parameters
#: (``{"name": "huber", "delta": 1.0}``); None means ``"mse"``.
LossConfig = Union[str, Mapping[str, Any], None]

_DEFAULT_LOSS = "mse"


@dataclasses.dataclass(frozen=True)
class _LossSpec:
    function: Callable[..., torch.Tensor]
    defaults: Mapping[str, float]


_REGISTRY: dict[str, _LossSpec] = {
    "mse": _LossSpec(F.mse_loss, {}),
    "huber": _LossSpec(F.huber_loss, {"delta": 1.0}),
    "mae": _LossSpec(F.l1_loss, {}),
}


def available_losses() -> list[str]:
    """Return the registered loss names, sorted."""
    return sorted(_REGISTRY)


def build_loss(loss_config: LossConfig = None) -> LossFn:
    """Return the element-wise loss named by ``loss_config`` (``None`` means ``"mse"``).

    Raises ``ValueError`` for an unknown name or parameter; the message lists the valid ones.
    """
    name, params = _parse(loss_config)
    spec = _REGISTRY.get(name)
    if spec is None:
        raise ValueError(f"unknown loss {name!r}; valid choices: {', '.join(available_losses())}")
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        valid = ", ".join(sorted(spec.defaults)) or "none"
        raise ValueError(f"loss {name!r} got unknown parameters {unknown}; valid parameters: {valid}")
    merged = {**spec.defaults, **params}
    return functools.partial(spec.function, reduction="none", **merged)


def _parse(loss_config: LossConfig) -> tuple[str, dict[str, Any]]:
    if loss_config is None:
        return _DEFAULT_LOSS, {}
    if isinstance(loss_config, str):
        return loss_config.lower(), {}
    if isinstance(loss_config, Mapping):
        params = dict(loss_config)
        name = params.pop("name", _DEFAULT_LOSS)
        if not isinstance(name, str):
            raise ValueError(f"loss name must be a string, got {type(name).__name__} {name!r}")
        return name.lower(), params
    raise ValueError(
        "loss_config must be a loss name, a mapping with a 'name' key, or None; "
        f"got {type(loss_config).__name__} {loss_config!r}"
    )
