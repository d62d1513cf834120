"""Config as it leaves the machine: secret-looking values masked, nested keys flattened.

Runs in sinks (in the delivery agent, or on the caller's thread in sync mode) that send data elsewhere or into files
that get shared: MLflow params and tags, TensorBoard's config and tag text. The local `config.json`
and the journal keep what the user gave: they never leave the machine.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

__all__ = ["DEFAULT_SECRET_KEY_PATTERNS", "MASK", "is_secret_key", "redact_config", "flatten_config"]

#: a key whose lower-cased text contains any of these is treated as a secret
DEFAULT_SECRET_KEY_PATTERNS = ("password", "passwd", "token", "secret", "api_key", "apikey", "credential",
                               "private_key")
MASK = "***"


def is_secret_key(key: Any, patterns: Iterable[str] = DEFAULT_SECRET_KEY_PATTERNS) -> bool:
    text = str(key).lower()
    return any(pattern in text for pattern in patterns)


def redact_config(config: Mapping[str, Any], patterns: Iterable[str] = DEFAULT_SECRET_KEY_PATTERNS) -> dict[str, Any]:
    """A copy of `config` with the value of every secret-looking key, at any depth, replaced by MASK."""
    patterns = tuple(patterns)
    out: dict[str, Any] = {}
    for key, value in config.items():
        if is_secret_key(key, patterns):
            out[key] = MASK
        elif isinstance(value, Mapping):
            out[key] = redact_config(value, patterns)
        else:
            out[key] = value
    return out


def flatten_config(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """("model.hidden_dims", [64, 32]) pairs from nested mappings; lists and empty dicts are values.

    How MLflow params and TensorBoard's config table name a nested config's keys.
    """
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten_config(value, name + ".")
        else:
            yield name, value
