"""Optional dependencies: one import helper that names the extra to install.

The core install (``pip install semcat_kit``) encodes, trains, predicts and runs the CLI. Figures,
widgets, tuning, the hiclass peer and cleanlab come with extras::

    pip install "semcat_kit[viz]"        # plotly, umap-learn
    pip install "semcat_kit[notebooks]"  # jupyterlab, papermill, nbconvert, ipywidgets (+ viz)
    pip install "semcat_kit[tune]"       # optuna
    pip install "semcat_kit[peers]"      # hiclass
    pip install "semcat_kit[cleanlab]"   # cleanlab, side by side with the label-issue hints
    pip install "semcat_kit[onnx]"       # onnx, onnxscript, onnxruntime (ONNX export / backend)
    pip install "semcat_kit[all]"        # all of them
"""
from __future__ import annotations

import importlib

__all__ = ["require", "have_onnx", "MissingExtraError", "EXTRAS"]

#: module -> the extra that installs it
EXTRAS = {"plotly": "viz", "umap": "viz", "ipywidgets": "notebooks", "optuna": "tune", "hiclass": "peers",
          "cleanlab": "cleanlab", "onnx": "onnx", "onnxruntime": "onnx", "onnxscript": "onnx",
          "papermill": "notebooks", "nbformat": "notebooks", "nbclient": "notebooks"}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra brings it."""


def require(module: str, extra: str | None = None, what: str | None = None):
    """``importlib.import_module(module)``, or a :class:`MissingExtraError` saying
    ``pip install "semcat_kit[<extra>]"``.

    Parameters
    ----------
    module : str
        E.g. ``"plotly.graph_objects"``; the extra is looked up by its top-level package.
    extra : str, optional
        Default: :data:`EXTRAS` of the top-level package.
    what : str, optional
        What needs it, for the message (default: the module).
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        if e.name is not None and e.name.split(".")[0] != top:
            raise                         # the package is there but one of its own imports failed
        extra = extra or EXTRAS.get(top, "all")
        raise MissingExtraError(f"{what or module} needs the optional package {top!r}, which is not installed: "
                                f'pip install "semcat_kit[{extra}]"') from e


def have_onnx() -> bool:
    """Whether the ONNX export can run here (onnx, onnxscript and onnxruntime importable)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))
