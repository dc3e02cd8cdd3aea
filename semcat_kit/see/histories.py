"""Training histories in long form, each metric assigned to a panel by its kind (loss, accuracy-type,
tree distance, schedules)."""
from __future__ import annotations

from typing import Sequence, Mapping

import pandas as pd

from ..judge.metrics import metric_info

__all__ = ["history_frame", "PANELS"]


_LOSS = {"focal", "kl", "total", "loss", "bce", "train_loss", "val_loss"}
PANELS = ("loss", "accuracy", "severity", "alpha", "lr", "other")


def _panel(metric: str) -> str:
    if metric in _LOSS or metric.endswith("_loss"):
        return "loss"
    if metric in ("alpha", "lr"):
        return metric
    if metric.startswith("val_"):   # panels by the registry's kind: tree distances apart
        try:
            return "severity" if metric_info(metric).kind == "tree distance" else "accuracy"
        except KeyError:
            return "accuracy"
    return "other"


def history_frame(history, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Training histories in long form for plotting.

    Parameters
    ----------
    history : DataFrame, TrainRun, or dict name -> DataFrame/TrainRun
        Per-epoch rows with an ``epoch`` column (``TrainRun.history``).
    metrics : list of str, optional
        Columns to keep (default: every numeric column except timings ``*seconds``).

    Returns
    -------
    pandas.DataFrame
        ``run, epoch, metric, value, panel`` where ``panel`` is ``"loss"`` (loss, focal, kl, bce,
        total, ``*_loss`` incl. ``val_loss``), ``"accuracy"`` (other ``val_*``: top-k, F1,
        level accuracies, ``nbrs@k``, ECE, ...), ``"severity"`` (``val_mistake_severity``,
        ``val_hdist@k``: tree distances), ``"alpha"``, ``"lr"`` or ``"other"``; missing values dropped.
    """
    if isinstance(history, Mapping):
        items = list(history.items())
        if not items:
            raise ValueError("history dict is empty: give name -> TrainRun.history")
    else:
        items = [("run", history)]
    frames = []
    for name, h in items:
        h = getattr(h, "history", h)
        if not isinstance(h, pd.DataFrame):
            raise TypeError(f"history {name!r} must be a DataFrame (TrainRun.history), not {type(h).__name__}")
        if "epoch" not in h.columns:
            raise ValueError(f"history {name!r} has no 'epoch' column; columns are {list(h.columns)}")
        if metrics is not None:
            missing = [m for m in metrics if m not in h.columns]
            if missing:
                raise ValueError(f"history {name!r} has no column(s) {missing}; it has {list(h.columns)}")
            num = [m for m in metrics if m != "epoch"]
        else:
            num = [c for c in h.columns if c != "epoch" and not str(c).endswith("seconds")
                   and pd.api.types.is_numeric_dtype(h[c]) and not pd.api.types.is_bool_dtype(h[c])]
        if not num:
            raise ValueError(f"history {name!r} has no numeric metric columns besides 'epoch'")
        long = h.melt(id_vars="epoch", value_vars=num, var_name="metric", value_name="value")
        long["value"] = pd.to_numeric(long["value"], errors="coerce")
        long = long.dropna(subset=["value"])
        long.insert(0, "run", str(name))
        frames.append(long)
    out = pd.concat(frames, ignore_index=True)
    out["panel"] = out["metric"].map(_panel)
    return out
