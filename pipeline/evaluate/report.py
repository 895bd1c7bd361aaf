"""The ``report`` stage: ``reports/report.md`` and a self-contained ``reports/report.html`` that a person
can read on their own, logged to MLflow.

Reads (under ``<reports>``) the evaluate stage's ``evaluation/summary.json``,
``evaluation/statistics.json`` and ``evaluation/examples.npz``; each evaluated balancer's
``<metrics>/<balancer>/history.csv``; the data manifests under ``<data>`` (data version, as the
MLflow lineage tags; the split's duplicate groups; the ingest manifest's tissues that no mask has) and,
when the tuning sweep has written them, ``<reports>/tune.json`` and ``<reports>/tune_sensitivity.png``.

Writes ``<reports>/figures/*.png`` (replaced as a whole), ``<reports>/report.md`` (linking
``figures/``) and ``<reports>/report.html`` (the same content, figures embedded as base64 PNG), and
logs the three as artifacts of an MLflow run ``report · data <version>``.

Sections, in order: :data:`SECTIONS`. Weight, temperature and validation-loss curves are the mean
over folds at each epoch (over the folds still training at that epoch).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from matplotlib.figure import Figure

from pipeline import paths
from pipeline.atomic import atomic_dir, atomic_write_bytes, atomic_write_text
from pipeline.config import Params
from pipeline.data.folds import SPLIT_DIR
from pipeline.data.manifest import read_manifest
from pipeline.data.split import read_split
from pipeline.errors import DataError
from pipeline.evaluate import sections
from pipeline.evaluate.document import Block, Heading, Image, Paragraph, to_html, to_markdown
from pipeline.evaluate.evaluation_files import STATISTICS_FILE, SUMMARY_FILE, EvaluationSummary, PairedStatistics
from pipeline.evaluate.figures import contour_figure, png, validation_loss_figure, weights_figure
from pipeline.evaluate.history import convergence_epochs, mean_over_folds, read_history
from pipeline.tracking import lineage_tags, stage_run
from pipeline.tune.tune_file import TUNE_FILE, TuneDocument

EVALUATION_DIR = paths.EVALUATION.relative_to(paths.REPORTS)
INGESTED_DIR = paths.INGESTED.relative_to(paths.DATA)
TITLE = "Multi-task balancing: evaluation report"
SECTIONS = (
    "Provenance",
    "Table II: test metrics",
    "Fold ensembles",
    "Table III: training efficiency",
    "Paired comparisons with equal weighting",
    "Task weights and temperature",
    "Validation loss",
    "Convergence",
    "Test predictions",
    "Hyper-parameter sweep",
)
FIGURES_DIR = "figures"
TUNE_FIGURE = "tune_sensitivity.png"


def run(params: Params, data: Path, metrics_dir: Path, reports: Path) -> Path:
    """Write the report and its figures under ``reports`` and log them to MLflow; returns report.md's path."""
    reports = Path(reports)
    with stage_run(params, "report", None, data):  # connects to MLflow first
        evaluation = reports / EVALUATION_DIR
        summary = EvaluationSummary.read(evaluation / SUMMARY_FILE, "the evaluate stage")
        statistics = PairedStatistics.read(evaluation / STATISTICS_FILE, "the evaluate stage")
        examples = _read_npz(evaluation / "examples.npz")
        histories = {b: read_history(Path(metrics_dir) / b / "history.csv") for b in summary.balancers}
        blocks = report_blocks(
            lineage_tags(params, data),
            summary,
            statistics,
            histories,
            examples,
            read_tune(reports / TUNE_FILE),
            _read_optional(reports / TUNE_FIGURE),
            read_split(Path(data) / SPLIT_DIR).duplicates,
            read_manifest(Path(data) / INGESTED_DIR).absent_tissues,
        )
        figures = [b for b in blocks if isinstance(b, Image) and b.path.startswith(f"{FIGURES_DIR}/")]
        with atomic_dir(reports / FIGURES_DIR) as out:
            for figure in figures:
                atomic_write_bytes(out / Path(figure.path).name, figure.png)
        atomic_write_text(reports / "report.md", to_markdown(blocks))
        atomic_write_text(reports / "report.html", to_html(blocks, TITLE))
        mlflow.log_artifact(str(reports / "report.md"))
        mlflow.log_artifact(str(reports / "report.html"))
        mlflow.log_artifacts(str(reports / FIGURES_DIR), artifact_path=FIGURES_DIR)
    return reports / "report.md"


def report_blocks(
    lineage: dict[str, str],
    summary: EvaluationSummary,
    statistics: PairedStatistics,
    histories: dict[str, list[dict[str, Any]]],
    examples: dict[str, np.ndarray],
    tune: TuneDocument | None,
    tune_png: bytes | None,
    duplicates: list[list[str]],
    absent_tissues: Sequence[str],
) -> list[Block]:
    """The whole report, section by section (:data:`SECTIONS`); figures are rendered here. ``histories``: each
    balancer's ``history.csv`` records (every fold); ``duplicates``: the split's groups of images with identical
    pixels; ``absent_tissues``: the configured tissues that no mask of the dataset has."""
    tasks = {t.name: t.kind for t in summary.tasks}
    provenance, table_ii, ensembles, table_iii, paired, weights, losses, converged, predictions, sweep = SECTIONS
    epochs = {b: convergence_epochs(records, list(tasks)) for b, records in histories.items()}
    histories = {b: mean_over_folds(records) for b, records in histories.items()}
    blocks: list[Block] = [
        Heading(TITLE, 1),
        Heading(provenance),
        *sections.provenance(lineage, summary, duplicates, absent_tissues),
    ]
    blocks.append(Heading(table_ii))
    for task, kind in tasks.items():
        blocks += [Heading(f"{task} ({kind})", 3), sections.table_ii(summary, task, kind)]
        if kind == "multiclass_segmentation":
            blocks += [Paragraph(f"{task}: each class"), *sections.per_class(summary, task)]
    blocks += [
        Heading(ensembles),
        Paragraph(
            "Each balancer's fold models as one model that averages their probabilities (what `registry.package: "
            "ensemble` registers), on the same test images: one model, so one value per metric."
        ),
    ]
    for task, kind in tasks.items():
        blocks += [Heading(f"{task} ({kind})", 3), sections.ensembles(summary, task, kind)]
    blocks += [Heading(table_iii), sections.table_iii(summary)]
    blocks += [Heading(paired), *sections.comparisons(statistics, summary)]
    blocks.append(Heading(weights))
    for balancer, history in histories.items():
        tempered = any(r.get("temperature") is not None for r in history)
        caption = f"{balancer}: task weights per epoch" + (" and the temperature (dashed)" if tempered else "")
        blocks.append(_figure(f"weights_{balancer}.png", weights_figure(balancer, history), caption))
    blocks += [
        Heading(losses),
        _figure(
            "validation_loss.png",
            validation_loss_figure(histories, list(tasks)),
            "validation loss per task and epoch, one line per balancer",
        ),
    ]
    blocks += [Heading(converged), *sections.convergence(epochs, list(tasks))]
    blocks += [Heading(predictions), *_contours(tasks, examples)]
    blocks += [Heading(sweep), *sections.tuning(tune)]
    if tune is not None and tune_png is not None:
        caption = f"sensitivity of {tune.balancer} to {', '.join(tune.selected)}"
        blocks.append(Image(TUNE_FIGURE, tune_png, caption))
    return blocks


def read_tune(path: Path) -> TuneDocument | None:
    """The tuning sweep's ``tune.json``, or None when it has not run; a malformed one raises DataError."""
    return TuneDocument.read(path, "the tune stage") if path.is_file() else None


def _contours(tasks: dict[str, str], examples: dict[str, np.ndarray]) -> list[Block]:
    masked = [t for t, kind in tasks.items() if kind == "binary_segmentation"]
    if not masked or not len(examples["rows"]):
        return [Paragraph("No binary segmentation task or no test image to show.")]
    blocks: list[Block] = []
    for task in masked:
        prefix = f"probability/{task}/"
        probabilities = {k[len(prefix) :]: v for k, v in examples.items() if k.startswith(prefix)}
        figure = contour_figure(examples["image"], examples[f"truth/{task}"], probabilities, list(examples["ids"]))
        caption = (
            f"{task}: test images (rows) with the true contour (green) and the contour where the lesion "
            "probability averaged over the fold models is 0.5 (red), per balancer (columns)"
        )
        blocks.append(_figure(f"contours_{task}.png", figure, caption))
    return blocks


def _figure(name: str, figure: Figure, caption: str) -> Image:
    return Image(f"{FIGURES_DIR}/{name}", png(figure), caption)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as npz:
            return dict(npz)
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run the evaluate stage first)") from None


def _read_optional(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None
