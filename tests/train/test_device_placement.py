"""Everything a training step touches lives on the training device (checked on PyTorch's ``meta`` device).

A ``meta`` tensor has a device but no data: an operation mixing it with a CPU tensor of more than one
element fails as a CUDA tensor would, and reading it back to the host (``.item()``, ``.tolist()``,
``.cpu()``) fails too. So a trainer built for ``meta`` that gets through a micro-batch and an optimiser
step keeps its state on the device and reads nothing back per micro-batch, as a CUDA run must.
"""

from __future__ import annotations

import pytest
import torch

from pipeline.balancers import balancer_classes
from pipeline.balancers.base import TrainStep
from pipeline.data.folds import load_fold
from pipeline.runtime.device import to_tensors
from pipeline.tasks import build_tasks
from pipeline.train.loop import Trainer, epoch_batches
from tests.conftest import tiny_params

META = torch.device("meta")


LEARNED_PER_STEP = ("uncertainty", "gradnorm")  # their weights change every step, on the device


@pytest.mark.parametrize("balancer", sorted(balancer_classes()))
def test_a_trainer_keeps_every_optimised_tensor_on_its_device_and_reads_nothing_back(tiny_data, balancer, monkeypatch):
    params = tiny_params(train={"batch_size": 4})
    trainer = Trainer(params, build_tasks(params), balancer, load_fold(tiny_data, 0), fold=0, device=META)
    optimised = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert {p.device for p in optimised} == {META}
    assert trainer.balancer.loss_weights().device == META
    if balancer in LEARNED_PER_STEP:
        assert trainer.balancer.weights().device == META
    assert {b.device for b in trainer.model.buffers()} == {META}

    rows = epoch_batches(len(trainer.data.train), 4, params.seed, 0, 0)[0]
    batch = to_tensors(trainer.data.train.read(rows), META)
    # GradNorm's own weight update is left out, as before: off CUDA its Adam counts steps on the host by design
    monkeypatch.setattr(trainer.balancer, "step", lambda comm, skipped=None: None)
    gradients: dict[int, torch.device] = {}  # what each optimiser step (MT-CooL takes one per task) found
    trainer.optimizer.register_step_pre_hook(
        lambda optimizer, args, kwargs: gradients.update(
            {id(p): p.grad.device for p in optimised if p.grad is not None}
        )
    )
    losses = trainer.balancer.train_step(  # Adam's update runs on the device too
        TrainStep(
            trainer.model,
            trainer.optimizer,
            trainer.tasks,
            trainer.loss_fns,
            [batch],
            lambda micro: None,
            trainer.compute,
            trainer.comm,
        )
    )
    assert losses.device == META
    assert len(gradients) == len(optimised) and set(gradients.values()) == {META}
