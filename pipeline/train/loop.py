"""The training loop for one (balancer, fold): plain and linear, distribution through ``Comm``.

Batching. ``train.batch_size`` is the *global* batch of one optimiser step. Each step's batch is cut
into ``world_size * grad_accum_steps`` equal chunks; rank ``r`` processes chunks
``r * accum .. r * accum + accum - 1`` one after the other, scaling each chunk's loss by
``1 / accum``; gradients are then averaged over ranks. Any (world size, accumulation) pair with the
same product therefore computes the same update. Dropout is seeded per global chunk for the same
reason, which also makes a resumed run bit-identical to an uninterrupted one on the CPU. (On CUDA the
same holds only up to rounding: pooling and NLL backward, cuDNN's weight-gradient algorithms, TF32 and
NCCL's summation order are not bitwise reproducible; ``train.deterministic`` removes all but the last.)

Devices. Model, balancer state, optimiser state and the gradient buckets live on the training device;
a step reads nothing back to the host: the micro-batches are read and pinned ahead on a background
thread (:mod:`pipeline.runtime.prefetch`), the gradient all-reduce overlaps the last backward pass
(:mod:`pipeline.train.grad_sync`), and losses are summed on the device until the epoch ends.

Validation is sharded: rank ``r`` evaluates batches ``r, r + N, ...`` of the validation set and every
rank then merges all ranks' sums (:func:`evaluate`), so the scheduler and early stopping decide from
identical numbers on every rank — one decision, not N.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.balancers import balancer_class, build_balancer
from pipeline.balancers.base import TrainStep
from pipeline.config import Params
from pipeline.data.folds import ArraySet, FoldData
from pipeline.errors import ConfigError, DataError
from pipeline.models import parameter_count
from pipeline.runtime.comm import Comm, LocalComm
from pipeline.runtime.compute_format import ComputeFormat
from pipeline.runtime.device import select_device, to_tensors
from pipeline.runtime.inference import evaluate
from pipeline.runtime.prefetch import HostBatch, host_batch, prefetched
from pipeline.tasks import Task
from pipeline.train.checkpoint import CheckpointStore
from pipeline.train.early_stopping import EarlyStopping
from pipeline.train.efficiency import PeakMemory, StepTimer
from pipeline.train.grad_sync import GradientReducer
from pipeline.train.identity import run_identity

EpochCallback = Callable[[dict[str, Any]], None]
StepCallback = Callable[[int, int], None]


@dataclass
class FoldResult:
    """What a finished (or early-stopped) run of one fold leaves behind.

    ``history``: one record per epoch (see :meth:`Trainer._epoch_record`); ``val_metrics``: the
    validation metrics ``{task: {metric: value}}`` of the best epoch; ``efficiency``: trainable parameters, peak memory
    (MiB), median/longest step time (ms) and longest epoch time (s); ``compute_format``: the precision and layout it
    trained in, ``train.amp``/``train.channels_last`` resolved on the training device (:meth:`ComputeFormat.describe`).
    """

    history: list[dict[str, Any]]
    best_epoch: int
    best_val_loss: float
    val_metrics: dict[str, dict[str, float]]
    efficiency: dict[str, float] = field(default_factory=dict)
    compute_format: str = ""


def target_counts(tasks: tuple[Task, ...], source: ArraySet, where: str, chunk: int = 512) -> dict[str, np.ndarray]:
    """Check, before any training, that every task's target arrays in ``source`` fit its kind (DataError
    naming ``where`` otherwise), and count them: ``{task name: (target_classes,) int64}`` occurrences of each
    class (pixels for a mask, images for a label)."""
    names = sorted({t.target for t in tasks})
    counts = {t.name: np.zeros(t.target_classes, dtype=np.int64) for t in tasks}
    for start in range(0, len(source), chunk):
        arrays = source.read(np.arange(start, min(start + chunk, len(source))), names)
        for t in tasks:
            t.check_targets(arrays[t.target], where)
            counts[t.name] += np.bincount(arrays[t.target].ravel(), minlength=t.target_classes)
    return counts


def epoch_batches(rows: int, batch_size: int, seed: int, fold: int, epoch: int) -> list[np.ndarray]:
    """The global batches of one epoch, ``(batch_size,)`` row indices each: a permutation of ``rows``
    seeded by ``(seed, fold, epoch)``, cut in order; the incomplete last batch is dropped."""
    order = np.random.default_rng([seed, fold, epoch]).permutation(rows)
    return [order[step * batch_size : (step + 1) * batch_size] for step in range(rows // batch_size)]


class Trainer:
    """Trains one model with one balancer on one fold; resumable from a :class:`CheckpointStore`."""

    def __init__(
        self,
        params: Params,
        tasks: tuple[Task, ...],
        balancer_name: str,
        data: FoldData,
        fold: int,
        comm: Comm | None = None,
        device: torch.device | None = None,
        check_rank_consistency: bool = False,
    ):
        self.params, self.tasks, self.data, self.fold = params, tasks, data, fold
        self.check_rank_consistency = check_rank_consistency
        self.comm = comm or LocalComm()
        self.device = device or select_device(params.train.device)
        cfg = params.train
        chunks = self.comm.world_size * cfg.grad_accum_steps
        if cfg.batch_size % chunks:
            raise ConfigError(
                f"train.batch_size = {cfg.batch_size} must be divisible by workers × grad_accum_steps = {chunks}"
            )
        if len(data.train) < cfg.batch_size:
            raise DataError(f"fold {fold}: {len(data.train)} training samples < train.batch_size = {cfg.batch_size}")
        self.chunk = cfg.batch_size // chunks
        train_counts = target_counts(tasks, data.train, f"fold {fold} train data")
        target_counts(tasks, data.val, f"fold {fold} val data")
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)

        torch.manual_seed(params.seed)  # identical initial weights on every rank
        self.compute = ComputeFormat.from_params(cfg, self.device)
        network = balancer_class(balancer_name).build_network(params, tasks)
        # Segmentation starts by predicting the training set's class frequencies, as detectors do for rare
        # classes: from a bias of 0 (p = 0.5 everywhere) the first steps spend themselves pushing every pixel
        # to background, and with some seeds the lesion never crossed 0.5 in 8 epochs (README: Reproducibility).
        network.start_at_priors({t.name: t.prior_logits(train_counts[t.name]) for t in tasks if t.is_segmentation})
        self.model = self.compute.prepare_model(network.to(self.device))
        self.balancer = build_balancer(balancer_name, [t.name for t in tasks], params).to(self.device)
        self.loss_fns = [t.loss_fn() for t in tasks]
        groups = self.balancer.parameter_groups(self.model)
        trainable = [p for group in groups for p in group]
        self.optimizer = torch.optim.Adam(
            [{"params": group} for group in groups], lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.reducer = (
            GradientReducer(trainable, self.comm, self.balancer.directly_written_parameters(self.model))
            if self.comm.world_size > 1
            else None
        )
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
        )
        self.stopper = EarlyStopping(cfg.early_stopping_patience)
        self.history: list[dict[str, Any]] = []
        self.best_val_metrics: dict[str, dict[str, float]] = {}
        self.best_model: dict[str, torch.Tensor] = {}
        self.start_epoch = 0
        self.timer = StepTimer(self.device)
        self.memory = PeakMemory(self.device)

    # ------------------------------------------------------------------ state
    @property
    def fingerprint(self) -> str:
        """Identifies what a checkpoint was trained on: the run's identity (:func:`run_identity`), the fold and
        its samples."""
        h = hashlib.sha256()
        for part in (
            run_identity(self.params, self.balancer.name),
            str(self.fold),
            *self.data.train.ids,
            "|",
            *self.data.val.ids,
        ):
            h.update(part.encode() + b"\0")
        return h.hexdigest()

    def state_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "epoch": self.start_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "balancer": self.balancer.state_dict(),
            "early_stopping": self.stopper.state_dict(),
            "history": self.history,
            "best_val_metrics": self.best_val_metrics,
            "best_model": self.best_model,
            "torch_rng": torch.get_rng_state(),
            "timer": self.timer.state_dict(),
            "compute": self.compute.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start_epoch = state["epoch"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.balancer.load_state_dict(state["balancer"])
        self.stopper.load_state_dict(state["early_stopping"])
        self.history = list(state["history"])
        self.best_val_metrics = state["best_val_metrics"]
        self.best_model = state["best_model"]
        torch.set_rng_state(state["torch_rng"])
        self.timer.load_state_dict(state["timer"])
        self.compute.load_state_dict(state["compute"])

    # ------------------------------------------------------------------ loop
    def fit(
        self,
        store: CheckpointStore | None = None,
        on_epoch: EpochCallback | None = None,
        stop_after_epochs: int | None = None,
        on_step: StepCallback | None = None,
    ) -> FoldResult:
        """Train until ``train.epochs`` or early stopping, resuming from ``store`` if it holds a checkpoint.

        ``stop_after_epochs`` ends this call early (as an interruption would), leaving a resumable
        checkpoint. ``on_epoch`` receives each epoch's record on every rank; ``on_step(epoch, step)`` is
        called after each optimiser step (tests use it to kill a worker mid-epoch).
        """
        if store is not None and (state := store.load()):
            if state.get("fingerprint") == self.fingerprint:
                self.load_state_dict(state)
            elif self.comm.rank == 0:
                print(f"fold {self.fold}: ignoring a checkpoint of other params or data; training from scratch")
        epochs = self.params.train.epochs
        last = epochs if stop_after_epochs is None else min(epochs, stop_after_epochs)
        for epoch in range(self.start_epoch, last):
            if self.stopper.should_stop:
                break
            record = self._run_epoch(epoch, on_step)
            self.start_epoch = epoch + 1
            if store is not None:
                store.save(self.state_dict(), {"model": self.best_model, "epoch": self.stopper.best_epoch}, record)
            if on_epoch is not None:
                on_epoch(record)
        return FoldResult(
            history=self.history,
            best_epoch=self.stopper.best_epoch,
            best_val_loss=self.stopper.best,
            val_metrics=self.best_val_metrics,
            efficiency={**self.timer.summary(), **self.memory.summary(), "parameters": parameter_count(self.model)},
            compute_format=self.compute.describe(),
        )

    def _run_epoch(self, epoch: int, on_step: StepCallback | None) -> dict[str, Any]:
        weights, temperature = self.balancer.weights().tolist(), self.balancer.temperature()
        started = time.perf_counter()
        train_losses = self._train_epoch(epoch, on_step)
        self.balancer.end_epoch(train_losses.double().cpu())
        val_losses, val_metrics = self.evaluate(self.data.val)
        self.timer.end_epoch(time.perf_counter() - started)
        val_mean = float(val_losses.mean())
        self.scheduler.step(val_mean)
        best = self.stopper.update(val_mean, epoch)
        if best:
            self.best_val_metrics = val_metrics
            self.best_model = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        record = {
            "epoch": epoch,
            "fold": self.fold,
            "lr": self.optimizer.param_groups[0]["lr"],
            "temperature": temperature,
            "val_loss_mean": val_mean,
            "best": best,
            **{f"weight/{t.name}": w for t, w in zip(self.tasks, weights)},
            **{f"train_loss/{t.name}": float(v) for t, v in zip(self.tasks, train_losses)},
            **{f"val_loss/{t.name}": float(v) for t, v in zip(self.tasks, val_losses)},
            **{f"val/{task}/{name}": v for task, m in val_metrics.items() for name, v in m.items()},
        }
        self.history.append(record)
        return record

    def _train_epoch(self, epoch: int, on_step: StepCallback | None) -> torch.Tensor:
        """One pass over the fold's training data; returns the mean unweighted losses ``(K,)``, all ranks."""
        cfg, comm = self.params.train, self.comm
        self.model.train()
        batches = epoch_batches(len(self.data.train), cfg.batch_size, self.params.seed, self.fold, epoch)
        loss_sum = torch.zeros(len(self.tasks), device=self.device)
        chunks = prefetched(
            self._read_chunk, [self._chunk_rows(batch, m) for batch in batches for m in range(cfg.grad_accum_steps)]
        )
        for step in range(len(batches)):
            self.timer.start_step()
            loss_sum += self._train_step(epoch, step, chunks)
            self.timer.end_step()
            if self.check_rank_consistency:
                self._assert_ranks_agree(epoch, step)
            if on_step is not None:
                on_step(epoch, step)
        _average_buffers(self.model, comm)
        return comm.all_reduce_mean(loss_sum / (len(batches) * cfg.grad_accum_steps))

    def _train_step(self, epoch: int, step: int, chunks: Iterator[HostBatch]) -> torch.Tensor:
        """One optimiser step over this rank's ``grad_accum_steps`` micro-batches, taken from ``chunks`` and stepped
        by the balancer (:meth:`~pipeline.balancers.base.Balancer.train_step`); returns the sum of their unweighted
        losses ``(K,)`` (on the device)."""
        accum = self.params.train.grad_accum_steps
        first_chunk = self.comm.rank * accum

        def seed_dropout(micro: int) -> None:
            torch.manual_seed(_chunk_seed(self.params.seed, self.fold, epoch, step, first_chunk + micro))

        return self.balancer.train_step(
            TrainStep(
                model=self.model,
                optimizer=self.optimizer,
                tasks=self.tasks,
                loss_fns=self.loss_fns,
                micro_batches=[to_tensors(next(chunks), self.device) for _ in range(accum)],
                seed_dropout=seed_dropout,
                compute=self.compute,
                comm=self.comm,
                reducer=self.reducer,
            )
        )

    def _chunk_rows(self, batch: np.ndarray, micro: int) -> np.ndarray:
        """The sorted rows of ``batch`` (a global batch) that this rank's micro-batch ``micro`` processes."""
        chunk_id = self.comm.rank * self.params.train.grad_accum_steps + micro
        return np.sort(batch[chunk_id * self.chunk : (chunk_id + 1) * self.chunk])

    def _read_chunk(self, rows: np.ndarray) -> HostBatch:
        """A micro-batch's arrays as host tensors, pinned when training on CUDA (runs on the prefetch thread)."""
        return host_batch(self.data.train.read(rows), pin=self.device.type == "cuda")

    def _assert_ranks_agree(self, epoch: int, step: int) -> None:
        """Raise if any rank's balancer weights or model parameters differ from the others' (debug aid)."""
        mine = torch.cat(
            [
                self.balancer.weights().to(self.device, torch.float64),
                torch.stack([p.detach().double().sum() for p in self.model.parameters()]),
            ]
        )
        mean = self.comm.all_reduce_mean(mine.clone())
        if not torch.allclose(mine, mean, rtol=1e-9, atol=0.0):
            raise RuntimeError(f"rank {self.comm.rank} diverged from the other ranks at epoch {epoch}, step {step}")

    def evaluate(self, source: ArraySet) -> tuple[torch.Tensor, dict[str, dict[str, float]]]:
        """:func:`evaluate` of this trainer's model on ``source``, sharded over the ranks."""
        return evaluate(
            self.model,
            self.tasks,
            source,
            self.params.train.batch_size,
            self.device,
            self.loss_fns,
            self.compute,
            self.comm,
        )


def _chunk_seed(seed: int, fold: int, epoch: int, step: int, chunk: int) -> int:
    """A seed for one global chunk's dropout masks, independent of which rank computes it."""
    return int(np.random.SeedSequence([seed, fold, epoch, step, chunk]).generate_state(1)[0])


def _average_buffers(model: torch.nn.Module, comm: Comm) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks, so that every rank
    evaluates the same model and takes the same scheduler and early-stopping decisions."""
    if comm.world_size == 1:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            buffer.copy_(comm.all_reduce_mean(buffer.clone()))
