"""``reports/evaluation/summary.json`` and ``statistics.json``: what the evaluate stage measured, as the report
reads it. Written by :mod:`pipeline.evaluate.evaluate`, read by :mod:`pipeline.evaluate.report`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.stage_files import Document, Number

SUMMARY_FILE = "summary.json"
STATISTICS_FILE = "statistics.json"


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OverFolds(_Part):
    """One figure over the folds: the mean, the sample std (nan with one fold) and the value of each fold."""

    mean: float
    std: float
    folds: list[float]


class TaskInfo(_Part):
    """A task as evaluated: its name, kind and class names (segmentation: background first)."""

    name: str
    kind: str
    classes: list[str]


class EvaluationSummary(Document):
    """``results[balancer][group][name]``: a figure over folds, ``group`` a task (its test metrics) or
    ``efficiency`` (Table III); ``ensembles[balancer][task][metric]``: the fold ensemble's test metric."""

    balancers: list[str]
    folds: list[int]
    test_images: int
    tasks: list[TaskInfo]
    results: dict[str, dict[str, dict[str, OverFolds]]]
    ensembles: dict[str, dict[str, dict[str, Number]]]

    def task(self, name: str) -> TaskInfo:
        return next(t for t in self.tasks if t.name == name)


class _Comparison(_Part):
    """One paired test of a balancer against the reference on one task: ``n`` test images, which is better
    (``direction``), the raw and adjusted p-values, and ``note`` when the test is undefined."""

    n: int
    direction: str
    p_value: float
    p_adjusted: float
    significant: bool
    note: str


class WilcoxonComparison(_Comparison):
    """Per-image Dice, Wilcoxon signed-rank (:func:`pipeline.evaluate.statistics.wilcoxon_dice`)."""

    test: Literal["wilcoxon_signed_rank"]
    n_nonzero: int
    median_difference: float
    mean_difference: float
    statistic: float | None


class McNemarComparison(_Comparison):
    """Per-image correctness, exact McNemar (:func:`pipeline.evaluate.statistics.mcnemar_exact`): ``b`` images
    only the balancer gets right, ``c`` only the reference."""

    test: Literal["mcnemar_exact"]
    accuracy: float
    reference_accuracy: float
    b: int
    c: int


Comparison = Annotated[WilcoxonComparison | McNemarComparison, Field(discriminator="test")]


class PairedStatistics(Document):
    """``comparisons[balancer][task]`` against ``reference`` (empty, with ``note`` saying why, when the reference
    was not evaluated); p-values Holm-adjusted per task when ``correction`` is ``holm``."""

    reference: str
    alpha: float
    correction: Literal["holm", "none"]
    pairing: str
    comparisons: dict[str, dict[str, Comparison]]
    note: str
