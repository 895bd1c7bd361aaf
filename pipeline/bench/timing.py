"""Interleaved wall-clock timing: every contender measured in every round, the order rotated each round."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any


def interleaved(
    contenders: Mapping[str, Callable[[], Any]],
    rounds: int,
    warmup: int = 1,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, list[float]]:
    """Seconds per call of each contender: ``warmup`` untimed calls each, then ``rounds`` rounds of one
    timed call each, round ``r`` starting at contender ``r mod n``. ``rounds`` is rounded up to a
    multiple of the ``n`` contenders, so each takes every position (first, after each other one) equally
    often: a contender always run after the same one would inherit its cache state.

    ``sync`` runs before starting and before stopping the clock (e.g. ``torch.cuda.synchronize``).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(contenders)
    rounds = -(-rounds // len(names)) * len(names)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            sync()
            start = time.perf_counter()
            contenders[name]()
            sync()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def median(samples: list[float]) -> float:
    """The median of ``samples`` (non-empty)."""
    return statistics.median(samples)


def spread(samples: list[float]) -> dict[str, float]:
    """``median``, ``min`` and ``max`` of ``samples`` and their count ``n``, for the JSON report."""
    return {"median": median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}
