"""The sweep's outputs: the table of trials, the selected configuration and the params overlay.

Files (under ``reports/``, the paths ``dvc.yaml`` declares):

- ``tune.json``: the selection rule, one row per grid point (γ, T0, window, status, folds done,
  ``<figure>_mean`` / ``<figure>_std`` across folds) and the selected grid point;
- ``tune.csv``: the rows as CSV, for ``dvc plots`` (e.g. ``lesion.dice_mean`` against ``gamma``);
- ``tuned_params.yaml``: per balancer, the params overlay its final training applies: ATDWA's selected
  γ/T0/window, ``{}`` for the others (the train stage depends on its own balancer's entry only).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

import yaml

from pipeline.tune.grid import settings_override

Row = dict[str, Any]


def tuned_params_yaml(selected: dict[str, Any], swept: str, balancers: Sequence[str]) -> str:
    """The ``tuned_params.yaml`` text for the grid point ``selected`` of balancer ``swept``: an overlay for each of
    ``balancers`` (the swept one's sets the point, the others' are empty)."""
    overrides = {name: settings_override(swept, selected) if name == swept else {} for name in balancers}
    header = "# Written by `python -m pipeline tune`: the params overlay of each balancer's final training.\n"
    return header + yaml.safe_dump({"overrides": overrides}, sort_keys=False)


def table_csv(rows: Sequence[Row], keys: Sequence[str]) -> str:
    """The rows as CSV text; the grid ``keys`` first, then the other columns in first-seen order."""
    columns = list(dict.fromkeys([*keys, *(k for row in rows for k in row)]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _plain(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def json_safe(rows: Sequence[Row]) -> list[Row]:
    """The rows with ``nan`` as None (JSON has no nan)."""
    return [{k: _plain(v) for k, v in row.items()} for row in rows]


def _plain(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value
