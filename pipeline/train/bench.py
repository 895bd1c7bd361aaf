"""Balancer overhead: step time and peak memory of every balancer relative to ``equal``.

Every balancer trains its own copy of the same initial model on the same fixed batches. Timing:
after warm-up, one optimiser step of each balancer per round, the order rotated every round, and
the median over rounds is reported (these machines are noisy; interleaving exposes all balancers to
the same noise). Peak memory: on CUDA the allocator's peak during the measured steps; on the CPU
the process's RSS high-water mark cannot be reset, so each balancer is run in a fresh subprocess
(alternating balancers, ``memory_rounds`` times) and the rise of the peak RSS above the RSS before
its first step is reported (MiB, median over rounds).
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch

from pipeline import paths
from pipeline.atomic import atomic_write_json
from pipeline.balancers import build_balancer
from pipeline.balancers.base import Balancer
from pipeline.config import Params
from pipeline.models import build_model
from pipeline.models.base import MultiTaskModel
from pipeline.tasks import Task, build_tasks
from pipeline.train.comm import LocalComm
from pipeline.train.loop import forward_backward, select_device

WARMUP_STEPS = 3


@dataclass
class _Contender:
    name: str
    model: MultiTaskModel
    balancer: Balancer
    optimizer: torch.optim.Optimizer


def fixed_batches(tasks: tuple[Task, ...], n: int, batch_size: int, image_size: int, channels: int,
                  device: torch.device) -> list[dict[str, torch.Tensor]]:
    """``n`` reproducible batches: images ``(B, C, S, S)`` in [-1, 1], square lesion masks, random labels."""
    g = torch.Generator().manual_seed(0)
    classes = next((t.out_channels for t in tasks if not t.is_segmentation), 2)
    batches = []
    for _ in range(n):
        mask = torch.zeros(batch_size, image_size, image_size, dtype=torch.long)
        for i in range(batch_size):
            y, x = torch.randint(0, image_size // 2, (2,), generator=g).tolist()
            mask[i, y : y + image_size // 3, x : x + image_size // 3] = 1
        batch = {
            "image": torch.rand(batch_size, channels, image_size, image_size, generator=g) * 2 - 1,
            "mask": mask,
            "label": torch.randint(0, classes, (batch_size,), generator=g),
        }
        batches.append({k: v.to(device) for k, v in batch.items()})
    return batches


def _contender(name: str, params: Params, tasks: tuple[Task, ...], device: torch.device) -> _Contender:
    torch.manual_seed(params.seed)
    model = build_model(params, tasks).to(device)
    balancer = build_balancer(name, [t.name for t in tasks], params)
    optimizer = torch.optim.Adam(list(model.parameters()) + balancer.parameters(), lr=params.train.lr)
    return _Contender(name, model, balancer, optimizer)


def _step(c: _Contender, tasks, loss_fns, batch) -> None:
    forward_backward(c.model, c.balancer, tasks, loss_fns, batch)
    c.balancer.step(LocalComm())
    c.optimizer.step()
    c.optimizer.zero_grad(set_to_none=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_step_times(params: Params, balancers: tuple[str, ...], steps: int, batch_size: int,
                       image_size: int) -> dict[str, list[float]]:
    """Interleaved per-step wall times (ms) of each balancer on the same batches."""
    device = select_device(params.train.device)
    tasks = build_tasks(params)
    loss_fns = [t.loss_fn() for t in tasks]
    batches = fixed_batches(tasks, 4, batch_size, image_size, params.data.channels, device)
    contenders = [_contender(b, params, tasks, device) for b in balancers]
    for c in contenders:
        c.model.train()
        for i in range(WARMUP_STEPS):
            _step(c, tasks, loss_fns, batches[i % len(batches)])
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    for r in range(steps):
        batch = batches[r % len(batches)]
        for c in contenders[r % len(contenders):] + contenders[: r % len(contenders)]:
            _sync(device)
            start = time.perf_counter()
            _step(c, tasks, loss_fns, batch)
            _sync(device)
            times[c.name].append((time.perf_counter() - start) * 1e3)
    return times


def peak_memory_mib(params: Params, balancer: str, steps: int, batch_size: int, image_size: int) -> float:
    """Peak memory rise (MiB) of ``steps`` training steps of ``balancer``, measured in this process.

    CUDA: allocator peak minus memory allocated before the first step. CPU: peak RSS minus RSS before
    the first step (call this in a fresh process, see module docstring).
    """
    device = select_device(params.train.device)
    tasks = build_tasks(params)
    loss_fns = [t.loss_fn() for t in tasks]
    batches = fixed_batches(tasks, 2, batch_size, image_size, params.data.channels, device)
    c = _contender(balancer, params, tasks, device)
    c.model.train()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        for i in range(steps):
            _step(c, tasks, loss_fns, batches[i % 2])
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    before = psutil.Process().memory_info().rss
    for i in range(steps):
        _step(c, tasks, loss_fns, batches[i % 2])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return (peak - before) / 2**20


def _memory_in_subprocess(params_path: Path, balancer: str, batch_size: int, image_size: int) -> float:
    code = (
        "import sys; from pipeline.config import load_params; from pipeline.train.bench import peak_memory_mib;"
        f"print(peak_memory_mib(load_params(sys.argv[1]), {balancer!r}, 3, {batch_size}, {image_size}))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(params_path)], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def run(params: Params, steps: int, image_size: int, batch_size: int, params_path: Path = Path("params.yaml"),
        memory_rounds: int = 3, out: Path = paths.REPORTS / "bench_balancers.json") -> dict[str, Any]:
    """Measure, print a table of ratios against ``equal`` and write ``out``; returns the results."""
    balancers = ("equal",) + tuple(b for b in params.train.balancers if b != "equal")
    times = measure_step_times(params, balancers, steps, batch_size, image_size)
    device = select_device(params.train.device)
    memory: dict[str, list[float]] = {b: [] for b in balancers}
    for _ in range(memory_rounds if device.type == "cpu" else 1):
        for b in balancers:
            memory[b].append(
                _memory_in_subprocess(params_path, b, batch_size, image_size)
                if device.type == "cpu"
                else peak_memory_mib(params, b, 3, batch_size, image_size)
            )
    median_t = {b: statistics.median(v) for b, v in times.items()}
    median_m = {b: statistics.median(v) for b, v in memory.items()}
    results = {
        "device": str(device),
        "model": params.model.name,
        "batch_size": batch_size,
        "image_size": image_size,
        "steps": steps,
        "torch_threads": torch.get_num_threads(),
        "balancers": {
            b: {
                "step_ms_median": median_t[b],
                "step_ms_max": max(times[b]),
                "peak_memory_mib": median_m[b],
                "time_ratio_vs_equal": median_t[b] / median_t["equal"],
                "memory_ratio_vs_equal": median_m[b] / median_m["equal"],
            }
            for b in balancers
        },
    }
    atomic_write_json(out, results)
    print(f"{params.model.name} batch {batch_size} at {image_size}px on {device} ({torch.get_num_threads()} threads)")
    print(f"{'balancer':<12} {'step ms':>9} {'× equal':>8} {'peak MiB':>9} {'× equal':>8}")
    for b, r in results["balancers"].items():
        print(f"{b:<12} {r['step_ms_median']:9.1f} {r['time_ratio_vs_equal']:8.3f} "
              f"{r['peak_memory_mib']:9.1f} {r['memory_ratio_vs_equal']:8.3f}")
    print(f"written {out}")
    return results
