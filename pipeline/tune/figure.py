"""The sensitivity figure of a sweep: each figure's mean ± std across folds against γ, a line per (T0, window)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def sensitivity_figure(rows: Sequence[dict[str, Any]], figures: Sequence[str], selected: dict[str, Any]) -> Figure:
    """One panel per name in ``figures`` (e.g. ``"lesion.dice"``, ``"val_loss"``): ``<name>_mean`` with
    ``<name>_std`` error bars against γ; the selected grid point is circled. Rows lacking a figure
    (a trial stopped before its first fold) are skipped."""
    fig, axes = plt.subplots(1, len(figures), figsize=(5.0 * len(figures), 3.8), squeeze=False)
    lines = sorted({(row["t0"], row["window"]) for row in rows})
    for ax, name in zip(axes[0], figures):
        for t0, window in lines:
            points = sorted(
                (row["gamma"], row[f"{name}_mean"], row[f"{name}_std"])
                for row in rows
                if (row["t0"], row["window"]) == (t0, window) and f"{name}_mean" in row
            )
            if points:
                gammas, means, stds = zip(*points)
                ax.errorbar(gammas, means, yerr=stds, marker="o", capsize=3, label=f"T0={t0:g}, window={window}")
        chosen = [row for row in rows if all(row[k] == selected[k] for k in ("gamma", "t0", "window"))]
        if chosen and f"{name}_mean" in chosen[0]:
            ax.plot(selected["gamma"], chosen[0][f"{name}_mean"], "o", ms=14, mfc="none", mec="k", label="selected")
        ax.set_xlabel("γ")
        ax.set_ylabel(f"{name} (validation, mean ± std over folds)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("ATDWA sensitivity to γ and T0")
    fig.tight_layout()
    return fig
