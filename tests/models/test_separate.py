"""The STL baseline: one whole network per task, each learning exactly as if it were trained alone."""

from __future__ import annotations

import copy

import pytest
import torch

from pipeline.balancers import build_balancer
from pipeline.balancers.base import forward_backward
from pipeline.models import build_model, model_classes, parameter_count
from pipeline.runtime.device import to_tensors
from tests.models.test_backbones import BATCH, WOUND, RandomRows, image_size, small_params


@pytest.mark.parametrize("model_name", sorted(model_classes()))
def test_each_task_gets_a_whole_network_of_its_own(model_name):
    params = small_params(model_name)
    torch.manual_seed(0)
    stl = build_model(params, WOUND, separate=True)
    assert stl.shared_parameters() == []
    groups = [{id(p) for p in stl.task_parameters(t.name)} for t in WOUND]
    assert not groups[0] & groups[1] and groups[0] | groups[1] == {id(p) for p in stl.parameters()}
    single = [build_model(params, (t,)) for t in WOUND]
    assert parameter_count(stl) == sum(parameter_count(m) for m in single)  # the STL parameter bill


def test_an_stl_step_gives_each_network_the_gradient_of_its_own_task_alone():
    params = small_params("unet")
    torch.manual_seed(0)
    stl = build_model(params, WOUND, separate=True)
    batch = to_tensors(RandomRows(BATCH, image_size("unet")).read(range(BATCH)), torch.device("cpu"))
    alone = {t.name: copy.deepcopy(stl.networks[t.name]) for t in WOUND}
    forward_backward(
        stl, build_balancer("stl", [t.name for t in WOUND], params), WOUND, [t.loss_fn() for t in WOUND], batch
    )
    for task in WOUND:
        network = alone[task.name]
        forward_backward(network, build_balancer("equal", [task.name], params), (task,), [task.loss_fn()], batch)
        for mine, own in zip(stl.networks[task.name].parameters(), network.parameters(), strict=True):
            torch.testing.assert_close(mine.grad, own.grad, rtol=1e-5, atol=1e-7)
