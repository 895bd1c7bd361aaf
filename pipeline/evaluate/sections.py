"""The report's text sections as document blocks, built from the evaluate stage's documents (pure functions).

``summary`` is ``reports/evaluation/summary.json`` and ``statistics`` is
``reports/evaluation/statistics.json`` (formats in :mod:`pipeline.evaluate.evaluate`); tables show
``mean ± std`` over folds and mark the best mean of every column in bold (ties, at the digits shown,
all bold). A figure the summary does not have (the Dice of a class absent from the test ground truth,
see :mod:`pipeline.runtime.metrics`) shows as :data:`ABSENT`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.evaluate.document import Block, Cell, Paragraph, Table
from pipeline.evaluate.evaluation_files import (
    Comparison,
    EvaluationSummary,
    McNemarComparison,
    OverFolds,
    PairedStatistics,
)
from pipeline.evaluate.summary import EFFICIENCY, TABLE_II, TABLE_III
from pipeline.tune.tune_file import TuneDocument

TABLE_II_DIGITS = 4
TABLE_III_DIGITS = {
    "parameters": 0,
    "peak_memory_mib": 1,
    "step_time_max_ms": 1,
    "step_time_median_ms": 1,
    "epoch_time_max_s": 2,
}
ABSENT = "—"


def provenance(
    lineage: Mapping[str, str],
    summary: EvaluationSummary,
    duplicates: Sequence[Sequence[str]] = (),
    absent_tissues: Sequence[str] = (),
) -> list[Block]:
    """Data version, code commit, params hash, what was evaluated, the duplicate-image groups and the configured
    tissues that no mask of the dataset has (the ingest manifest's ``absent_tissues``)."""
    dirty = {"true": " with uncommitted changes", "false": ""}.get(lineage["git_dirty"], " (working tree unknown)")
    return [
        Paragraph(
            f"Data version `{lineage['data_version']}` (artifact hashes from {lineage['data_hash_source']}); "
            f"code commit `{lineage['git_commit']}`{dirty}; params hash `{lineage['params_hash'][:12]}`."
        ),
        Paragraph(
            f"Balancers {', '.join(summary.balancers)}; folds {', '.join(map(str, summary.folds))}; "
            f"{summary.test_images} held-out test images. Every fold's best-validation checkpoint is "
            "evaluated on the whole test split; tables show mean ± sample standard deviation over folds."
        ),
        Paragraph(
            f"{len(duplicates)} groups of images with identical pixels, each kept within one split and one "
            "fold: " + "; ".join(" = ".join(f"`{i}`" for i in group) for group in duplicates) + "."
            if duplicates
            else "No two images have identical pixels."
        ),
        *(
            [
                Paragraph(
                    "Configured tissue classes (`data.tissues`) that occur in no mask of the dataset: "
                    + ", ".join(f"`{t}`" for t in absent_tissues)
                    + f"; they show as {ABSENT} in the per-class tables."
                )
            ]
            if absent_tissues
            else []
        ),
    ]


def table_ii(summary: EvaluationSummary, task: str, kind: str) -> Table:
    """One task's test metrics (the paper's Table II columns for its kind), a row per balancer."""
    names = TABLE_II[kind]
    return _fold_table(summary, task, names, names, [TABLE_II_DIGITS] * len(names), higher_is_better=True)


def ensembles(summary: EvaluationSummary, task: str, kind: str) -> Table:
    """One task's test metrics of each balancer's fold ensemble (its fold models averaging their probabilities:
    one model, so one value, not a mean over folds), the Table II columns of its kind."""
    names = TABLE_II[kind]
    balancers = summary.balancers
    values = [[_one_value(summary.ensembles[b][task][n]) for n in names] for b in balancers]
    return _table(balancers, values, names, [TABLE_II_DIGITS] * len(names), higher_is_better=True)


def per_class(summary: EvaluationSummary, task: str) -> list[Block]:
    """A multi-class segmentation task's test Dice and IoU of each foreground class (pixels summed over the
    test set), a row per balancer; a class absent from the test ground truth shows as :data:`ABSENT`, with a
    note giving the pixels each balancer predicted as it (all false positives, mean over folds)."""
    classes = summary.task(task).classes[1:]  # after the background
    names = tuple(f"{metric}_{c}" for c in classes for metric in ("dice", "iou"))
    titles = tuple(f"{metric} {c}" for c in classes for metric in ("Dice", "IoU"))
    table = _fold_table(summary, task, names, titles, [TABLE_II_DIGITS] * len(names), higher_is_better=True)
    results = summary.results
    absent = [c for c in classes if f"dice_{c}" not in results[summary.balancers[0]][task]]
    notes = [
        Paragraph(
            f"{ABSENT} `{c}` occurs in no test image's ground truth: it has no Dice or IoU and is left out of "
            f"{task}'s means over classes. Pixels predicted as `{c}` (false positives, mean over folds): "
            + ", ".join(f"{b} {_pixels(results[b][task][f'fp_pixels_{c}'].mean)}" for b in summary.balancers)
            + "."
        )
        for c in absent
    ]
    return [table, *notes]


def convergence(epochs: Mapping[str, Mapping[int, Mapping[str, int]]], tasks: Sequence[str]) -> list[Block]:
    """Per balancer (``epochs``: ``{balancer: {fold: {task: epoch, "last": epoch}}}``, see
    :func:`~pipeline.evaluate.history.convergence_epochs`): each task's epoch of lowest validation loss per
    fold, and in how many folds every task reached it at the same epoch before the last one (a minimum at the
    last epoch may only mean that training stopped while the loss still fell)."""
    rows = []
    for balancer, folds in epochs.items():
        per_task = [Cell(", ".join(_epoch(folds[f], t) for f in folds if t in folds[f])) for t in tasks]
        together = sum(len(at := {folds[f].get(t) for t in tasks}) == 1 and at != {folds[f]["last"]} for f in folds)
        rows.append((Cell(balancer), *per_task, Cell(f"{together} of {len(folds)}")))
    return [
        Paragraph(
            "Epoch (0-based) of each task's lowest validation loss, fold by fold (last: the fold's last epoch, "
            "where the loss may still have been falling), and the folds in which all tasks reached it at the "
            "same epoch before the last (the seed paper reports this for GradNorm)."
        ),
        Table(("balancer", *(f"{t} epochs" for t in tasks), "same epoch"), tuple(rows)),
    ]


def _epoch(fold: Mapping[str, int], task: str) -> str:
    return f"{fold[task]} (last)" if fold[task] == fold["last"] else str(fold[task])


def table_iii(summary: EvaluationSummary) -> Table:
    """Training efficiency (the paper's Table III), a row per balancer; lower is better."""
    names = tuple(TABLE_III)
    digits = [TABLE_III_DIGITS[n] for n in names]
    return _fold_table(summary, EFFICIENCY, names, tuple(TABLE_III.values()), digits, higher_is_better=False)


def comparisons(statistics: PairedStatistics, summary: EvaluationSummary) -> list[Block]:
    """The paired tests against the reference balancer: how they pair, the correction, one row per test
    (balancers and tasks in the evaluation's order)."""
    reference = statistics.reference
    results = statistics.comparisons
    test_images = summary.test_images
    if not results:
        return [Paragraph(statistics.note or f"No balancer other than `{reference}` was evaluated.")]
    correction = (
        f"p-values are Holm-adjusted within each task across the {len(results)} balancers compared"
        if statistics.correction == "holm"
        else "p-values are not corrected for multiple comparisons"
    )
    intro = Paragraph(
        f"Each balancer against `{reference}` on the same {test_images} test images, pairing {statistics.pairing}. "
        f"Two-sided tests; {correction}; significant means adjusted p < {statistics.alpha}."
    )
    header = ("balancer", "task", "test", "direction", "effect", "p", "adjusted p", "significant")
    rows = []
    for balancer in (b for b in summary.balancers if b in results):
        for task in (t.name for t in summary.tasks):
            r = results[balancer][task]
            rows.append(
                (
                    Cell(balancer),
                    Cell(task),
                    Cell(r.test),
                    Cell(r.direction),
                    Cell(_effect(r, balancer, reference)),
                    Cell(f"{r.p_value:.4g}"),
                    Cell(f"{r.p_adjusted:.4g}"),
                    Cell("yes" if r.significant else "no", bold=r.significant),
                )
            )
    return [intro, Table(header, tuple(rows))]


def tuning(tune: TuneDocument | None) -> list[Block]:
    """The sweep's table (selected row in bold) and selection rule, or a line saying it has not run.
    The table shows the figure the rule ranks by and the validation loss, as mean ± std across folds.
    """
    if tune is None:
        return [Paragraph("The ATDWA hyper-parameter sweep has not run (`reports/tune.json` does not exist).")]
    selected, rule = tune.selected, tune.rule
    keys = tuple(selected)
    ranked = rule.removeprefix("max_mean_") if rule.startswith("max_mean_") else tune.metric
    figures = list(dict.fromkeys([ranked if rule != "min_mean_val_loss" else "val_loss", "val_loss"]))
    rows = []
    for row in tune.rows:
        bold = all(row.get(k) == selected.get(k) for k in keys)
        cells = [_number(row.get(k)) for k in keys] + [str(row.get("status", "")), _number(row.get("folds_done"))]
        cells += [_mean_std(_sweep_figure(row, f), 4) for f in figures]
        rows.append(tuple(Cell(c, bold=bold) for c in cells))
    choice = ", ".join(f"{k} = {_number(selected.get(k))}" for k in keys)
    columns = (*keys, "status", "folds", *(f"{f} (val, mean ± std)" for f in figures))
    return [Paragraph(f"Selected {choice} (bold row). Rule: {rule}"), Table(columns, tuple(rows))]


def _sweep_figure(row: Mapping[str, Any], name: str) -> OverFolds:
    """A sweep row's ``<name>_mean`` and ``<name>_std`` (null: undefined)."""
    mean, std = (row.get(f"{name}_{part}") for part in ("mean", "std"))
    return OverFolds(mean=math.nan if mean is None else mean, std=math.nan if std is None else std, folds=[])


def _fold_table(
    summary: EvaluationSummary,
    group: str,
    names: Sequence[str],
    titles: Sequence[str],
    digits: Sequence[int],
    higher_is_better: bool,
) -> Table:
    balancers = summary.balancers
    values = [[summary.results[b][group].get(n) for n in names] for b in balancers]
    return _table(balancers, values, titles, digits, higher_is_better)


def _table(
    balancers: Sequence[str],
    values: Sequence[Sequence[OverFolds | None]],
    titles: Sequence[str],
    digits: Sequence[int],
    higher_is_better: bool,
) -> Table:
    """A row per balancer of ``values`` (a figure over folds per column, None: absent), best means in bold."""
    columns = []
    for j, d in enumerate(digits):
        cells = [row[j] for row in values]
        best = _best([math.nan if c is None else round(c.mean, d) for c in cells], higher_is_better)
        columns.append([Cell(ABSENT if c is None else _mean_std(c, d), bold=i in best) for i, c in enumerate(cells)])
    rows = tuple((Cell(b), *(column[i] for column in columns)) for i, b in enumerate(balancers))
    return Table(("balancer", *titles), rows)


def _best(means: Sequence[float], higher_is_better: bool) -> set[int]:
    """Indices of the best finite mean (all of them on a tie); none when no mean is finite."""
    finite = [m for m in means if not math.isnan(m)]
    if not finite:
        return set()
    target = max(finite) if higher_is_better else min(finite)
    return {i for i, m in enumerate(means) if m == target}


def _one_value(value: float) -> OverFolds:
    """A single value (a fold ensemble's, not a mean over folds) shown as a mean without std."""
    return OverFolds(mean=value, std=math.nan, folds=[value])


def _mean_std(value: OverFolds, digits: int) -> str:
    mean, std = value.mean, value.std
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _pixels(count: float) -> str:
    """A pixel count (a mean over folds: whole, or to one decimal), with thousands separators."""
    return f"{count:,.0f}" if float(count).is_integer() else f"{count:,.1f}"


def _effect(result: Comparison, balancer: str, reference: str) -> str:
    if isinstance(result, McNemarComparison):
        text = (
            f"b = {result.b} (only {balancer} right), c = {result.c} (only {reference} right); "
            f"accuracy {result.accuracy:.3f} vs {result.reference_accuracy:.3f}"
        )
    else:
        text = (
            f"median ΔDice {result.median_difference:+.4f} (mean {result.mean_difference:+.4f}); "
            f"{result.n_nonzero} of {result.n} images differ"
        )
    return f"{text}; {result.note}" if result.note else text


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
