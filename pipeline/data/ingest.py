"""The ingest stage: read the configured dataset into ``<out_dir>/files`` and ``manifest.json``.

``data.source`` is ``synthetic`` (generated from ``seed`` in the layout of the workload) or a local
folder, archive or S3 prefix (:mod:`pipeline.data.sources`) in the layout ``data.layout``: ``busi``
(:mod:`pipeline.data.busi`), ``dfutissue`` or ``fuseg`` (:mod:`pipeline.data.wound_layouts`). Every
image is read by the rule for images that ``predict`` follows too (:func:`pipeline.data.images.read_image`:
an image with transparent pixels stops ingest), every mask decoded and size-checked (tissue index masks
value-checked against ``data.tissues``) before the output replaces the previous one, so a failure leaves
``out_dir`` as it was. A missing source, or a folder of another layout, fails naming the path and the
layout ``data.layout`` expects.
The ``data.tissues`` that occur in no tissue mask of the dataset are printed and recorded in the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline import atomic
from pipeline.config import Params
from pipeline.data import duplicates, sources, wound_layouts
from pipeline.data.images import read_index_mask
from pipeline.data.layouts import LAYOUTS
from pipeline.data.manifest import Manifest, Record, write_manifest
from pipeline.data.scanned import SourceImage, check
from pipeline.errors import ConfigError
from pipeline.logs import progress

SYNTHETIC = "synthetic"


@contextlib.contextmanager
def _dataset_folder(params: Params) -> Iterator[Path]:
    """Yield a local folder in ``params.data.layout`` for ``params.data.source``."""
    layout = LAYOUTS[params.data.layout]
    if params.data.source == SYNTHETIC:
        if layout.generate is None:
            synthetic_layouts = [name for name, other in LAYOUTS.items() if other.generate is not None]
            raise ConfigError(
                f"data.source = 'synthetic' with data.layout = {layout.name!r}: the synthetic data is generated "
                f"in the layouts {synthetic_layouts} (the wound photos in 'dfutissue')"
            )
        with tempfile.TemporaryDirectory(prefix="mtl-synthetic-") as tmp:
            layout.generate(params, Path(tmp))
            yield Path(tmp)
    else:
        with sources.local_folder(params.data.source, layout.expected) as folder:
            yield folder


def _tissue_values(image: SourceImage, params: Params) -> set[int]:
    """The index values of ``image``'s tissue mask (``0`` background, ``k`` tissue ``k - 1``), which must be an
    index PNG of ``data.tissues``; empty for the layouts without one."""
    if not LAYOUTS[params.data.layout].has_tissue_masks:
        return set()
    names = wound_layouts.tissue_names([t.name for t in params.data.tissues])
    return set(np.unique(read_index_mask(image.masks[0], len(names), names)).tolist())


def _copy(image: SourceImage, out_dir: Path) -> Record:
    """Copy one checked image and its masks to ``out_dir/files/<label>/<id>[_mask[_k]].png``."""
    folder = Path("files") / image.label
    (out_dir / folder).mkdir(parents=True, exist_ok=True)
    image_rel = folder / f"{image.id}.png"
    shutil.copyfile(image.image, out_dir / image_rel)
    mask_rels = []
    for k, mask in enumerate(image.masks):
        mask_rel = folder / (f"{image.id}_mask.png" if k == 0 else f"{image.id}_mask_{k}.png")
        shutil.copyfile(mask, out_dir / mask_rel)
        mask_rels.append(mask_rel.as_posix())
    sha256 = hashlib.sha256((out_dir / image_rel).read_bytes()).hexdigest()
    return Record(image.id, image.label, image_rel.as_posix(), tuple(mask_rels), sha256, image.subset)


def run(params: Params, out_dir: Path) -> None:
    """Build ``out_dir``: ``files/<class>/<id>.png``, ``<id>_mask.png`` (``_mask_1.png`` … for
    extra masks, OR-ed downstream) and ``manifest.json`` with paths relative to ``out_dir``, the
    groups of images with identical pixels (printed too, conflicting labels flagged) and the
    ``data.tissues`` found in no mask (printed too).

    Raises DataError naming the file, folder, archive entry or S3 URI at fault; ``out_dir`` is
    then left unchanged.
    """
    with _dataset_folder(params) as folder, atomic.atomic_dir(Path(out_dir)) as tmp:
        records, digests, tissue_values = [], {}, set()
        with progress("ingest", "img") as counter:
            for image in LAYOUTS[params.data.layout].scan(folder, params):
                pixels = check(image)
                tissue_values |= _tissue_values(image, params)
                record = _copy(image, tmp)
                records.append(record)
                digests[record.id] = duplicates.pixel_digest(pixels)
                counter.update(1)
        groups = duplicates.duplicate_groups(digests)
        if groups:
            labels = {r.id: r.label for r in records}
            print(
                f"ingest: {len(groups)} groups of images with identical pixels (split keeps each group "
                f"in one split and fold):",
                *duplicates.describe(groups, labels),
                sep="\n  ",
                file=sys.stderr,
            )
        absent = _absent_tissues(params, tissue_values)
        if absent:
            print(
                f"ingest: data.tissues {list(absent)} occur in no tissue mask of the {len(records)} images; "
                "their Dice/IoU will show as absent (give data.tissues the dataset's own classes)",
                file=sys.stderr,
            )
        write_manifest(
            tmp, Manifest(params.data.source, params.data.layout, params.record_classes, tuple(records), groups, absent)
        )


def _absent_tissues(params: Params, values: set[int]) -> tuple[str, ...]:
    """The ``data.tissues`` (in their order) whose index (position + 1) is not among the tissue mask ``values``
    seen; none for a layout without tissue masks."""
    if not LAYOUTS[params.data.layout].has_tissue_masks:
        return ()
    return tuple(t.name for k, t in enumerate(params.data.tissues, start=1) if k not in values)
