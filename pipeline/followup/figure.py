"""The course of one wound as a figure: its area over time on top, its tissue composition below.

Built without pyplot (no global state; rendered by the Agg canvas, see :func:`pipeline.evaluate.figures.png`).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from typing import Any

from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from pipeline.config import TissueParams


def track_figure(rows: Sequence[dict[str, Any]], tissues: Sequence[TissueParams], title: str) -> Figure:
    """Wound area vs visit date (cm² when ``rows`` have it, else px) and, when there are ``tissues``,
    their fractions of the wound stacked in each tissue's ``colour`` (gaps where a visit has none).

    ``rows``: the visits of :func:`pipeline.followup.measure.track_rows`, sorted by date."""
    dates = [datetime.date.fromisoformat(r["date"]) for r in rows]
    in_cm2 = rows[0]["wound_area_cm2"] is not None
    fig = Figure(figsize=(7.0, 6.0 if tissues else 3.4), layout="constrained")
    axes = fig.subplots(2 if tissues else 1, 1, sharex=True, squeeze=False)[:, 0]
    area = axes[0]
    area.plot(dates, [r["wound_area_cm2" if in_cm2 else "wound_area_px"] for r in rows], marker="o", color="black")
    area.set_ylabel("wound area (cm²)" if in_cm2 else "wound area (px)")
    area.set_ylim(bottom=0)
    area.set_title(title)
    area.grid(alpha=0.3)
    if tissues:
        composition = axes[1]
        fractions = [[_number(r[f"fraction_{t.name}"]) for r in rows] for t in tissues]
        colours = [tuple(c / 255 for c in t.colour) for t in tissues]
        composition.stackplot(
            dates, fractions, labels=[t.name for t in tissues], colors=colours, edgecolor="grey", linewidth=0.5
        )
        composition.set_ylabel("fraction of the wound")
        composition.set_ylim(0, 1)
        composition.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    locator = AutoDateLocator()
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes[-1].set_xlabel("visit date")
    return fig


def _number(value: float | None) -> float:
    return math.nan if value is None else value
