"""The stages' chunk scheduler: a process pool only when the work outlasts starting one."""

from __future__ import annotations

import os

import numpy as np

from pipeline.data import preprocess
from pipeline.data.preprocess import map_chunks


def _where(chunk: int) -> dict[str, np.ndarray]:
    """A one-row batch saying which chunk it is and which process computed it."""
    return {"label": np.array([os.getpid()]), "chunk": np.array([chunk])}


def _run(chunks: int, workers: int) -> tuple[list[int], list[int]]:
    batches = list(map_chunks(_where, list(range(chunks)), workers, "test", chunks))
    return [int(b["chunk"][0]) for b in batches], [int(b["label"][0]) for b in batches]


def test_work_shorter_than_a_pool_start_runs_in_this_process():
    order, pids = _run(6, workers=2)
    assert order == list(range(6))
    assert set(pids) == {os.getpid()}


def test_work_longer_than_a_pool_start_moves_to_the_pool_in_order(monkeypatch):
    monkeypatch.setattr(preprocess, "POOL_START_S", 0.0)  # any remaining work outlasts a free pool start
    order, pids = _run(6, workers=2)
    assert order == list(range(6))  # the output order never depends on where a chunk ran
    assert pids[0] == os.getpid()  # the first chunk measures the pace here
    assert os.getpid() not in pids[1:]


def test_one_worker_never_starts_a_pool(monkeypatch):
    monkeypatch.setattr(preprocess, "POOL_START_S", 0.0)
    assert set(_run(6, workers=1)[1]) == {os.getpid()}
