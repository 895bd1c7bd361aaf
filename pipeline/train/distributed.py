"""One (balancer, fold) as a Ray Train job: the production :class:`Trainer` on every worker.

Each worker is one rank: it loads the fold itself (memory-mapped; a pickled memmap would be copied),
builds the same model from the same seed, and averages gradients through :class:`TorchComm` (see
:mod:`pipeline.train.loop` for the batching that makes N workers equal to one with N accumulation
steps). Rank 0 reports each epoch's checkpoint to Ray Train; after a worker failure Ray restarts the
group (up to ``ray.max_failures`` times) and every rank resumes from the latest checkpoint.

Re-running :func:`run_fold` with the same ``run_name`` and ``ray.storage_path`` also resumes: Ray
Train keeps a snapshot of the run's checkpoints in ``<storage_path>/<run_name>/`` and hands its latest
checkpoint to ``ray.train.get_checkpoint()`` of the new job. A checkpoint of other params or data is
ignored (its fingerprint differs) and the fold trains from scratch.

Paths (``data_root``, a local ``ray.storage_path``) must be visible to every node of the cluster.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from pipeline.atomic import atomic_write_bytes
from pipeline.config import Params, parse_params
from pipeline.data.folds import load_fold
from pipeline.errors import ConfigError, PipelineError
from pipeline.tasks import build_tasks
from pipeline.tracking.system import NodeSystemMetrics
from pipeline.train import cluster
from pipeline.train.checkpoint import BEST, LAST, load_checkpoint, write_checkpoint_files
from pipeline.train.loop import EpochCallback, FoldResult, StepCallback, Trainer

CANCEL_GRACE_S = 60.0
"""How long a cancelled fold's Train job may take to abort (release its workers) before its driving task is killed."""


class TorchComm:
    """:class:`~pipeline.runtime.comm.Comm` over the initialised default ``torch.distributed`` group."""

    def __init__(self) -> None:
        if not dist.is_initialized():
            raise RuntimeError("TorchComm needs an initialised torch.distributed process group")
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Mean over ranks, written into ``tensor`` (floating point, on this rank's device) and returned."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.div_(self.world_size)

    def start_all_reduce_sum(self, tensor: torch.Tensor) -> dist.Work:
        return dist.all_reduce(tensor, op=dist.ReduceOp.SUM, async_op=True)

    def gather_objects(self, obj: Any) -> list[Any]:
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered


class RayCheckpointStore:
    """:class:`~pipeline.train.checkpoint.CheckpointStore` over Ray Train's checkpoint storage.

    ``save`` is a ``ray.train.report`` — a barrier every rank must reach once per epoch; rank 0 attaches
    the checkpoint (``last.pt`` + ``best.pt``), the others only the metrics.
    """

    def load(self) -> dict[str, Any] | None:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            return load_checkpoint(Path(folder) / LAST)

    def save(self, last: dict[str, Any], best: dict[str, Any], record: dict[str, Any]) -> None:
        metrics = scalar_metrics(record)
        if ray.train.get_context().get_world_rank() != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory(prefix="mtl-checkpoint-") as folder:
            write_checkpoint_files(Path(folder), last, best)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def scalar_metrics(record: dict[str, Any]) -> dict[str, int | float]:
    """The numeric entries of an epoch record as plain ints/floats (booleans as 0/1; None dropped)."""
    return {
        key: int(value) if isinstance(value, (bool, int)) else float(value)
        for key, value in record.items()
        if isinstance(value, (bool, int, float))
    }


def train_worker(config: dict[str, Any]) -> FoldResult | None:
    """Body of one Ray Train worker; returns the fold's result on rank 0 (Ray passes it to the driver).

    ``config``: ``params`` (``Params.model_dump(mode="json")``), ``balancer``, ``fold``, ``data_root``
    (absolute path), ``epoch_callback`` (called by rank 0 with each epoch record, or None), ``faults``
    (see :func:`fault_injector`), ``check_rank_consistency`` and ``system_metrics`` (a
    :class:`~pipeline.tracking.system.NodeSystemMetrics` that the first worker of each node samples into, or None).
    """
    params = parse_params(config["params"], "Ray Train job params")
    context = ray.train.get_context()
    with contextlib.ExitStack() as stack:
        if config["system_metrics"] is not None and context.get_local_rank() == 0:
            stack.enter_context(config["system_metrics"].sampling(context.get_node_rank()))
        return _train(params, config)


def _train(params: Params, config: dict[str, Any]) -> FoldResult | None:
    fold = config["fold"]
    comm = TorchComm()
    trainer = Trainer(
        params,
        build_tasks(params),
        config["balancer"],
        load_fold(Path(config["data_root"]), fold),
        fold,
        comm=comm,
        device=ray.train.torch.get_device(),
        check_rank_consistency=config["check_rank_consistency"],
    )
    if params.ray.sync_batchnorm:
        # convert_sync_batchnorm keeps the Parameter and buffer objects, so the optimiser Trainer built
        # still steps them; only the process group is needed (gradients are averaged by the loop).
        trainer.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(trainer.model)
    on_epoch: EpochCallback | None = config["epoch_callback"] if comm.rank == 0 else None
    result = trainer.fit(RayCheckpointStore(), on_epoch=on_epoch, on_step=fault_injector(config["faults"], comm.rank))
    return result if comm.rank == 0 else None


def fault_injector(faults: Sequence[dict[str, Any]], rank: int) -> StepCallback | None:
    """For tests of recovery: a step hook that kills this worker process, once per fault.

    Each fault ``{"epoch": e, "step": s, "rank": r, "marker": path}`` makes rank ``r`` exit with
    status 1 after step ``s`` of epoch ``e`` unless ``marker`` exists, which it creates first, so a
    restarted worker carries on. Before exiting it waits until Ray Train has registered every
    checkpoint reported so far, so the restart finds the latest one.
    """
    mine = {(f["epoch"], f["step"]): Path(f["marker"]) for f in faults if f["rank"] == rank}
    if not mine:
        return None

    def on_step(epoch: int, step: int) -> None:
        marker = mine.get((epoch, step))
        if marker is not None and not marker.exists():
            ray.train.get_all_reported_checkpoints()
            marker.touch()
            os._exit(1)

    return on_step


def run_fold(
    params: Params,
    balancer: str,
    fold: int,
    data_root: Path,
    out_dir: Path,
    run_name: str,
    *,
    epoch_callback: EpochCallback | None = None,
    faults: Sequence[dict[str, Any]] = (),
    check_rank_consistency: bool = False,
    system_metrics: NodeSystemMetrics | None = None,
) -> FoldResult:
    """Train ``balancer`` on ``fold`` with ``ray.num_workers`` Ray Train workers; resumable by ``run_name``.

    Connects to Ray first (:func:`pipeline.train.cluster.connect`). Writes ``<out_dir>/{best,last}.pt``
    from the run's final checkpoint and returns rank 0's :class:`FoldResult`. ``epoch_callback`` must be
    picklable: it runs inside the rank-0 worker. ``faults`` (tests only) kill workers mid-epoch, see
    :func:`fault_injector`; ``check_rank_consistency`` verifies after every step that all ranks hold
    identical weights; ``system_metrics`` samples each node's CPU, memory and GPUs into a run (see
    :mod:`pipeline.tracking.system`). Collectives that wait longer than ``ray.collective_timeout_s`` fail
    the job instead of hanging. Once ``ray.max_failures`` restarts are spent, raises the worker's PipelineError
    (ConfigError, DataError) when a worker raised one, else a PipelineError summarising the failure.
    """
    cluster.connect(params)
    gpu = cluster.use_gpu(params)
    if params.ray.sync_batchnorm and not gpu:
        raise ConfigError(
            f"ray.sync_batchnorm = true: SyncBatchNorm is CUDA-only, but the workers run on the CPU "
            f"(ray.use_gpu = {params.ray.use_gpu!r}); set ray.sync_batchnorm = false"
        )
    trainer = ray.train.torch.TorchTrainer(
        train_worker,  # type: ignore[arg-type]  # Ray Train v2 returns its value as Result.return_value
        train_loop_config={
            "params": params.model_dump(mode="json"),
            "balancer": balancer,
            "fold": fold,
            "data_root": str(Path(data_root).resolve()),
            "epoch_callback": epoch_callback,
            "faults": list(faults),
            "check_rank_consistency": check_rank_consistency,
            "system_metrics": system_metrics,
        },
        torch_config=ray.train.torch.TorchConfig(
            backend="nccl" if gpu else "gloo", timeout_s=params.ray.collective_timeout_s
        ),
        scaling_config=ray.train.ScalingConfig(
            num_workers=params.ray.num_workers,
            use_gpu=gpu,
            resources_per_worker={"CPU": params.ray.cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path(params),
            failure_config=ray.train.FailureConfig(max_failures=params.ray.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
    )
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as exc:
        raise _job_error(run_name, exc) from None
    if result.checkpoint is None or result.return_value is None:  # type: ignore[attr-defined]  # v2 (no stub yet)
        raise PipelineError(f"Ray Train run {run_name!r} finished without a checkpoint or a result")
    with result.checkpoint.as_directory() as folder:
        for name in (BEST, LAST):
            atomic_write_bytes(Path(out_dir) / name, (Path(folder) / name).read_bytes())
    return result.return_value  # type: ignore[attr-defined]


@dataclass(frozen=True)
class FoldJob:
    """One fold of a balancer as :func:`run_fold` trains it (its arguments besides params, balancer and data)."""

    fold: int
    out_dir: Path
    run_name: str
    epoch_callback: EpochCallback | None = None
    system_metrics: NodeSystemMetrics | None = None


def run_folds(params: Params, balancer: str, data_root: Path, jobs: Sequence[FoldJob]) -> dict[int, FoldResult]:
    """Train every job with :func:`run_fold`, as many side by side as the cluster holds (:func:`cluster.job_slots`);
    returns each fold's result.

    A fold's result does not depend on what runs beside it: its workers' threads (one per CPU a worker takes), batches
    and seeds are its own. Side by side, each fold's Train job is driven from a Ray task that takes no CPU (its workers
    take them), as Tune drives its trials. The first job to fail stops the others, whose Train jobs abort and free their
    CPUs before this returns (:func:`_cancel`), and its error is raised as its own type (a
    :class:`~pipeline.errors.PipelineError` from :func:`run_fold`).
    """
    cluster.connect(params)
    slots = min(len(jobs), cluster.job_slots(params))
    if slots <= 1:
        return {job.fold: _run_job(params, balancer, data_root, job) for job in jobs}
    anywhere = params.model_copy(update={"ray": params.ray.model_copy(update={"storage_path": storage_path(params)})})
    drive = ray.remote(num_cpus=0, max_retries=0)(_drive_job)
    waiting = list(jobs)
    running: dict[ray.ObjectRef, int] = {}  # each job's driving task → its fold
    results: dict[int, FoldResult] = {}
    try:
        while waiting or running:
            while waiting and len(running) < slots:
                job = waiting.pop(0)
                absolute = FoldJob(
                    job.fold, job.out_dir.resolve(), job.run_name, job.epoch_callback, job.system_metrics
                )
                running[drive.remote(anywhere, balancer, Path(data_root).resolve(), absolute)] = job.fold
            (finished,), _ = ray.wait(list(running), num_returns=1)
            fold = running.pop(finished)  # before ray.get raises: cancelling a finished task can crash Ray's driver
            results[fold] = ray.get(finished)
    except ray.exceptions.RayTaskError as exc:
        raise (exc.cause if isinstance(exc.cause, Exception) else exc) from None
    finally:
        _cancel(list(running))
    return results


def _drive_job(params: Params, balancer: str, data_root: Path, job: FoldJob) -> FoldResult:
    """:func:`_run_job` as the Ray task that drives a Train job; :func:`_cancel` interrupts it.

    Ray runs the task in its worker's main thread, where ``TorchTrainer.fit`` installs a SIGINT handler that aborts
    the job's controller (its workers and placement group with it). A handler left by an earlier job in this reused
    worker would abort that finished job's controller and swallow the interrupt, so the default one goes first.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return _run_job(params, balancer, data_root, job)


def _cancel(driving: list[ray.ObjectRef], grace_s: float = CANCEL_GRACE_S) -> None:
    """Stop the Train jobs that ``driving`` tasks (:func:`_drive_job`) drive, and wait until they are gone.

    Killing a driving task outright would leave its Train controller's placement group holding the job's CPUs until
    this driver exits. Ray's plain cancel raises SIGINT in the task instead, and Train aborts the job; a task still
    running ``grace_s`` seconds later is killed.
    """
    for task in driving:
        ray.cancel(task)
    if driving:
        _, stuck = ray.wait(driving, num_returns=len(driving), timeout=grace_s)
        for task in stuck:
            ray.cancel(task, force=True)


def _run_job(params: Params, balancer: str, data_root: Path, job: FoldJob) -> FoldResult:
    return run_fold(
        params,
        balancer,
        job.fold,
        data_root,
        job.out_dir,
        job.run_name,
        epoch_callback=job.epoch_callback,
        system_metrics=job.system_metrics,
    )


def storage_path(params: Params) -> str:
    """``ray.storage_path`` as Ray Train wants it: a URI unchanged, a local path made absolute."""
    path = params.ray.storage_path
    return path if "://" in path else str(Path(path).resolve())


def _job_error(run_name: str, exc: ray.train.TrainingFailedError) -> PipelineError:
    """The first worker's PipelineError re-raised as its own type, else a PipelineError summarising the failure."""
    failures = getattr(exc, "worker_failures", {})
    for rank, error in sorted(failures.items()):
        if isinstance(error, PipelineError):
            return type(error)(f"Ray Train run {run_name!r}, rank {rank}: {error}")
    detail = "; ".join(f"rank {rank}: {_summary(error)}" for rank, error in sorted(failures.items()))
    return PipelineError(f"Ray Train run {run_name!r} failed: {detail or _summary(exc)}")


def _summary(error: BaseException, limit: int = 600) -> str:
    """``Type: message`` on one line, cut at ``limit`` characters."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    text = f"{type(error).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
