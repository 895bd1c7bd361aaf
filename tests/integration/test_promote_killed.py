"""``promote`` killed (SIGKILL) half-way against the team stack's MLflow server on PostgreSQL, then re-run.

The driver is a ``python -m pipeline promote`` child process that reaches the server through
:mod:`tests.integration.intercept`, which kills it right after the server has answered the request at the
kill point, so each kill lands exactly there. The history: a "bad" model becomes champion (version 1);
a "good" candidate's driver is killed once just after its version 2 was created, once just after it moved
``champion``; a third run finishes. Every alias move of every run is checked as the server applied it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.data.folds import load_test
from pipeline.registry.promote import REPORT_TAG, STATE_TAG
from tests.conftest import isolated_mlflow
from tests.integration.intercept import proxy
from tests.registry.conftest import constant_model, promote, registry_params, write_checkpoints

# ~8 min on 2 loaded cores: every request to the basic-auth server costs a password hash (~0.4 s) and each
# promote uploads the pipeline package file by file; `make test-expensive` runs it.
pytestmark = [pytest.mark.slow, pytest.mark.expensive]

ROOT = Path(__file__).resolve().parents[2]
MODEL = "killed-promote"
EXPERIMENT = "killed-promote"
CREATE = "/api/2.0/mlflow/model-versions/create"
ALIAS = "/api/2.0/mlflow/registered-models/alias"
DRIVER_TIMEOUT_S = 300


class _Driver:
    """Runs ``promote`` in child processes through the proxy, and stands at the proxy's side: it notes every
    alias move the server applied, with the aliased version's report (tag and file) at that moment, and
    kills the child (its whole process group) after the answer ``kill_at`` picks."""

    def __init__(self, client: MlflowClient, report: Path) -> None:
        self.client, self.report = client, report
        self.moves: list[dict] = []
        self.kill_at = None
        self.child: subprocess.Popen | None = None

    def on_answered(self, method: str, path: str, body: bytes) -> bool:
        request = json.loads(body) if method == "POST" and path in (CREATE, ALIAS) else {}
        if path == ALIAS and request:
            tags = self.client.get_model_version(request["name"], request["version"]).tags
            self.moves.append(
                {
                    "alias": request["alias"],
                    "version": request["version"],
                    "report_tag": json.loads(tags[REPORT_TAG]) if REPORT_TAG in tags else None,
                    "report_file": json.loads(self.report.read_text()) if self.report.exists() else None,
                }
            )
        if self.child is None or self.kill_at is None or not self.kill_at(path, request):
            return False
        os.killpg(self.child.pid, signal.SIGKILL)
        self.kill_at = None
        return True

    def run_killed(self, params_file: Path, work: Path, data: Path, kill_at) -> None:
        """Run promote in a child process and return once it was killed at ``kill_at(path, request)``."""
        self.kill_at = kill_at
        command = [
            sys.executable,
            "-m",
            "pipeline",
            "--params",
            str(params_file),
            "promote",
            "--models",
            str(work / "models"),
            "--metrics",
            str(work / "metrics"),
            "--data",
            str(data),
            "--report",
            str(self.report),
        ]
        with open(work / "driver.log", "wb") as log:
            self.child = subprocess.Popen(
                command,
                cwd=work,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            returncode = self.child.wait(timeout=DRIVER_TIMEOUT_S)
        self.child = None
        assert returncode == -signal.SIGKILL, (work / "driver.log").read_text()[-3000:]


def _state(client: MlflowClient) -> dict:
    versions = client.search_model_versions(f"name = '{MODEL}'")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return {
        "aliases": dict(client.get_registered_model(MODEL).aliases),
        "versions": {v.version: {"state": v.tags.get(STATE_TAG), "report": REPORT_TAG in v.tags} for v in versions},
        "running": len(client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")),
    }


@pytest.fixture(scope="module")
def history(team_server, tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("killed_promote")
    credentials = {"MLFLOW_TRACKING_USERNAME": team_server.username, "MLFLOW_TRACKING_PASSWORD": team_server.password}
    with isolated_mlflow(**credentials):
        client = MlflowClient(team_server.url)
        driver = _Driver(client, tmp / "promotion.json")
        with proxy(team_server.url, driver.on_answered) as url:
            params = registry_params(
                tmp, tracking={"uri": url, "experiment": EXPERIMENT}, registry={"model_name": MODEL}
            )
            params_file = tmp / "params.yaml"
            params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
            labels = np.asarray(load_test(tiny_data).read(np.arange(len(load_test(tiny_data))))["label"])
            majority = int(np.bincount(labels, minlength=2).argmax())
            promote(params, tmp, tiny_data, constant_model(params, -20.0, 1 - majority))  # bad: version 1, champion
            write_checkpoints(tmp, {0: constant_model(params, 20.0, majority)})  # the good candidate
            states = {}
            driver.run_killed(params_file, tmp, tiny_data, lambda path, request: path == CREATE)
            states["registered"] = _state(client)
            driver.run_killed(
                params_file, tmp, tiny_data, lambda path, request: path == ALIAS and request["alias"] == "champion"
            )
            states["champion moved"] = _state(client)
            document = promote(params, tmp, tiny_data)
            states["rerun"] = _state(client)
        yield {
            "states": states,
            "moves": driver.moves,
            "document": document,
            "report": tmp / "promotion.json",
            "tags": client.get_model_version(MODEL, "2").tags,
        }


def test_a_driver_killed_after_registering_leaves_a_pending_version_no_alias_points_at(history):
    assert history["states"]["registered"]["aliases"] == {"champion": "1", "challenger": "1"}
    assert history["states"]["registered"]["versions"]["2"] == {"state": "pending", "report": False}


def test_no_alias_ever_moves_to_a_version_before_its_report(history):
    moves = history["moves"]
    assert [(m["alias"], m["version"]) for m in moves] == [
        ("challenger", "1"),
        ("champion", "1"),  # the first model
        ("challenger", "2"),
        ("champion", "2"),  # the run killed at the champion move
        ("challenger", "2"),
        ("champion", "2"),  # the rerun that finished it
    ]
    for move in moves:
        report = move["report_tag"]
        assert report is not None, f"{move['alias']} moved to version {move['version']} before its report"
        assert report["version"] == move["version"] and move["report_file"] == report
        assert move["alias"] == "challenger" or report["decision"] == "promoted"


def test_a_driver_killed_after_moving_champion_leaves_it_on_a_version_with_its_report(history):
    state = history["states"]["champion moved"]
    assert state["aliases"] == {"champion": "2", "challenger": "2"}
    assert state["versions"]["2"] == {"state": "pending", "report": True}


def test_the_rerun_finishes_the_killed_promotion_as_gated_against_the_previous_champion(history):
    state, document = history["states"]["rerun"], history["document"]
    assert document["decision"] == "promoted" and document["previous_champion"]["version"] == "1"
    assert json.loads(history["report"].read_text()) == document == json.loads(history["tags"][REPORT_TAG])
    assert state == {
        "aliases": {"champion": "2", "challenger": "2"},
        "running": 0,
        "versions": {"1": {"state": "complete", "report": True}, "2": {"state": "complete", "report": True}},
    }
