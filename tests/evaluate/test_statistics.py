"""Paired tests against equal weighting: exact p-values computed by hand, degenerate pairs, Holm, pairing."""

import warnings

import numpy as np
import pytest

from pipeline.evaluate.paired import paired_values, statistics_document
from pipeline.evaluate.statistics import holm, mcnemar_exact, paired_test, wilcoxon_dice
from pipeline.tasks import Task

LESION = Task("lesion", "binary_segmentation", "mask", 1, ("background", "foreground"))
DIAGNOSIS = Task("diagnosis", "classification", "label", 2, ("benign", "malignant"))
REFERENCE = np.full(6, 0.5)


@pytest.mark.parametrize(
    "difference, statistic, p, nonzero",
    [
        # all 6 differences positive: only 1 of the 2^6 sign patterns is as extreme per side → 2/64
        ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 0.0, 2 / 64, 6),
        # rank 2 negative: W- = 2; patterns with W ≤ 2 are {}, {1}, {2} → 2·3/64
        ([0.1, -0.2, 0.3, 0.4, 0.5, 0.6], 2.0, 6 / 64, 6),
        # a zero difference is dropped: 5 positive differences → 2/32
        ([0.1, 0.0, 0.3, 0.4, 0.5, 0.6], 0.0, 2 / 32, 5),
    ],
)
def test_wilcoxon_exact_p_values(difference, statistic, p, nonzero):
    result = wilcoxon_dice(REFERENCE + np.array(difference) / 4, REFERENCE)
    assert result["p_value"] == pytest.approx(p)
    assert result["statistic"] == statistic
    assert result["n_nonzero"] == nonzero and result["n"] == 6
    assert result["direction"] == "better"


def test_worse_dice_has_the_same_p_and_the_other_direction():
    better = wilcoxon_dice(REFERENCE + 0.1, REFERENCE)
    worse = wilcoxon_dice(REFERENCE - 0.1, REFERENCE)
    assert worse["p_value"] == pytest.approx(better["p_value"])
    assert worse["direction"] == "worse" and worse["median_difference"] == pytest.approx(-0.1)


def test_identical_dice_gives_p_one_with_a_reason_and_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = wilcoxon_dice(REFERENCE.copy(), REFERENCE)
    assert result["p_value"] == 1.0 and result["direction"] == "tie"
    assert "zero" in result["note"]


def test_mcnemar_counts_discordant_pairs_and_gives_the_exact_binomial_p():
    model = np.array([1] * 8 + [0] * 1 + [1] * 5 + [0] * 2, dtype=bool)
    reference = np.array([0] * 8 + [1] * 1 + [1] * 5 + [0] * 2, dtype=bool)
    result = mcnemar_exact(model, reference)
    assert (result["b"], result["c"]) == (8, 1)
    assert result["p_value"] == pytest.approx(2 * (1 + 9) / 2**9)  # 2·P(X ≤ 1), X ~ Bin(9, 1/2)
    assert result["direction"] == "better"
    assert mcnemar_exact(reference, model)["direction"] == "worse"


def test_mcnemar_without_discordant_pairs_gives_p_one():
    correct = np.array([True, False, True])
    result = mcnemar_exact(correct, correct.copy())
    assert result["p_value"] == 1.0 and (result["b"], result["c"]) == (0, 0)
    assert "discordant" in result["note"]


def test_a_headline_metric_gets_its_paired_test_and_an_unknown_one_names_the_allowed():
    dice, reference = np.array([0.9, 0.8, 0.7, 0.95]), np.array([0.85, 0.8, 0.6, 0.9])
    assert paired_test("dice", dice, reference) == wilcoxon_dice(dice, reference)
    correct = np.array([1.0, 0.0, 1.0, 1.0])  # per-image correctness as a metrics table holds it
    assert paired_test("accuracy", correct, 1 - correct) == mcnemar_exact(correct.astype(bool), (1 - correct) > 0)
    with pytest.raises(ValueError, match="'auc'.*allowed: 'dice', 'accuracy'"):
        paired_test("auc", dice, reference)


def test_mismatched_pairs_are_rejected():
    with pytest.raises(ValueError, match="equal length"):
        wilcoxon_dice(np.ones(3), np.ones(4))


def test_holm_hand_computed():
    # sorted 0.01, 0.03, 0.04 scaled by 3, 2, 1 → 0.03, 0.06, 0.04 → running max 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_classification_pairs_on_the_fold_ensemble_and_dice_on_the_fold_mean():
    labels = np.array([0, 1])
    folds = [
        {
            "lesion": {"dice": np.array([0.2, 0.8])},
            "diagnosis": {"label": labels, "probability": np.array([[0.45, 0.55], [0.3, 0.7]])},
        },
        {
            "lesion": {"dice": np.array([0.4, 1.0])},
            "diagnosis": {"label": labels, "probability": np.array([[0.9, 0.1], [0.6, 0.4]])},
        },
    ]
    paired = paired_values([LESION, DIAGNOSIS], folds)
    np.testing.assert_allclose(paired["lesion"], [0.3, 0.9])
    # image 0: fold 0 wrong, fold 1 right, mean (0.675, 0.325) right; image 1: mean (0.45, 0.55) right
    np.testing.assert_array_equal(paired["diagnosis"], [True, True])


def test_statistics_document_holm_corrects_per_task_and_flags_significance():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0.4, 0.6, 30)
    correct = np.zeros(30, dtype=bool)
    paired = {
        "equal": {"lesion": reference, "diagnosis": correct},
        "atdwa": {"lesion": reference + 0.05, "diagnosis": correct.copy()},  # every image better
        "dwa": {"lesion": reference.copy(), "diagnosis": correct.copy()},  # identical to equal
    }
    document = statistics_document([LESION, DIAGNOSIS], paired, alpha=0.05, holm_correct=True)
    assert set(document.comparisons) == {"atdwa", "dwa"}
    atdwa, dwa = document.comparisons["atdwa"]["lesion"], document.comparisons["dwa"]["lesion"]
    assert atdwa.p_adjusted == pytest.approx(min(1.0, 2 * atdwa.p_value))
    assert atdwa.significant and atdwa.direction == "better"
    assert dwa.p_value == dwa.p_adjusted == 1.0 and not dwa.significant
    assert document.comparisons["atdwa"]["diagnosis"].p_value == 1.0

    raw = statistics_document([LESION, DIAGNOSIS], paired, alpha=0.05, holm_correct=False)
    assert raw.correction == "none"
    assert raw.comparisons["atdwa"]["lesion"].p_adjusted == atdwa.p_value


def test_without_equal_there_is_nothing_to_compare_and_the_document_says_so():
    document = statistics_document([LESION], {"dwa": {"lesion": REFERENCE}}, alpha=0.05, holm_correct=True)
    assert document.comparisons == {} and "equal" in document.note
