"""Test metrics of a registered model on the current test split, by the evaluation training uses.

A champion trained on another split (or another version of the data) is therefore compared with the
candidate on the same images, by the same code (:func:`pipeline.runtime.inference.evaluate`, on the CPU). Each
is scored as it is registered: a fold ensemble's network outputs the logits of its members' mean
probabilities (:mod:`pipeline.evaluate.ensemble`), so its metrics are those of the averaged probabilities.
"""

from __future__ import annotations

import torch
from mlflow.pyfunc import PyFuncModel

from pipeline.config import Params
from pipeline.data.folds import ArraySet
from pipeline.errors import ConfigError
from pipeline.registry.gate import flat_metrics
from pipeline.runtime.inference import evaluate
from pipeline.tasks import build_tasks


def score_on_test(model: PyFuncModel, label: str, params: Params, test: ArraySet) -> dict[str, float]:
    """``{"task.metric": value}`` of ``model`` (loaded by :func:`pipeline.registry.store.load_model`) on ``test``.

    ``label`` names the model in errors. A model whose tasks, classes or input (image size, channels)
    differ from ``params``'s and the test split's cannot be scored on it: ConfigError.
    """
    wrapped = model.unwrap_python_model()
    made_with = wrapped.params
    image = test.read([0], ["image"])["image"]
    needed = (build_tasks(params), test.classes, image.shape[1], image.shape[2])
    has = (wrapped.tasks, made_with.record_classes, made_with.data.channels, made_with.data.image_size)
    if has != needed:
        raise ConfigError(
            f"registry.model_name = {params.registry.model_name!r}: {label} has tasks, classes, channels, "
            f"image size {_show(has)}, but the current test split needs {_show(needed)}, so it cannot be "
            "compared on it; choose another registry.model_name for this configuration"
        )
    _, metrics = evaluate(wrapped.network, wrapped.tasks, test, params.train.batch_size, torch.device("cpu"))
    return flat_metrics(metrics)


def _show(spec: tuple) -> str:
    tasks, classes, channels, size = spec
    return f"{[f'{t.name} ({t.kind})' for t in tasks]}, {list(classes)}, {channels}, {size} px"
