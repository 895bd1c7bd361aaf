"""Gradient all-reduce overlapped with backward, and validation decided once for all ranks (real gloo ranks)."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.data.folds import ArraySet
from pipeline.runtime.inference import evaluate
from pipeline.tasks import Task
from pipeline.train.distributed import TorchComm
from pipeline.train.grad_sync import GradientReducer
from tests.train.gloo_ranks import run_ranks

SEG = Task("lesion", "binary_segmentation", "mask", 1)
CLS = Task("diagnosis", "classification", "label", 2)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 3)
    )


def _local_gradients(rank: int) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    net = _net()
    net(torch.randn(2, 1, 10, 10, generator=torch.Generator().manual_seed(rank))).square().sum().backward()
    return net, {n: p.grad.clone() for n, p in net.named_parameters()}


class _CountingComm(TorchComm):
    """TorchComm that counts the all-reduces started."""

    started = 0

    def start_all_reduce_sum(self, tensor):
        self.started += 1
        return super().start_all_reduce_sum(tensor)


def _reduce_on_rank(rank: int) -> dict:
    net, local = _local_gradients(rank)
    net.zero_grad(set_to_none=True)
    frozen = torch.nn.Parameter(torch.zeros(3))  # takes part in nothing: keeps no gradient
    comm = _CountingComm()
    # registered first, so bucketed last (reverse order): a parameter without a gradient holds back its
    # bucket and, buckets starting in order, every later one until finish()
    reducer = GradientReducer([frozen, *net.parameters()], comm, bucket_mib=1e-4)  # about a bucket per layer
    reducer.arm()
    net(torch.randn(2, 1, 10, 10, generator=torch.Generator().manual_seed(rank))).square().sum().backward()
    started_during_backward = comm.started
    reducer.finish()
    return {
        "local": local,
        "reduced": {n: p.grad.clone() for n, p in net.named_parameters()},
        "started_during_backward": started_during_backward,
        "buckets": len(reducer.buckets),
        "frozen_grad": frozen.grad,
    }


def test_bucketed_all_reduce_starts_during_backward_and_gives_every_rank_the_mean_gradient():
    ranks = run_ranks(_reduce_on_rank)
    for name, grad in ranks[0]["reduced"].items():
        mean = (ranks[0]["local"][name] + ranks[1]["local"][name]) / 2
        assert torch.equal(grad, mean), name  # exactly the flat all-reduce's mean
        assert torch.equal(ranks[1]["reduced"][name], grad), name
    # every bucket of gradients produced by the backward pass started before it ended; only the one of the
    # parameter without a gradient waited for finish()
    assert ranks[0]["started_during_backward"] == ranks[0]["buckets"] - 1 >= 3
    assert ranks[0]["frozen_grad"] is None


def _validation_on_rank(rank: int) -> tuple[torch.Tensor, dict]:
    """Both ranks evaluate the same set; rank 1's model differs in the last bits (as cuDNN autotuning or
    another GPU model can make it)."""
    torch.manual_seed(0)
    model = _TwoHeads()
    if rank == 1:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + 1e-6)
    g = np.random.default_rng(3)
    arrays = {
        "image": g.integers(0, 255, (10, 1, 8, 8), dtype=np.uint8),
        "mask": (g.random((10, 8, 8)) > 0.5).astype(np.uint8),
        "label": g.integers(0, 2, 10),
    }
    source = ArraySet.from_arrays(["benign", "malignant"], arrays, [str(i) for i in range(10)])
    return evaluate(model, (SEG, CLS), source, 3, torch.device("cpu"), comm=TorchComm())


class _TwoHeads(torch.nn.Module):
    task_names = ("lesion", "diagnosis")

    def __init__(self):
        super().__init__()
        self.seg = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.cls = torch.nn.Linear(64, 2)

    def forward(self, x):
        return {"lesion": self.seg(x), "diagnosis": self.cls(x.flatten(1))}


def test_ranks_whose_validation_passes_differ_still_take_one_decision():
    (loss0, metrics0), (loss1, metrics1) = run_ranks(_validation_on_rank)
    assert torch.equal(loss0, loss1)  # early stopping and the LR plateau read the same number on every rank
    assert metrics0 == metrics1
