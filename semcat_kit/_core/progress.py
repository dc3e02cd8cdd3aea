"""Progress bars: ``tqdm.auto``, with one change for notebooks.

A notebook bar that does not stay (``leave=False``) closes its widget when it ends, and its output
keeps pointing at that closed widget model: a notebook saved from JupyterLab and opened again shows
"Error displaying widget: model not found" where the bar was. :func:`progress` gives such a bar its
own display, shown only once it has run :data:`TRANSIENT_DELAY_S` seconds, and when it ends replaces
that output with an empty one (``update_display_data``) before closing the widget, so nothing in the
saved notebook refers to a widget that no longer exists. Everywhere else (a terminal,
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


TRANSIENT_DELAY_S = 0.5
"""A ``leave=False`` notebook bar is displayed only once its work has run this long (tqdm's ``delay``)."""


def progress(iterable=None, **kwargs):
    """``tqdm.auto.tqdm(iterable, **kwargs)``; in a notebook, a ``leave=False`` bar leaves no output behind.

    Such a bar is displayed only after :data:`TRANSIENT_DELAY_S` seconds (a quick step shows nothing),
    and when it ends its output is emptied before its widget is closed: closing a widget whose view
    JupyterLab is still drawing logs "Could not add child view to box" in the browser console.
    """
    nb = _notebook_class()
    if nb is None or kwargs.get("leave", True) or kwargs.get("disable") or kwargs.get("delay", 0):
        return auto_tqdm(iterable, **kwargs)
    return _transient_class(nb)(iterable, **kwargs)


_TRANSIENT: dict = {}


def _transient_class(base):
    if base not in _TRANSIENT:
        class TransientNotebookBar(auto_tqdm):
            """A notebook bar displayed late, under a display id; when it ends, its output is emptied."""

            def __init__(self, *args, **kwargs):
                kwargs["display"] = False
                kwargs["delay"] = TRANSIENT_DELAY_S
                self._handle = None
                super().__init__(*args, **kwargs)

            def _show(self) -> None:
                if not self.displayed and not self.disable and getattr(self, "container", None) is not None:
                    from IPython.display import display

                    self._handle = display(self.container, display_id=True)
                    self.displayed = True

            def display(self, *args, check_delay=True, **kwargs):
                if check_delay and not kwargs.get("close") and self._time() - self.start_t >= self.delay:
                    self._show()           # the first refresh after the delay
                return super().display(*args, check_delay=False, **kwargs)

            def close(self):
                if self.disable:
                    return super().close()
                failed = bool(self.total and self.n < self.total)
                if failed:
                    self._show()           # a bar stopped early stays, red, as tqdm shows it
                elif self._handle is not None:   # first the output stops showing the bar, then the model closes
                    self._handle.update({"text/plain": ""}, raw=True)
                    self._handle = None
                super().close()

        _TRANSIENT[base] = TransientNotebookBar
    return _TRANSIENT[base]
