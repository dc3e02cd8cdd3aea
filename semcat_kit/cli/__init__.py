"""The ``semcat`` command line (also ``python -m semcat_kit`` and ``torchrun -m semcat_kit``).

``app`` (the parser and ``main``), one module per command: ``encode``, ``train``, ``predict``,
``tune`` (each parses nothing itself: ``run(args)`` calls the library and prints), and ``common``
(the error type, the ``--catalog`` source, the device check, the product sample). The YAML config
is read by :mod:`semcat_kit.orchestrate.config`. Nothing here imports torch until a command runs.
May import: everything; it parses, calls the library and prints.
"""
from .app import main
from .common import CliError

__all__ = ["main", "CliError"]
