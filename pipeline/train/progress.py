"""What a person sees of a running fold: each epoch's record logged to MLflow and printed as one line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.tracking import EpochLogger


@dataclass(frozen=True)
class EpochReporter:
    """Runs in the rank-0 worker after each epoch: logs the record to MLflow and prints a progress line."""

    logger: EpochLogger
    label: str

    def __call__(self, record: dict[str, Any]) -> None:
        self.logger(record)
        _print_epoch(self.label, record)


def _print_epoch(label: str, record: dict[str, Any]) -> None:
    """One line per epoch with what a person watches: per task the training/validation loss, the validation
    Dice (segmentation) or accuracy (classification) and the task weight; the temperature and learning rate."""
    tasks = [key.split("/", 1)[1] for key in record if key.startswith("val_loss/")]
    cells = []
    for task in tasks:
        score = next((m for m in ("dice", "accuracy") if f"val/{task}/{m}" in record), None)
        shown = f" {score} {record[f'val/{task}/{score}']:.3f}" if score else ""
        cells.append(
            f"{task} loss {record[f'train_loss/{task}']:.3f}/{record[f'val_loss/{task}']:.3f}{shown} "
            f"w {record[f'weight/{task}']:.2f}"
        )
    temperature = record.get("temperature")
    print(
        f"[{label} fold {record['fold']}] epoch {record['epoch']:3d} | "
        + " | ".join(cells)
        + f" | T {'-' if temperature is None else f'{temperature:.2f}'} lr {record['lr']:.1e}",
        flush=True,
    )
