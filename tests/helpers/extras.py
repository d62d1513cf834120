"""Skips for tests that need an optional extra, so that the core and agent tests also run where only
the core dependencies are installed, at their declared floors (the minimum-versions run in CI)."""
from __future__ import annotations

import importlib.util

import pytest

__all__ = ["needs"]


def needs(*modules: str) -> pytest.MarkDecorator:
    """Skip the test unless every module in `modules` can be imported (each is in an extra)."""
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} (an optional extra)")
