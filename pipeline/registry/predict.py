"""The ``predict`` command: a registered model's masks and diagnoses for image files and folders.

The model is ``models:/<registry.model_name>@champion`` unless a model URI is given; one that does
not exist stops the command before any image is read. Each file is read and predicted on its own
(:mod:`pipeline.registry.inputs` says which files are accepted); a file that cannot be read is
recorded with its error and printed, the others are still processed, and the command then fails.

Outputs in ``out_dir`` (other files there are left alone):

- ``masks/<stem>_<task>.png`` per image and segmentation task, at the image's own size: 0/255 for a
  binary task (255 = lesion), the class index for a multi-class one (a repeated stem gets ``-2``, ...);
- ``predictions.json`` ``{"model_uri", "model_id", "images": [record, ...]}`` and ``predictions.csv``
  (the records as rows). A record has ``file``, ``status`` (``ok`` / ``error``), ``error``,
  ``height``, ``width`` (px), per segmentation task ``<task>_mask`` (path relative to ``out_dir``),
  ``<task>_area_px`` and ``<task>_area_fraction``, per classification task ``<task>_class`` and
  ``<task>_probability``.

Areas are counted at the image's original resolution, where users measure: the model's ``S × S``
probabilities are resized to the image size (bilinear) and thresholded at 0.5, so ``area_px`` is
in the file's pixels and ``area_fraction`` is that over all its pixels (foreground = any class but 0
for a multi-class task).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from pipeline.config import Params
from pipeline.errors import DataError, PipelineError
from pipeline.registry.inputs import IMAGE_SUFFIXES, image_files
from pipeline.registry.predictor import ImagePrediction, load_predictor
from pipeline.registry.store import CHAMPION
from pipeline.tasks import Task
from pipeline.tracking import connect
from pipeline.tracking.results import history_csv

MASKS = "masks"


def run(params: Params, inputs: Sequence[Path], out_dir: Path, model_uri: str | None = None) -> list[dict[str, Any]]:
    """Predict every image of ``inputs``, write the outputs (module docstring) and return the records.

    PipelineError when the model does not exist, when ``inputs`` hold no image, or (after writing
    every output) when any file could not be read.
    """
    uri = model_uri or f"models:/{params.registry.model_name}@{CHAMPION}"
    connect(params)
    predictor = load_predictor(uri)
    files = list(image_files(inputs))
    if not files:
        raise DataError(f"{[str(p) for p in inputs]}: no image files (folders contribute {list(IMAGE_SUFFIXES)})")
    out_dir = Path(out_dir)
    records = []
    for path, stem in zip(files, unique_stems(files)):
        record = {"file": str(path), "status": "ok", "error": None}
        try:
            (prediction,) = predictor.predict_files([path])
        except DataError as exc:
            records.append(record | {"status": "error", "error": str(exc)})
            print(f"error: {exc}", file=sys.stderr)
            continue
        record |= _write_masks(out_dir, stem, prediction, predictor.tasks)
        records.append(record)
        print(f"ok: {path}: " + ", ".join(f"{k}={v}" for k, v in record.items() if k.endswith(("_class", "_area_px"))))
    document = {"model_uri": uri, "model_id": predictor.model.metadata.model_id, "images": records}
    atomic_write_json(out_dir / "predictions.json", document)
    atomic_write_text(out_dir / "predictions.csv", history_csv([_csv_row(r, predictor.tasks) for r in records]))
    failed = [r["file"] for r in records if r["status"] == "error"]
    if failed:
        raise PipelineError(
            f"{len(failed)} of {len(records)} images could not be predicted (first: {failed[0]}); "
            f"errors are in {out_dir / 'predictions.json'}"
        )
    return records


def unique_stems(files: Sequence[Path]) -> list[str]:
    """Each file's stem, made unique by ``-2``, ``-3``, ... in order of appearance."""
    used: set[str] = set()
    stems = []
    for path in files:
        stem, n = path.stem, 1
        while stem in used:
            n += 1
            stem = f"{path.stem}-{n}"
        used.add(stem)
        stems.append(stem)
    return stems


def _write_masks(out_dir: Path, stem: str, prediction: ImagePrediction, tasks: Sequence[Task]) -> dict[str, Any]:
    """Write the mask PNGs of one image; return its record fields (sizes, areas, classes)."""
    fields: dict[str, Any] = {"height": prediction.size[0], "width": prediction.size[1]}
    for task in tasks:
        if task.name in prediction.classes:
            name, probability = prediction.classes[task.name]
            fields |= {f"{task.name}_class": name, f"{task.name}_probability": probability}
            continue
        mask = prediction.masks[task.name]
        relative = f"{MASKS}/{stem}_{task.name}.png"
        pixels = mask * 255 if task.kind == "binary_segmentation" else mask
        buffer = io.BytesIO()
        Image.fromarray(pixels.astype("uint8")).save(buffer, format="PNG")
        atomic_write_bytes(out_dir / relative, buffer.getvalue())
        area = int((mask != 0).sum())
        fields |= {
            f"{task.name}_mask": relative,
            f"{task.name}_area_px": area,
            f"{task.name}_area_fraction": area / mask.size,
        }
    return fields


def _csv_row(record: dict[str, Any], tasks: Sequence[Task]) -> dict[str, Any]:
    """``record`` with every column present (error rows leave the prediction columns empty)."""
    columns = ["file", "status", "error", "height", "width"]
    for task in tasks:
        suffixes = ("class", "probability") if task.kind == "classification" else ("mask", "area_px", "area_fraction")
        columns += [f"{task.name}_{s}" for s in suffixes]
    return {c: record.get(c) for c in columns}
