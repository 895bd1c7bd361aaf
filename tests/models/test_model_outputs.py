"""Both backbones: head outputs for any task set, and a clean shared/task parameter split."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import Params, parse_params
from pipeline.errors import ConfigError
from pipeline.models import build_model
from pipeline.tasks import build_tasks

SEG = {"name": "lesion", "kind": "binary_segmentation", "target": "mask"}
WOUND = {"name": "wound", "kind": "binary_segmentation", "target": "mask"}
TISSUE = {"name": "tissue", "kind": "multiclass_segmentation", "target": "tissue"}
CLS = {"name": "diagnosis", "kind": "classification", "target": "label"}
TASK_SETS = {"seg+cls": [SEG, CLS], "seg+tissue": [WOUND, TISSUE]}
EXPECTED_CHANNELS = {"lesion": 1, "wound": 1, "tissue": 5, "diagnosis": 2}  # tissue: background + the 4 default tissues


def params(model: str, tasks: list[dict], channels: int = 1) -> Params:
    workload = "wound" if TISSUE in tasks else "busi"  # tissue masks come with the wound layouts
    return parse_params(
        {"workload": workload, "model": {"name": model}, "tasks": tasks, "data": {"channels": channels}}
    )


@pytest.mark.parametrize("model_name", ["ssc_resnet34", "attention_unet"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("task_set", TASK_SETS)
def test_every_task_gets_logits_of_its_shape(model_name, channels, task_set):
    p = params(model_name, TASK_SETS[task_set], channels)
    model = build_model(p, build_tasks(p))
    outputs = model(torch.randn(2, channels, 64, 64))
    assert set(outputs) == {t["name"] for t in TASK_SETS[task_set]}
    for name, logits in outputs.items():
        if name == "diagnosis":
            assert logits.shape == (2, EXPECTED_CHANNELS[name])
        else:
            assert logits.shape == (2, EXPECTED_CHANNELS[name], 64, 64)


@pytest.mark.parametrize("model_name", ["ssc_resnet34", "attention_unet"])
def test_parameters_split_into_shared_and_disjoint_task_sets(model_name):
    p = params(model_name, TASK_SETS["seg+tissue"])
    model = build_model(p, build_tasks(p))
    groups = [model.shared_parameters()] + [model.task_parameters(name) for name in model.task_names]
    ids = [{id(q) for q in group} for group in groups]
    assert all(ids), "every group owns parameters"
    assert sum(len(s) for s in ids) == len(set().union(*ids)), "groups overlap"
    assert set().union(*ids) == {id(q) for q in model.parameters()}
    assert {id(q) for q in model.last_shared_layer.parameters()} <= ids[0]


@pytest.mark.parametrize("model_name", ["ssc_resnet34", "attention_unet"])
def test_last_shared_layer_reaches_the_heads_only_through_the_last_feature(model_name):
    p = params(model_name, TASK_SETS["seg+cls"])
    model = build_model(p, build_tasks(p)).eval()  # no dropout: both decodes must compute the same
    features = model.encode(torch.randn(2, 1, 64, 64))
    shared = list(model.last_shared_layer.parameters())
    loss = sum(logits.square().mean() for logits in model.decode(features).values())
    direct = torch.autograd.grad(loss, shared, retain_graph=True)
    detached = [f.detach().requires_grad_() for f in features]
    detached_loss = sum(logits.square().mean() for logits in model.decode(detached).values())
    last_grad = torch.autograd.grad(detached_loss, detached[-1])[0]
    through_last = torch.autograd.grad(features[-1], shared, grad_outputs=last_grad)
    for a, b in zip(direct, through_last):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_unknown_model_name_is_a_config_error_listing_the_choices():
    p = params("ssc_resnet34", [SEG, CLS])
    p = p.model_copy(update={"model": p.model.model_copy(update={"name": "vgg16"})})
    with pytest.raises(ConfigError, match="'vgg16'.*attention_unet.*ssc_resnet34"):
        build_model(p, build_tasks(p))


def test_attention_unet_rejects_a_pretrained_encoder():
    p = parse_params({"model": {"name": "attention_unet", "pretrained_encoder": "resnet34.pth"}})
    with pytest.raises(ConfigError, match="model.pretrained_encoder"):
        build_model(p, build_tasks(p))
