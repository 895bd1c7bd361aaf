"""Every registered backbone (MODELS): logits of each head's shape for the breast and wound task sets, one real
training step under every balancer, and heads that own their parameters while GradNorm's layer sees them all."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.balancers import balancer_classes
from pipeline.config import Params
from pipeline.data.folds import FoldData
from pipeline.errors import ConfigError
from pipeline.models import build_model, model_classes
from pipeline.models.base import MultiTaskModel
from pipeline.tasks import Task
from pipeline.train.loop import Trainer
from tests.conftest import tiny_params

MODELS = tuple(model_classes())
BALANCERS = tuple(balancer_classes())

BREAST = (
    Task("lesion", "binary_segmentation", "mask", 1, ("background", "foreground")),
    Task("diagnosis", "classification", "label", 2, ("benign", "malignant")),
)
WOUND = (
    Task("wound", "binary_segmentation", "mask", 1, ("background", "foreground")),
    Task("tissue", "multiclass_segmentation", "tissue", 5, tuple(f"class_{i}" for i in range(5))),
)
TASK_SETS = {"breast": BREAST, "wound": WOUND}
LOGITS_PER_TASK = {"lesion": 1, "diagnosis": 2, "wound": 1, "tissue": 5}
BATCH = 2


def image_size(model_name: str) -> int:
    """32 px, the smallest the config allows; swin_unetr's 1/32 bottleneck needs 64."""
    return 64 if model_name == "swin_unetr" else 32


def small_params(model_name: str) -> Params:
    """The tiny profile with ``model_name`` at the smallest ``model.width``, one epoch of batches of two."""
    return tiny_params(
        model={"name": model_name, "width": 8},
        data={"image_size": image_size(model_name)},
        train={"epochs": 1, "batch_size": BATCH},
    )


def small_model(model_name: str, tasks: tuple[Task, ...]) -> MultiTaskModel:
    torch.manual_seed(0)
    return build_model(small_params(model_name), tasks)


class RandomRows:
    """``n`` random rows in the layout of :class:`pipeline.data.folds.ArraySet`: uint8 images
    ``(n, 1, S, S)``, masks ``(n, S, S)`` in {0, 1}, tissue masks ``(n, S, S)`` in 0..4, labels ``(n,)``
    in {0, 1}."""

    def __init__(self, n: int, size: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.arrays = {
            "image": rng.integers(0, 256, (n, 1, size, size), dtype=np.uint8),
            "mask": rng.integers(0, 2, (n, size, size), dtype=np.uint8),
            "tissue": rng.integers(0, 5, (n, size, size), dtype=np.uint8),
            "label": rng.integers(0, 2, n, dtype=np.int64),
        }
        self.ids = self.source_ids = tuple(f"row{i}" for i in range(n))
        self.classes = ("benign", "malignant")

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, indices, names=None) -> dict[str, np.ndarray]:
        idx = np.asarray(indices, dtype=np.int64)
        return {k: v[idx] for k, v in self.arrays.items() if names is None or k in names}


@pytest.mark.parametrize("task_set", TASK_SETS)
@pytest.mark.parametrize("model_name", MODELS)
def test_every_head_returns_logits_of_its_task_shape(model_name, task_set):
    size = image_size(model_name)
    outputs = small_model(model_name, TASK_SETS[task_set])(torch.randn(BATCH, 1, size, size))
    assert set(outputs) == {t.name for t in TASK_SETS[task_set]}
    for t in TASK_SETS[task_set]:
        spatial = (size, size) if t.is_segmentation else ()
        assert outputs[t.name].shape == (BATCH, LOGITS_PER_TASK[t.name], *spatial)


@pytest.mark.parametrize("task_set", TASK_SETS)
@pytest.mark.parametrize("balancer", BALANCERS)
@pytest.mark.parametrize("model_name", MODELS)
def test_one_training_step_gives_finite_losses_and_moves_every_weight(model_name, balancer, task_set):
    tasks, rows = TASK_SETS[task_set], RandomRows(BATCH, image_size(model_name))
    trainer = Trainer(small_params(model_name), tasks, balancer, FoldData(train=rows, val=rows), fold=0)
    # weights of layers, not biases and norms: a bias right before a normalisation has no gradient; STL's
    # networks share nothing, so there every network's weights must move
    weights = [p for p in trainer.model.parameters() if p.ndim > 1]
    before = [p.detach().clone() for p in weights]
    record = trainer.fit().history[0]  # one epoch of len(rows) / batch_size = 1 optimiser step
    losses = [record[f"{kind}_loss/{t.name}"] for kind in ("train", "val") for t in tasks]
    assert all(math.isfinite(v) for v in losses), losses
    unchanged = [tuple(p.shape) for p, b in zip(weights, before) if torch.equal(p, b)]
    assert not unchanged, f"{len(unchanged)} of {len(weights)} weights did not move: {unchanged}"


@pytest.mark.parametrize("model_name", MODELS)
def test_heads_own_disjoint_parameters_and_the_groups_cover_the_model(model_name):
    model = small_model(model_name, BREAST + WOUND)
    groups = {"shared": model.shared_parameters()} | {n: model.task_parameters(n) for n in model.task_names}
    ids = {name: {id(p) for p in group} for name, group in groups.items()}
    assert all(ids.values()), "every group owns parameters"
    assert sum(len(s) for s in ids.values()) == len(set().union(*ids.values())), "a parameter is in two groups"
    assert set().union(*ids.values()) == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("model_name", MODELS)
def test_every_task_gradient_passes_through_the_last_shared_layer(model_name):
    model = small_model(model_name, BREAST + WOUND).eval()
    size = image_size(model_name)
    w = list(model.last_shared_layer.parameters())
    assert {id(p) for p in w} <= {id(p) for p in model.shared_parameters()}
    outputs = model(torch.randn(BATCH, 1, size, size))
    for name, logits in outputs.items():
        grads = torch.autograd.grad(logits.square().mean(), w, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name} bypasses last_shared_layer"


@pytest.mark.parametrize("model_name", MODELS)
def test_the_last_shared_layer_is_the_last_weight_layer_the_trunk_runs(model_name):
    # GradNorm's norms at W are those of the trunk's top, as the method prescribes, only if no shared
    # convolution or linear layer runs after W
    model = small_model(model_name, BREAST).eval()
    size = image_size(model_name)
    shared = {id(p) for p in model.shared_parameters()}
    weight_layers = [
        m for m in model.modules() if any(p.ndim > 1 and id(p) in shared for p in m.parameters(recurse=False))
    ]
    ran: list[nn.Module] = []

    def record(module: nn.Module, inputs, output) -> None:
        ran.append(module)

    hooks = [m.register_forward_hook(record) for m in {*weight_layers, model.last_shared_layer}]
    try:
        model.encode(torch.randn(BATCH, 1, size, size))
    finally:
        for h in hooks:
            h.remove()
    after = ran[len(ran) - ran[::-1].index(model.last_shared_layer) :]
    assert not after, f"weight layers run after last_shared_layer: {[type(m).__name__ for m in after]}"


@pytest.mark.parametrize("model_name", [m for m in MODELS if m != "ssc_resnet34"])
def test_backbones_without_pretrained_weights_reject_a_pretrained_encoder(model_name):
    p = small_params(model_name)
    p = p.model_copy(update={"model": p.model.model_copy(update={"pretrained_encoder": "resnet34.pth"})})
    with pytest.raises(ConfigError, match="model.pretrained_encoder"):
        build_model(p, BREAST)


def test_swin_unetr_refuses_images_smaller_than_its_bottleneck_needs():
    p = tiny_params(model={"name": "swin_unetr"}, data={"image_size": 32})
    with pytest.raises(ConfigError, match="data.image_size = 32.*swin_unetr.*64"):
        build_model(p, BREAST)
