"""Names and text: what can name a file inside a run directory, what can be written as UTF-8.

Runs on the caller's thread (a log call checks what it was given) and wherever a run directory is
read (the journal reader skips an entry whose path would leave the run's folder).
"""
from __future__ import annotations

import os
from typing import Any

from .errors import InvalidNameError

__all__ = ["MAX_NAME_BYTES", "check_name", "check_text", "is_text", "describe"]

#: the most UTF-8 bytes of one file or folder name (NAME_MAX on Linux, macOS and Windows file systems)
MAX_NAME_BYTES = 255


def describe(value: Any) -> str:
    """A value as an error message names it: its type, then its repr (cut at 40 characters)."""
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def check_text(value: str, what: str, error: type[Exception] = InvalidNameError) -> str:
    """`value` if it can be written as UTF-8; raises `error` (InvalidNameError) otherwise."""
    if not value.isascii() and not is_text(value):
        raise error(f"{what} must be valid text, got {value!r} (it holds a lone surrogate, which no "
                    "file or server can store; decode bytes with errors='replace')")
    return value


def is_text(value: str) -> bool:
    """True if `value` can be encoded as UTF-8 (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_name(name: Any, what: str, allow_subdirs: bool = True, reserve_bytes: int = 0) -> str:
    """`name` if it can name a file or folder inside its parent; raises InvalidNameError otherwise.

    Refuses what could escape the parent (absolute paths, `..` parts, NUL), what is not text, and
    parts longer than a file system holds (`MAX_NAME_BYTES` of UTF-8, less `reserve_bytes` for a
    suffix the caller adds). `/` (sub-folders) is allowed for artifact names, not for run names
    (`allow_subdirs=False`).
    """
    if not isinstance(name, str) or not name:
        raise InvalidNameError(f"{what} must be a non-empty str, got {describe(name)}")
    if "\x00" in name:
        raise InvalidNameError(f"{what} must not contain NUL, got {name!r}")
    check_text(name, what)
    if os.path.isabs(name) or name.startswith(("/", "\\")):
        raise InvalidNameError(f"{what} must be a relative name, got absolute path {name!r}")
    if not allow_subdirs and ("/" in name or "\\" in name):
        raise InvalidNameError(f"{what} must not contain path separators, got {name!r}")
    parts = name.replace("\\", "/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidNameError(
            f"{what} must not contain '..', '.' or empty path parts, got {name!r}"
        )
    limit = MAX_NAME_BYTES - reserve_bytes
    longest = max(parts, key=lambda part: len(part.encode()))
    if len(longest.encode()) > limit:
        raise InvalidNameError(
            f"{what} {name[:40]!r}... is too long for a file name: a part of it takes "
            f"{len(longest.encode())} bytes, at most {limit} fit here"
        )
    return name
