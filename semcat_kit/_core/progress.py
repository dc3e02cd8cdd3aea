"""Progress bars: ``tqdm.auto``, with one change for notebooks.

A notebook bar that does not stay (``leave=False``) closes its widget when it ends, and its output
keeps pointing at that closed widget model: a notebook saved from JupyterLab and opened again shows
"Error displaying widget: model not found" where the bar was. :func:`progress` gives such a bar its
own display and, when it ends, replaces that output with an empty one (``update_display_data``), so
nothing in the saved notebook refers to a widget that no longer exists. Everywhere else (a terminal,
a bar that stays) it is plain ``tqdm.auto``.
"""
from __future__ import annotations

from tqdm.auto import tqdm as auto_tqdm

__all__ = ["progress"]


def _notebook_class():
    try:
        from tqdm.notebook import tqdm as notebook_tqdm
    except ImportError:   # pragma: no cover - tqdm always ships it
        return None
    return notebook_tqdm if issubclass(auto_tqdm, notebook_tqdm) else None


def progress(iterable=None, **kwargs):
    """``tqdm.auto.tqdm(iterable, **kwargs)``; in a notebook, a ``leave=False`` bar leaves no output behind."""
    nb = _notebook_class()
    if nb is None or kwargs.get("leave", True) or kwargs.get("disable") or kwargs.get("delay", 0):
        return auto_tqdm(iterable, **kwargs)
    return _transient_class(nb)(iterable, **kwargs)


_TRANSIENT: dict = {}


def _transient_class(base):
    if base not in _TRANSIENT:
        class TransientNotebookBar(auto_tqdm):
            """A notebook bar displayed under a display id; when it ends, its output is emptied."""

            def __init__(self, *args, **kwargs):
                kwargs["display"] = False
                super().__init__(*args, **kwargs)
                self._handle = None
                if not self.disable and getattr(self, "container", None) is not None:
                    from IPython.display import display

                    self._handle = display(self.container, display_id=True)
                    self.displayed = True

            def close(self):
                handle, failed = self._handle, bool(self.total and self.n < self.total)
                super().close()
                if handle is not None and not failed:   # a bar stopped early stays, red, as tqdm shows it
                    handle.update({"text/plain": ""}, raw=True)
                    self._handle = None

        _TRANSIENT[base] = TransientNotebookBar
    return _TRANSIENT[base]
