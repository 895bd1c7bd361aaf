"""A balancer's training history (``metrics/<balancer>/history.csv``), read back and averaged over folds."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.errors import DataError

Record = dict[str, float | None]


def read_history(path: Path) -> list[Record]:
    """The rows of a ``history.csv`` as records: numbers as floats, empty cells (e.g. the temperature of
    balancers without one) as None, anything else (the ``best`` flag) dropped."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run the train stage for this balancer)") from None
    records = [_record(row) for row in rows]
    if not records or any("epoch" not in r or r["epoch"] is None for r in records):
        raise DataError(f"{path}: expected a header with an 'epoch' column and one row per fold and epoch")
    return records


def mean_over_folds(records: Sequence[Record]) -> list[Record]:
    """One record per epoch, ascending: every column's mean over the folds that ran that epoch (None where
    no fold has a value); the ``fold`` column is dropped."""
    out = []
    for epoch in sorted({_epoch(r) for r in records}):
        rows = [r for r in records if _epoch(r) == epoch]
        keys = dict.fromkeys(k for r in rows for k in r if k != "fold")
        values = {k: [v for r in rows if (v := r.get(k)) is not None] for k in keys}
        out.append({k: float(np.mean(v)) if v else None for k, v in values.items()})
    return out


def convergence_epochs(records: Sequence[Record], tasks: Sequence[str]) -> dict[int, dict[str, int]]:
    """``{fold: {task: epoch, ..., "last": epoch}}``: the epoch (0-based) of each task's lowest validation loss
    (``val_loss/<task>``) in each fold, the first one on a tie, and the fold's last epoch (a minimum there may
    not be the end of the descent); a task with no such column is left out."""
    out: dict[int, dict[str, int]] = {}
    for fold in sorted({int(f) for r in records if (f := r.get("fold")) is not None}):
        rows = sorted((r for r in records if r.get("fold") == fold), key=_epoch)
        out[fold] = {}
        for task in tasks:
            losses = [(loss, _epoch(r)) for r in rows if (loss := r.get(f"val_loss/{task}")) is not None]
            if losses:
                out[fold][task] = min(losses)[1]
        out[fold]["last"] = _epoch(rows[-1])
    return out


def _epoch(record: Record) -> int:
    """The record's epoch (:func:`read_history` refuses a row without one)."""
    epoch = record["epoch"]
    assert epoch is not None
    return int(epoch)


def _record(row: dict[str, str]) -> Record:
    """Numeric cells as floats, empty cells as None; other text (the ``best`` flag) is left out."""
    record: Record = {}
    for key, text in row.items():
        if not text:
            record[key] = None
            continue
        try:
            record[key] = float(text)
        except ValueError:
            continue
    return record
