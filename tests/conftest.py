"""Shared fixtures: a tiny parameter set and a tiny dataset built once by the real data stages."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import Params, deep_merge, parse_params

pytest_plugins = ["tests.ray_cluster"]  # the session's Ray cluster: fixtures ray_cluster, on_cluster

TINY = {
    "seed": 7,
    "data": {
        "synthetic": {"n_normal": 0, "n_benign": 14, "n_malignant": 10, "size": 64},
        "image_size": 32,
        "workers": 1,
    },
    "split": {"test_fraction": 0.25, "k_folds": 2},
    "augment": {"copies_per_image": 1},
    # float32, contiguous: the tests of the arithmetic (equivalences, bit-identical resumes, perturbation sizes) hold
    # it to float32's precision; the default `auto` (bf16 on an AVX-512 BF16/AMX CPU) has its own tests.
    "train": {
        "epochs": 4,
        "batch_size": 8,
        "lr": 0.001,
        "plateau_patience": 1,
        "num_threads": 1,
        "amp": "off",
        "channels_last": False,
    },
}


def tiny_params(**overrides) -> Params:
    """The tiny profile with nested ``overrides`` merged in (e.g. ``train={"epochs": 2}``)."""
    return parse_params(deep_merge(TINY, overrides), "tiny params")


def build_data(params: Params, root: Path) -> Path:
    """Run the data stages for ``params`` into ``root`` (``ingested/ split/ preprocessed/ augmented/``)."""
    from pipeline.data.build import build_data_root

    return build_data_root(params, root)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A data root for the tiny profile."""
    return build_data(tiny_params(), tmp_path_factory.mktemp("tiny_data"))


@contextlib.contextmanager
def isolated_mlflow(**env: str) -> Iterator[None]:
    """Undo MLflow's process-wide state on exit (tracking URI, experiment, active run; it also exports them
    as env vars); the ``env`` variables are set meanwhile."""
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        mp.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)  # restored on exit
        try:
            yield
        finally:
            while mlflow.active_run():
                mlflow.end_run()
            mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module", autouse=True)
def _mlflow_state_per_module() -> Iterator[None]:
    """Every test module starts without MLflow env vars and leaves none behind: ``mlflow.set_tracking_uri``
    exports ``MLFLOW_TRACKING_URI``, which a later module's subprocesses (``dvc repro``, Ray workers) would
    inherit. Module-scoped, so a module fixture may point MLflow at its store for all of its tests."""
    with isolated_mlflow():
        yield
