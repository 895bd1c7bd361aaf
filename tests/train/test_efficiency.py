"""Efficiency figures: step/epoch times on known sleeps (loose bounds), peak memory sees a big tensor."""

import math
import subprocess
import sys
import time

import pytest
import torch

from pipeline.train.efficiency import StepTimer

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def _timed_steps(timer: StepTimer, sleeps_ms: list[int]) -> None:
    for ms in sleeps_ms:
        timer.start_step()
        time.sleep(ms / 1000)
        timer.end_step()


def test_step_times_median_and_longest():
    timer = StepTimer("cpu", warmup_steps=0)
    _timed_steps(timer, [5, 5, 5, 5, 200])
    summary = timer.summary()
    assert 5 <= summary["step_time_median_ms"] < 200
    assert summary["step_time_max_ms"] >= 200


def test_warmup_steps_are_left_out_of_step_figures():
    timer = StepTimer("cpu", warmup_steps=1)
    _timed_steps(timer, [300, 5, 5])
    assert timer.summary()["step_time_max_ms"] < 300


def test_longest_epoch_and_nothing_measured():
    timer = StepTimer("cpu")
    assert all(math.isnan(v) for v in timer.summary().values())
    timer.end_epoch(1.5)
    timer.end_epoch(4.0)
    timer.end_epoch(2.0)
    assert timer.summary()["epoch_time_max_s"] == 4.0


def test_end_step_needs_start_step():
    with pytest.raises(RuntimeError, match="start_step"):
        StepTimer("cpu").end_step()


_PEAK_SEES_TENSOR = """
import torch
from pipeline.train.efficiency import PeakMemory
memory = PeakMemory({device!r})
before = memory.peak_mib()
big = torch.ones(256 * 2**20 // 4, device={device!r})  # 256 MiB, every page written
after = memory.summary()["peak_memory_mib"]
assert after >= before + 200, (before, after)
"""


@pytest.mark.parametrize("device", DEVICES)
def test_peak_memory_sees_a_large_tensor(device):
    # A fresh interpreter: in a long test session the allocator may hand back pages an earlier test
    # freed but the process still holds, and the resident set would not grow.
    subprocess.run([sys.executable, "-c", _PEAK_SEES_TENSOR.format(device=device)], check=True, timeout=120)


@pytest.mark.parametrize(
    "device",
    [
        pytest.param("cpu", marks=pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")),
        DEVICES[1],
    ],
)
def test_reset_starts_a_new_phase(device):
    # A fresh interpreter, for the reason test_peak_memory_sees_a_large_tensor gives: in a long session the
    # tensor can land in pages the process already holds, and neither peak moves.
    subprocess.run([sys.executable, "-c", _RESET_STARTS_A_NEW_PHASE.format(device=device)], check=True, timeout=120)


_RESET_STARTS_A_NEW_PHASE = """
import torch
from pipeline.train.efficiency import PeakMemory
memory = PeakMemory({device!r})
big = torch.ones(256 * 2**20 // 4, device={device!r})  # 256 MiB, every page written
with_tensor = memory.peak_mib()
del big
memory.reset()
assert memory.peak_mib() < with_tensor - 200, (with_tensor, memory.peak_mib())
"""
