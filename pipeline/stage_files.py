"""JSON files that pass between stages, each a typed model with one reader and one writer.

A stage writes its document with :meth:`Document.write` (atomically, key-sorted, so identical content gives
identical bytes for DVC) and the stages after it read it with :meth:`Document.read`, which turns a missing file,
bad JSON or a field of the wrong shape into one :class:`~pipeline.errors.DataError` naming the file, the key and
the stage that writes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.atomic import atomic_write_json
from pipeline.errors import DataError

Number = int | float
"""A figure as the stage computed it: counts stay ints in the file (``parameters``), means are floats."""


class Document(BaseModel):
    """A stage's JSON document; ``written_by`` names what makes it (for the error when it is missing)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def read(cls, path: Path, written_by: str) -> Self:
        """The document at ``path``; a missing file says to run ``written_by``, a malformed one names the key."""
        path = Path(path)
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise DataError(f"{path}: not found (run {written_by} first)") from None
        except ValueError as exc:  # json.JSONDecodeError and pydantic's ValidationError are ValueErrors
            raise DataError(f"{path}: {_reason(exc)}; rerun {written_by}") from None

    def write(self, path: Path) -> None:
        """Write atomically as key-sorted JSON (floats, NaN included, as Python's json writes them)."""
        atomic_write_json(Path(path), self.model_dump())


def _reason(exc: ValueError) -> str:
    if not isinstance(exc, ValidationError):
        return f"not valid JSON ({exc})"
    first = exc.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    return f"{key}: {first['msg']}" + (f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else "")
