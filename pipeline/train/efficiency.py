"""Efficiency figures of a training run: step and epoch times, peak memory.

Both classes report plain floats with the unit in the key, ready to log or write as JSON.
"""

from __future__ import annotations

import math
import re
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

MIB = 2**20
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


class StepTimer:
    """Wall-clock time of each training step and of each epoch.

    On CUDA, :meth:`start_step` and :meth:`end_step` synchronise the device first, so a step's time
    covers all GPU work it launched (the loop pays one synchronisation per step for that). The first
    ``warmup_steps`` steps are timed but left out of the step figures: they include one-off costs
    (CUDA context and kernel loading, cuDNN autotuning, allocator growth) that say nothing about a
    balancer's cost.
    """

    def __init__(self, device: torch.device | str, warmup_steps: int = 1):
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.device = torch.device(device)
        self.warmup_steps = warmup_steps
        self.step_seconds: list[float] = []
        self.epoch_seconds: list[float] = []
        self._started: float | None = None

    def start_step(self) -> None:
        self._synchronize()
        self._started = time.perf_counter()

    def end_step(self) -> None:
        if self._started is None:
            raise RuntimeError("StepTimer.end_step() called without a matching start_step()")
        self._synchronize()
        self.step_seconds.append(time.perf_counter() - self._started)
        self._started = None

    def end_epoch(self, seconds: float) -> None:
        """Record one epoch's wall-clock duration in seconds (measured by the caller)."""
        self.epoch_seconds.append(seconds)

    def summary(self) -> dict[str, float]:
        """``step_time_median_ms`` and ``step_time_max_ms`` over the steps after the warm-up, and
        ``epoch_time_max_s`` over all epochs; ``nan`` where nothing was measured."""
        steps = self.step_seconds[self.warmup_steps :]
        return {
            "step_time_median_ms": 1000 * statistics.median(steps) if steps else math.nan,
            "step_time_max_ms": 1000 * max(steps) if steps else math.nan,
            "epoch_time_max_s": max(self.epoch_seconds) if self.epoch_seconds else math.nan,
        }

    def state_dict(self) -> dict[str, list[float]]:
        """The recorded times, so that a resumed run reports figures over all its epochs."""
        return {"step_seconds": list(self.step_seconds), "epoch_seconds": list(self.epoch_seconds)}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        self.step_seconds = list(state["step_seconds"])
        self.epoch_seconds = list(state["epoch_seconds"])

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class PeakMemory:
    """Peak memory of this process since construction (or the last :meth:`reset`), in MiB.

    CUDA: the peak of memory held by tensors on ``device`` (``torch.cuda.max_memory_allocated``),
    not counting the CUDA context or blocks the caching allocator keeps free.

    CPU: the peak resident set size (RSS) of the whole process — interpreter, libraries and data
    included, not only tensors. On Linux the kernel's high-water mark (``VmHWM``) is reset by
    writing ``5`` to ``/proc/self/clear_refs``, so the figure covers this phase only, spikes inside
    a step included. Where that is not possible (other systems) ``ru_maxrss`` is reported instead:
    the lifetime peak of the process, which cannot be reset; a warning says so. The high-water mark
    is per process, so resetting it in one instance resets it for every other live instance too.
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        if self.device.type not in ("cuda", "cpu"):
            raise ValueError(f"PeakMemory supports cuda and cpu devices, got {self.device}")
        self.reset()

    def reset(self) -> None:
        """Start a new measurement phase."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            warnings.warn(
                "cannot reset the peak RSS on this system: the CPU peak memory is the lifetime peak of the process",
                stacklevel=2,
            )

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / MIB
        try:
            status = _STATUS.read_text()
        except OSError:
            kib_or_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return kib_or_bytes / (MIB if sys.platform == "darwin" else 1024)
        return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1)) / 1024

    def summary(self) -> dict[str, float]:
        """``peak_memory_mib``: see the class docstring."""
        return {"peak_memory_mib": self.peak_mib()}
