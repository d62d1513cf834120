"""The one thing pyproject.toml can't say without an experimental table: the C fast path of the log calls.

`tracking/_speedups.c` is optional: where it does not compile (no compiler, no Python headers) the
install goes on and `tracking.events` takes every call in Python (the same events, ~1.5 µs more a
step of 10 scalars). After editing the C file, reinstall (``pip install -e .``) to rebuild it.
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("tracking._speedups", ["tracking/_speedups.c"], optional=True)])
