"""``python -m semcat_kit ...`` and ``torchrun ... -m semcat_kit ...``: the ``semcat`` command."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
