"""The canonical dataset manifest written by ``ingest`` and read by every later stage.

``<ingested>/manifest.json``::

    {"source": str, "layout": str, "classes": [str, ...],
     "records": [{"id": str, "label": str, "image": str, "masks": [str, ...], "sha256": str,
                  "subset": "test" | null}, ...],
     "duplicates": [[id, id, ...], ...], "absent_tissues": [str, ...]}

``image`` and ``masks`` are paths relative to the manifest's folder; ``sha256`` is the checksum of
the source image file's bytes; ``subset`` is ``"test"`` for an image the dataset publishes as a test image.
Records are sorted by ``id``. ``duplicates`` lists the groups of
records whose images have identical pixels (absent: none known). ``absent_tissues`` lists the configured
``data.tissues`` that occur in no tissue mask of the dataset (absent or empty: none known).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.atomic import atomic_write_json
from pipeline.errors import DataError
from pipeline.paths import MANIFEST


@dataclass(frozen=True)
class Record:
    """One image with its mask file(s) and its class label.

    The masks' meaning depends on the manifest's layout: ``busi`` lesion masks (OR-ed downstream),
    ``dfutissue`` one tissue index mask, ``fuseg`` one wound mask.
    """

    id: str
    label: str
    image: str
    masks: tuple[str, ...]
    sha256: str
    subset: str | None = None


@dataclass(frozen=True)
class Manifest:
    """``duplicates``: groups of record ids whose images have the same pixels (:mod:`pipeline.data.duplicates`);
    ``absent_tissues``: configured tissue classes that no mask of the dataset contains."""

    source: str
    layout: str
    classes: tuple[str, ...]
    records: tuple[Record, ...]
    duplicates: tuple[tuple[str, ...], ...] = ()
    absent_tissues: tuple[str, ...] = ()

    def labels(self) -> list[str]:
        return [r.label for r in self.records]


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write ``folder/manifest.json`` atomically, records sorted by id."""
    body = asdict(manifest)
    body["records"] = sorted(body["records"], key=lambda r: r["id"])
    atomic_write_json(Path(folder) / MANIFEST, body)


def read_manifest(folder: Path) -> Manifest:
    """Read ``folder/manifest.json``; a missing or malformed file raises DataError naming it."""
    path = Path(folder) / MANIFEST
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        records = tuple(
            Record(r["id"], r["label"], r["image"], tuple(r["masks"]), r["sha256"], r.get("subset"))
            for r in body["records"]
        )
        duplicates = tuple(tuple(group) for group in body.get("duplicates", []))
        absent = tuple(body.get("absent_tissues", []))
        return Manifest(body["source"], body["layout"], tuple(body["classes"]), records, duplicates, absent)
    except FileNotFoundError:
        raise DataError(f"{path}: manifest not found (run the ingest stage first)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: malformed manifest ({exc!r})") from None
