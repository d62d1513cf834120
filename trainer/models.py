"""Model registry for the demo: ``"mlp"`` and the ``"linear"`` baseline.

Runs on the caller's thread. Models map a float32 feature tensor ``(batch, input_dim)`` to
``(batch, output_dim)``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["MLP", "LinearRegressor", "available_models", "build_model"]

_logger = logging.getLogger(__name__)


class MLP(nn.Module):
    """Fully connected network: ``Linear -> ReLU -> Dropout`` per hidden layer, then a linear head."""

    def __init__(
        self,
        input_dim: int,
        output_dim: int = 1,
        hidden_dims: Sequence[int] = (64, 32),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if not hidden_dims or any(int(h) < 1 for h in hidden_dims):
            raise ValueError(
                f"hidden_dims must be a non-empty list of positive ints, got {hidden_dims!r}"
            )
        layers: list[nn.Module] = []
        width = input_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(width, int(hidden)), nn.ReLU(), nn.Dropout(dropout)]
            width = int(hidden)
        layers.append(nn.Linear(width, output_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LinearRegressor(nn.Module):
    """Linear baseline: one affine map from features to targets."""

    def __init__(self, input_dim: int, output_dim: int = 1) -> None:
        super().__init__()
        self.linear = nn.Linear(input_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


_REGISTRY: dict[str, type[nn.Module]] = {"mlp": MLP, "linear": LinearRegressor}


def available_models() -> list[str]:
    """Return the registered model names, sorted."""
    return sorted(_REGISTRY)


def build_model(name: str, input_dim: int, output_dim: int = 1, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; ``kwargs`` are its own parameters (e.g. ``hidden_dims``).

    Raises ``ValueError`` for an unknown name or parameter; the message lists the valid ones.
    """
    model_class = _REGISTRY.get(str(name).lower())
    if model_class is None:
        raise ValueError(f"unknown model {name!r}; valid choices: {', '.join(available_models())}")
    if input_dim < 1 or output_dim < 1:
        raise ValueError(f"input_dim and output_dim must be >= 1, got {input_dim} and {output_dim}")
    allowed = set(inspect.signature(model_class).parameters) - {"input_dim", "output_dim"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        valid = ", ".join(sorted(allowed)) or "none"
        raise ValueError(f"model {name!r} got unknown parameters {unknown}; valid parameters: {valid}")
    return model_class(input_dim=input_dim, output_dim=output_dim, **kwargs)
