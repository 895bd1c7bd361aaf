"""The registered model: an MLflow pyfunc ``PythonModel`` that rebuilds the network from its params and
checkpoint(s), so ``mlflow.pyfunc.load_model("models:/<name>@champion")`` serves it.

Input: images ``(B, C, S, S)`` float32, preprocessed as training saw them — grey (``C = data.channels``
= 1) or RGB (3), resized to ``S = data.image_size`` and scaled to [-1, 1] (``x / 127.5 - 1`` of the
uint8 level); :mod:`pipeline.registry.inputs` does this for image files.

Output: a pandas DataFrame, one row per image, with per task (MLflow's pyfunc and its scoring server
accept a DataFrame of arrays, not a dict of per-task arrays):

- binary segmentation ``<task>``: ``(S, S)`` float32 foreground probability (sigmoid of the logit);
- multi-class segmentation ``<task>``: ``(K, S, S)`` float32 class probabilities (softmax over K);
- classification ``<task>``: ``(K,)`` float32 class probabilities (softmax) and ``<task>_class``, the
  name of the most probable class.

The model's ``model_config`` holds the params that rebuild the network (``workload``, ``data.layout``,
``data.image_size``, ``data.channels``, ``data.classes``, ``data.tissues``, ``tasks``, ``model``),
``balancer`` (the method that trained it, which says what network it is: one with a head per task, STL's or
MT-CooL's networks per task) and ``members``, the number of training
checkpoints (``["model"]`` is the state dict, loaded with ``weights_only=True``) among its artifacts
(:func:`member_keys`): one is a fold model, several a fold ensemble whose probabilities are the mean of its
members' (:mod:`pipeline.evaluate.ensemble`). A config without ``members`` has one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel, PythonModelContext

from pipeline.balancers import balancer_class
from pipeline.config import Params, parse_params
from pipeline.errors import DataError
from pipeline.evaluate.ensemble import FoldEnsemble
from pipeline.models.base import MultiTaskModel
from pipeline.tasks import Task, build_tasks
from pipeline.train.checkpoint import load_checkpoint

CHECKPOINT = "checkpoint"
"""Artifact key of a model's training checkpoint (``checkpoint_<i>`` for member ``i`` of several)."""
CPU = torch.device("cpu")


def member_keys(members: int) -> list[str]:
    """Artifact keys of a model's ``members`` training checkpoints, in member order."""
    return [CHECKPOINT] if members == 1 else [f"{CHECKPOINT}_{i}" for i in range(members)]


def model_config(params: Params, balancer: str = "equal", members: int = 1) -> dict[str, Any]:
    """The ``model_config`` logged with the model: the params that rebuild network and preprocessing (the
    methods' settings included: MT-CooL's fusion shapes its network), the ``balancer`` whose network the
    checkpoints hold and the number of ``members``.

    ``model.pretrained_encoder`` is dropped: the weights come from the checkpoint, and the encoder file
    need not exist where the model is served. ``registry`` is kept so that the params validate.
    """
    include: dict[str, bool | set[str]] = {
        "workload": True,
        "data": {"layout", "image_size", "channels", "classes", "tissues"},
        "tasks": True,
        "model": True,
        "registry": True,
        "balancer": True,
    }
    dumped = params.model_dump(mode="json", include=include)
    dumped["model"]["pretrained_encoder"] = None
    return {"params": dumped, "balancer": balancer, "members": members}


def model_params(config: Mapping[str, Any]) -> Params:
    """The params of a model's :func:`model_config` (others at their defaults)."""
    return parse_params(config["params"], "registered model config")


def probability_frame(tasks: Sequence[Task], logits: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """Network outputs ``{task: logits}`` (shapes as in :class:`~pipeline.models.base.MultiTaskModel`) →
    the output DataFrame described in the module docstring."""
    columns: dict[str, list[Any]] = {}
    for task in tasks:
        values = logits[task.name].detach().float().cpu()
        if task.kind == "binary_segmentation":
            probabilities = torch.sigmoid(values[:, 0])
        else:
            probabilities = torch.softmax(values, dim=1)
        columns[task.name] = list(probabilities.numpy())
        if task.kind == "classification":
            columns[f"{task.name}_class"] = [task.class_names[i] for i in probabilities.argmax(dim=1).tolist()]
    return pd.DataFrame(columns)


class MultiTaskPyfunc(PythonModel):
    """The network of one training checkpoint, or the fold ensemble of several, behind MLflow's pyfunc
    interface (on the CPU as MLflow loads it).

    After :meth:`load` (or MLflow's :meth:`load_context`): ``params``, ``tasks``, ``network`` (in eval mode:
    the :class:`~pipeline.models.base.MultiTaskModel` of a single checkpoint, else a
    :class:`~pipeline.evaluate.ensemble.FoldEnsemble` of them) and the ``device`` it runs on.
    """

    def load_context(self, context: PythonModelContext) -> None:
        config = context.model_config
        checkpoints = [Path(context.artifacts[key]) for key in member_keys(config.get("members", 1))]
        # a version registered before the config named its method says only whether it is STL's networks
        balancer = config.get("balancer") or ("stl" if config.get("separate_tasks") else "equal")
        self.load(model_params(config), checkpoints, balancer)

    def load(
        self, params: Params, checkpoints: Sequence[Path], balancer: str = "equal", device: torch.device = CPU
    ) -> MultiTaskPyfunc:
        """Build the network ``balancer`` trains under ``params`` for each of ``checkpoints``, load
        its ``["model"]``, and place the network (the ensemble of several) on ``device``, where
        :meth:`predict` then runs."""
        self.params = params
        self.tasks = build_tasks(params)
        members = [self._member(checkpoint, balancer) for checkpoint in checkpoints]
        network = members[0] if len(members) == 1 else FoldEnsemble(self.tasks, members)
        self.device = device
        self.network = network.to(device).eval()
        return self

    def _member(self, checkpoint: Path, balancer: str) -> MultiTaskModel:
        state = load_checkpoint(checkpoint)
        if state is None:
            raise DataError(f"{checkpoint}: checkpoint not found")
        network = balancer_class(balancer).build_network(self.params, self.tasks)
        network.load_state_dict(state["model"])
        return network

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Images ``(B, C, S, S)`` float32 (preprocessed) → the output DataFrame (module docstring)."""
        images = torch.from_numpy(np.ascontiguousarray(model_input, dtype=np.float32)).to(self.device)
        with torch.no_grad():
            return probability_frame(self.tasks, self.network(images))
