"""Ray Train on a real local cluster: two workers compute what one worker with two accumulation steps
computes, with identical weights on every rank; folds trained side by side end exactly as folds trained one after
the other; a killed worker and an interrupted driver both resume
from the last checkpoint and end where an uninterrupted run ends; bad cluster settings fail fast."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import ray.train
import ray.train.torch
import torch

from pipeline.balancers import balancer_classes
from pipeline.config import deep_merge, parse_params
from pipeline.data.folds import load_fold
from pipeline.errors import ConfigError, DataError, PipelineError
from pipeline.tasks import build_tasks
from pipeline.train import cluster
from pipeline.train.checkpoint import BEST, LAST
from pipeline.train.distributed import FoldJob, TorchComm, run_fold, run_folds
from pipeline.train.loop import Trainer
from tests.conftest import build_data, tiny_params
from tests.ray_cluster import NUM_CPUS, free_port

pytestmark = pytest.mark.slow

SMALL = {"model": {"width": 8}, "train": {"epochs": 3}}
# Enough images that a global batch of 16 gives several optimiser steps per epoch.
DDP = deep_merge(
    SMALL,
    {
        "data": {"synthetic": {"n_benign": 20, "n_malignant": 12}},
        "augment": {"copies_per_image": 3},
        "train": {"epochs": 2, "batch_size": 16},
    },
)


def small_params(base: dict[str, Any] = SMALL, **overrides):
    return tiny_params(**deep_merge(base, overrides))


@dataclass(frozen=True)
class EpochLog:
    """A picklable epoch callback that appends each epoch number it sees to a file."""

    path: str

    def __call__(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(f"{record['epoch']}\n")

    def epochs(self) -> list[int]:
        return [int(line) for line in Path(self.path).read_text().split()] if Path(self.path).exists() else []


@dataclass(frozen=True)
class Rendezvous:
    """A picklable epoch callback: at its fold's first epoch end it waits up to ``timeout_s`` for every fold in
    ``folds`` to reach theirs, and marks the fold ``met`` when they all did, which only folds trained at the same
    time can do."""

    folder: str
    fold: int
    folds: tuple[int, ...]
    timeout_s: float = 120.0

    def __call__(self, record: dict[str, Any]) -> None:
        folder = Path(self.folder)
        arrived = folder / f"arrived_{self.fold}"
        if arrived.exists():
            return
        arrived.touch()
        deadline = time.monotonic() + self.timeout_s
        while not all((folder / f"arrived_{f}").exists() for f in self.folds):
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        (folder / f"met_{self.fold}").touch()


def test_the_jobs_tasks_and_actors_run_at_the_priority_of_an_in_process_run(on_cluster):
    cluster.connect(small_params())

    @ray.remote(num_cpus=0)
    def niceness() -> int:
        return os.nice(0)

    @ray.remote(num_cpus=0)
    class Worker:
        def niceness(self) -> int:
            return os.nice(0)

    # Ray's own default for worker processes is 15: a training worker would yield to every idle-priority process
    assert ray.get(niceness.remote()) == 0
    assert ray.get(Worker.remote().niceness.remote()) == 0


def test_folds_side_by_side_end_bit_identical_to_folds_one_after_the_other(on_cluster, tiny_data, tmp_path):
    params = small_params(ray={"storage_path": str(tmp_path / "ray_results")})
    cluster.connect(params)
    assert cluster.job_slots(params) == 2  # the session cluster's 2 CPUs hold two 1-CPU jobs
    folds = (0, 1)
    jobs = [
        FoldJob(f, tmp_path / "side" / f"fold_{f}", f"side-{f}", Rendezvous(str(tmp_path), f, folds)) for f in folds
    ]
    side_by_side = run_folds(params, "dwa", tiny_data, jobs)
    assert all((tmp_path / f"met_{f}").exists() for f in folds), "the folds did not train at the same time"

    for job in jobs:
        alone = run_fold(
            params, "dwa", job.fold, tiny_data, tmp_path / "alone" / f"fold_{job.fold}", f"alone-{job.fold}"
        )
        np.testing.assert_equal(side_by_side[job.fold].history, alone.history)
        for name in (BEST, LAST):
            side_state = torch.load(job.out_dir / name, weights_only=True)["model"]
            alone_state = torch.load(tmp_path / "alone" / f"fold_{job.fold}" / name, weights_only=True)["model"]
            assert side_state.keys() == alone_state.keys()
            assert all(torch.equal(side_state[k], alone_state[k]) for k in side_state), (job.fold, name)


def test_a_failing_fold_stops_the_fold_beside_it_frees_its_cpus_and_raises_its_own_error(
    on_cluster, tiny_data, tmp_path
):
    params = small_params(
        train={"epochs": 1000}, ray={"storage_path": str(tmp_path / "ray_results"), "max_failures": 0}
    )
    beside = EpochLog(str(tmp_path / "epochs.txt"))
    jobs = [FoldJob(0, tmp_path / "fold_0", "long-0", beside), FoldJob(9, tmp_path / "fold_9", "no-fold-9")]
    with pytest.raises(DataError, match="no fold 9") as error:
        run_folds(params, "dwa", tiny_data, jobs)
    assert not isinstance(error.value, ray.exceptions.RayTaskError)

    deadline = time.monotonic() + 10  # Ray frees a removed placement group's CPUs asynchronously
    while ray.available_resources().get("CPU", 0) < NUM_CPUS and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == NUM_CPUS, "the fold beside it still holds its workers"
    stopped_after = len(beside.epochs())
    time.sleep(3)
    assert len(beside.epochs()) == stopped_after < 1000, "the fold beside it is still training"


# ---------------------------------------------------------------- equivalence
def _final_state(trainer: Trainer) -> dict[str, Any]:
    return {
        "parameters": {name: p.detach().clone() for name, p in trainer.model.named_parameters()},
        "weights": trainer.balancer.weights().detach().clone(),
        "history": trainer.history,
    }


def train_every_balancer(config: dict[str, Any]) -> None:
    """Ray Train worker: the production Trainer over TorchComm for each balancer; rank 0 saves the results."""
    params = parse_params(config["params"])
    data = load_fold(Path(config["data_root"]), 0)
    for balancer in balancer_classes():
        trainer = Trainer(
            params,
            build_tasks(params),
            balancer,
            data,
            0,
            comm=TorchComm(),
            device=torch.device("cpu"),
            check_rank_consistency=True,
        )
        trainer.fit()
        if trainer.comm.rank == 0:
            torch.save(_final_state(trainer), Path(config["out"]) / f"{balancer}.pt")


def test_two_workers_equal_one_worker_accumulating_two_chunks(on_cluster, tmp_path_factory, tmp_path):
    two_workers = small_params(DDP, ray={"num_workers": 2})
    data = build_data(two_workers, tmp_path_factory.mktemp("ddp_data"))
    fold = load_fold(data, 0)
    assert len(fold.train) // 16 >= 3  # several optimiser steps per epoch

    cluster.connect(two_workers)
    ray.train.torch.TorchTrainer(
        train_every_balancer,
        train_loop_config={"params": two_workers.model_dump(mode="json"), "data_root": str(data), "out": str(tmp_path)},
        torch_config=ray.train.torch.TorchConfig(backend="gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name="equivalence", storage_path=str(tmp_path / "ray_results")),
    ).fit()  # check_rank_consistency raises (and fails the job) if the ranks' weights ever differ

    # The reference runs here: with one rank the loop never all-reduces, so TorchComm = LocalComm.
    # Parameters and balancer weights must agree (on the CPU they are bit-identical); BatchNorm running
    # statistics legitimately differ (per-rank updates averaged per epoch vs sequential micro-batch
    # updates), and so do validation figures, which is why neither is compared.
    one_worker = small_params(DDP, train={"grad_accum_steps": 2})
    for balancer in balancer_classes():
        reference = Trainer(one_worker, build_tasks(one_worker), balancer, fold, 0, device=torch.device("cpu"))
        reference.fit()
        expected, got = _final_state(reference), torch.load(tmp_path / f"{balancer}.pt", weights_only=True)
        for name, value in expected["parameters"].items():
            torch.testing.assert_close(got["parameters"][name], value, rtol=1e-5, atol=1e-6, msg=f"{balancer}: {name}")
        torch.testing.assert_close(got["weights"], expected["weights"], rtol=1e-5, atol=1e-7)
        for mine, theirs in zip(got["history"], expected["history"], strict=True):
            for key in (k for k in theirs if k.startswith(("weight/", "train_loss/"))):
                assert mine[key] == pytest.approx(theirs[key], rel=1e-5), (balancer, mine["epoch"], key)


def test_fp16_ranks_skip_overflowing_steps_together(on_cluster, tiny_data, tmp_path):
    # GradNorm differentiates each task's loss times the loss scale, so its half-precision per-task backward
    # passes are scaled like the rest. Gradients are all-reduced before they are unscaled, so an overflow on
    # one rank makes every rank skip the step and back off.
    params = small_params(
        train={"amp": "fp16", "epochs": 2, "batch_size": 4},
        ray={"num_workers": 2, "storage_path": str(tmp_path / "ray_results")},
    )
    result = run_fold(params, "gradnorm", 0, tiny_data, tmp_path / "out", "fp16-ranks", check_rank_consistency=True)
    assert len(result.history) == 2  # check_rank_consistency would have failed the job on diverged ranks
    scale = torch.load(tmp_path / "out" / LAST, weights_only=True)["compute"]["scale"]
    assert 1.0 < scale < 2.0**16  # steps overflowed and were skipped (the scale backed off) along the way


# ---------------------------------------------------------------- recovery
def test_killed_workers_restart_and_a_rerun_driver_resumes_exactly(on_cluster, tiny_data, tmp_path):
    """Ray restarts a worker killed in epoch 1 (ray.max_failures = 1); a second kill in epoch 2 exhausts
    the budget and fails the driver; running the driver again finishes the run. Each time training
    resumes from the last checkpoint, and the result equals an uninterrupted single-process run."""
    params = small_params(ray={"max_failures": 1, "storage_path": str(tmp_path / "ray_results")})
    log = EpochLog(str(tmp_path / "epochs.log"))
    faults = [
        {"epoch": epoch, "step": 0, "rank": 0, "marker": str(tmp_path / f"killed_in_epoch_{epoch}")} for epoch in (1, 2)
    ]
    out = tmp_path / "out"

    with pytest.raises(PipelineError, match="Ray Train run 'recovery' failed: rank 0: "):
        run_fold(params, "gradnorm", 0, tiny_data, out, "recovery", epoch_callback=log, faults=faults)
    assert all(Path(f["marker"]).exists() for f in faults)  # both kills happened
    assert log.epochs() == [0, 1]  # after the restart, epoch 0 came from the checkpoint

    result = run_fold(params, "gradnorm", 0, tiny_data, out, "recovery", epoch_callback=log, faults=faults)
    assert log.epochs() == [0, 1, 2]  # the second driver trained epoch 2 only

    straight = Trainer(params, build_tasks(params), "gradnorm", load_fold(tiny_data, 0), 0, device=torch.device("cpu"))
    np.testing.assert_equal(result.history, straight.fit().history)  # losses, weights, metrics: exact, NaN-aware
    last = torch.load(out / LAST, weights_only=True)
    assert last["epoch"] == 3
    np.testing.assert_equal(last["history"], result.history)
    for name, value in straight.model.state_dict().items():
        assert torch.equal(last["model"][name], value), name
    assert torch.load(out / BEST, weights_only=True)["epoch"] == result.best_epoch
    assert len(last["timer"]["epoch_seconds"]) == 3  # efficiency figures cover the epochs of both drivers


# ---------------------------------------------------------------- bad input
def test_an_unreachable_cluster_fails_within_seconds(monkeypatch):
    if ray.is_initialized():
        ray.shutdown()
    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    started = time.monotonic()
    with pytest.raises(PipelineError, match=f"RAY_ADDRESS = '{address}': no Ray cluster answers"):
        cluster.connect(small_params())
    assert time.monotonic() - started < 6
    assert not ray.is_initialized()


def test_more_workers_than_cluster_cpus_is_a_config_error(on_cluster, tiny_data, tmp_path):
    params = small_params(ray={"num_workers": on_cluster.num_cpus + 1})
    started = time.monotonic()
    with pytest.raises(
        ConfigError, match=rf"ray.num_workers = {on_cluster.num_cpus + 1} .* cluster has {on_cluster.num_cpus};"
    ):
        run_fold(params, "equal", 0, tiny_data, tmp_path, "too_wide")
    assert time.monotonic() - started < 30  # an error, not a wait for resources that never come


def test_sync_batchnorm_on_cpu_workers_is_a_config_error(on_cluster, tiny_data, tmp_path):
    params = small_params(ray={"sync_batchnorm": True, "use_gpu": "auto"})
    with pytest.raises(ConfigError, match="SyncBatchNorm is CUDA-only"):
        run_fold(params, "equal", 0, tiny_data, tmp_path, "sync_bn")


def test_train_device_decides_whether_workers_take_gpus(on_cluster):
    use_gpu = cluster.use_gpu
    assert use_gpu(small_params(train={"device": "cpu"}, ray={"use_gpu": "auto"})) is False
    assert use_gpu(small_params(train={"device": "cuda"}, ray={"use_gpu": "auto"})) is True
    assert use_gpu(small_params(train={"device": "auto"}, ray={"use_gpu": "auto"})) is False  # this cluster: no GPUs
    with pytest.raises(ConfigError, match="train.device = 'cpu' contradicts ray.use_gpu = 'yes'"):
        use_gpu(small_params(train={"device": "cpu"}, ray={"use_gpu": "yes"}))
