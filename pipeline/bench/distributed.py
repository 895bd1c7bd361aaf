"""Distributed overhead: the same training job in-process, as a 1-worker Ray Train job, and across 2 workers.

Three configurations of one job (``equal`` balancer, fold 0, ``EPOCHS`` epochs) on the same data:

* ``in_process``: :class:`Trainer` in this process with ``CPUS`` torch threads, checkpointing to a
  local folder after each epoch (as the Ray job checkpoints through Ray Train);
* ``ray_1x{CPUS}``: a Ray Train job with 1 worker of ``CPUS`` CPUs and threads;
* ``ray_{CPUS}x1``: ``CPUS`` workers of 1 CPU and 1 thread each (gloo all-reduce of the gradients).

An epoch's time is the interval between consecutive end-of-epoch callbacks, which run after the
epoch's checkpoint is saved (for Ray: reported and persisted), so it covers training, validation
and checkpointing but not cluster or worker-group start-up; epoch 0 (warm-up) is left out. It is
split into *compute* (training + validation, as rank 0's :class:`StepTimer` recorded it in the
checkpoint) and the rest (*checkpoint*: saving, and for Ray reporting and persisting). The
configurations alternate over ``rounds`` runs each (order rotated), and medians are reported.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch

from pipeline.bench.timing import median
from pipeline.config import Params, deep_merge, parse_params
from pipeline.data.folds import load_fold
from pipeline.tasks import build_tasks
from pipeline.train import cluster
from pipeline.train.checkpoint import LAST, DirectoryStore, read_checkpoint
from pipeline.train.distributed import run_fold
from pipeline.train.loop import Trainer

EPOCHS = 4
CPUS = 2


@dataclass(frozen=True)
class EpochClock:
    """End-of-epoch callback appending ``time.monotonic()`` to ``path`` (picklable: it runs in a Ray worker)."""

    path: str

    def __call__(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(f"{time.monotonic()}\n")


def epoch_seconds(path: Path) -> list[float]:
    """Durations (s) of epochs 1.. from an :class:`EpochClock` file (epoch 0 has no start mark and is warm-up)."""
    marks = [float(line) for line in Path(path).read_text(encoding="utf-8").split()]
    return [b - a for a, b in itertools.pairwise(marks)]


def compute_seconds(run_dir: Path) -> list[float]:
    """Training + validation seconds of epochs 1.., from the run's final checkpoint ``last.pt``."""
    return read_checkpoint(Path(run_dir) / LAST)["timer"]["epoch_seconds"][1:]


def job_params(params: Params, workers: int, threads: int, storage: Path, epochs: int = EPOCHS) -> Params:
    """``params`` for one configuration: ``epochs`` epochs of fold 0, ``workers`` × ``threads``, on the CPU
    (a measurement of CPU workers against CPU threads, also on a machine with fewer GPUs than workers)."""
    return parse_params(
        deep_merge(
            params.model_dump(mode="json"),
            {
                "train": {
                    "epochs": epochs,
                    "folds": [0],
                    "num_threads": threads,
                    "early_stopping_patience": epochs,
                    "device": "cpu",
                },
                "ray": {
                    "num_workers": workers,
                    "cpus_per_worker": threads,
                    "storage_path": str(storage),
                    "max_failures": 0,
                },
            },
        ),
        "distributed benchmark params",
    )


def _in_process(params: Params, data_root: Path, work: Path, clock: EpochClock) -> None:
    threads = torch.get_num_threads()
    try:
        trainer = Trainer(params, build_tasks(params), "equal", load_fold(data_root, 0), fold=0)
        trainer.fit(DirectoryStore(work), on_epoch=clock)
    finally:
        torch.set_num_threads(threads)


def run(params: Params, data_root: Path, rounds: int = 2, epochs_per_run: int = EPOCHS) -> dict[str, Any]:
    """Median epoch time of each configuration (epochs 1.. of each run: the first warms up) and the ratios
    ``ray_1x2 / in_process`` and ``ray_2x1 / ray_1x2``."""
    work = Path(tempfile.mkdtemp(prefix="mtl-bench-distributed-"))
    configs = {
        "in_process": (1, CPUS),
        f"ray_1x{CPUS}": (1, CPUS),
        f"ray_{CPUS}x1": (CPUS, 1),
    }
    epochs: dict[str, list[float]] = {name: [] for name in configs}
    computes: dict[str, list[float]] = {name: [] for name in configs}
    started_ray = not ray.is_initialized()
    try:
        cluster.connect(job_params(params, CPUS, 1, work))
        names = list(configs)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                workers, threads = configs[name]
                run_dir = work / f"{name}-{r}"
                run_dir.mkdir()
                clock = EpochClock(str(run_dir / "epochs.txt"))
                job = job_params(params, workers, threads, work / "ray_results", epochs_per_run)
                if name == "in_process":
                    _in_process(job, data_root, run_dir, clock)
                else:
                    run_fold(
                        job, "equal", 0, data_root, run_dir, f"bench-{name}-{r}-{os.getpid()}", epoch_callback=clock
                    )
                epochs[name].extend(epoch_seconds(run_dir / "epochs.txt"))
                computes[name].extend(compute_seconds(run_dir))
    finally:
        if started_ray:
            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    per_epoch = {name: median(s) for name, s in epochs.items()}
    one, many = f"ray_1x{CPUS}", f"ray_{CPUS}x1"
    return {
        "epochs_per_run": epochs_per_run,
        "rounds": rounds,
        "train_rows": len(load_fold(data_root, 0).train),
        "epoch_s_median": per_epoch,
        "compute_s_median": {name: median(s) for name, s in computes.items()},
        "checkpoint_s_median": {
            name: median([e - c for e, c in zip(epochs[name], computes[name])]) for name in configs
        },
        "epoch_samples": {name: len(s) for name, s in epochs.items()},
        "ray_1_worker_vs_in_process": per_epoch[one] / per_epoch["in_process"],
        "ray_overhead_s_per_epoch": per_epoch[one] - per_epoch["in_process"],
        f"workers_{CPUS}x1_vs_1x{CPUS}": per_epoch[many] / per_epoch[one],
    }


def table(results: dict[str, Any]) -> list[str]:
    epoch, compute, saving = results["epoch_s_median"], results["compute_s_median"], results["checkpoint_s_median"]
    lines = [
        f"epoch s ({results['train_rows']} training rows, median of {results['rounds']} runs × "
        f"{results['epochs_per_run'] - 1} epochs): "
        + ", ".join(f"{n} {epoch[n]:.2f} (compute {compute[n]:.2f}, checkpoint {saving[n]:.2f})" for n in epoch)
    ]
    lines.append(
        f"Ray Train, 1 worker ÷ in-process: {results['ray_1_worker_vs_in_process']:.3f}× "
        f"({results['ray_overhead_s_per_epoch']:+.2f} s per epoch)"
    )
    ratio = next(k for k in results if k.startswith("workers_"))
    lines.append(f"{CPUS} workers × 1 thread ÷ 1 worker × {CPUS} threads: {results[ratio]:.3f}×")
    return lines
