"""The ``track`` command: one wound's area and tissue composition over its visits, and their change.

The series (:mod:`pipeline.followup.series`) is measured from a registered model's predictions —
``models:/<registry.model_name>@champion`` unless a model URI is given — or from index masks given
with it (``masks``; tissue names and colours then from ``data.tissues``), see
:mod:`pipeline.followup.sources`; :mod:`pipeline.followup.measure` defines the measurements.

Outputs in ``out_dir`` (each written atomically; other files there are left alone):

- ``track.csv``: one row per visit, the columns of :func:`pipeline.followup.measure.track_rows` (empty
  where a value is ``None``);
- ``track.json``: ``{"series", "model_uri", "masks", "pixel_spacing_mm", "tissues", "visits": [row, ...]}``
  (``model_uri`` or ``masks`` is null, whichever was not used);
- ``track.png``: the figure of :func:`pipeline.followup.figure.track_figure`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from pipeline.config import Params
from pipeline.errors import PipelineError
from pipeline.evaluate.figures import png
from pipeline.followup.figure import track_figure
from pipeline.followup.measure import track_rows
from pipeline.followup.series import read_series
from pipeline.followup.sources import measure_masks, measure_predictions, model_tissues, wound_tasks
from pipeline.registry.predictor import load_predictor
from pipeline.registry.store import CHAMPION
from pipeline.tracking import connect
from pipeline.tracking.results import history_csv


def run(
    params: Params,
    series: Path,
    out_dir: Path,
    model_uri: str | None = None,
    masks: Path | None = None,
    pixel_spacing_mm: float | None = None,
) -> list[dict[str, Any]]:
    """Measure the visits of ``series``, write the outputs (module docstring), print a table, return the rows.

    PipelineError (before anything is written) for a bad spacing, both a model and masks, a bad series
    or mask, or a model that does not exist or has no wound task.
    """
    if pixel_spacing_mm is not None and not (math.isfinite(pixel_spacing_mm) and pixel_spacing_mm > 0):
        raise PipelineError(f"pixel spacing {pixel_spacing_mm} mm: expected a positive number of millimetres per pixel")
    if model_uri is not None and masks is not None:
        raise PipelineError(f"model {model_uri} and masks {masks}: give one, the model predicts what masks give")
    visits = read_series(series)
    if masks is not None:
        tissues = params.data.tissues
        measurements = measure_masks(visits, masks, tissues)
        source = f"masks {masks}"
    else:
        model_uri = model_uri or f"models:/{params.registry.model_name}@{CHAMPION}"
        connect(params)
        predictor = load_predictor(model_uri)
        wound, tissue = wound_tasks(predictor.tasks, model_uri)
        tissues = model_tissues(predictor, tissue)
        measurements = measure_predictions(visits, predictor, wound, tissue)
        source = f"model {model_uri}"
    names = [t.name for t in tissues]
    rows = track_rows(measurements, names, pixel_spacing_mm)
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "track.csv", history_csv(rows))
    atomic_write_json(
        out_dir / "track.json",
        {
            "series": str(series),
            "model_uri": model_uri,
            "masks": None if masks is None else str(masks),
            "pixel_spacing_mm": pixel_spacing_mm,
            "tissues": names,
            "visits": rows,
        },
    )
    atomic_write_bytes(out_dir / "track.png", png(track_figure(rows, tissues, f"{series} ({source})")))
    print(f"track: {len(rows)} visits of {series}, measured from {source}; outputs in {out_dir}")
    print(table(rows, names))
    return rows


def table(rows: list[dict[str, Any]], tissues: list[str]) -> str:
    """The rows as a fixed-width text table: date, days, area (px, cm²), its relative change, tissue %."""
    header = ["date", "days", "area_px", "area_cm2", "change", *tissues]
    lines = [header]
    for r in rows:
        lines.append(
            [
                r["date"],
                _show(r["days_since_previous"], "{}"),
                str(r["wound_area_px"]),
                _show(r["wound_area_cm2"], "{:.2f}"),
                _show(r["area_change_relative"], "{:+.0%}"),
                *(_show(r[f"fraction_{t}"], "{:.0%}") for t in tissues),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in lines)


def _show(value: Any, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)
