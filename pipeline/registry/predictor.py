"""Python API: a registered model's masks and class predictions for preprocessed arrays or image files.

    predictor = load_predictor("models:/mtl-busi@champion")
    predictor.predict(images)                  # images (B, C, S, S) float32, preprocessed
    (scan,) = predictor.predict_files([Path("scan.png")])
    scan.masks["lesion"]                       # (H, W) uint8 at the file's size, 1 = lesion
    scan.classes["diagnosis"]                  # ("malignant", 0.93)

It goes through the model's MLflow pyfunc interface (:mod:`pipeline.registry.pyfunc`), so it runs
what ``mlflow.pyfunc.load_model(uri)`` serves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import pandas as pd
from mlflow.pyfunc import PyFuncModel

from pipeline.registry.inputs import ModelInput, read_input
from pipeline.registry.store import load_model
from pipeline.tasks import Task


@dataclass(frozen=True)
class ImagePrediction:
    """One image's predictions.

    ``masks``: per segmentation task, ``(H, W)`` uint8 — binary: 1 where the foreground probability
    exceeds 0.5 (the evaluation's logit > 0, but for logits within about 3e-8 of 0, whose float32
    probability rounds to 0.5); multi-class: the index of the most probable class. ``classes``: per classification
    task, the most probable class name and its probability. ``size``: ``(H, W)`` of the masks, px.
    """

    masks: dict[str, np.ndarray]
    classes: dict[str, tuple[str, float]]
    size: tuple[int, int]


class Predictor:
    """A model loaded by :func:`load_predictor`, with the preprocessing it was trained with.

    ``tasks``, ``image_size`` (S, px) and ``channels`` (C) are the model's.
    """

    def __init__(self, model: PyFuncModel):
        self.model = model
        wrapped = model.unwrap_python_model()
        self.tasks: tuple[Task, ...] = wrapped.tasks
        self.image_size: int = wrapped.params.data.image_size
        self.channels: int = wrapped.params.data.channels

    def predict(self, images: np.ndarray, sizes: Sequence[tuple[int, int]] | None = None) -> list[ImagePrediction]:
        """Predictions for ``images`` ``(B, C, S, S)`` float32 (preprocessed, see
        :mod:`pipeline.registry.inputs`); masks at the model's ``S × S``, or resized to ``sizes[i]``
        ``(height, width)``: probabilities resized bilinearly, then thresholded / arg-maxed."""
        frame = cast(pd.DataFrame, self.model.predict(np.asarray(images, dtype=np.float32)))  # MultiTaskPyfunc's
        sizes = sizes or [(self.image_size, self.image_size)] * len(frame)
        return [image_prediction(self.tasks, row, size) for row, size in zip(frame.to_dict("records"), sizes)]

    def read(self, path: Path) -> ModelInput:
        """The model's input for image file ``path`` (DataError naming the file if it has none)."""
        return read_input(path, self.image_size, self.channels)

    def predict_files(self, paths: Sequence[Path]) -> list[ImagePrediction]:
        """Predictions for image files, masks at each file's size; DataError names the first unreadable file."""
        inputs = [self.read(path) for path in paths]
        return self.predict(np.stack([x.image for x in inputs]), [(x.height, x.width) for x in inputs])


def load_predictor(uri: str) -> Predictor:
    """The model at ``uri`` (e.g. ``models:/<name>@champion``); PipelineError if it does not exist."""
    return Predictor(load_model(uri))


def image_prediction(tasks: Sequence[Task], row: Mapping[str, Any], size: tuple[int, int]) -> ImagePrediction:
    """One row of the model's output DataFrame → masks at ``size`` ``(height, width)`` and class names."""
    masks, classes = {}, {}
    for task in tasks:
        probabilities = np.asarray(row[task.name], dtype=np.float32)
        if task.kind == "classification":
            best = int(probabilities.argmax())
            classes[task.name] = (task.class_names[best], float(probabilities[best]))
        elif task.kind == "binary_segmentation":
            masks[task.name] = (_resize(probabilities, size) > 0.5).astype(np.uint8)
        else:
            per_class = _resize(probabilities.transpose(1, 2, 0), size).reshape(*size, -1)
            masks[task.name] = per_class.argmax(axis=-1).astype(np.uint8)
    return ImagePrediction(masks, classes, size)


def _resize(probabilities: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(S, S[, K])`` float32 → ``(H, W[, K])`` by bilinear interpolation (unchanged at the same size)."""
    height, width = size
    if probabilities.shape[:2] == (height, width):
        return probabilities
    return cv2.resize(probabilities, (width, height), interpolation=cv2.INTER_LINEAR)
