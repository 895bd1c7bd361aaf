"""Folder layouts of the public wound datasets; both give images with one mask file each.

* **DFUTissue** (diabetic foot ulcer tissue):
  ``Labeled/{Original,Padded}/{Images,Annotations}/{TrainVal,Test}/NNNN.png``.
  Annotations are index PNGs (0 background, 1 fibrin/slough, 2 granulation, 3 callus, in ``data.tissues``
  order); the wound region is every pixel with a tissue (index > 0). ``Original`` is read, ``Padded`` when
  there is no ``Original``. ``Test`` is the published test subset; ``TrainVal`` is cross-validated.
* **FUSeg 2021** (foot ulcer segmentation): ``{train,validation}/{images,labels}/NNNN.png`` with wound masks
  0/255 and no tissue labels. ``validation`` (the published test labels are withheld) is the test subset.

Image ids are ``<subset folder>_<NNNN>`` in lower case (``trainval_0012``, ``validation_0003``); every image
is labelled ``wound`` (these datasets have no classes).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import WOUND_LABEL
from pipeline.data.scanned import SourceImage, shallowest
from pipeline.errors import DataError

_NUMBERED = re.compile(r"^(?P<n>\d+)\.png$", re.IGNORECASE)
DFUTISSUE_SUBSETS = {"TrainVal": None, "Test": "test"}
FUSEG_SUBSETS = {"train": None, "validation": "test"}
DFUTISSUE_EXPECTED = (
    "data.layout 'dfutissue' expects Labeled/{Original,Padded}/{Images,Annotations}/{TrainVal,Test}/NNNN.png"
)
FUSEG_EXPECTED = "data.layout 'fuseg' expects {train,validation}/{images,labels}/NNNN.png"
"""Each layout in one line, for error messages."""


def scan_dfutissue(folder: Path) -> list[SourceImage]:
    """The images of a DFUTissue-layout ``folder`` (or a folder containing ``Labeled``), sorted by id."""
    labeled = shallowest(
        folder, lambda f: f.name == "Labeled" and f.is_dir(), "DFUTissue 'Labeled' folder", DFUTISSUE_EXPECTED
    )
    variant = next((labeled / v for v in ("Original", "Padded") if (labeled / v).is_dir()), None)
    if variant is None:
        raise DataError(f"{labeled}: neither 'Original' nor 'Padded' folder ({DFUTISSUE_EXPECTED})")
    if variant.name == "Padded":
        print(f"ingest: {labeled}: no 'Original' folder, reading 'Padded'", file=sys.stderr)
    return _scan_pairs(variant, "Images", "Annotations", DFUTISSUE_SUBSETS)


def scan_fuseg(folder: Path) -> list[SourceImage]:
    """The labelled images of a FUSeg-layout ``folder`` (or a folder containing ``train/``), sorted by id."""
    root = shallowest(
        folder, lambda f: (f / "train" / "images").is_dir(), "FUSeg 'train/images' folder", FUSEG_EXPECTED
    )
    return _scan_pairs(root, "images", "labels", FUSEG_SUBSETS, nested=True)


def _scan_pairs(
    root: Path, images: str, masks: str, subsets: dict[str, str | None], nested: bool = False
) -> list[SourceImage]:
    """Pair ``NNNN.png`` images and masks of every subset folder.

    ``nested`` False: ``root/<images|masks>/<subset>/``; True: ``root/<subset>/<images|masks>/``.
    """
    records: list[SourceImage] = []
    for subset, role in subsets.items():
        image_dir, mask_dir = (
            (root / subset / images, root / subset / masks)
            if nested
            else (root / images / subset, root / masks / subset)
        )
        if not image_dir.is_dir():
            raise DataError(f"{image_dir}: folder missing ({'/'.join(subsets)} subsets are expected)")
        found = _numbered(image_dir)
        labelled = _numbered(mask_dir) if mask_dir.is_dir() else {}
        unlabelled = sorted(set(found) - set(labelled))
        if unlabelled:
            raise DataError(f"{found[unlabelled[0]]}: image has no mask in {mask_dir} ({len(unlabelled)} such)")
        orphans = sorted(set(labelled) - set(found))
        if orphans:
            raise DataError(f"{labelled[orphans[0]]}: mask without an image in {image_dir}")
        records.extend(
            SourceImage(f"{subset.lower()}_{n:04d}", WOUND_LABEL, found[n], (labelled[n],), role) for n in sorted(found)
        )
    if not records:
        raise DataError(f"{root}: no images in {', '.join(subsets)}")
    return sorted(records, key=lambda r: r.id)


def _numbered(folder: Path) -> dict[int, Path]:
    """``{n: path}`` of the ``NNNN.png`` files of ``folder``; two files with one number raise DataError."""
    out: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        match = _NUMBERED.match(path.name)
        if not (path.is_file() and match):
            continue
        n = int(match["n"])
        if n in out:
            raise DataError(f"{path}: same number as {out[n]}")
        out[n] = path
    return out


def tissue_names(tissues: Sequence[str]) -> tuple[str, ...]:
    """Names of the index mask values: ``background`` then the configured tissues."""
    return ("background", *tissues)
