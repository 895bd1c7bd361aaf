"""The pipeline against the team stack: train (Ray Train on the session cluster) → evaluate → promote,
tracked by an ``mlflow server`` with basic auth, its store in PostgreSQL and its artifacts in S3.

What a team relies on: every run reaches the server, epoch metrics included (logged by the Ray worker,
a process that does not share the driver's environment), models land in the bucket (read back with
boto3, not through MLflow), the champion is registered, no credential is stored in MLflow, and the
server lets nobody in without the right password.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.evaluate import evaluate as evaluate_stage
from pipeline.registry import promote as promote_stage
from pipeline.train import train as train_stage
from pipeline.tune import tune as tune_stage
from tests.conftest import isolated_mlflow, tiny_params
from tests.registry.conftest import MODEL_NAME, registry_params

pytestmark = pytest.mark.slow

EXPERIMENT = "team-integration"
EPOCHS = 2
ARTIFACTS_PREFIX = "mlartifacts/"  # under the bucket: mlflow_server's --artifacts-destination
SEARCH = "/api/2.0/mlflow/experiments/search"


def _keys(s3_store, prefix: str) -> list[str]:
    pages = s3_store.client().get_paginator("list_objects_v2").paginate(Bucket=s3_store.bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _s3_prefix(artifact_location: str) -> str:
    """The bucket prefix of a proxied artifact location ``mlflow-artifacts:/<path>``."""
    scheme = "mlflow-artifacts:/"
    assert artifact_location.startswith(scheme), artifact_location
    return ARTIFACTS_PREFIX + artifact_location[len(scheme) :].strip("/") + "/"


def _credentials(server) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": server.username, "MLFLOW_TRACKING_PASSWORD": server.password}


@pytest.fixture
def pipeline_on_team_stack(on_cluster, team_server, s3_store, tiny_data, tmp_path):
    """Run train → evaluate → promote with the team server's credentials in the environment."""
    params = registry_params(
        tmp_path,
        train={"epochs": EPOCHS},
        tracking={"uri": team_server.url, "experiment": EXPERIMENT},
        ray={"storage_path": str(tmp_path / "ray_results")},
    )
    models, metrics, reports = tmp_path / "models", tmp_path / "metrics", tmp_path / "reports"
    with isolated_mlflow(**_credentials(team_server)):
        train_stage.run(params, "equal", tiny_data, models / "equal", metrics / "equal")
        evaluate_stage.run(params, tiny_data, models, metrics, reports)
        decision = promote_stage.run(params, models, metrics, tiny_data, reports / "promotion.json")
        yield {"client": MlflowClient(team_server.url), "decision": decision, "models": models}


def test_runs_models_and_the_champion_reach_the_server_and_its_bucket_and_no_password_is_stored(
    pipeline_on_team_stack, team_server, s3_store
):
    client, decision = pipeline_on_team_stack["client"], pipeline_on_team_stack["decision"]
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    by_stage = {(r.data.tags.get("stage"), "fold" in r.data.tags): r for r in runs}
    assert set(by_stage) == {("train", False), ("train", True), ("promote", False)}
    assert all(r.info.status == "FINISHED" for r in runs)
    fold_run = by_stage[("train", True)]
    # streamed by the rank-0 Ray worker, once per epoch
    assert [m.step for m in client.get_metric_history(fold_run.info.run_id, "val_loss/lesion")] == list(range(EPOCHS))

    logged = client.search_logged_models([experiment.experiment_id])
    assert {m.source_run_id for m in logged} == {fold_run.info.run_id, by_stage[("promote", False)].info.run_id}
    for model in logged:
        keys = _keys(s3_store, _s3_prefix(model.artifact_location))
        assert any(key.endswith("/MLmodel") for key in keys), keys

    assert decision["decision"] == "promoted"
    assert dict(client.get_registered_model(MODEL_NAME).aliases) == {"champion": "1", "challenger": "1"}
    version = client.get_model_version(MODEL_NAME, "1")
    promoted = next(m for m in logged if m.source_run_id == version.run_id)
    packaged = [k for k in _keys(s3_store, _s3_prefix(promoted.artifact_location)) if k.endswith("/best.pt")]
    assert len(packaged) == 1, packaged
    in_bucket = s3_store.client().get_object(Bucket=s3_store.bucket, Key=packaged[0])["Body"].read()
    assert [hashlib.sha256(in_bucket).hexdigest()] == decision["candidate"]["checkpoints_sha256"]
    best = pipeline_on_team_stack["models"] / "equal" / "fold_0" / "best.pt"
    assert in_bucket == best.read_bytes()

    stored = [json.dumps([r.data.params, r.data.tags]) for r in runs] + [json.dumps(version.tags)]
    assert not [text for text in stored if team_server.password in text]


def test_the_server_refuses_requests_without_the_right_password(team_server, monkeypatch):
    def search(auth):
        return requests.get(team_server.url + SEARCH, params={"max_results": 1}, auth=auth, timeout=10).status_code

    assert search(None) == 401
    assert search((team_server.username, "not-the-password")) == 401
    assert search(("nobody", team_server.password)) == 401
    assert requests.get(team_server.url + "/api/2.0/mlflow-artifacts/artifacts", timeout=10).status_code == 401
    assert search((team_server.username, team_server.password)) == 200
    with isolated_mlflow():
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        with pytest.raises(MlflowException, match="401"):
            MlflowClient(team_server.url).search_experiments()


def test_a_sweep_logs_its_trials_from_their_ray_processes(on_cluster, team_server, tiny_data, tmp_path):
    params = tiny_params(
        model={"width": 8},
        train={"epochs": 1, "folds": [0]},
        tune={"grid": {"gamma": [0.5], "t0": [2.0]}, "selection": {"rule": "min_mean_val_loss"}},
        tracking={"uri": team_server.url, "experiment": "team-tune", "system_metrics": False},
        ray={"storage_path": str(tmp_path / "ray_results")},
    )
    with isolated_mlflow(**_credentials(team_server)):
        tune_stage.run(params, data=tiny_data, reports=tmp_path / "reports")
        client = MlflowClient(team_server.url)
        runs = client.search_runs([client.get_experiment_by_name("team-tune").experiment_id])
        # the trial run and its fold run are created, and the epoch logged, by the trial's Ray process
        fold_run = next(r for r in runs if "tune_trial" in r.data.tags and "fold" in r.data.tags)
        assert [m.step for m in client.get_metric_history(fold_run.info.run_id, "val_loss/lesion")] == [0]
