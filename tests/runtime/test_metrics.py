"""Task metrics: hand-computed values, agreement with MONAI / scikit-learn, streaming = one batch."""

import json
import math

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, compute_iou
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    jaccard_score,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    roc_auc_score,
)

from pipeline.runtime.metrics import TaskMetrics
from pipeline.tasks import Task

LESION = Task("lesion", "binary_segmentation", "mask", 1, ("background", "foreground"))
TISSUE = Task("tissue", "multiclass_segmentation", "mask", 4, ("class_0", "class_1", "class_2", "class_3"))
DIAGNOSIS = Task("diagnosis", "classification", "label", 3, ("normal", "benign", "malignant"))


def _binary_logits(prediction: torch.Tensor) -> torch.Tensor:
    """(B, H, W) {0, 1} → (B, 1, H, W) logits that threshold back to it."""
    return (prediction.float() * 10 - 5).unsqueeze(1)


def _metrics(task: Task, logits: torch.Tensor, target: torch.Tensor, batch_sizes=None) -> TaskMetrics:
    metrics = TaskMetrics(task)
    if batch_sizes is None:
        metrics.update(logits, target)
    else:
        for logit_chunk, target_chunk in zip(logits.split(batch_sizes), target.split(batch_sizes)):
            metrics.update(logit_chunk, target_chunk)
    return metrics


# Three 4×4 images: a lesion found in part with one false positive pixel; no lesion and none
# predicted (perfect); no lesion but two predicted pixels (score 0).
TRUTH = torch.zeros(3, 4, 4, dtype=torch.long)
TRUTH[0, 1:3, 1:3] = 1
PRED = torch.zeros(3, 4, 4, dtype=torch.long)
PRED[0, 1, 1:3] = 1
PRED[0, 2, 1] = 1
PRED[0, 0, 0] = 1
PRED[2, 3, 2:4] = 1


def test_binary_segmentation_hand_computed():
    m = _metrics(LESION, _binary_logits(PRED), TRUTH)
    got = m.compute()
    # image 0: tp 3, fp 1, fn 1 → Dice 6/8, IoU 3/5; image 1: 1, 1; image 2: 0, 0.
    # set: tp 3, fp 3, fn 1, tn 41 of 48 pixels.
    expected = {
        "dice": (0.75 + 1 + 0) / 3,
        "iou": (0.6 + 1 + 0) / 3,
        "dice_global": 6 / 10,
        "iou_global": 3 / 7,
        "accuracy": 44 / 48,
        "recall": 3 / 4,
        "precision": 3 / 6,
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value), name
    np.testing.assert_allclose(m.per_sample()["dice"], [0.75, 1, 0])
    np.testing.assert_allclose(m.per_sample()["iou"], [0.6, 1, 0])
    # pixel scores take two values, so the binned AUC is the exact one
    assert got["auc"] == pytest.approx(roc_auc_score(TRUTH.flatten(), PRED.flatten()))


def test_binary_segmentation_matches_sklearn_on_flattened_pixels():
    logits, truth = _random_case(LESION)
    logits[0] = -5.0  # image 0 has no lesion: now none predicted either
    m = _metrics(LESION, logits, truth, batch_sizes=[5, 6])
    got = m.compute()
    y, p = truth.flatten().numpy(), (logits > 0).long().flatten().numpy()
    assert got["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert got["recall"] == pytest.approx(recall_score(y, p))
    assert got["precision"] == pytest.approx(precision_score(y, p))
    assert got["dice_global"] == pytest.approx(f1_score(y, p))
    assert got["iou_global"] == pytest.approx(jaccard_score(y, p))
    # per image: Dice = F1 and IoU = Jaccard of the image's pixels; an image without lesion and
    # without predicted lesion scores 1 (sklearn's zero_division=1)
    images = [(truth[i].flatten().numpy(), (logits[i] > 0).long().flatten().numpy()) for i in range(len(truth))]
    dice = [f1_score(t, q, zero_division=1.0) for t, q in images]
    iou = [jaccard_score(t, q, zero_division=1.0) for t, q in images]
    np.testing.assert_allclose(m.per_sample()["dice"], dice, rtol=1e-6)
    np.testing.assert_allclose(m.per_sample()["iou"], iou, rtol=1e-6)
    assert dice[:3] == [1.0, 0.0, 0.0] and all(0 < d < 1 for d in dice[3:])  # empty, false positive, partial
    assert got["dice"] == pytest.approx(np.mean(dice)) and got["iou"] == pytest.approx(np.mean(iou))


def test_per_image_scores_match_monai_with_empty_masks_counted():
    per_sample = _metrics(LESION, _binary_logits(PRED), TRUTH).per_sample()
    prediction, truth = PRED.unsqueeze(1), TRUTH.unsqueeze(1)
    monai_dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(prediction, truth)
    monai_iou = compute_iou(prediction, truth, include_background=True, ignore_empty=False)
    np.testing.assert_allclose(per_sample["dice"], monai_dice[:, 0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(per_sample["iou"], monai_iou[:, 0].numpy(), rtol=1e-6)


def test_set_without_lesions():
    empty = torch.zeros(2, 4, 4, dtype=torch.long)
    got = _metrics(LESION, _binary_logits(empty), empty).compute()
    assert got["dice"] == got["dice_global"] == got["iou"] == got["accuracy"] == 1.0
    assert got["recall"] == got["precision"] == 0.0
    assert math.isnan(got["auc"])


def test_multiclass_segmentation_hand_computed():
    truth = torch.tensor([[[0, 1, 1], [0, 2, 2], [0, 0, 0]], [[0, 0, 0], [0, 1, 0], [0, 0, 0]]])
    pred = torch.tensor([[[0, 1, 0], [0, 2, 2], [0, 2, 0]], [[0, 0, 0], [0, 0, 0], [0, 0, 0]]])
    logits = torch.nn.functional.one_hot(pred, 4).permute(0, 3, 1, 2).float() * 5
    m = _metrics(TISSUE, logits, truth)
    got = m.compute()
    # set counts: class 0 tp 12 fp 2 fn 1; class 1 tp 1 fn 2; class 2 tp 2 fp 1; class 3 never occurs.
    # image 0: class 1 Dice 2/3 IoU 1/2, class 2 Dice 4/5 IoU 2/3; image 1: class 1 Dice 0 IoU 0.
    expected = {
        "accuracy": 15 / 18,
        "dice_class_0": 24 / 27,
        "iou_class_0": 12 / 15,
        "dice_class_1": 2 / 4,
        "iou_class_1": 1 / 3,
        "dice_class_2": 4 / 5,
        "iou_class_2": 2 / 3,
        "fp_pixels_class_3": 0,  # absent from the truth: no Dice/IoU
        "dice_global": (2 / 4 + 4 / 5) / 2,
        "iou_global": (1 / 3 + 2 / 3) / 2,
        "dice": ((2 / 3 + 4 / 5) / 2 + 0) / 2,
        "iou": ((1 / 2 + 2 / 3) / 2 + 0) / 2,
    }
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value), name
    np.testing.assert_allclose(m.per_sample()["dice"], [(2 / 3 + 4 / 5) / 2, 0])


def test_a_class_absent_from_the_truth_has_no_score_and_stray_predictions_of_it_change_no_mean():
    truth = torch.zeros(2, 4, 4, dtype=torch.long)
    truth[0, :2, :2], truth[1, 2:, 2:] = 1, 2  # class_3 occurs in no image
    found = truth.clone()
    found[0, 0, 0] = 0  # one missed class_1 pixel
    stray = found.clone()
    stray[0, 3, 0] = stray[1, 0, 3] = 3  # plus two background pixels predicted as class_3
    scores = {}
    for name, pred in (("found", found), ("stray", stray)):
        logits = torch.nn.functional.one_hot(pred, 4).permute(0, 3, 1, 2).float() * 5
        metrics = _metrics(TISSUE, logits, truth)
        scores[name] = metrics.compute()
        got = scores[name]
        assert "dice_class_3" not in got and "iou_class_3" not in got  # absent, never a perfect 1
        assert got["dice_global"] == pytest.approx((got["dice_class_1"] + got["dice_class_2"]) / 2)
        assert got["iou_global"] == pytest.approx((got["iou_class_1"] + got["iou_class_2"]) / 2)
        np.testing.assert_allclose(metrics.per_sample()["dice"], [6 / 7, 1])  # image 0: class_1 alone
        json.dumps(got, allow_nan=False)  # valid JSON for DVC metrics and MLflow
    assert (scores["found"]["fp_pixels_class_3"], scores["stray"]["fp_pixels_class_3"]) == (0, 2)
    means = ("dice", "iou", "dice_global", "iou_global", "dice_class_1", "dice_class_2")
    assert {m: scores["stray"][m] for m in means} == pytest.approx({m: scores["found"][m] for m in means})


def _random_case(task: Task, n: int = 11, size: int = 16):
    gen = torch.Generator().manual_seed(3)
    if task.kind == "classification":
        target = torch.multinomial(torch.tensor([6.0, 3.0, 1.0]), n, replacement=True, generator=gen)
        logits = torch.randn(n, 3, generator=gen) + 1.5 * torch.nn.functional.one_hot(target, 3)
        return logits, target
    target = torch.randint(0, task.out_channels if task.out_channels > 1 else 2, (n, size, size), generator=gen)
    target[:3] = 0  # a few images without any foreground
    logits = torch.randn(n, task.out_channels, size, size, generator=gen) * 3
    if task.out_channels == 1:
        logits += 2 * (2 * target.unsqueeze(1) - 1)
    return logits, target


@pytest.mark.parametrize("task", [LESION, TISSUE, DIAGNOSIS], ids=lambda t: t.kind)
def test_streaming_batches_equals_one_batch(task):
    logits, target = _random_case(task)
    whole = _metrics(task, logits, target)
    streamed = _metrics(task, logits, target, batch_sizes=[4, 1, 6])
    assert streamed.compute() == pytest.approx(whole.compute(), nan_ok=True)
    for name, values in whole.per_sample().items():
        np.testing.assert_array_equal(streamed.per_sample()[name], values)


def test_classification_matches_sklearn():
    logits, labels = _random_case(DIAGNOSIS, n=40)
    m = _metrics(DIAGNOSIS, logits, labels, batch_sizes=[16, 16, 8])
    got = m.compute()
    predictions = logits.argmax(1).numpy()
    assert got["accuracy"] == pytest.approx(accuracy_score(labels, predictions))
    for average, suffix in (("macro", ""), ("weighted", "_weighted")):
        p, r, f, _ = precision_recall_fscore_support(labels, predictions, average=average, zero_division=0)
        assert (got[f"precision{suffix}"], got[f"recall{suffix}"], got[f"f1{suffix}"]) == pytest.approx((p, r, f))
    assert got["recall_weighted"] == pytest.approx(got["accuracy"])  # why the paper's Acc = Recall
    assert got["f1"] != pytest.approx(got["f1_weighted"])  # the classes are unbalanced: the two differ
    np.testing.assert_array_equal(m.per_sample()["correct"], predictions == labels.numpy())


def test_pixel_auc_from_histogram_matches_full_roc_auc():
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    radius = torch.randint(6, 20, (24, 1, 1), generator=gen)
    truth = ((yy - 32) ** 2 + (xx - 32) ** 2 < radius**2).long()
    # overlapping scores with long confident tails, as from a partly trained network
    logits = (4 * (2 * truth - 1) + 3 * torch.randn(truth.shape, generator=gen)) * torch.exp(
        torch.randn(truth.shape, generator=gen)
    )
    metrics = TaskMetrics(LESION)
    for lo in range(0, 24, 5):
        metrics.update(logits[lo : lo + 5].unsqueeze(1), truth[lo : lo + 5])
    exact = roc_auc_score(truth.flatten(), torch.sigmoid(logits.double()).flatten())
    assert 0.8 < exact < 0.99
    assert metrics.compute()["auc"] == pytest.approx(exact, abs=1e-3)


@pytest.mark.parametrize(
    "task, logits_shape, target_shape",
    [(LESION, (2, 2, 8, 8), (2, 8, 8)), (LESION, (2, 1, 8, 8), (2, 1, 8, 8)), (DIAGNOSIS, (2, 3), (3,))],
)
def test_wrong_shapes_are_rejected(task, logits_shape, target_shape):
    with pytest.raises(ValueError, match=task.name):
        TaskMetrics(task).update(torch.zeros(logits_shape), torch.zeros(target_shape, dtype=torch.long))


def test_compute_without_batches_is_an_error():
    with pytest.raises(ValueError, match="no batch"):
        TaskMetrics(LESION).compute()
