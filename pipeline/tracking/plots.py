"""Figures of one fold's training history (the records of :class:`pipeline.train.loop.FoldResult`).

Functions return :class:`matplotlib.figure.Figure` objects built without pyplot (no global state;
rendered by the Agg canvas), for MLflow here and for the report stage later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

SIZE = (6.4, 4.0)


def task_weights_figure(history: Sequence[dict[str, Any]]) -> Figure:
    """Task weight per task vs epoch (one line per task, labelled by task name); when the records carry a
    temperature (DWA-like balancers) it is drawn dashed on a second y axis labelled ``temperature``."""
    fig = Figure(figsize=SIZE, layout="constrained")
    ax = fig.add_subplot()
    _task_lines(ax, history, "weight/")
    ax.set_ylabel("task weight")
    handles, labels = ax.get_legend_handles_labels()
    temperatures = [(r["epoch"], r["temperature"]) for r in history if r.get("temperature") is not None]
    if temperatures:
        twin = ax.twinx()
        epochs, values = zip(*temperatures)
        (line,) = twin.plot(epochs, values, color="black", linestyle="--", label="temperature")
        twin.set_ylabel("temperature")
        handles.append(line)
        labels.append("temperature")
    ax.legend(handles, labels, loc="best")
    ax.set_title("task weights")
    return fig


def val_loss_figure(history: Sequence[dict[str, Any]]) -> Figure:
    """Validation loss per task vs epoch (one line per task, labelled by task name)."""
    fig = Figure(figsize=SIZE, layout="constrained")
    ax = fig.add_subplot()
    _task_lines(ax, history, "val_loss/")
    ax.set_ylabel("validation loss")
    ax.legend(loc="best")
    ax.set_title("validation loss per task")
    return fig


def _task_lines(ax, history: Sequence[dict[str, Any]], prefix: str) -> None:
    """One line per record key ``<prefix><task>``, in the order the keys first appear."""
    keys = list(dict.fromkeys(k for r in history for k in r if k.startswith(prefix)))
    for key in keys:
        points = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
        ax.plot(*zip(*points), marker="o", markersize=3, label=key[len(prefix) :])
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
