"""The exceptions of the public API, where users import them from (`tracking.errors`, or `tracking`).

They are defined in `tracking.core.errors`, the layer everything else imports.
"""
from .core.errors import *  # noqa: F401,F403
from .core.errors import __all__  # noqa: F401
