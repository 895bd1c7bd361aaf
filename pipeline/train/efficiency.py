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

    CPU: ``time.perf_counter`` around each step. CUDA: a pair of CUDA events recorded on the current
    stream around each step, read once an epoch (at :meth:`end_epoch`, :meth:`summary` or
    :meth:`state_dict`), so timing never stalls the device mid-epoch; a step's time is then the span of
    the GPU work it launched. The first ``warmup_steps`` steps are timed but left out of the step figures:
    they include one-off costs (CUDA context and kernel loading, cuDNN autotuning, allocator growth) that
    say nothing about a balancer's cost.
    """

    def __init__(self, device: torch.device | str, warmup_steps: int = 1):
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.device = torch.device(device)
        self.warmup_steps = warmup_steps
        self._step_seconds: list[float] = []
        self.epoch_seconds: list[float] = []
        self._started: float | torch.cuda.Event | None = None
        self._pending: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []  # CUDA: recorded, not yet read

    @property
    def step_seconds(self) -> list[float]:
        """Every step's duration in seconds, in order (reads the CUDA events still pending)."""
        self._read_events()
        return self._step_seconds

    def start_step(self) -> None:
        if self.device.type == "cuda":
            self._started = torch.cuda.Event(enable_timing=True)
            self._started.record()
        else:
            self._started = time.perf_counter()

    def end_step(self) -> None:
        if self._started is None:
            raise RuntimeError("StepTimer.end_step() called without a matching start_step()")
        if isinstance(self._started, float):
            self._step_seconds.append(time.perf_counter() - self._started)
        else:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._pending.append((self._started, end))
        self._started = None

    def end_epoch(self, seconds: float) -> None:
        """Record one epoch's wall-clock duration in seconds (measured by the caller)."""
        self._read_events()
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
        self._step_seconds = list(state["step_seconds"])
        self._pending = []
        self.epoch_seconds = list(state["epoch_seconds"])

    def _read_events(self) -> None:
        """Turn the recorded CUDA event pairs into seconds (waits for the last one: once an epoch)."""
        if not self._pending:
            return
        self._pending[-1][1].synchronize()
        self._step_seconds += [start.elapsed_time(end) / 1000 for start, end in self._pending]
        self._pending = []


class PeakMemory:
    """Peak memory of this process since construction (or the last :meth:`reset`), in MiB.

    CUDA: the peak of memory held by tensors on ``device`` (``torch.cuda.max_memory_allocated``),
    not counting the CUDA context or blocks the caching allocator keeps free.

    Any other device (the CPU): the peak resident set size (RSS) of the whole process — interpreter, libraries and data
    included, not only tensors. On Linux the kernel's high-water mark (``VmHWM``) is reset by
    writing ``5`` to ``/proc/self/clear_refs``, so the figure covers this phase only, spikes inside
    a step included. Where that is not possible (other systems) ``ru_maxrss`` is reported instead:
    the lifetime peak of the process, which cannot be reset; a warning says so. The high-water mark
    is per process, so resetting it in one instance resets it for every other live instance too.
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
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
        peak = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        if peak is None:  # not Linux's /proc layout
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return int(peak.group(1)) / 1024

    def summary(self) -> dict[str, float]:
        """``peak_memory_mib``: see the class docstring."""
        return {"peak_memory_mib": self.peak_mib()}
