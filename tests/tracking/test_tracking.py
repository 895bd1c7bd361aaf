"""MLflow tracking against a throw-away sqlite store: run structure, lineage, per-epoch metrics from another
process, the logged model, no leaked secret, fail-fast connection and the history plots."""

from __future__ import annotations

import http.server
import json
import multiprocessing
import pickle
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import mlflow.pytorch
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from pipeline.balancers import balancer_class
from pipeline.errors import PipelineError
from pipeline.models import build_model
from pipeline.tasks import build_tasks
from pipeline.tracking import EpochLogger, child_run, connect, lineage_tags, log_fold_result, stage_run
from pipeline.tracking.plots import task_weights_figure, val_loss_figure
from pipeline.train.loop import FoldResult
from tests.conftest import isolated_mlflow as shared_isolated_mlflow
from tests.conftest import tiny_params

SECRET = "fake-aws-secret-Zq81xT"
TASKS = ("lesion", "diagnosis")
EPOCHS = 3
OUTAGE_S = 5.0


def isolated_mlflow():
    """MLflow's process-wide state undone on exit, with a credential in the environment meanwhile."""
    return shared_isolated_mlflow(AWS_SECRET_ACCESS_KEY=SECRET)


def fake_data_root(root: Path) -> Path:
    for folder, name in (("split", "split.json"), ("preprocessed", "manifest.json"), ("augmented", "manifest.json")):
        (root / folder).mkdir(parents=True)
        (root / folder / name).write_text(json.dumps({"artifact": folder}))
    return root


def history(dwa_like: bool) -> list[dict]:
    """A 3-epoch history in the shape of Trainer records."""
    records = []
    for epoch in range(EPOCHS):
        record = {
            "epoch": epoch,
            "fold": 0,
            "lr": 1e-3,
            "temperature": 2.0 - 0.5 * epoch if dwa_like else None,
            "val_loss_mean": 1.0 / (epoch + 1),
            "best": True,
        }
        for i, task in enumerate(TASKS):
            record |= {
                f"weight/{task}": 1.0 + 0.1 * i * epoch,
                f"train_loss/{task}": 1.2 / (epoch + 1 + i),
                f"val_loss/{task}": 1.0 / (epoch + 1 + i),
                f"val/{task}/dice": 0.5 + 0.1 * epoch,
            }
        records.append(record)
    return records


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """One simulated train stage of balancer ``dwa``: fold 0 with a real tiny model, fold 1 without a model."""
    tmp = tmp_path_factory.mktemp("tracking")
    with isolated_mlflow():
        params = tiny_params(
            data={"source": f"s3://bucket/busi?token={SECRET}"},
            model={"width": 8},
            tracking={
                "uri": f"sqlite:///{tmp}/store/mlflow.db",
                "experiment": "tracking-test",
                "system_metrics": False,
            },
        )
        model = build_model(params, build_tasks(params)).eval()
        example = torch.randn(1, params.data.channels, params.data.image_size, params.data.image_size)
        records = history(dwa_like=True)
        result = FoldResult(
            records,
            best_epoch=2,
            best_val_loss=0.3,
            val_metrics={t: {"dice": 0.7} for t in TASKS},
            efficiency={"peak_memory_mib": 12.5, "step_time_median_ms": 3.0},
        )
        test_metrics = {t: {"dice": 0.6} for t in TASKS}
        with stage_run(params, "train", "dwa", fake_data_root(tmp / "data")) as parent:
            with child_run(parent, "dwa", 0, outage_s=OUTAGE_S) as child:
                logger = EpochLogger(mlflow.get_tracking_uri(), child)
                for record in records:
                    logger(record)
                log_fold_result(child, result, model, example, test_metrics, outage_s=OUTAGE_S, log_model=True)
            with child_run(parent, "dwa", 1, outage_s=OUTAGE_S) as other:
                log_fold_result(other, result, model, example, test_metrics, outage_s=OUTAGE_S, log_model=False)
        yield {
            "client": MlflowClient(),
            "params": params,
            "parent": parent.info.run_id,
            "child": child,
            "other": other,
            "model": model,
            "example": example,
            "tmp": tmp,
        }


def test_parent_and_children_are_findable_and_named_by_balancer_fold_and_data(stage):
    client = stage["client"]
    experiment = client.get_experiment_by_name("tracking-test")
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    parent, child, other = runs[stage["parent"]], runs[stage["child"]], runs[stage["other"]]
    version = parent.data.tags["data_version"]
    assert len(version) == 7
    assert parent.info.run_name == f"train · dwa · data {version}"
    assert child.info.run_name == f"dwa · fold 0 · data {version}"
    assert other.info.run_name == f"dwa · fold 1 · data {version}"
    for run, fold in ((child, "0"), (other, "1")):
        assert run.data.tags[MLFLOW_PARENT_RUN_ID] == stage["parent"]
        assert run.data.tags["balancer"] == "dwa" and run.data.tags["fold"] == fold
        assert run.info.status == "FINISHED"
    assert parent.data.tags["stage"] == "train" and parent.data.tags["balancer"] == "dwa"
    assert parent.info.status == "FINISHED"
    assert experiment.artifact_location == (stage["tmp"] / "store" / "mlartifacts").as_uri()


def test_runs_carry_params_and_lineage(stage):
    client = stage["client"]
    for run_id in (stage["parent"], stage["child"]):
        data = client.get_run(run_id).data
        assert data.params["train.lr"] == "0.001"
        assert json.loads(data.params["train.balancers"]) == list(stage["params"].train.balancers)
        assert data.params["model.width"] == "8"
        assert data.tags["seed"] == "7"
        assert data.tags["data_hash_source"] == "manifest"
        assert set(data.tags) >= {
            "git_commit",
            "git_dirty",
            "params_hash",
            "data_hash/split",
            "data_hash/preprocessed",
            "data_hash/augmented",
        }
        assert len(data.tags["params_hash"]) == 64


def test_per_epoch_and_summary_metrics(stage):
    client = stage["client"]
    for key in ("val_loss/lesion", "weight/diagnosis", "temperature", "val/lesion/dice", "lr"):
        points = client.get_metric_history(stage["child"], key)
        assert sorted(p.step for p in points) == list(range(EPOCHS)), key
    temperature = {p.step: p.value for p in client.get_metric_history(stage["child"], "temperature")}
    assert temperature == {0: 2.0, 1: 1.5, 2: 1.0}
    metrics = client.get_run(stage["child"]).data.metrics
    assert "best" not in metrics and "epoch" not in metrics  # bools and the step itself are not metrics
    assert metrics["best_val/lesion/dice"] == 0.7 and metrics["test/diagnosis/dice"] == 0.6
    assert metrics["best_epoch"] == 2 and metrics["efficiency/peak_memory_mib"] == 12.5


def test_artifacts_and_model_round_trip(stage):
    client = stage["client"]
    names = {a.path for a in client.list_artifacts(stage["child"])} | {
        a.path for a in client.list_artifacts(stage["child"], "plots")
    }
    assert {"history.csv", "plots/task_weights.png", "plots/val_loss.png"} <= names
    loaded = mlflow.pytorch.load_model(f"runs:/{stage['child']}/model")
    batch = torch.cat([stage["example"], torch.randn_like(stage["example"]).repeat(2, 1, 1, 1)])
    for inputs in (stage["example"], batch):  # the example, and other batch sizes
        with torch.no_grad():
            expected, got = stage["model"](inputs), loaded(inputs)
        assert set(got) == set(TASKS)
        for task in TASKS:
            torch.testing.assert_close(got[task], expected[task])
    assert not mlflow.search_logged_models(filter_string=f"source_run_id = '{stage['other']}'", output_format="list")


def test_no_param_or_tag_contains_the_secret(stage):
    client = stage["client"]
    for run_id in (stage["parent"], stage["child"], stage["other"]):
        data = client.get_run(run_id).data
        values = [*data.params.values(), *data.tags.values()]
        assert values and not any(SECRET in v for v in values)
        assert data.params["data.source"] == "s3://bucket/busi?token=***"
    (logged,) = mlflow.search_logged_models(filter_string=f"source_run_id = '{stage['child']}'", output_format="list")
    assert logged.params and not any(SECRET in v for v in [*logged.params.values(), *logged.tags.values()])


def test_epoch_logger_pickles_and_logs_from_a_spawned_process(stage):
    client = stage["client"]
    run_id = client.create_run(client.get_experiment_by_name("tracking-test").experiment_id).info.run_id
    logger = EpochLogger(f"sqlite:///{stage['tmp']}/store/mlflow.db", run_id)
    records = history(dwa_like=False)
    logger(records[0])  # opens a client here; pickling must still work
    clone = pickle.loads(pickle.dumps(logger))
    assert (clone.tracking_uri, clone.run_id) == (logger.tracking_uri, run_id)
    process = multiprocessing.get_context("spawn").Process(target=logger, args=(records[1],))
    process.start()
    process.join(timeout=120)
    assert process.exitcode == 0
    logger(records[2])
    assert [p.step for p in client.get_metric_history(run_id, "val_loss/lesion")] == list(range(EPOCHS))
    assert client.get_metric_history(run_id, "temperature") == []  # None is skipped


def test_finish_logs_the_epochs_a_worker_lost_and_repeats_none(stage):
    client = stage["client"]
    run_id = client.create_run(client.get_experiment_by_name("tracking-test").experiment_id).info.run_id
    driver = EpochLogger(f"sqlite:///{stage['tmp']}/store/mlflow.db", run_id)
    records = history(dwa_like=True)
    worker = pickle.loads(pickle.dumps(driver))  # as Ray ships it; it logs epoch 0, then is restarted
    worker(records[0])
    restarted = pickle.loads(pickle.dumps(driver))  # resumes from a checkpoint after epoch 1: epoch 1 is lost
    restarted(records[2])
    driver.finish(records, OUTAGE_S)
    for key in ("val_loss/lesion", "temperature", "weight/diagnosis"):
        assert sorted(p.step for p in client.get_metric_history(run_id, key)) == list(range(EPOCHS)), key


def test_data_version_comes_from_dvc_lock_unless_a_stage_ran_outside_dvc(tmp_path):
    root = fake_data_root(tmp_path / "data")
    (root / "preprocessed" / "image.npy").write_bytes(b"pixels")
    stages = {a: {"cmd": "true", "outs": [f"data/{a}"]} for a in ("split", "preprocessed", "augmented")}
    (tmp_path / "dvc.yaml").write_text(json.dumps({"stages": stages}))
    dvc = Path(sys.executable).parent / "dvc"
    for args in (("init", "--no-scm", "-q"), ("commit", "-f", "-q")):
        subprocess.run([dvc, *args], cwd=tmp_path, check=True, capture_output=True)
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    params = tiny_params()

    tags = lineage_tags(params, root)
    assert tags["data_hash_source"] == "dvc.lock"
    assert tags["data_hash/augmented"] == lock["stages"]["augmented"]["outs"][0]["md5"]

    (root / "augmented" / "manifest.json").write_text(json.dumps({"artifact": "augmented", "seed": 2}))
    stale = lineage_tags(params, root)
    assert stale["data_hash_source"] == "manifest"
    assert stale["data_version"] != tags["data_version"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_fails_fast_naming_the_uri():
    uri = f"http://127.0.0.1:{_free_port()}"
    with isolated_mlflow():
        started = time.monotonic()
        with pytest.raises(PipelineError, match=f"{uri}.* unreachable"):
            connect(tiny_params(tracking={"uri": uri}))
        assert time.monotonic() - started < 5


class _Unauthorized(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
        self.end_headers()

    def log_message(self, *args):
        pass


def test_server_asking_for_credentials_counts_as_reachable():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://user:{SECRET}@127.0.0.1:{server.server_address[1]}"
    try:
        with isolated_mlflow(), pytest.raises(PipelineError) as raised:
            connect(tiny_params(tracking={"uri": uri}))
    finally:
        server.shutdown()
    message = str(raised.value)
    assert "unreachable" not in message and "401" in message
    assert SECRET not in message and f"user:***@127.0.0.1:{server.server_address[1]}" in message


@pytest.mark.parametrize("dwa_like", [True, False])
def test_plots_draw_one_line_per_task_and_the_temperature(dwa_like):
    records = history(dwa_like)
    weights = task_weights_figure(records)
    assert [line.get_label() for line in weights.axes[0].get_lines()] == list(TASKS)
    temperature_lines = [line for ax in weights.axes[1:] for line in ax.get_lines()]
    if dwa_like:
        assert [line.get_label() for line in temperature_lines] == ["temperature"]
        assert list(temperature_lines[0].get_ydata()) == [r["temperature"] for r in records]
    else:
        assert temperature_lines == []
    losses = val_loss_figure(records)
    assert [line.get_label() for line in losses.axes[0].get_lines()] == list(TASKS)
    assert list(losses.axes[0].get_lines()[1].get_ydata()) == [r["val_loss/diagnosis"] for r in records]


@pytest.mark.parametrize("method", ["stl", "mtcool"])
def test_a_network_of_every_method_is_logged_and_loads_back_predicting_the_same(tmp_path, method):
    with isolated_mlflow():
        params = tiny_params(
            model={"width": 8},
            tracking={"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "methods", "system_metrics": False},
        )
        model = balancer_class(method).build_network(params, build_tasks(params)).eval()
        example = torch.randn(1, params.data.channels, params.data.image_size, params.data.image_size)
        result = FoldResult(history(dwa_like=False), best_epoch=0, best_val_loss=0.3, val_metrics={})
        with (
            stage_run(params, "train", method, fake_data_root(tmp_path / "data")) as parent,
            child_run(parent, method, 0, outage_s=OUTAGE_S) as run_id,
        ):
            log_fold_result(run_id, result, model, example, {}, outage_s=OUTAGE_S, log_model=True)
        loaded = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
        batch = torch.randn(3, *example.shape[1:])
        with torch.no_grad():
            expected, got = model(batch), loaded(batch)
        for task in TASKS:
            torch.testing.assert_close(got[task], expected[task])
