"""`dvc repro` of the real dvc.yaml: runs every stage once, then only what a param change touches."""

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import deep_merge
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


FAKE_SECRET = "fake-secret-3f9d"


def _dvc(cwd: Path, *args: str) -> str:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},  # a user's team server too
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),  # the local Ray's token: nothing written to ~/.ray
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    out = subprocess.run([Path(sys.executable).parent / "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def test_repro_is_incremental(tmp_path):
    for item in ("pipeline", "profiles", "dvc.yaml"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, tmp_path / item)
    full = yaml.safe_load((ROOT / "params.yaml").read_text())  # dvc needs every declared key present
    params = deep_merge(
        deep_merge(full, TINY),
        {
            "train": {"balancers": ["equal", "atdwa"], "epochs": 1, "folds": [0]},
            "tune": {
                "grid": {"gamma": [0.5, 0.8], "t0": [2.0], "window": [3]},
                "epochs": 1,
                "max_concurrent_trials": 2,  # trials side by side: their epoch lines must all show
                "selection": {"rule": "min_mean_val_loss"},
            },
        },
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    _dvc(tmp_path, "init", "--no-scm", "-q")

    first = _dvc(tmp_path, "repro")
    assert _ran(first) == {
        "ingest",
        "split",
        "preprocess",
        "augment",
        "tune",
        "train@equal",
        "train@atdwa",
        "evaluate",
        "report",
        "promote",
    }
    _assert_tracked(tmp_path, epochs=params["train"]["epochs"])
    _assert_metrics_table(tmp_path, balancers=params["train"]["balancers"])
    _assert_readable_log(first, params)
    assert "up to date" in _dvc(tmp_path, "status")
    assert _ran(_dvc(tmp_path, "repro")) == set()

    params["tune"]["grid"]["gamma"] = [0.5, 0.8, 0.9]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    ran = _ran(_dvc(tmp_path, "repro"))
    # train@equal does not depend on the sweep; train@atdwa and what follows re-run if the selection changed
    assert {"tune", "report"} <= ran <= {"tune", "train@atdwa", "evaluate", "report", "promote"}
    assert (tmp_path / "metrics" / "equal" / "metrics.json").is_file()
    assert (tmp_path / "metrics" / "equal" / "folds.json").is_file()
    assert set(json.loads((tmp_path / "reports" / "metrics.json").read_text())) == {"equal", "atdwa"}
    assert "## Table II: test metrics" in (tmp_path / "reports" / "report.md").read_text()
    assert json.loads((tmp_path / "reports" / "promotion.json").read_text())["decision"] in ("promoted", "refused")
    _assert_only_touched_stages_change(tmp_path, params)


def _assert_only_touched_stages_change(root: Path, params: dict) -> None:
    """One balancer's settings are that balancer's stage's alone (and the sweep's, when it is the balancer swept:
    the settings the grid leaves out come from there); listing another balancer adds a stage and
    changes the stages that gather all of them, never the balancers already trained."""
    for change, changed in (
        ({"balancer": {"atdwa": {"t0": 3.0}}}, {"tune", "train@atdwa"}),  # the swept balancer: the sweep too
        ({"balancer": {"gradnorm": {"alpha": 1.0}}}, set()),  # not in train.balancers
        ({"train": {"balancers": ["equal", "atdwa", "dwa"]}}, {"train@dwa", "evaluate", "promote"}),
    ):
        (root / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, change)))
        assert set(json.loads(_dvc(root, "status", "--json"))) == changed, change
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def _assert_readable_log(output: str, params: dict) -> None:
    """Written to a file (not a terminal), a run says one line per stage step and per epoch of every training
    job and sweep trial, no library chatter, no terminal colours."""
    assert "\r" not in output  # no progress-bar redraws
    assert "\x1b[" not in output
    for chatter in (
        "TrainingReport(",
        "Checkpoint successfully created",
        "Failed to query Ray Train Controller",
        "INFO mlflow",
        "across cluster",  # Ray's folding of similar lines, which hid concurrent trials' epochs
        "WARNING: 'pipeline",  # DVC on a dependency (an empty module)
        "PreemptionWatcher",  # Ray core on the actor a Train job starts to watch for node preemption (one local node)
    ):
        assert chatter not in output
    assert re.search(r"^augment: \d+ img in [\d.]+ s", output, re.MULTILINE)
    epoch = r"\] epoch +(\d+) \| .*dice [\d.]+ w [\d.]+ \| .*accuracy [\d.]+ w [\d.]+ \| T \S+ lr \S+$"
    trained = re.findall(r"^\[(\w+) fold 0" + epoch, output, re.MULTILINE)
    balancers, epochs = params["train"]["balancers"], params["train"]["epochs"]
    assert sorted(trained) == sorted((b, str(e)) for b in balancers for e in range(epochs))  # each once
    swept = re.findall(r"^\[atdwa gamma=([\d.]+) t0=\S+ window=\d+ fold 0" + epoch, output, re.MULTILINE)
    grid, sweep_epochs = params["tune"]["grid"]["gamma"], params["tune"]["epochs"]
    assert sorted(swept) == sorted((str(g), str(e)) for g in grid for e in range(sweep_epochs))


def _assert_metrics_table(root: Path, balancers: list[str]) -> None:
    """`dvc metrics show` is a table a terminal can show: a row per balancer, the same dozen-or-fewer columns."""
    (workspace,) = json.loads(_dvc(root, "metrics", "show", "--json")).values()  # keyed "" without git
    shown = workspace["data"]
    assert set(shown) == {f"metrics/{b}/metrics.json" for b in balancers}

    def columns(tree: dict, prefix: str = "") -> set[str]:
        return set().union(
            *(columns(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k} for k, v in tree.items())
        )

    rows = [columns(file["data"]) for file in shown.values()]
    assert all(row == rows[0] for row in rows) and len(rows[0]) <= 12
    assert max(len(line) for line in _dvc(root, "metrics", "show").splitlines()) <= 160


def _assert_tracked(root: Path, epochs: int) -> None:
    """The train stage left an MLflow parent run, a child per fold with per-epoch metrics, and a model."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.info.run_name.startswith("train · equal · data ")]
    children = [r for r in runs if r.info.run_name.startswith("equal · fold 0 · data ")]
    assert len(parents) == 1 and len(children) == 1
    child = children[0]
    assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert len(client.get_metric_history(child.info.run_id, "train_loss/lesion")) == epochs
    assert "test/lesion/dice" in child.data.metrics
    selected = json.loads((root / "reports" / "tune.json").read_text())["selected"]
    atdwa = [r for r in runs if r.info.run_name.startswith("train · atdwa · data ")]
    assert len(atdwa) == 1  # its final training used the tuned γ/T0
    assert float(atdwa[0].data.params["balancer.atdwa.gamma"]) == selected["gamma"]
    assert float(atdwa[0].data.params["balancer.atdwa.t0"]) == selected["t0"]
    for run in runs:
        assert not any(FAKE_SECRET in v for v in {**run.data.params, **run.data.tags}.values())
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    model = mlflow.pytorch.load_model(f"runs:/{child.info.run_id}/model")
    import torch

    assert set(model(torch.zeros(2, 1, 32, 32))) == {"lesion", "diagnosis"}
