"""Measurements of one wound over its visits: pure functions on masks, no files.

Per visit (:class:`Measurement`):

- the wound area: pixels of the wound mask ``(H, W)`` (non-zero = wound) at the photo's own size, and
  in cm² when the pixel spacing is known: ``area_cm2 = area_px × (spacing_mm / 10)²``;
- the tissue fractions: in the tissue map ``(H, W)`` (index ``k`` = tissue ``k``, 0 = background) the
  wound is its non-background pixels, and the fraction of tissue ``k`` is ``pixels of k / non-background
  pixels``, so the fractions sum to 1 (``None`` when the map has no wound pixels: undefined).

With given index masks the wound mask and the tissue map are the same image, so the area is the
fractions' denominator. With a model the area comes from its wound (binary) task and the fractions
from its tissue map, which need not agree pixel for pixel; each fraction is therefore always read
within the tissue map's own wound.

:func:`track_rows` adds the course: days since the previous visit, the absolute and relative area change
and per-tissue fraction changes (``None`` at the first visit, or where a value they need is ``None``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.followup.series import Visit


@dataclass(frozen=True)
class Measurement:
    """One visit measured: ``area_px`` wound pixels, ``fractions`` per tissue (in tissue order, each in
    [0, 1] or ``None``; empty, like the tissue list, without a tissue map)."""

    visit: Visit
    area_px: int
    fractions: tuple[float | None, ...]


def wound_area(wound: np.ndarray) -> int:
    """Pixels of the wound mask ``(H, W)`` (any non-zero value is wound)."""
    return int(np.count_nonzero(wound))


def tissue_fractions(tissue: np.ndarray, n_tissues: int) -> tuple[float | None, ...]:
    """Fraction of each tissue ``1..n_tissues`` among the non-background pixels of the tissue map
    ``(H, W)`` of integer indices in ``0..n_tissues``; all ``None`` when every pixel is background."""
    counts = np.bincount(np.asarray(tissue).ravel(), minlength=n_tissues + 1)[1:]
    total = int(counts.sum())
    return tuple(int(c) / total if total else None for c in counts)


def area_cm2(area_px: int, pixel_spacing_mm: float) -> float:
    """``area_px`` pixels of side ``pixel_spacing_mm`` millimetres, in cm²."""
    return area_px * (pixel_spacing_mm / 10) ** 2


def track_rows(
    measurements: Sequence[Measurement], tissues: Sequence[str], pixel_spacing_mm: float | None
) -> list[dict[str, Any]]:
    """One row per visit (``measurements`` sorted by date): ``date`` (ISO), ``path``,
    ``days_since_previous``, ``wound_area_px``, ``wound_area_cm2`` (``None`` without spacing),
    ``fraction_<tissue>``, ``area_change_px`` (area − previous area), ``area_change_relative``
    (that / previous area; ``None`` when the previous area is 0) and ``fraction_change_<tissue>``."""
    rows = []
    previous: Measurement | None = None
    for m in measurements:
        fractions = dict(zip(tissues, m.fractions, strict=True))
        row: dict[str, Any] = {
            "date": m.visit.date.isoformat(),
            "path": str(m.visit.path),
            "days_since_previous": None if previous is None else (m.visit.date - previous.visit.date).days,
            "wound_area_px": m.area_px,
            "wound_area_cm2": None if pixel_spacing_mm is None else area_cm2(m.area_px, pixel_spacing_mm),
            **{f"fraction_{name}": value for name, value in fractions.items()},
            "area_change_px": None,
            "area_change_relative": None,
            **{f"fraction_change_{name}": None for name in tissues},
        }
        if previous is not None:
            change = m.area_px - previous.area_px
            row["area_change_px"] = change
            row["area_change_relative"] = change / previous.area_px if previous.area_px else None
            before = dict(zip(tissues, previous.fractions, strict=True))
            for name, value in fractions.items():
                if value is not None and (earlier := before[name]) is not None:
                    row[f"fraction_change_{name}"] = value - earlier
        rows.append(row)
        previous = m
    return rows
