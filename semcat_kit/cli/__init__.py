"""The ``semcat`` command line (also ``python -m semcat_kit`` and ``torchrun -m semcat_kit``).

May import: everything; it parses, calls the library and prints.
"""
from .app import main

__all__ = ["main"]
