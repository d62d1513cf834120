"""`python -m trainer` (and `torchrun --nproc_per_node=2 -m trainer`): see `trainer.cli`."""
import sys

from trainer.cli import main

sys.exit(main())
