"""``reports/tune.json``: the sweep's table and its choice. Written by the tune stage, read by the report."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from pipeline.stage_files import Document, Number

TUNE_FILE = "tune.json"


class TuneDocument(Document):
    """The sweep ``sweep`` of balancer ``balancer``: ``rows``, one per grid point sorted by its settings, each
    ``{<setting>: value, ..., "trial", "status", "folds_done", "<figure>_mean", "<figure>_std", ...}`` (figures of
    validation, mean and std over the folds done; null where undefined); ``selected``, the grid point the rule
    ``rule`` (over ``metric``) chose; the ``folds`` and ``epochs`` each trial trained."""

    sweep: str
    balancer: str = "atdwa"  # tune.json files written before the sweep could tune any balancer
    rule: str
    metric: str
    folds: list[int]
    epochs: int
    rows: list[dict[str, Any]] = Field(min_length=1)
    selected: dict[str, Number]
