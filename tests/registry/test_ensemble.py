"""A fold ensemble's probabilities are the mean of its members' probabilities, for every kind of task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.registry.pyfunc import MultiTaskPyfunc
from pipeline.tasks import build_tasks
from pipeline.train.checkpoint import save_checkpoint
from tests.registry.conftest import registry_params, seeded_model


@pytest.mark.parametrize("workload", ["busi", "wound"])  # binary + classification; binary + multi-class maps
def test_ensemble_probabilities_are_the_mean_of_its_members_probabilities(tmp_path, workload):
    params = registry_params(tmp_path, workload=workload, registry={"floors": {}})
    tasks = build_tasks(params)
    checkpoints = []
    for seed in (1, 2, 3):
        model = seeded_model(params, seed)
        with torch.no_grad():
            for task in tasks:  # untrained logits are about 1e-3: spread them over a few units
                model.task_parameters(task.name)[-2].mul_(300 * seed)
        checkpoints.append(tmp_path / f"fold_{seed}.pt")
        save_checkpoint(checkpoints[-1], {"model": model.state_dict(), "epoch": 0})
    size, channels = params.data.image_size, params.data.channels
    images = np.random.default_rng(0).uniform(-1, 1, (4, channels, size, size)).astype(np.float32)

    loaded = [MultiTaskPyfunc().load(params, [path]) for path in checkpoints]
    members = [member.predict(None, images) for member in loaded]
    ensemble = MultiTaskPyfunc().load(params, checkpoints).predict(None, images)
    with torch.no_grad():
        logits = [member.network(torch.from_numpy(images)) for member in loaded]
    for task in tasks:
        mean = np.mean([np.stack(frame[task.name]) for frame in members], axis=0)
        got = np.stack(ensemble[task.name])
        shape = {
            "binary_segmentation": (size, size),
            "multiclass_segmentation": (task.out_channels, size, size),
            "classification": (task.out_channels,),
        }[task.kind]
        assert got.shape == mean.shape == (4, *shape)
        np.testing.assert_allclose(got, mean, rtol=0, atol=2e-6)
        averaged_logits = torch.stack([x[task.name] for x in logits]).mean(dim=0)
        probabilities = (
            torch.sigmoid(averaged_logits[:, 0])
            if task.kind == "binary_segmentation"
            else (torch.softmax(averaged_logits, dim=1))
        )
        assert np.abs(probabilities.numpy() - mean).max() > 0.01  # not the probabilities of the mean logits
        if task.kind == "classification":
            names = [task.class_names[i] for i in mean.argmax(axis=1)]
            assert list(ensemble[f"{task.name}_class"]) == names
