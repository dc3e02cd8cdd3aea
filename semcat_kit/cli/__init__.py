"""The ``semcat`` command line (also ``python -m semcat_kit`` and ``torchrun -m semcat_kit``).

``app`` (the parser and ``main``), one module per command: ``encode``, ``train``, ``predict``,
``tune`` (``run(args)`` runs a :class:`~semcat_kit.Pipeline` or the product reader and prints: no
command builds a taxonomy, reads products or shards a catalog itself), and ``common`` (the error type,
the checks of ``--catalog`` and ``--device``). The YAML config
is read by :mod:`semcat_kit.orchestrate.config`. Nothing here imports torch until a command runs.
May import: everything; it parses, calls the library and prints.
"""
from .app import main
from .common import CliError

__all__ = ["main", "CliError"]
