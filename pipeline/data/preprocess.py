"""Preprocess stage: every ingested record → fixed-size arrays that training memory-maps.

``<out>/`` (the *array layout*, shared with the augment stage)::

    image.npy      (N, C, S, S) uint8  C = data.channels: 1 grey level, or 3 RGB (a grey image repeated)
    mask.npy       (N, S, S)    uint8  lesion / wound mask in {0, 1} (BUSI: all mask files of a record OR-ed;
                                       DFUTissue: every pixel with a tissue)
    tissue.npy     (N, S, S)    uint8  DFUTissue layout only: tissue index, 0 background, k = data.tissues[k - 1]
    label.npy      (N,)         int64  index into ``classes``
    manifest.json  {"ids": [id, ...], "classes": [...], "class_counts": {class: n},
                    "image_size": S, "channels": C,
                    "arrays": {"image" | "mask" | "tissue" | "label": {"shape": [...], "dtype": str, "sha256": str}}}

Row ``i`` of every array belongs to ``ids[i]``; preprocess keeps the ingest manifest's (sorted) record order.
``S`` is ``data.image_size``. Every ``.npy`` opens with ``np.load(path, mmap_mode="r")``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.atomic import atomic_dir, atomic_write_json
from pipeline.config import LAYOUT_TARGETS, Params
from pipeline.data.images import read_image, read_index_mask, read_mask
from pipeline.data.manifest import Record, read_manifest
from pipeline.data.wound_layouts import tissue_names
from pipeline.errors import DataError
from pipeline.logs import progress
from pipeline.paths import MANIFEST

ARRAY_DTYPES: dict[str, np.dtype] = {
    "image": np.dtype(np.uint8),
    "mask": np.dtype(np.uint8),
    "tissue": np.dtype(np.uint8),
    "label": np.dtype(np.int64),
}
BASE_ARRAYS = ("image", "mask", "label")
"""The arrays of every layout; ``tissue`` is added where the masks are tissue index masks."""
CHUNK = 32  # rows per task handed to a worker process
# Seconds from creating a worker pool to its first result: the fork server imports the stage's module
# (torch, albumentations, OpenCV), 2.2 s on the 2-core benchmark machine (`make bench`, scaling part).
POOL_START_S = 2.5

Batch = dict[str, np.ndarray]


def run(params: Params, ingested: Path, out_dir: Path) -> None:
    """Resize every record of ``ingested/manifest.json`` into the array layout at ``out_dir`` (atomically)."""
    ingested = Path(ingested).resolve()
    manifest = read_manifest(ingested)
    unknown = sorted({r.label for r in manifest.records} - set(manifest.classes))
    if unknown:
        raise DataError(
            f"{ingested / MANIFEST}: labels {unknown} are not among the manifest classes {list(manifest.classes)}"
        )
    records = manifest.records
    size, channels = params.data.image_size, params.data.channels
    tissues = (
        tissue_names([t.name for t in params.data.tissues]) if "tissue" in LAYOUT_TARGETS[manifest.layout] else None
    )
    convert = functools.partial(
        _preprocess_chunk, ingested=ingested, classes=manifest.classes, size=size, channels=channels, tissues=tissues
    )
    chunks = [records[i : i + CHUNK] for i in range(0, len(records), CHUNK)]
    with atomic_dir(out_dir) as tmp:
        write_arrays(
            tmp,
            ids=[r.id for r in records],
            classes=manifest.classes,
            size=size,
            channels=channels,
            batches=map_chunks(convert, chunks, params.data.workers, "preprocess", len(records)),
            names=BASE_ARRAYS + ("tissue",) * (tissues is not None),
        )


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W)`` uint8 → ``(size, size)`` uint8; INTER_AREA if the pixel count drops, else INTER_LINEAR."""
    shrinking = image.shape[0] * image.shape[1] > size * size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def scale_pixels(image):
    """uint8 pixels (an array or a tensor of any shape) → float32 in [-1, 1], as ``x / 127.5 - 1``.

    The one definition of the model's input scale: training (:func:`pipeline.runtime.device.to_tensors`) and serving
    (:func:`pipeline.registry.inputs.read_input`) both call it, so the two cannot drift. A tensor is converted
    on its own device.
    """
    if isinstance(image, np.ndarray):
        return image.astype(np.float32) / 127.5 - 1.0
    return image.float().div_(127.5).sub_(1.0)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """``(H, W)`` uint8 mask (binary or class index) → ``(size, size)`` by nearest-neighbour interpolation."""
    return cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)


def _preprocess_chunk(
    records: Sequence[Record],
    ingested: Path,
    classes: Sequence[str],
    size: int,
    channels: int,
    tissues: Sequence[str] | None,
) -> Batch:
    """Rows of ``records``; ``tissues`` (index-mask class names) when each record's one mask is a tissue
    index mask, None when its masks are binary."""
    images, masks, tissue_masks = [], [], []
    for record in records:
        image = read_image(ingested / record.image, channels)
        mask_paths = [ingested / m for m in record.masks]
        index = None if tissues is None else read_index_mask(mask_paths[0], len(tissues), tissues)
        mask = read_mask(mask_paths) if index is None else (index > 0).astype(np.uint8)
        if mask.shape != image.shape[1:]:
            raise DataError(
                f"{mask_paths[0]}: mask is {mask.shape[1]}x{mask.shape[0]} px but its image "
                f"{ingested / record.image} is {image.shape[2]}x{image.shape[1]} px"
            )
        images.append(np.stack([resize_image(band, size) for band in image]))
        masks.append(resize_mask(mask, size))
        if index is not None:
            tissue_masks.append(resize_mask(index, size))
    batch = {
        "image": np.stack(images),
        "mask": np.stack(masks),
        "label": np.array([classes.index(r.label) for r in records], dtype=np.int64),
    }
    if tissue_masks:
        batch["tissue"] = np.stack(tissue_masks)
    return batch


def _single_threaded_cv2() -> None:
    cv2.setNumThreads(1)


def map_chunks(
    fn: Callable[[Any], Batch], chunks: Sequence[Any], workers: int, desc: str, total: int
) -> Iterator[Batch]:
    """Yield ``fn(chunk)`` for every chunk, in order, counting ``total`` rows (:func:`pipeline.logs.progress`).

    Chunks run in this process first. With ``workers > 1``, once the chunks left would take longer
    here, at the pace measured so far, than on a pool of ``workers`` processes including the pool's
    start-up (:data:`POOL_START_S`), the rest run on such a pool (``fn`` must be picklable). Its
    processes are forked from a clean fork server (not from this possibly multi-threaded process)
    that pre-imports ``fn``'s module once. A small dataset therefore never waits for a pool that
    would cost more than its whole stage. The output does not depend on ``workers``.
    """
    with progress(desc, "img", total) as bar:
        started, done = time.perf_counter(), 0
        while done < len(chunks):
            batch = fn(chunks[done])
            done += 1
            bar.update(len(batch["label"]))
            yield batch
            left = (time.perf_counter() - started) / done * (len(chunks) - done)
            if workers > 1 and left > POOL_START_S + left / workers:
                break
        if done == len(chunks):
            return
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([getattr(fn, "func", fn).__module__])
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_single_threaded_cv2)
        try:
            for batch in pool.map(fn, chunks[done:]):
                bar.update(len(batch["label"]))
                yield batch
        finally:
            pool.shutdown(cancel_futures=True)


def array_shapes(n: int, channels: int, size: int, names: Sequence[str] = BASE_ARRAYS) -> dict[str, tuple[int, ...]]:
    """Shapes of the arrays ``names`` for ``n`` rows."""
    shapes = {"image": (n, channels, size, size), "mask": (n, size, size), "tissue": (n, size, size), "label": (n,)}
    return {name: shapes[name] for name in names}


def write_arrays(
    folder: Path,
    ids: Sequence[str],
    classes: Sequence[str],
    size: int,
    channels: int,
    batches: Iterable[Batch],
    names: Sequence[str] = BASE_ARRAYS,
    **extra: Any,
) -> None:
    """Write the arrays ``names`` into ``folder``: rows from ``batches`` in order, then ``manifest.json``.

    ``batches`` must hold ``len(ids)`` rows in all; ``extra`` keys are added to the manifest.
    Arrays are filled through memory maps, so memory use is bounded by one batch.
    """
    shapes = array_shapes(len(ids), channels, size, names)
    arrays = {
        name: _allocated_memmap(folder / f"{name}.npy", ARRAY_DTYPES[name], shape) for name, shape in shapes.items()
    }
    row = 0
    for batch in batches:
        n = len(batch["label"])
        for name, array in arrays.items():
            array[row : row + n] = batch[name]
        row += n
    counts = np.bincount(arrays["label"], minlength=len(classes))
    for array in arrays.values():
        array.flush()
    del arrays
    atomic_write_json(
        folder / MANIFEST,
        {
            "ids": list(ids),
            "classes": list(classes),
            "class_counts": {c: int(n) for c, n in zip(classes, counts, strict=True)},
            "image_size": size,
            "channels": channels,
            "arrays": {
                name: {
                    "shape": list(shape),
                    "dtype": ARRAY_DTYPES[name].name,
                    "sha256": _sha256(folder / f"{name}.npy"),
                }
                for name, shape in shapes.items()
            },
            **extra,
        },
    )


def _allocated_memmap(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.memmap:
    """A new ``.npy`` file at ``path`` memory-mapped for writing, every block of it allocated up front: on a
    full device this raises OSError (ENOSPC) here, where writing into a sparse map would kill the process
    with SIGBUS at the first page the device has no room for."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    with open(path, "r+b") as fh:
        os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
    return array


def open_arrays(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read ``folder/manifest.json`` and memory-map its arrays read-only: ``(manifest, {name: array})``.

    A missing or malformed manifest, a missing array, or an array whose shape or dtype disagrees with the
    manifest raises DataError naming the file.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        names = [name for name in ARRAY_DTYPES if name in meta["arrays"]]
        if not set(BASE_ARRAYS) <= set(names):
            raise KeyError(f"arrays must list {list(BASE_ARRAYS)}")
        expected = array_shapes(len(meta["ids"]), meta["channels"], meta["image_size"], names)
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run the stage that writes {folder.name}/ first)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: malformed array manifest ({exc!r})") from None
    arrays = {}
    for name in expected:
        dtype = ARRAY_DTYPES[name]
        file = folder / f"{name}.npy"
        try:
            array = np.load(file, mmap_mode="r")
        except FileNotFoundError:
            raise DataError(f"{file}: missing (listed in {path})") from None
        except ValueError as exc:
            raise DataError(f"{file}: not a readable .npy array ({exc})") from None
        if array.shape != expected[name] or array.dtype != dtype:
            raise DataError(
                f"{file}: shape {array.shape} dtype {array.dtype}, but {path} implies {expected[name]} {dtype.name}"
            )
        arrays[name] = array
    return meta, arrays


def rows_of(meta: dict[str, Any], ids: Sequence[str], manifest: Path, wanted_by: Path) -> np.ndarray:
    """Row index ``(len(ids),)`` int64 of each id in the preprocessed arrays described by ``meta``.

    Raises DataError naming both files when ``wanted_by`` lists ids that were never preprocessed.
    """
    row_of = {id_: row for row, id_ in enumerate(meta["ids"])}
    missing = [i for i in ids if i not in row_of]
    if missing:
        raise DataError(
            f"{manifest}: {len(missing)} ids of {wanted_by} are not preprocessed (e.g. {missing[:3]}); rerun preprocess"
        )
    return np.asarray([row_of[i] for i in ids], dtype=np.int64)


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
