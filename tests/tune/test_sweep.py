"""The tune stage on a real Ray cluster: bad sweeps fail before launching; a killed sweep resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.balancers import check_methods
from pipeline.balancers.atdwa import ATDWASettings
from pipeline.balancers.dwa import DWASettings
from pipeline.config import deep_merge, parse_params, with_overlay
from pipeline.errors import ConfigError
from pipeline.tune import tune as stage
from tests.conftest import TINY, tiny_params

pytestmark = pytest.mark.slow

GAMMAS = [0.2, 0.5, 0.8]
SWEEP = {
    "model": {"width": 8},
    "train": {"epochs": 2},
    "tune": {"grid": {"gamma": GAMMAS, "t0": [2.0], "window": [3]}, "max_concurrent_trials": 1},
    "tracking": {"system_metrics": False},
}


def test_an_empty_grid_a_negative_gamma_or_a_setting_the_balancer_lacks_is_a_config_error():
    with pytest.raises(ConfigError, match=r"tune.grid: the grid is empty"):
        tiny_params(tune={"grid": {}})
    with pytest.raises(ConfigError, match=r"tune.grid: gamma: no values"):
        tiny_params(tune={"grid": {"gamma": []}})
    with pytest.raises(
        ConfigError, match=r"tiny params: tune.grid.gamma = -0.1: Input should be greater than or equal"
    ):
        check_methods(tiny_params(tune={"grid": {"gamma": [-0.1, 0.5]}}))
    with pytest.raises(ConfigError, match=r"tune.grid: \['temperature'\] are not settings of atdwa; its settings are"):
        check_methods(tiny_params(tune={"grid": {"temperature": [1.0]}}))
    with pytest.raises(ConfigError, match=r"tune.balancer = 'pcgrad': expected one of \['atdwa'"):
        check_methods(tiny_params(tune={"balancer": "pcgrad"}))


def test_min_std_over_a_single_fold_is_a_config_error():
    with pytest.raises(ConfigError, match="min_std' needs at least 2 folds"):
        stage.check_selection(tiny_params(train={"folds": [0]}))


def test_a_per_class_figure_can_be_selected_on():
    raw = {"workload": "wound", "tune": {"selection": {"metric": "tissue.dice_granulation"}}}
    params = parse_params(raw, "test")
    assert stage.check_selection(params) == ["tissue.dice_granulation", "val_loss"]


def test_more_concurrent_trials_than_cpus_fails_before_launching(on_cluster, tiny_data, tmp_path):
    params = tiny_params(
        **deep_merge(
            SWEEP,
            {
                "tune": {"max_concurrent_trials": on_cluster.num_cpus + 1},
                "ray": {"storage_path": str(tmp_path / "ray_results")},
                "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
            },
        )
    )
    with pytest.raises(
        ConfigError,
        match=r"tune.max_concurrent_trials = 3 trials × 1 CPUs each .* need 3 CPUs, but the Ray cluster has 2",
    ):
        stage.run(params, data=tiny_data, reports=tmp_path / "reports")
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "reports").exists()


def test_a_killed_sweep_resumes_without_retraining_finished_trials(on_cluster, tiny_data, tmp_path):
    params = deep_merge(
        deep_merge(TINY, SWEEP),
        {
            "ray": {"storage_path": str(tmp_path / "ray_results")},
            "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        },
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "data").symlink_to(tiny_data)
    command = [os.path.abspath(sys.executable), "-m", "pipeline", "tune"]

    driver = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )
    finished = _wait_for_finished_trials(tmp_path / "ray_results", driver)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert 1 <= len(finished) < len(GAMMAS), "kill the driver between the first and the last trial"
    before = {path: path.read_text() for path in finished}

    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "resuming sweep" in rerun.stdout
    assert {path: path.read_text() for path in finished} == before  # finished trials did not run again
    results = sorted((tmp_path / "ray_results").glob("*/*/result.json"))
    assert len(results) == len(GAMMAS)
    # Every trial ends with both folds. A fold reported within Tune's experiment-state period before the kill
    # may be reported again after it (from its finished checkpoint: _assert_tracked shows no epoch ran twice).
    for path in results:
        done = [json.loads(line)["folds_done"] for line in path.read_text().splitlines()]
        assert done == sorted(done) and done[-1] == 2 and set(done) == {1, 2}

    table = json.loads((tmp_path / "reports" / "tune.json").read_text())
    assert [row["gamma"] for row in table["rows"]] == GAMMAS
    assert all(row["status"] == "complete" and row["folds_done"] == 2 for row in table["rows"])
    assert (tmp_path / "reports" / "tune_sensitivity.png").stat().st_size > 0
    tuned = with_overlay(tiny_params(), tmp_path / "reports" / "tuned_params.yaml", "atdwa")
    assert ATDWASettings.of(tuned, "atdwa").gamma == table["selected"]["gamma"]
    untouched = with_overlay(tiny_params(), tmp_path / "reports" / "tuned_params.yaml", "equal")
    assert untouched.model_dump() == tiny_params().model_dump()
    _assert_tracked(tmp_path / "mlflow.db", epochs=params["train"]["epochs"])


def _wait_for_finished_trials(results: Path, driver: subprocess.Popen, timeout_s: float = 300) -> list[Path]:
    """Poll the sweep's trial results until at least one trial has reported both folds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert driver.poll() is None, "the sweep ended before it could be killed"
        finished = [p for p in results.glob("*/*/result.json") if len(p.read_text().splitlines()) == 2]
        if finished:
            return finished
        time.sleep(0.2)
    raise AssertionError("no trial finished in time")


def _assert_tracked(database: Path, epochs: int) -> None:
    """One trial run per grid point (tagged, under the last sweep run), one fold run per fold, epochs logged once."""
    client = MlflowClient(f"sqlite:///{database}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = sorted(
        (r for r in runs if r.data.tags.get("stage") == "tune" and "tune_trial" not in r.data.tags),
        key=lambda r: r.info.start_time,
    )
    trials = [r for r in runs if "tune_trial" in r.data.tags and "fold" not in r.data.tags]
    folds = [r for r in runs if "tune_trial" in r.data.tags and "fold" in r.data.tags]
    assert len(parents) == 2  # the killed invocation and the resumed one
    assert [r.info.status for r in parents] == ["KILLED", "FINISHED"]
    assert sorted(float(r.data.params["balancer.atdwa.gamma"]) for r in trials) == GAMMAS
    assert all(r.data.tags["mlflow.parentRunId"] == parents[-1].info.run_id for r in trials)
    assert len(folds) == 2 * len(GAMMAS)
    trial_ids = {r.info.run_id for r in trials}
    for run in folds:
        assert run.data.tags["mlflow.parentRunId"] in trial_ids
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss/lesion")] == list(range(epochs))


def test_a_trial_with_several_workers_drives_a_ray_train_job_per_fold(on_cluster, tiny_data, tmp_path):
    """Here the sweep is over DWA's temperature: any balancer's settings sweep the same way."""
    params = tiny_params(
        **deep_merge(
            SWEEP,
            {
                "train": {"epochs": 1},
                "tune": {"balancer": "dwa", "grid": {"temperature": [3.0]}},
                "ray": {"num_workers": on_cluster.num_cpus, "storage_path": str(tmp_path / "ray_results")},
                "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
            },
        )
    )
    table = stage.run(params, data=tiny_data, reports=tmp_path / "reports")
    assert table.rows[0]["status"] == "complete" and table.rows[0]["folds_done"] == 2
    assert table.balancer == "dwa" and table.selected == {"temperature": 3.0}
    tuned = with_overlay(tiny_params(), tmp_path / "reports" / "tuned_params.yaml", "dwa")
    assert DWASettings.of(tuned, "dwa").temperature == 3.0
    # each fold was a Ray Train run of its own (named after balancer, fold and params), beside the sweep
    assert len([p for p in (tmp_path / "ray_results").iterdir() if p.name.startswith("dwa-fold")]) == 2
