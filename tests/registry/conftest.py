"""Helpers for registry tests: params pointing MLflow at a sqlite store under the test's folder, models with
known outputs, and a one-candidate train output (``models/equal/fold_0/best.pt`` + its ``folds.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pipeline.config import Params, deep_merge
from pipeline.models import build_model
from pipeline.models.base import MultiTaskModel
from pipeline.registry import stage
from pipeline.tasks import build_tasks
from pipeline.train.checkpoint import save_checkpoint
from tests.conftest import tiny_params

MODEL_NAME = "tiny"


def registry_params(root: Path, **overrides: Any) -> Params:
    """Tiny params, one candidate (balancer ``equal``, fold 0), MLflow in ``root/mlflow.db``, floors at 0."""
    return tiny_params(**deep_merge({
        "model": {"width": 8},
        "train": {"balancers": ["equal"], "folds": [0]},
        "tracking": {"uri": f"sqlite:///{root}/mlflow.db", "experiment": "registry-test", "system_metrics": False},
        "registry": {"model_name": MODEL_NAME, "floors": {"lesion.dice": 0.0, "diagnosis.accuracy": 0.0}},
    }, overrides))


def seeded_model(params: Params, seed: int = 0) -> MultiTaskModel:
    torch.manual_seed(seed)
    return build_model(params, build_tasks(params)).eval()


def constant_model(params: Params, lesion_logit: float, label: int) -> MultiTaskModel:
    """A model whose every pixel has logit ``lesion_logit`` and every image class ``label`` (logit 20 vs -20)."""
    model = seeded_model(params)
    with torch.no_grad():
        for task, value in (("lesion", torch.tensor([lesion_logit])),
                            ("diagnosis", torch.where(torch.arange(2) == label, 20.0, -20.0))):
            weight, bias = model.task_parameters(task)[-2:]  # the head's output layer
            weight.zero_()
            bias.copy_(value)
    return model


def promote(params: Params, work: Path, data: Path, model: MultiTaskModel | None = None, epoch: int = 0) -> dict:
    """Write ``model`` (unless None: keep what ``work`` holds) as the only candidate under ``work`` and
    run the promote stage on ``data``; the report goes to ``work/promotion.json``."""
    if model is not None:
        save_checkpoint(work / "models" / "equal" / "fold_0" / "best.pt", {"model": model.state_dict(), "epoch": epoch})
        folds = {"folds": {"fold_0": {"val": {"lesion": {"dice": 0.5}, "diagnosis": {"accuracy": 0.5}}}}}
        (work / "metrics" / "equal").mkdir(parents=True, exist_ok=True)
        (work / "metrics" / "equal" / "folds.json").write_text(json.dumps(folds))
    return stage.run(params, work / "models", work / "metrics", data, work / "promotion.json")
