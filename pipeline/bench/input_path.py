"""The input path: can the data loader keep the model fed, and what does the augment stage add?

Loader vs model, at ``train.batch_size`` on fold 0 of a default-profile data root:

* loader: one batch as the training loop gets it — a random permutation's rows, sorted, gathered
  from the memory-mapped preprocessed + augmented arrays (:meth:`ArraySet.read`) and converted to
  tensors on the training device (:func:`to_tensors`);
* model: one training step of the ``equal`` balancer (forward, backward, Adam) on a batch already
  on the device.

``loader_headroom`` = loader samples/s ÷ model samples/s: how many times faster than the model the
loader delivers (the loop loads synchronously, so 1/headroom is the share of a step spent loading).

Augment stage vs bare albumentations: the stage (``augment.run`` with one process, and with
``data.workers`` processes) against a plain loop applying the same transforms, built once, to the
same training images held in memory, without seeding, reading or writing. Images/s of each.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import albumentations as A  # after pipeline.data.augment, which turns off albumentations' update check
import numpy as np
import torch

from pipeline.bench.balancers import contender, synchronizer, train_step
from pipeline.bench.timing import interleaved, median
from pipeline.config import Params, deep_merge, parse_params
from pipeline.data import augment
from pipeline.data.augment import TRANSFORMS
from pipeline.data.folds import ArraySet, load_fold
from pipeline.data.preprocess import open_arrays
from pipeline.runtime.device import select_device, to_tensors
from pipeline.tasks import build_tasks
from pipeline.train.loop import epoch_batches


def loader_batches(source: ArraySet, batch_size: int, device: torch.device, seed: int) -> Callable[[], dict]:
    """A callable returning the next training batch of ``source`` as the loop builds it, epoch after epoch."""

    def epochs():
        for epoch in itertools.count():
            for batch in epoch_batches(len(source), batch_size, seed, 0, epoch):
                yield np.sort(batch)

    rows = epochs()
    return lambda: to_tensors(source.read(next(rows)), device)


def loader_vs_model(params: Params, data_root: Path, rounds: int) -> dict[str, Any]:
    """Samples/s the loader delivers and the model consumes, interleaved batch by batch."""
    device = select_device(params.train.device)
    tasks = build_tasks(params)
    loss_fns = [t.loss_fn() for t in tasks]
    train = load_fold(data_root, 0).train
    batch_size = params.train.batch_size
    load = loader_batches(train, batch_size, device, params.seed)
    batch = load()
    model = contender("equal", params, tasks, device)
    model.model.train()
    seconds = interleaved(
        {"loader": load, "model": lambda: train_step(model, tasks, loss_fns, batch)},
        rounds=rounds,
        warmup=2,
        sync=synchronizer(device),
    )
    rate = {name: batch_size / median(s) for name, s in seconds.items()}
    return {
        "device": str(device),
        "batch_size": batch_size,
        "image_size": params.data.image_size,
        "train_rows": len(train),
        "loader_samples_per_s": rate["loader"],
        "model_samples_per_s": rate["model"],
        "loader_headroom": rate["loader"] / rate["model"],
    }


def _training_images(params: Params, data_root: Path) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """The preprocessed training images ``(N, S, S, C)`` and masks ``(N, S, S)`` in memory, and the
    augment stage's jobs on them as ``(index into those arrays, transform name)``."""
    _, jobs = augment.plan(params, data_root / "preprocessed", data_root / "split")
    rows = np.asarray([row for row, _, _ in jobs])
    arrays = open_arrays(data_root / "preprocessed")[1]
    images = np.ascontiguousarray(np.asarray(arrays["image"][rows]).transpose(0, 2, 3, 1))
    masks = np.asarray(arrays["mask"][rows])
    names = params.augment.transforms
    return images, masks, [(i, names[copy % len(names)]) for i, (_, _, copy) in enumerate(jobs)]


def augment_vs_bare(params: Params, data_root: Path, rounds: int) -> dict[str, Any]:
    """Images/s of the augment stage (1 and ``data.workers`` processes) and of a bare albumentations loop."""
    images, masks, jobs = _training_images(params, data_root)
    size = params.data.image_size
    transforms = {name: A.Compose([TRANSFORMS[name](params.augment, size)]) for name in {n for _, n in jobs}}

    def bare() -> None:
        for i, name in jobs:
            transforms[name](image=images[i], mask=masks[i])

    out = Path(tempfile.mkdtemp(prefix="mtl-bench-augment-"))

    def stage(workers: int) -> Callable[[], None]:
        staged = parse_params(deep_merge(params.model_dump(mode="json"), {"data": {"workers": workers}}), "bench")
        return lambda: augment.run(staged, data_root / "preprocessed", data_root / "split", out / f"w{workers}")

    contenders = {"bare_albumentations": bare, "stage_1_process": stage(1)}
    if params.data.workers > 1:
        contenders[f"stage_{params.data.workers}_processes"] = stage(params.data.workers)
    try:
        seconds = interleaved(contenders, rounds=rounds, warmup=1)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    rate = {name: len(jobs) / median(s) for name, s in seconds.items()}
    results: dict[str, Any] = {
        "images": len(jobs),
        "images_per_s": rate,
        "stage_vs_bare": rate["stage_1_process"] / rate["bare_albumentations"],
    }
    if params.data.workers > 1:
        results["stage_process_speedup"] = rate[f"stage_{params.data.workers}_processes"] / rate["stage_1_process"]
    return results


def run(params: Params, data_root: Path, rounds: int = 30, augment_rounds: int = 3) -> dict[str, Any]:
    """Both measurements on ``data_root`` (built for ``params``)."""
    return {
        "loader": loader_vs_model(params, data_root, rounds),
        "augment": augment_vs_bare(params, data_root, augment_rounds),
    }


def table(results: dict[str, Any]) -> list[str]:
    loader, aug = results["loader"], results["augment"]
    lines = [
        (
            f"loader {loader['loader_samples_per_s']:.0f} samples/s vs model {loader['model_samples_per_s']:.1f} "
            f"samples/s (batch {loader['batch_size']}, {loader['image_size']}px, {loader['device']}): "
            f"headroom {loader['loader_headroom']:.1f}×"
        ),
        "augment "
        + ", ".join(f"{name} {rate:.0f} img/s" for name, rate in aug["images_per_s"].items())
        + f" ({aug['images']} images): stage ÷ bare {aug['stage_vs_bare']:.2f}×",
    ]
    if "stage_process_speedup" in aug:
        lines.append(f"augment stage, process pool vs 1 process: {aug['stage_process_speedup']:.2f}×")
    return lines
