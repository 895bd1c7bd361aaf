"""A registered model is rebuilt as the network of the method that trained it: one with a head per task, STL's
networks per task, or MT-CooL's fused networks (its fusion settings travel in the model's config)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mlflow.pyfunc import PythonModelContext

from pipeline.balancers import balancer_class
from pipeline.registry.pyfunc import CHECKPOINT, MultiTaskPyfunc, model_config
from pipeline.tasks import build_tasks
from pipeline.train.checkpoint import save_checkpoint
from tests.registry.conftest import registry_params


def _context(config, checkpoint) -> PythonModelContext:
    return PythonModelContext(artifacts={CHECKPOINT: str(checkpoint)}, model_config=config)


@pytest.mark.parametrize("method", ["equal", "stl", "mtcool"])
def test_the_served_model_predicts_what_the_trained_network_predicts(tmp_path, method):
    params = registry_params(tmp_path, balancer={"mtcool": {"fusion": "add", "fusion_at": "every_scale"}})
    tasks = build_tasks(params)
    torch.manual_seed(0)
    network = balancer_class(method).build_network(params, tasks).eval()
    save_checkpoint(tmp_path / "best.pt", {"model": network.state_dict(), "epoch": 0})
    size, channels = params.data.image_size, params.data.channels
    images = np.random.default_rng(0).uniform(-1, 1, (2, channels, size, size)).astype(np.float32)

    served = MultiTaskPyfunc()
    served.load_context(_context(model_config(params, method), tmp_path / "best.pt"))
    with torch.no_grad():
        expected = torch.sigmoid(network(torch.from_numpy(images))["lesion"][:, 0]).numpy()
    np.testing.assert_allclose(np.stack(served.predict(None, images)["lesion"]), expected, rtol=0, atol=1e-6)


def test_a_version_registered_before_methods_were_named_loads_as_it_was_trained(tmp_path):
    params = registry_params(tmp_path)
    torch.manual_seed(0)
    network = balancer_class("stl").build_network(params, build_tasks(params))
    save_checkpoint(tmp_path / "best.pt", {"model": network.state_dict(), "epoch": 0})
    config = model_config(params, "stl")
    del config["balancer"]
    config["separate_tasks"] = True  # what such a version's config says instead

    served = MultiTaskPyfunc()
    served.load_context(_context(config, tmp_path / "best.pt"))
    assert type(served.network).__name__ == "SeparateTaskModels"
