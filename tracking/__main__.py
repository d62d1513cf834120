"""`python -m tracking ...`: see `tracking.cli`."""
import sys

from .cli import main

sys.exit(main())
