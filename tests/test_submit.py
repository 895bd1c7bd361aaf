"""`mtl-pipeline submit`: a pipeline stage as a Ray job on a two-node cluster, its workers on both nodes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.cli import build_parser
from pipeline.config import deep_merge
from pipeline.errors import ConfigError
from pipeline.submit import job_command
from tests.conftest import TINY, tiny_params
from tests.ray_cluster import RAY

COMMANDS = build_parser().parse_args(["submit", "train"]).commands  # what the CLI hands to submit


@pytest.mark.slow
def test_a_submitted_training_job_runs_its_two_workers_on_both_nodes(two_node_cluster, tiny_data, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(tiny_data, project / "data")
    params = deep_merge(
        TINY,
        {
            "model": {"width": 8},
            "train": {"epochs": 1, "balancers": ["equal"], "folds": [0]},
            "ray": {"num_workers": 2, "cpus_per_worker": 1, "storage_path": str(tmp_path / "ray_results")},
            "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "system_metrics": False},
        },
    )
    (project / "params.yaml").write_text(yaml.safe_dump(params))

    submitted = subprocess.run(
        [sys.executable, "-m", "pipeline", "submit", "--address", two_node_cluster.address, "--", "train", "equal"],
        cwd=project,
        env=two_node_cluster.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    assert "succeeded" in submitted.stdout + submitted.stderr

    workers = _actors(two_node_cluster, "RayTrainWorker")
    assert len(workers) == 2 and len({actor["node_id"] for actor in workers}) == 2  # one worker on each node
    client = MlflowClient(params["tracking"]["uri"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.fold = '0'")
    assert [run.info.status for run in runs] == ["FINISHED"]  # the job trained and tracked fold 0


def _actors(cluster, class_name: str) -> list[dict]:
    listed = subprocess.run(
        [
            RAY,
            "list",
            "actors",
            "--address",
            cluster.dashboard,
            "--filter",
            f"class_name={class_name}",
            "--detail",
            "--format",
            "json",
            "--limit",
            "100",
        ],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(listed.stdout)


def test_the_job_runs_the_stage_in_the_uploaded_project_without_generated_files(tmp_path):
    command = job_command(
        tiny_params(),
        ["train", "atdwa", "--tuned", "reports/tuned_params.yaml"],
        commands=COMMANDS,
        address="10.0.0.1:6379",
        working_dir=tmp_path,
    )
    assert command[1:4] == ["job", "submit", "--address=10.0.0.1:6379"]
    assert command[command.index("--") + 1 :] == [
        "python",
        "-m",
        "pipeline",
        "train",
        "atdwa",
        "--tuned",
        "reports/tuned_params.yaml",
    ]
    runtime_env = json.loads(command[4].removeprefix("--runtime-env-json="))
    assert runtime_env["working_dir"] == str(tmp_path.resolve())
    assert {".git", ".venv", ".dvc/cache", "mlruns", "mlflow.db", "infra/compose/.env"} <= set(runtime_env["excludes"])


def test_credentials_reach_the_job_only_when_asked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.team:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")

    def env_vars(**kwargs):
        command = job_command(tiny_params(), ["tune"], commands=COMMANDS, address="h:1", working_dir=tmp_path, **kwargs)
        return json.loads(command[4].removeprefix("--runtime-env-json="))["env_vars"]

    assert env_vars()["MLFLOW_TRACKING_URI"] == "http://mlflow.team:5000"
    assert "MLFLOW_TRACKING_PASSWORD" not in env_vars()
    assert env_vars(env=["MLFLOW_TRACKING_PASSWORD"])["MLFLOW_TRACKING_PASSWORD"] == "s3cret"


@pytest.mark.parametrize(
    "stage, address, expected",
    [
        (["nope"], "h:1", r"\['nope'\] is not a pipeline command; expected one of \['apply-profile'"),
        ([], "h:1", "no stage"),
        (["submit", "train"], "h:1", "is not a pipeline command"),
        (["train", "equal"], None, "no cluster given; pass --address, set ray.address or \\$RAY_ADDRESS"),
    ],
)
def test_bad_submissions_are_refused_before_contacting_a_cluster(stage, address, expected, tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match=expected):
        job_command(tiny_params(), stage, commands=COMMANDS, address=address, working_dir=tmp_path)
