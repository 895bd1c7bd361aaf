"""Figures of the report: task weights and temperature, validation losses, predicted vs true lesion contours.

Functions return :class:`matplotlib.figure.Figure` objects built without pyplot (no global state;
rendered by the Agg canvas); :func:`png` turns one into PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from pipeline.evaluate.history import Record
from pipeline.tracking.plots import task_weights_figure

DPI = 110
TRUTH_COLOUR = "lime"
PREDICTION_COLOUR = "red"


def weights_figure(balancer: str, history: Sequence[Record]) -> Figure:
    """One balancer's task weights per epoch (a line per task) and, for DWA-like balancers, its
    temperature (dashed, second axis); ``history``: the fold-averaged records of
    :func:`~pipeline.evaluate.history.mean_over_folds`."""
    fig = task_weights_figure(history)
    fig.axes[0].set_title(f"{balancer}: task weights (mean over folds)")
    return fig


def validation_loss_figure(histories: Mapping[str, Sequence[Record]], tasks: Sequence[str]) -> Figure:
    """Validation loss vs epoch: one panel per task, one line per balancer (``histories``: balancer →
    fold-averaged records with ``val_loss/<task>`` columns)."""
    fig = Figure(figsize=(4.8 * len(tasks), 3.8), layout="constrained")
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks, strict=True):
        for balancer, records in histories.items():
            points = [(r["epoch"], r[f"val_loss/{task}"]) for r in records if r.get(f"val_loss/{task}") is not None]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=balancer)
        ax.set_title(f"{task}: validation loss (mean over folds)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    return fig


def contour_figure(
    images: np.ndarray, truth: np.ndarray, probabilities: Mapping[str, np.ndarray], ids: Sequence[str]
) -> Figure:
    """A grid of test images (rows) × balancers (columns), each with the true lesion contour and the
    predicted one (probability 0.5).

    ``images`` ``(n, C, H, W)`` uint8 (channel 0 is drawn in grey), ``truth`` ``(n, H, W)`` in {0, 1},
    ``probabilities``: balancer → lesion probability ``(n, H, W)`` in [0, 1]; ``ids`` label the rows.
    """
    rows, columns = len(images), len(probabilities)
    fig = Figure(figsize=(1.9 * columns, 1.9 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for i in range(rows):
        for ax, (balancer, probability) in zip(axes[i], probabilities.items(), strict=True):
            ax.imshow(images[i, 0], cmap="gray", vmin=0, vmax=255)
            _contour(ax, truth[i].astype(float), TRUTH_COLOUR)
            _contour(ax, probability[i], PREDICTION_COLOUR)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(balancer, fontsize=9)
        axes[i, 0].set_ylabel(ids[i], fontsize=8)
    legend = [
        Line2D([], [], color=TRUTH_COLOUR, label="true"),
        Line2D([], [], color=PREDICTION_COLOUR, label="predicted"),
    ]
    fig.legend(handles=legend, loc="outside lower center", ncols=2, fontsize=8)
    return fig


def png(fig: Figure) -> bytes:
    """The figure rendered as PNG bytes at :data:`DPI`."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _contour(ax, field: np.ndarray, colour: str) -> None:
    """The 0.5 level line of ``field`` ``(H, W)``; nothing when the field does not cross it."""
    if field.min() < 0.5 < field.max():
        ax.contour(field, levels=[0.5], colors=colour, linewidths=1.0)
