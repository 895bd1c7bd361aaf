"""The evaluate and report stages end to end on the tiny data with untrained checkpoints written here."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.data.folds import load_test
from pipeline.errors import PipelineError
from pipeline.evaluate import evaluate as stage
from pipeline.evaluate import report
from pipeline.evaluate.summary import TABLE_II, TABLE_III
from pipeline.models import build_model
from pipeline.tasks import build_tasks
from pipeline.tracking.results import history_csv
from pipeline.train.checkpoint import save_checkpoint
from tests.conftest import tiny_params
from tests.folds_documents import write_folds
from tests.tracking.test_tracking import isolated_mlflow

BALANCERS = ["equal", "dwa", "atdwa"]


def _params(tmp: Path, **overrides):
    return tiny_params(
        model={"width": 8},
        train={"balancers": BALANCERS},
        tracking={"uri": f"sqlite:///{tmp}/mlflow.db", "experiment": "report-test", "system_metrics": False},
        evaluate={"contour_images": 2},
        **overrides,
    )


def _train_stage_outputs(params, root: Path) -> tuple[Path, Path]:
    """What the train stage leaves: ``models/<b>/fold_<k>/best.pt`` (random weights; ``dwa``'s equal to
    ``equal``'s), ``metrics/<b>/folds.json`` with efficiency figures and ``metrics/<b>/history.csv``."""
    tasks = build_tasks(params)
    for i, balancer in enumerate(BALANCERS):
        folds, history = {}, []
        for fold in params.folds:
            torch.manual_seed(100 * fold + (0 if balancer == "dwa" else i))
            state = build_model(params, tasks).state_dict()
            save_checkpoint(root / "models" / balancer / f"fold_{fold}" / "best.pt", {"model": state})
            folds[fold] = {"efficiency": {k: 10.0 * (i + 1) + fold for k in TABLE_III}}
            for epoch in range(3):
                history.append(
                    {
                        "epoch": epoch,
                        "fold": fold,
                        "lr": 1e-3,
                        "best": epoch == 2,
                        "temperature": 2.0 + 0.1 * epoch if balancer != "equal" else None,
                        **{f"weight/{t.name}": 1.0 + 0.1 * j * epoch for j, t in enumerate(tasks)},
                        **{f"val_loss/{t.name}": 1.0 / (epoch + 1 + j) for j, t in enumerate(tasks)},
                    }
                )
        write_folds(root / "metrics", balancer, folds)
        (root / "metrics" / balancer / "history.csv").write_text(history_csv(history))
    return root / "models", root / "metrics"


@pytest.fixture(scope="module")
def evaluated(tiny_data, tmp_path_factory):
    """Both stages run once: ``(params, reports folder, metrics.json, report run id)``."""
    tmp = tmp_path_factory.mktemp("evaluate")
    params = _params(tmp)
    models, metrics_dir = _train_stage_outputs(params, tmp)
    reports = tmp / "reports"
    metrics = stage.run(params, tiny_data, models, metrics_dir, reports)
    with isolated_mlflow():
        report.run(params, tiny_data, metrics_dir, reports)
        client = MlflowClient(params.tracking.uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (run,) = [r for r in runs if r.data.tags.get("stage") == "report"]
    return params, reports, metrics, client, run.info.run_id


def test_metrics_json_has_every_balancer_task_and_table_column(evaluated):
    params, reports, metrics, _, _ = evaluated
    assert json.loads((reports / "metrics.json").read_text()) == metrics
    assert list(metrics) == BALANCERS
    for balancer in BALANCERS:
        for task in build_tasks(params):
            assert set(metrics[balancer][task.name]) == set(TABLE_II[task.kind])
        mean_of_folds = 10.0 * (BALANCERS.index(balancer) + 1) + 0.5  # as written by _train_stage_outputs
        assert metrics[balancer]["efficiency"]["peak_memory_mib"] == pytest.approx(mean_of_folds)


def test_one_row_per_balancer_fold_and_test_image(evaluated, tiny_data):
    params, reports, _, _, _ = evaluated
    with (reports / "evaluation" / "per_image.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    test_images = len(load_test(tiny_data))
    assert len(rows) == len(BALANCERS) * len(params.folds) * test_images
    assert {(r["balancer"], r["fold"]) for r in rows} == {(b, str(k)) for b in BALANCERS for k in params.folds}
    for row in rows:
        assert 0.0 <= float(row["lesion/dice"]) <= 1.0 and row["diagnosis/correct"] in {"0", "1"}
        assert float(row["diagnosis/p_benign"]) + float(row["diagnosis/p_malignant"]) == pytest.approx(1.0, abs=1e-5)
    with (reports / "per_fold.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == len(BALANCERS) * len(params.folds)


def test_fold_ensemble_scores_the_mean_of_the_fold_models_probabilities(evaluated, tiny_data):
    _, reports, metrics, _, _ = evaluated
    with (reports / "evaluation" / "per_image.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    test = load_test(tiny_data)
    labels = test.read(np.arange(len(test)), ["label"])["label"]
    for balancer in BALANCERS:
        probability = np.zeros((len(test), 2))
        for row in (r for r in rows if r["balancer"] == balancer):
            probability[int(row["index"])] += [float(row["diagnosis/p_benign"]), float(row["diagnosis/p_malignant"])]
        accuracy = float((probability.argmax(axis=1) == labels).mean())
        ensemble = metrics[balancer]["ensemble"]
        assert ensemble["diagnosis"]["accuracy"] == pytest.approx(accuracy)
        assert set(ensemble["lesion"]) == set(TABLE_II["binary_segmentation"])
    assert metrics["dwa"]["ensemble"] == metrics["equal"]["ensemble"]  # the same weights, fold by fold
    markdown = (reports / "report.md").read_text()
    section = markdown.split("\n## Fold ensembles\n")[1].split("\n## ")[0]
    assert all(f"| {b} |" in section for b in BALANCERS)


def test_identical_models_are_not_significantly_different(evaluated):
    _, reports, _, _, _ = evaluated
    statistics = json.loads((reports / "evaluation" / "statistics.json").read_text())
    assert set(statistics["comparisons"]) == {"dwa", "atdwa"}
    dwa = statistics["comparisons"]["dwa"]
    assert dwa["lesion"]["p_value"] == dwa["diagnosis"]["p_value"] == 1.0
    assert not dwa["lesion"]["significant"] and not dwa["diagnosis"]["significant"]
    assert statistics["correction"] == "holm" and statistics["alpha"] == 0.05


def test_report_has_every_section_and_a_self_contained_html(evaluated):
    _, reports, _, _, _ = evaluated
    markdown = (reports / "report.md").read_text()
    for heading in report.SECTIONS:
        assert f"\n## {heading}\n" in markdown, heading
    assert "has not run" in markdown  # no tune.json
    linked = [line.split("](")[1].rstrip(")") for line in markdown.splitlines() if line.startswith("![")]
    assert linked and all((reports / path).is_file() for path in linked)
    html = (reports / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(linked)
    assert 'src="figures/' not in html  # nothing to fetch: the page stands alone


def test_report_is_logged_to_mlflow(evaluated):
    _, reports, _, client, run_id = evaluated
    logged = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.md", "report.html", "figures"} <= logged
    figures = {Path(a.path).name for a in client.list_artifacts(run_id, "figures")}
    assert figures == {p.name for p in (reports / "figures").iterdir()}


def test_a_missing_checkpoint_is_named_and_nothing_is_written(tiny_data, tmp_path):
    params = _params(tmp_path)
    models, metrics_dir = _train_stage_outputs(params, tmp_path)
    missing = models / "atdwa" / "fold_1" / "best.pt"
    missing.unlink()
    with pytest.raises(PipelineError, match=str(missing)):
        stage.run(params, tiny_data, models, metrics_dir, tmp_path / "reports")
    assert not (tmp_path / "reports").exists()
