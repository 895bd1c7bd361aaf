"""Helpers for registry tests: params pointing MLflow at a sqlite store under the test's folder, models with
known outputs, and the train output of balancer ``equal`` (``models/equal/fold_<k>/best.pt`` + its ``folds.json``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import Params, deep_merge
from pipeline.models import build_model
from pipeline.models.base import MultiTaskModel
from pipeline.registry import promote as stage
from pipeline.tasks import build_tasks
from pipeline.train.checkpoint import save_checkpoint
from tests.conftest import tiny_params
from tests.folds_documents import write_folds

MODEL_NAME = "tiny"


def registry_params(root: Path, **overrides: Any) -> Params:
    """Tiny params, one candidate (balancer ``equal``, fold 0), MLflow in ``root/mlflow.db``, floors at 0."""
    return tiny_params(
        **deep_merge(
            {
                "model": {"width": 8},
                "train": {"balancers": ["equal"], "folds": [0]},
                "tracking": {
                    "uri": f"sqlite:///{root}/mlflow.db",
                    "experiment": "registry-test",
                    "system_metrics": False,
                },
                "registry": {"model_name": MODEL_NAME, "floors": {"lesion.dice": 0.0, "diagnosis.accuracy": 0.0}},
            },
            overrides,
        )
    )


def seeded_model(params: Params, seed: int = 0) -> MultiTaskModel:
    torch.manual_seed(seed)
    return build_model(params, build_tasks(params)).eval()


def constant_model(params: Params, lesion_logit: float, label: int) -> MultiTaskModel:
    """A model whose every pixel has logit ``lesion_logit`` and every image class ``label`` (logit 20 vs -20)."""
    model = seeded_model(params)
    with torch.no_grad():
        for task, value in (
            ("lesion", torch.tensor([lesion_logit])),
            ("diagnosis", torch.where(torch.arange(2) == label, 20.0, -20.0)),
        ):
            weight, bias = model.task_parameters(task)[-2:]  # the head's output layer
            weight.zero_()
            bias.copy_(value)
    return model


def write_checkpoints(work: Path, models: dict[int, MultiTaskModel], epoch: int = 0) -> None:
    """Write ``models`` ``{fold: model}`` as balancer ``equal``'s best checkpoints under ``work``, with
    validation scores that decrease with the fold (fold 0 is the best)."""
    folds = {}
    for fold, model in models.items():
        save_checkpoint(
            work / "models" / "equal" / f"fold_{fold}" / "best.pt", {"model": model.state_dict(), "epoch": epoch}
        )
        score = 0.5 - 0.1 * fold
        folds[fold] = {"val": {"lesion": {"dice": score}, "diagnosis": {"accuracy": score}}}
    write_folds(work / "metrics", "equal", folds)


def spread_model(params: Params, seed: int, images: torch.Tensor) -> MultiTaskModel:
    """A seeded model whose lesion logits on ``images`` ``(B, C, S, S)`` span a few units around 0, about half
    of the pixels on either side, and whose diagnosis probabilities spread over (0, 1), about half of the images
    on either side of 0.5; an untrained model's logits are all about 1e-3."""
    model = seeded_model(params, seed)
    with torch.no_grad():
        for task, scale in (("lesion", 1000.0), ("diagnosis", 10.0)):
            weight, bias = model.task_parameters(task)[-2:]  # the output layer
            weight.mul_(scale)
            bias.zero_()
        outputs = model(images)
        model.task_parameters("lesion")[-1].sub_(_middle(outputs["lesion"]))
        model.task_parameters("diagnosis")[-1][1].sub_(_middle(outputs["diagnosis"][:, 1] - outputs["diagnosis"][:, 0]))
    return model


def _middle(values: torch.Tensor) -> torch.Tensor:
    """Halfway between the two middle values of ``values``: no value is at it (unless they tie)."""
    ordered = values.flatten().sort().values
    k = len(ordered) // 2
    return (ordered[k - 1] + ordered[k]) / 2


def mean_probabilities(models: Sequence[MultiTaskModel], images: torch.Tensor) -> dict[str, np.ndarray]:
    """The mean over ``models`` of each one's lesion probability ``(B, S, S)`` (sigmoid) and diagnosis class
    probabilities ``(B, K)`` (softmax) on ``images``, computed directly from their logits."""
    with torch.no_grad():
        outputs = [model.eval()(images) for model in models]
    return {
        "lesion": np.mean([torch.sigmoid(out["lesion"][:, 0]).numpy() for out in outputs], axis=0),
        "diagnosis": np.mean([torch.softmax(out["diagnosis"], dim=1).numpy() for out in outputs], axis=0),
    }


def promote(params: Params, work: Path, data: Path, model: MultiTaskModel | None = None, epoch: int = 0) -> dict:
    """Write ``model`` (unless None: keep what ``work`` holds) as fold 0, the only fold, under ``work`` and
    run the promote stage on ``data``; the report goes to ``work/promotion.json``."""
    if model is not None:
        write_checkpoints(work, {0: model}, epoch)
    return stage.run(params, work / "models", work / "metrics", data, work / "promotion.json")
