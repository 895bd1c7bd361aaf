"""The BUSI folder layout (Al-Dhabyani et al. 2020), as published and as commonly re-distributed.

``Dataset_BUSI_with_GT/<class>/<class> (<n>).png`` with ``<class> (<n>)_mask.png`` and, for some
images, extra ``_mask_1.png``, ``_mask_2.png`` … (all masks of an image are OR-ed downstream): the
published (Kaggle) folder has them side by side in the class folder; the common re-distribution puts
the images in ``<class>/images/`` and the masks in ``<class>/mask/``. Both are read, to the same records.
Files that match none of these names are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from pipeline.data.scanned import SourceImage, shallowest
from pipeline.errors import DataError

_NAME = re.compile(r"^(?P<label>[a-z]+) \((?P<n>\d+)\)(?P<mask>_mask(?:_(?P<k>\d+))?)?\.png$", re.IGNORECASE)
SUBFOLDERS = ("images", "mask")
"""Sub-folders of a class folder that hold its images and masks in the re-distributed layout."""
EXPECTED = (
    "data.layout 'busi' expects <class>/'<class> (<n>).png' with '<class> (<n>)_mask.png', side by side "
    "or in <class>/images/ and <class>/mask/"
)
"""The layout in one line, for error messages."""


def record_id(label: str, number: int) -> str:
    """The sanitised id of image ``<label> (<number>).png``, e.g. ``benign_0012``."""
    return f"{label}_{number:04d}"


def find_root(folder: Path, classes: Sequence[str]) -> Path:
    """The shallowest folder at or below ``folder`` holding a sub-folder named after a class."""
    what = f"BUSI class folder ({', '.join(classes)})"
    return shallowest(folder, lambda f: any((f / c).is_dir() for c in classes), what, EXPECTED)


def _class_files(folder: Path) -> list[Path]:
    """The entries of a class folder and of its :data:`SUBFOLDERS`, each folder's sorted by name."""
    folders = [folder, *(folder / sub for sub in SUBFOLDERS if (folder / sub).is_dir())]
    return [path for f in folders for path in sorted(f.iterdir())]


def _scan_class(folder: Path, label: str) -> list[SourceImage]:
    images: dict[int, Path] = {}
    masks: dict[int, dict[int, Path]] = {}  # image number → {mask number k (0 for '_mask.png'): file}
    for path in _class_files(folder):
        match = _NAME.match(path.name)
        if not path.is_file() or not match or match["label"].lower() != label:
            continue
        n = int(match["n"])
        if match["mask"]:
            found, key, what = masks.setdefault(n, {}), int(match["k"] or 0), "mask"
        else:
            found, key, what = images, n, "image"
        if key in found:
            raise DataError(f"{path}: same {what} number as {found[key]}")
        found[key] = path
    if not images:
        raise DataError(f"{folder}: class folder has no '{label} (<n>).png' images ({EXPECTED})")
    for n, found in masks.items():
        if n not in images:
            raise DataError(f"{next(iter(found.values()))}: mask without an image '{label} ({n}).png'")
    missing = [images[n] for n in sorted(images) if n not in masks]
    if missing:
        raise DataError(f"{missing[0]}: image has no '_mask.png' file ({len(missing)} such in {folder})")
    return [
        SourceImage(record_id(label, n), label, images[n], tuple(masks[n][k] for k in sorted(masks[n])))
        for n in sorted(images)
    ]


def scan(folder: Path, classes: Sequence[str]) -> list[SourceImage]:
    """List the images of the configured ``classes`` in a BUSI-layout ``folder``, sorted by id.

    ``folder`` may be ``Dataset_BUSI_with_GT`` itself or any folder containing it. A configured
    class without a folder or without images, an image without a mask, a mask without an image and
    two files with the same number (e.g. an image both in the class folder and in its ``images/``)
    raise DataError naming the file or folder. File contents are
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
