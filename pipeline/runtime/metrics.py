"""Evaluation metrics per task, accumulated batch by batch over a validation or test pass.

:class:`TaskMetrics` keeps a small running state on the batches' device (confusion counts, a score
histogram, per-image scores, predicted and true labels), so a pass never holds every prediction in
memory; :meth:`TaskMetrics.compute` moves that state to the CPU once and turns it into numbers with
MONAI (segmentation) and scikit-learn (classification, pixel AUC).

Segmentation metrics come in two flavours, named so that the per-image one is the default:

- ``dice`` / ``iou``: the mean over images of each image's own score (what papers usually report);
- ``dice_global`` / ``iou_global``: one score from the confusion counts summed over every pixel of
  the set (large lesions weigh more).

Accuracy, recall and precision of segmentation are always from the counts summed over every pixel of
the set. Empty masks: a class absent from both an image's ground truth and its prediction scores 1
(MONAI's ``ignore_empty=False``): a lesion-free image predicted lesion-free is perfect, one with any
predicted lesion pixel scores 0. Such a class is left out of a mean over classes; an image (or a set)
where every foreground class is absent from both scores 1. Recall and precision with a zero
denominator are 0, as scikit-learn's ``zero_division=0`` (used for classification too). The only
metric that can be ``nan`` is the pixel ``auc``, for a set without lesion or without background pixels.

Classes absent from the set: a multi-class segmentation class that occurs in no ground-truth pixel of
the set (e.g. a configured tissue the dataset does not have) has no ``dice_<class>``/``iou_<class>``
(the keys are left out: a Dice of such a class says nothing about the model); ``fp_pixels_<class>``
gives the pixels predicted as it instead (all false positives). It is left out of every mean over
classes (``dice``, ``iou``, ``dice_global``, ``iou_global``) of the set and of each of its images, so a
stray prediction of it neither lowers nor lifts them. Only when no foreground class occurs in the
set's ground truth are all of them averaged, by the empty-mask rule above (as for a lesion-free set).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_confusion_matrix_metric, get_confusion_matrix
from monai.networks.utils import one_hot
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

from pipeline.tasks import Task

AUC_LOGIT_RANGE = 32.0
"""Pixel logits are clamped to ``[-AUC_LOGIT_RANGE, AUC_LOGIT_RANGE]`` before binning for the AUC."""
AUC_BINS = 8192
"""Number of equal-width logit bins of the pixel-AUC histogram (width 1/128 of a logit unit)."""


class TaskMetrics:
    """Streaming metrics for one task over one pass (a validation epoch or a test set).

    Feed every batch to :meth:`update`, then call :meth:`compute` (and :meth:`per_sample`) once.
    Returned names have no task prefix; the caller adds one.

    ``binary_segmentation`` — logits ``(B, 1, H, W)``, mask ``(B, H, W)`` in {0, 1}; a pixel is
    foreground where sigmoid(logit) > 0.5, i.e. logit > 0. Metrics: ``accuracy`` (pixel), ``dice``,
    ``iou`` (per-image means), ``dice_global``, ``iou_global``, ``recall``, ``precision`` (summed
    counts, see the module docstring) and ``auc``: the ROC AUC of sigmoid(logit) over every pixel of
    the set. To keep memory bounded the AUC comes from a histogram of the logits (:data:`AUC_BINS`
    equal bins over ±:data:`AUC_LOGIT_RANGE`), one histogram per true class; scikit-learn's
    ``roc_auc_score`` is applied to the bins weighted by their counts. The sigmoid is monotone, so
    binning the logit gives the AUC of the probabilities while resolving the confident tails that
    equal bins of probability would lump together; the error is at most half the fraction of
    (lesion, background) pixel pairs that share a bin.

    ``multiclass_segmentation`` — logits ``(B, C, H, W)``, index mask ``(B, H, W)`` in [0, C);
    prediction is the arg-max class; class 0 is background. Metrics: ``accuracy`` (pixel),
    ``dice_<class>`` and ``iou_<class>`` from the summed counts for every class present in the set's
    ground truth, ``fp_pixels_<class>`` (predicted pixels) for every class absent from it,
    ``dice_global`` and ``iou_global`` (the mean of ``dice_<class>``/``iou_<class>`` over the foreground
    classes), ``dice`` and ``iou`` (mean over images of each image's mean over those foreground classes
    that are present in its ground truth or prediction); see the module docstring for absent classes.

    ``classification`` — logits ``(B, C)``, class index ``(B,)``; prediction is the arg-max class.
    Metrics (scikit-learn, over the classes that occur in labels or predictions, 0 where a class has
    no prediction): ``accuracy``; ``f1``, ``recall``, ``precision`` macro-averaged (each class counts
    the same: the primary figures); ``f1_weighted``, ``recall_weighted``, ``precision_weighted``
    weighted by class support. Weighted recall always equals accuracy, which is what the paper's
    identical accuracy and recall columns point to, so the weighted variants are the comparable ones.
    """

    def __init__(self, task: Task):
        self.task = task
        self._image_scores: list[torch.Tensor] = []
        self._counts: torch.Tensor | None = None
        self._auc_hist: torch.Tensor | None = None
        self._predictions: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch: shapes as in the class docstring; both tensors on the same device."""
        self._check_shapes(logits, target)
        if self.task.kind == "classification":
            self._predictions.append(logits.argmax(dim=1))
            self._labels.append(target.long())
            return
        if self.task.kind == "binary_segmentation":
            truth = target.unsqueeze(1).bool().to(torch.uint8)
            prediction = (logits > 0).to(torch.uint8)
            self._add_to_auc_histogram(logits, truth)
        else:
            classes = self.task.out_channels
            truth = one_hot(target.unsqueeze(1).long(), classes, dtype=torch.uint8)
            prediction = one_hot(logits.argmax(dim=1, keepdim=True), classes, dtype=torch.uint8)
        per_image = get_confusion_matrix(prediction, truth)  # (B, C, 4): tp, fp, tn, fn per image
        counts = per_image.long().sum(dim=0)
        self._counts = counts if self._counts is None else self._counts + counts
        image_counts = per_image[:, self._foreground]
        # (B, 2, K) Dice and IoU per image and foreground class, nan where absent from truth and prediction;
        # averaged over classes only once the set's truth says which classes to score (_image_means)
        scores = [compute_confusion_matrix_metric(name, image_counts) for name in ("f1 score", "threat score")]
        self._image_scores.append(torch.stack(scores, dim=1))

    def state(self) -> dict[str, Any]:
        """The running state of the pass so far, on the CPU, to send to other ranks (see :meth:`merged`)."""
        return {
            "image_scores": [t.cpu() for t in self._image_scores],
            "counts": None if self._counts is None else self._counts.cpu(),
            "auc_hist": None if self._auc_hist is None else self._auc_hist.cpu(),
            "predictions": [t.cpu() for t in self._predictions],
            "labels": [t.cpu() for t in self._labels],
        }

    @classmethod
    def merged(cls, task: Task, states: Sequence[dict[str, Any]]) -> TaskMetrics:
        """One pass made of the passes whose :meth:`state` is given, in that order: per-item results
        concatenated, counts and histograms summed (on the CPU)."""
        merged = cls(task)
        for state in states:
            merged._image_scores += state["image_scores"]
            merged._predictions += state["predictions"]
            merged._labels += state["labels"]
            for name in ("_counts", "_auc_hist"):
                part, total = state[name.lstrip("_")], getattr(merged, name)
                if part is not None:
                    setattr(merged, name, part.clone() if total is None else total + part)
        return merged

    def compute(self) -> dict[str, float]:
        """All metrics of the pass so far, as plain floats (names in the class docstring)."""
        if self.task.kind == "classification":
            return self._compute_classification()
        counts = self._required(self._counts).cpu().double()  # (C, 4)
        image_scores = self._image_means().double().mean(dim=0)
        metrics = {"dice": float(image_scores[0]), "iou": float(image_scores[1])}
        if self.task.kind == "binary_segmentation":
            metrics["accuracy"] = float(compute_confusion_matrix_metric("accuracy", counts)[0])
            for name in ("recall", "precision"):
                metrics[name] = float(compute_confusion_matrix_metric(name, counts)[0].nan_to_num(nan=0.0))
            metrics["auc"] = _histogram_auc(self._required(self._auc_hist).view(2, AUC_BINS).cpu().numpy())
        else:
            metrics["accuracy"] = float(counts[:, 0].sum() / counts[0].sum())
            dice = compute_confusion_matrix_metric("f1 score", counts)
            iou = compute_confusion_matrix_metric("threat score", counts)
            present = _in_truth(counts)
            for k, name in enumerate(self.task.class_names):
                if present[k]:
                    metrics |= {f"dice_{name}": float(dice[k]), f"iou_{name}": float(iou[k])}
                else:
                    metrics[f"fp_pixels_{name}"] = float(counts[k, 1])
        foreground = counts[self._foreground]
        foreground = foreground[_scored(foreground)]
        metrics["dice_global"] = float(_mean_over_present(foreground, "f1 score"))
        metrics["iou_global"] = float(_mean_over_present(foreground, "threat score"))
        return metrics

    def per_sample(self) -> dict[str, np.ndarray]:
        """Per-item results in the order fed, for paired statistics between models.

        Segmentation: ``dice`` and ``iou`` ``(N,)`` float, each image's score as in ``dice``/``iou``.
        Classification: ``correct`` ``(N,)`` bool.
        """
        if self.task.kind == "classification":
            predictions, labels = self._gathered_labels()
            return {"correct": predictions == labels}
        self._require_updates(bool(self._image_scores))
        scores = self._image_means().numpy()
        return {"dice": scores[:, 0], "iou": scores[:, 1]}

    @property
    def _foreground(self) -> slice:
        """The rows of the confusion counts that are foreground classes (binary: the one class; else all but 0)."""
        return slice(0, 1) if self.task.kind == "binary_segmentation" else slice(1, None)

    def _image_means(self) -> torch.Tensor:
        """``(N, 2)`` each image's Dice and IoU: the mean over the scored foreground classes (:func:`_scored`)
        present in its truth or prediction, 1 where there is none."""
        scores = torch.cat(self._image_scores).cpu()  # (N, 2, K)
        scored = _scored(self._required(self._counts).cpu()[self._foreground])
        return scores[..., scored].nanmean(dim=-1).nan_to_num(nan=1.0)

    def _compute_classification(self) -> dict[str, float]:
        predictions, labels = self._gathered_labels()
        metrics = {"accuracy": float(accuracy_score(labels, predictions))}
        for average, suffix in (("macro", ""), ("weighted", "_weighted")):
            precision, recall, f1, _ = precision_recall_fscore_support(
                labels, predictions, average=average, zero_division=0
            )
            metrics[f"f1{suffix}"] = float(f1)
            metrics[f"recall{suffix}"] = float(recall)
            metrics[f"precision{suffix}"] = float(precision)
        return metrics

    def _gathered_labels(self) -> tuple[np.ndarray, np.ndarray]:
        self._require_updates(bool(self._labels))
        return torch.cat(self._predictions).cpu().numpy(), torch.cat(self._labels).cpu().numpy()

    def _add_to_auc_histogram(self, logits: torch.Tensor, truth: torch.Tensor) -> None:
        scaled = (logits.float().clamp(-AUC_LOGIT_RANGE, AUC_LOGIT_RANGE) + AUC_LOGIT_RANGE) * (
            AUC_BINS / (2 * AUC_LOGIT_RANGE)
        )
        bins = (scaled.long().clamp_(max=AUC_BINS - 1) + AUC_BINS * truth.long()).flatten()
        if self._auc_hist is None:
            self._auc_hist = torch.zeros(2 * AUC_BINS, dtype=torch.long, device=bins.device)
        # 1-D scatter_add_: no device sync (unlike bincount) and deterministic when torch asks for it
        self._auc_hist.scatter_add_(0, bins, torch.ones_like(bins))

    def _check_shapes(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        channels = self.task.out_channels
        if self.task.kind == "classification":
            ok = logits.ndim == 2 and logits.shape[1] == channels and target.shape == logits.shape[:1]
            wanted = f"logits (B, {channels}) and target (B,)"
        else:
            spatial = logits.shape[:1] + logits.shape[2:]
            ok = logits.ndim == 4 and logits.shape[1] == channels and target.shape == spatial
            wanted = f"logits (B, {channels}, H, W) and target (B, H, W)"
        if not ok:
            raise ValueError(
                f"task {self.task.name!r} ({self.task.kind}): expected {wanted}, "
                f"got logits {tuple(logits.shape)} and target {tuple(target.shape)}"
            )

    def _require_updates(self, fed: bool) -> None:
        if not fed:
            raise ValueError(f"task {self.task.name!r}: no batch passed to update() before computing metrics")

    def _required(self, state: torch.Tensor | None) -> torch.Tensor:
        """An accumulated state, which exists once :meth:`update` has run."""
        self._require_updates(state is not None)
        assert state is not None
        return state


def _in_truth(counts: torch.Tensor) -> torch.Tensor:
    """``(K,)`` bool: the classes of the set's summed ``counts`` ``(K, 4)`` in its ground truth (tp + fn > 0)."""
    return (counts[:, 0] + counts[:, 3]) > 0


def _scored(foreground: torch.Tensor) -> torch.Tensor:
    """``(K,)`` bool: the foreground classes (summed counts ``(K, 4)``) that means over classes include: those in
    the set's ground truth, or all of them where none is (then the empty-mask rule decides)."""
    present = _in_truth(foreground)
    return present if present.any() else torch.ones_like(present)


def _mean_over_present(counts: torch.Tensor, metric_name: str) -> torch.Tensor:
    """Mean of a MONAI confusion-matrix metric over the class axis, skipping classes absent from
    both prediction and truth (``nan`` from MONAI), and 1 where every class is absent.

    ``counts`` ``(..., K, 4)`` (tp, fp, tn, fn) → ``(...)``. Only for metrics whose denominator is
    zero exactly when tp + fp + fn = 0 (Dice = "f1 score", IoU = "threat score").
    """
    return compute_confusion_matrix_metric(metric_name, counts).nanmean(dim=-1).nan_to_num(nan=1.0)


def _histogram_auc(hist: np.ndarray) -> float:
    """ROC AUC from the ``(2, AUC_BINS)`` counts of background (row 0) and lesion (row 1) pixels.

    Each bin is one sample weighted by its count, scored by its index (the AUC depends on order
    only); pixels sharing a bin count as ties. ``nan`` when the set lacks either class of pixel.
    """
    if not hist[0].any() or not hist[1].any():
        return float("nan")
    scores = np.tile(np.arange(AUC_BINS), 2)
    truth = np.repeat([0, 1], AUC_BINS)
    return float(roc_auc_score(truth, scores, sample_weight=hist.ravel()))
