"""The sensitivity figure of a sweep: each figure's mean ± std across folds against the first swept setting (γ for
ATDWA), a line per combination of the others (T0, window)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def sensitivity_figure(
    balancer: str, rows: Sequence[dict[str, Any]], figures: Sequence[str], selected: dict[str, Any]
) -> Figure:
    """One panel per name in ``figures`` (e.g. ``"lesion.dice"``, ``"val_loss"``): ``<name>_mean`` with
    ``<name>_std`` error bars against the first swept setting of ``selected`` (γ for ATDWA), a line per
    combination of the others; the selected grid point is circled. Rows lacking a figure (a trial stopped before
    its first fold) are skipped."""
    x_key, *line_keys = selected
    fig, axes = plt.subplots(1, len(figures), figsize=(5.0 * len(figures), 3.8), squeeze=False)
    lines = sorted({tuple(row[k] for k in line_keys) for row in rows})
    for ax, name in zip(axes[0], figures):
        for line in lines:
            points = sorted(
                (row[x_key], row[f"{name}_mean"], row[f"{name}_std"])
                for row in rows
                if tuple(row[k] for k in line_keys) == line and f"{name}_mean" in row
            )
            if points:
                xs, means, stds = zip(*points)
                label = ", ".join(f"{k}={_label(v)}" for k, v in zip(line_keys, line)) or None
                ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
        chosen = [row for row in rows if all(row[k] == v for k, v in selected.items())]
        if chosen and f"{name}_mean" in chosen[0]:
            ax.plot(selected[x_key], chosen[0][f"{name}_mean"], "o", ms=14, mfc="none", mec="k", label="selected")
        ax.set_xlabel(x_key)
        ax.set_ylabel(f"{name} (validation, mean ± std over folds)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{balancer} sensitivity to {', '.join(selected)}")
    fig.tight_layout()
    return fig


def _label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
