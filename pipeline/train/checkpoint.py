"""Where a run's checkpoints live: a local folder here, Ray Train's checkpoint storage under Ray.

A checkpoint is two files: ``last.pt`` (everything a resumed run needs) and ``best.pt`` (the
weights of the epoch with the lowest mean validation loss so far). Files are written atomically and
loaded with ``weights_only=True``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Protocol

import torch

from pipeline.atomic import atomic_write_bytes
from pipeline.errors import DataError

LAST = "last.pt"
BEST = "best.pt"


class CheckpointStore(Protocol):
    def load(self) -> dict[str, Any] | None:
        """The last saved training state, or None for a fresh start."""
        ...

    def save(self, last: dict[str, Any], best: dict[str, Any], record: dict[str, Any]) -> None:
        """Persist the state after an epoch; ``record`` is that epoch's metrics. Called on every rank."""
        ...


class DirectoryStore:
    """Checkpoints in a local folder (single process)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def load(self) -> dict[str, Any] | None:
        return load_checkpoint(self.folder / LAST)

    def save(self, last: dict[str, Any], best: dict[str, Any], record: dict[str, Any]) -> None:
        write_checkpoint_files(self.folder, last, best)


def write_checkpoint_files(folder: Path, last: dict[str, Any], best: dict[str, Any]) -> None:
    save_checkpoint(Path(folder) / BEST, best)
    save_checkpoint(Path(folder) / LAST, last)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` via temp file + rename."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The state saved at ``path``; DataError naming it when there is none."""
    state = load_checkpoint(path)
    if state is None:
        raise DataError(f"{path}: checkpoint not found")
    return state


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The state saved at ``path``, or None when there is no checkpoint yet."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several unrelated types for a damaged file
        raise DataError(f"{path}: unreadable checkpoint ({exc})") from None
