"""The BUSI folder layout (Al-Dhabyani et al. 2020).

``Dataset_BUSI_with_GT/<class>/<class> (<n>).png`` with ``<class> (<n>)_mask.png`` and, for some
images, extra ``_mask_1.png``, ``_mask_2.png`` … (all masks of an image are OR-ed downstream).
Files that match none of these names are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from pipeline.data.scanned import SourceImage, shallowest
from pipeline.errors import DataError

_NAME = re.compile(r"^(?P<label>[a-z]+) \((?P<n>\d+)\)(?P<mask>_mask(?:_(?P<k>\d+))?)?\.png$", re.IGNORECASE)


def record_id(label: str, number: int) -> str:
    """The sanitised id of image ``<label> (<number>).png``, e.g. ``benign_0012``."""
    return f"{label}_{number:04d}"


def find_root(folder: Path, classes: Sequence[str]) -> Path:
    """The shallowest folder at or below ``folder`` holding a sub-folder named after a class."""
    what = f"BUSI class folder ({', '.join(classes)})"
    return shallowest(folder, lambda f: any((f / c).is_dir() for c in classes), what)


def _scan_class(folder: Path, label: str) -> list[SourceImage]:
    images: dict[int, Path] = {}
    masks: dict[int, list[tuple[int, Path]]] = {}
    for path in sorted(folder.iterdir()):
        match = _NAME.match(path.name)
        if not path.is_file() or not match or match["label"].lower() != label:
            continue
        n = int(match["n"])
        if not match["mask"]:
            if n in images:
                raise DataError(f"{path}: same image number as {images[n]}")
            images[n] = path
        else:
            masks.setdefault(n, []).append((int(match["k"] or 0), path))
    if not images:
        raise DataError(f"{folder}: class folder has no '{label} (<n>).png' images")
    for n, found in masks.items():
        if n not in images:
            raise DataError(f"{found[0][1]}: mask without an image '{label} ({n}).png'")
    missing = [images[n] for n in sorted(images) if n not in masks]
    if missing:
        raise DataError(f"{missing[0]}: image has no '_mask.png' file ({len(missing)} such in {folder})")
    return [
        SourceImage(record_id(label, n), label, images[n], tuple(p for _, p in sorted(masks[n])))
        for n in sorted(images)
    ]


def scan(folder: Path, classes: Sequence[str]) -> list[SourceImage]:
    """List the images of the configured ``classes`` in a BUSI-layout ``folder``, sorted by id.

    ``folder`` may be ``Dataset_BUSI_with_GT`` itself or any folder containing it. A configured
    class without a folder or without images, an image without a mask, a mask without an image and
    two files with the same number raise DataError naming the file or folder. File contents are
    not read here; see :func:`pipeline.data.scanned.check`.
    """
    root = find_root(folder, classes)
    records: list[SourceImage] = []
    for label in classes:
        class_dir = root / label
        if not class_dir.is_dir():
            raise DataError(f"{class_dir}: class folder missing (data.classes lists '{label}')")
        records.extend(_scan_class(class_dir, label))
    return sorted(records, key=lambda r: r.id)
