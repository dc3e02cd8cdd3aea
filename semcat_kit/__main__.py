"""``python -m semcat_kit ...`` (and ``torchrun --nproc-per-node=N -m semcat_kit ...``) = ``semcat ...``."""
import sys

from .cli import main

sys.exit(main())
