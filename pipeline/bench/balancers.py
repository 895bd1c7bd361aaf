"""Balancer overhead: step time and peak memory of every balancer (and STL, MT-CooL) relative to ``equal``.

Every balancer trains its own copy of the same initial model on the same fixed batches. Timing:
after warm-up, one optimiser step of each balancer per round, the order rotated every round, and
the median over rounds is reported (:func:`pipeline.bench.timing.interleaved`). Peak memory: on
CUDA the allocator's peak during the measured steps; on the CPU the process's RSS high-water mark
cannot be reset, so each balancer is run in a fresh subprocess (alternating balancers,
``memory_rounds`` times) and the rise of the peak RSS above the RSS before its first step is
reported (MiB, median over rounds).
"""

from __future__ import annotations

import itertools
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from pipeline.balancers import balancer_class, build_balancer
from pipeline.balancers.base import Balancer, TrainStep
from pipeline.bench.timing import interleaved, median
from pipeline.config import Params
from pipeline.models.base import MultiTaskModel
from pipeline.runtime.comm import LocalComm
from pipeline.runtime.compute_format import ComputeFormat
from pipeline.runtime.device import select_device, to_tensors
from pipeline.tasks import Task, build_tasks

WARMUP_STEPS = 3


@dataclass
class Contender:
    """One balancer's own model, balancer state and optimiser."""

    name: str
    model: MultiTaskModel
    balancer: Balancer
    optimizer: torch.optim.Optimizer
    compute: ComputeFormat


def synthetic_rows(
    tasks: tuple[Task, ...], n: int, image_size: int, channels: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """``n`` reproducible rows in the layout the data stages store: ``image`` ``(n, C, S, S)`` uint8 noise,
    ``mask`` ``(n, S, S)`` uint8 with a square lesion of side S/3 (1 inside), ``label`` ``(n,)`` int64 random
    classes and, per multi-class segmentation task, its target ``(n, S, S)`` uint8: the same square filled
    with one random class of 1..K-1 per row."""
    rng = np.random.default_rng(seed)
    classes = next((t.out_channels for t in tasks if not t.is_segmentation), 2)
    mask = np.zeros((n, image_size, image_size), dtype=np.uint8)
    side = image_size // 3
    for row, (y, x) in zip(mask, rng.integers(0, image_size // 2, (n, 2))):
        row[y : y + side, x : x + side] = 1
    rows: dict[str, np.ndarray] = {
        "image": rng.integers(0, 256, (n, channels, image_size, image_size), dtype=np.uint8),
        "mask": mask,
        "label": rng.integers(0, classes, n, dtype=np.int64),
    }
    for t in tasks:
        if t.kind == "multiclass_segmentation":
            rows[t.target] = mask * rng.integers(1, t.out_channels, (n, 1, 1), dtype=np.uint8)
    return rows


def fixed_batches(
    tasks: tuple[Task, ...], n: int, batch_size: int, image_size: int, channels: int, device: torch.device
) -> list[dict[str, torch.Tensor]]:
    """``n`` reproducible batches of :func:`synthetic_rows` on ``device``, as the training loop feeds them
    (:func:`~pipeline.runtime.device.to_tensors`: images ``(B, C, S, S)`` in [-1, 1])."""
    rows = synthetic_rows(tasks, n * batch_size, image_size, channels)
    return [
        to_tensors({k: v[i * batch_size : (i + 1) * batch_size] for k, v in rows.items()}, device) for i in range(n)
    ]


def contender(name: str, params: Params, tasks: tuple[Task, ...], device: torch.device) -> Contender:
    """A fresh model (seeded: identical for every balancer; one network per task for ``stl``), the balancer
    ``name`` and Adam over both, all on ``device``, in the precision and layout of ``params.train`` (``amp``,
    ``channels_last``)."""
    torch.manual_seed(params.seed)
    compute = ComputeFormat.from_params(params.train, device)
    model = compute.prepare_model(balancer_class(name).build_network(params, tasks).to(device))
    balancer = build_balancer(name, [t.name for t in tasks], params).to(device)
    optimizer = torch.optim.Adam([{"params": group} for group in balancer.parameter_groups(model)], lr=params.train.lr)
    return Contender(name, model, balancer, optimizer, compute)


def train_step(
    c: Contender, tasks: tuple[Task, ...], loss_fns: list[torch.nn.Module], batch: dict[str, torch.Tensor]
) -> None:
    """One optimiser step of ``c`` on ``batch``, as the training loop takes it (one process, no accumulation)."""
    c.balancer.train_step(
        TrainStep(c.model, c.optimizer, tasks, loss_fns, [batch], lambda micro: None, c.compute, LocalComm())
    )


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for the device's queued work (CUDA), so that a timed step covers it; nothing on the CPU."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def measure_step_times(
    params: Params, balancers: tuple[str, ...], steps: int, batch_size: int, image_size: int
) -> dict[str, list[float]]:
    """Interleaved per-step wall times (s) of each balancer on the same batches, after a warm-up."""
    device = select_device(params.train.device)
    tasks = build_tasks(params)
    loss_fns = [t.loss_fn() for t in tasks]
    batches = fixed_batches(tasks, 4, batch_size, image_size, params.data.channels, device)
    contenders = {b: contender(b, params, tasks, device) for b in balancers}
    for c in contenders.values():
        c.model.train()

    def stepper(c: Contender) -> Callable[[], None]:
        cycle = itertools.cycle(batches)  # every balancer sees the same sequence of batches
        return lambda: train_step(c, tasks, loss_fns, next(cycle))

    return interleaved(
        {b: stepper(c) for b, c in contenders.items()},
        rounds=steps,
        warmup=WARMUP_STEPS,
        sync=synchronizer(device),
    )


def peak_memory_mib(params: Params, balancer: str, steps: int, batch_size: int, image_size: int) -> float:
    """Peak memory rise (MiB) of ``steps`` training steps of ``balancer``, measured in this process.

    CUDA: allocator peak minus memory allocated before the first step. CPU: peak RSS minus RSS before
    the first step (call this in a fresh process, see module docstring).
    """
    device = select_device(params.train.device)
    tasks = build_tasks(params)
    loss_fns = [t.loss_fn() for t in tasks]
    batches = fixed_batches(tasks, 2, batch_size, image_size, params.data.channels, device)
    c = contender(balancer, params, tasks, device)
    c.model.train()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        for i in range(steps):
            train_step(c, tasks, loss_fns, batches[i % 2])
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    before = psutil.Process().memory_info().rss
    for i in range(steps):
        train_step(c, tasks, loss_fns, batches[i % 2])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return (peak - before) / 2**20


def _memory_in_subprocess(params_path: Path | None, balancer: str, batch_size: int, image_size: int) -> float:
    """:func:`peak_memory_mib` in a fresh interpreter, which reads the params at ``params_path``."""
    if params_path is None:
        raise ValueError("measuring CPU memory needs the params file the subprocess reads (params_path)")
    code = (
        "import sys; from pipeline.config import load_params; from pipeline.bench.balancers import peak_memory_mib;"
        f"print(peak_memory_mib(load_params(sys.argv[1]), {balancer!r}, 3, {batch_size}, {image_size}))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(params_path)], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def default_image_size(device: torch.device) -> int:
    """The side (px) the balancer overhead is measured at: 256 on a GPU, 128 on the CPU."""
    return 256 if device.type == "cuda" else 128


def run(
    params: Params,
    params_path: Path | None,
    steps: int = 30,
    batch_size: int = 16,
    image_size: int | None = None,
    memory_rounds: int = 3,
) -> dict[str, Any]:
    """Step time and peak memory of every method of ``train.balancers``, and of STL (the baseline MT-CooL's networks
    per task are measured against) whether listed or not, and their ratios to ``equal``.

        ``params_path`` holds ``params`` for the CPU memory subprocesses; with ``memory_rounds = 0`` on the CPU
        memory is not measured (``peak_memory_mib`` and its ratio are None) and no path is needed.
    """
    balancers = tuple(dict.fromkeys(("equal", *params.train.balancers, "stl")))
    device = select_device(params.train.device)
    image_size = image_size or default_image_size(device)
    times = measure_step_times(params, balancers, steps, batch_size, image_size)
    memory: dict[str, list[float]] = {b: [] for b in balancers}
    for _ in range(memory_rounds if device.type == "cpu" else 1):
        for b in balancers:
            memory[b].append(
                _memory_in_subprocess(params_path, b, batch_size, image_size)
                if device.type == "cpu"
                else peak_memory_mib(params, b, 3, batch_size, image_size)
            )
    median_t = {b: 1e3 * median(v) for b, v in times.items()}
    max_t = {b: 1e3 * max(v) for b, v in times.items()}
    median_m = {b: median(v) if v else None for b, v in memory.items()}
    return {
        "device": str(device),
        "model": params.model.name,
        "batch_size": batch_size,
        "image_size": image_size,
        "steps": len(times["equal"]),
        "torch_threads": torch.get_num_threads(),
        "balancers": {
            b: {
                "step_ms_median": median_t[b],
                "step_ms_max": max_t[b],
                "peak_memory_mib": median_m[b],
                "time_ratio_vs_equal": median_t[b] / median_t["equal"],
                "max_time_ratio_vs_equal": max_t[b] / max_t["equal"],
                "memory_ratio_vs_equal": None
                if (m := median_m[b]) is None or (e := median_m["equal"]) is None
                else m / e,
            }
            for b in balancers
        },
    }


def table(results: dict[str, Any]) -> list[str]:
    """The printed table of :func:`run`'s results."""
    lines = [
        (
            f"{results['model']} batch {results['batch_size']} at {results['image_size']}px on {results['device']} "
            f"({results['torch_threads']} threads, median of {results['steps']} interleaved steps)"
        ),
        f"{'balancer':<12} {'step ms':>9} {'× equal':>8} {'max ms':>9} {'× equal':>8} {'peak MiB':>9} {'× equal':>8}",
    ]
    for b, r in results["balancers"].items():
        memory = (
            "not measured"
            if r["peak_memory_mib"] is None
            else (f"{r['peak_memory_mib']:9.1f} {r['memory_ratio_vs_equal']:8.3f}")
        )
        lines.append(
            f"{b:<12} {r['step_ms_median']:9.1f} {r['time_ratio_vs_equal']:8.3f} "
            f"{r['step_ms_max']:9.1f} {r['max_time_ratio_vs_equal']:8.3f} {memory}"
        )
    return lines
