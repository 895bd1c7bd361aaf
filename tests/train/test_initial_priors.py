"""Segmentation heads start by predicting the training set's class frequencies, not p = 0.5 everywhere."""

import numpy as np
import pytest
import torch

from pipeline.data.folds import load_fold
from pipeline.models import build_model, model_classes
from pipeline.tasks import Task, build_tasks
from pipeline.train.loop import Trainer
from tests.conftest import tiny_params


@pytest.mark.parametrize("balancer", ["equal", "stl"])
def test_the_lesion_logit_bias_starts_at_the_training_masks_foreground_fraction(tiny_data, balancer):
    params = tiny_params()
    fold = load_fold(tiny_data, 0)
    masks = fold.train.read(np.arange(len(fold.train)), ["mask"])["mask"]
    trainer = Trainer(params, build_tasks(params), balancer, fold, fold=0)
    bias = trainer.model.logit_layer("lesion").bias
    assert torch.sigmoid(bias).item() == pytest.approx(float(np.mean(masks == 1)), rel=1e-5)


def test_prior_logits_give_back_the_class_frequencies_through_the_tasks_activation():
    binary = Task("lesion", "binary_segmentation", "mask", 1)
    assert torch.sigmoid(binary.prior_logits(np.array([90, 10]))).tolist() == pytest.approx([0.1])
    tissue = Task("tissue", "multiclass_segmentation", "mask", 4)
    counts = np.array([70, 20, 10, 0])
    p = torch.softmax(tissue.prior_logits(counts), 0)
    assert p.tolist() == pytest.approx([0.7, 0.2, 0.1, 0.0], abs=2e-4)  # an absent class: 1e-4, finite


@pytest.mark.parametrize("name", sorted(model_classes()))
def test_every_backbone_names_the_layer_whose_bias_is_the_logit_offset(name):
    params = tiny_params(model={"name": name}, data={"image_size": 64})
    model = build_model(params, build_tasks(params)).eval()
    model.start_at_priors({"lesion": torch.tensor([-2.5])})
    with torch.no_grad():
        model.logit_layer("lesion").weight.zero_()  # nothing after this layer: the logits are its bias alone
        logits = model(torch.randn(2, 1, 64, 64))["lesion"]
    assert torch.equal(logits, torch.full_like(logits, -2.5))
