"""``mtl-pipeline gpu-check`` (``make gpu-check``): prove the training and serving path on a device in minutes.

Checks, each recorded in the JSON summary (``reports/gpu_check.json``) with ``passed`` and ``error``:

1. ``environment`` (information only): torch, CUDA, cuDNN and NCCL versions, the device and its compute
   capability, whether bf16 is native (compute capability ≥ 8.0 on CUDA; AVX-512 BF16 or AMX on the CPU) and the
   ``precision`` the training check uses: ``train.amp = auto``'s choice, ``bf16`` where native, else ``off`` (float32).
2. ``distributed``: a one-rank ``torch.distributed`` group on loopback (TCP on 127.0.0.1, a free port;
   NCCL on CUDA, gloo on the CPU) all-reduces a tensor on the device; the value is checked.
3. ``training``: every balancer and ``stl`` trains with the production :class:`~pipeline.train.loop.Trainer`
   for :data:`EPOCHS` short epochs on synthetic in-memory rows (:func:`~pipeline.bench.balancers.synthetic_rows`);
   every training and validation loss must be finite, and whether the summed training loss fell from the
   first epoch to the last is reported. Their step cost is measured as ``make bench`` measures it
   (:func:`pipeline.bench.balancers.run`: steps interleaved across balancers after a warm-up; median and
   longest step (ms); CUDA allocator peak (MiB) after a reset per balancer, not measured on the CPU), with
   ratios to ``equal`` next to the seed paper's Table III (GPU).
4. ``predict``: a seeded network (multi-task and STL) saved as a training checkpoint, loaded by the
   registered model's code (:class:`~pipeline.registry.pyfunc.MultiTaskPyfunc`) onto the device and run
   on synthetic preprocessed images; output shapes, finiteness and the masks of
   :func:`~pipeline.registry.predictor.image_prediction` are checked.

A failed check does not stop the others; the summary is written, then the command fails with one line.
"""

from __future__ import annotations

import functools
import math
import platform
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pipeline import paths
from pipeline.atomic import atomic_write_json
from pipeline.balancers import balancer_class, balancer_classes
from pipeline.bench import balancers
from pipeline.config import Params, deep_merge, parse_params
from pipeline.data.folds import ArraySet, FoldData
from pipeline.errors import ConfigError, PipelineError
from pipeline.registry.predictor import image_prediction
from pipeline.registry.pyfunc import MultiTaskPyfunc, model_config, model_params
from pipeline.runtime.compute_format import native_bf16, resolve_amp, resolve_channels_last
from pipeline.runtime.device import select_device, to_tensors
from pipeline.tasks import Task, build_tasks
from pipeline.train.checkpoint import save_checkpoint
from pipeline.train.loop import Trainer

EPOCHS = 2
PREDICT_IMAGES = 3
CHECKS = ("distributed", "training", "predict")
BACKENDS = {"cuda": "nccl", "cpu": "gloo"}
PAPER_TABLE_III = {
    "source": "seed paper, Table III (GPU)",
    "gradnorm_time_ratio_vs_equal": 7.2,
    "gradnorm_memory_ratio_vs_equal": 8.5,
}
"""What the seed paper measured for GradNorm against equal weighting, for comparison with ``training``."""


@dataclass(frozen=True)
class CheckSize:
    """How much the training check computes: ``image_size`` (px) and ``batch_size`` (images per optimiser
    step) of every step, ``steps_per_epoch`` of each Trainer epoch and ``timed_steps`` interleaved per balancer."""

    image_size: int
    batch_size: int
    steps_per_epoch: int
    timed_steps: int


BALANCERS = tuple(balancer_classes())
"""Every registered method, ``stl`` included: the check trains each."""
SIZES = {"cpu": CheckSize(64, 4, 2, len(BALANCERS)), "cuda": CheckSize(256, 16, 5, 4 * len(BALANCERS))}
"""CPU: one interleaved round per position, the whole check well under a minute on 2 cores; CUDA: the
paper's 256 px and batch 16, 24 timed steps per balancer."""


def check_device(preference: str) -> torch.device:
    """The device of ``--device`` (``auto``, ``cuda`` or ``cpu``); ConfigError when ``cuda`` is not there."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"gpu-check --device cuda: torch {torch.__version__} sees no CUDA device; "
            "install the CUDA build of torch (README: GPU clusters) or use --device cpu"
        )
    return select_device(preference)


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, the device and the precision the training check uses (see the module docstring)."""
    cuda = device.type == "cuda"
    return {
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(device))) if cuda else None,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "nccl_available": dist.is_available() and dist.is_nccl_available(),
        "nccl_version": ".".join(map(str, torch.cuda.nccl.version())) if cuda and dist.is_nccl_available() else None,
        "bf16_native": native_bf16(device),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "torch_threads": torch.get_num_threads(),
        "precision": resolve_amp("auto", device),
    }


def check_params(params: Params, device: torch.device, precision: str) -> Params:
    """``params`` at the check's size for ``device`` (:data:`SIZES`), on ``device``, in ``precision``, with
    every balancer and ``stl``."""
    size = SIZES[device.type]
    overrides = {
        "data": {"image_size": size.image_size},
        "train": {
            "batch_size": size.batch_size,
            "grad_accum_steps": 1,
            "epochs": EPOCHS,
            "device": device.type,
            "amp": precision,
            "balancers": list(BALANCERS),
        },
    }
    return parse_params(deep_merge(params.model_dump(mode="json"), overrides), "gpu-check params")


def attempt(check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``check()``'s figures with ``passed: true``, or ``passed: false`` and the first line of what it raised."""
    try:
        return {**check(), "passed": True, "error": None}
    except Exception as exc:  # noqa: BLE001 - a check reports every failure, whatever raised it
        first_line = (str(exc).splitlines() or [""])[0]
        return {"passed": False, "error": f"{type(exc).__name__}: {first_line}"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distributed_smoke(device: torch.device) -> dict[str, Any]:
    """All-reduce (sum) ``[1, 2, 3, 4]`` on ``device`` in a one-rank process group (NCCL on CUDA, gloo on the
    CPU) initialised over TCP on loopback; the group is destroyed afterwards."""
    if dist.is_initialized():
        raise PipelineError("a torch.distributed process group is already initialised in this process")
    backend = BACKENDS[device.type]
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1, timeout=timedelta(seconds=60)
    )
    try:
        tensor = torch.arange(1.0, 5.0, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        values = tensor.tolist()
    finally:
        dist.destroy_process_group()
    if values != [1.0, 2.0, 3.0, 4.0]:
        raise PipelineError(f"{backend} all_reduce of [1, 2, 3, 4] over one rank gave {values}")
    return {"backend": backend, "world_size": 1, "all_reduce": values}


def synthetic_fold(params: Params, tasks: tuple[Task, ...], size: CheckSize) -> FoldData:
    """In-memory rows: ``steps_per_epoch`` full training batches and one batch of other rows for validation,
    at ``data.image_size`` with ``data.channels``."""
    n = {"train": size.batch_size * size.steps_per_epoch, "val": size.batch_size}
    sets = {
        part: ArraySet.from_arrays(
            params.record_classes,
            balancers.synthetic_rows(tasks, rows, params.data.image_size, params.data.channels, seed=seed),
            [f"{part}{i}" for i in range(rows)],
        )
        for seed, (part, rows) in enumerate(n.items())
    }
    return FoldData(train=sets["train"], val=sets["val"])


def train_one(
    params: Params, tasks: tuple[Task, ...], balancer: str, data: FoldData, device: torch.device
) -> dict[str, Any]:
    """Train ``balancer`` with the :class:`Trainer` on ``device``: its per-epoch losses ``{"<train|val>/<task>":
    [loss, ...]}``, whether the summed training loss fell and its trainable parameter count."""
    result = Trainer(params, tasks, balancer, data, fold=0, device=device).fit()
    losses = {
        f"{kind}/{t.name}": [record[f"{kind}_loss/{t.name}"] for record in result.history]
        for kind in ("train", "val")
        for t in tasks
    }
    bad = {name: values for name, values in losses.items() if not all(map(math.isfinite, values))}
    if bad:
        raise PipelineError(f"non-finite losses per epoch {bad}")
    summed = [
        sum(values[epoch] for name, values in losses.items() if name.startswith("train/"))
        for epoch in range(len(result.history))
    ]
    return {
        "losses": losses,
        "train_loss_decreased": summed[-1] < summed[0],
        "parameters": result.efficiency["parameters"],
    }


def training(params: Params, device: torch.device) -> dict[str, Any]:
    """Every balancer of :data:`BALANCERS` (``stl`` included) trained by :func:`train_one`
    (``trainer_steps`` optimiser steps each), and its step cost (``step_ms_median``, ``step_ms_max``,
    ``peak_memory_mib`` and their ``*_ratio_vs_equal``) over ``steps`` interleaved steps, as
    :func:`pipeline.bench.balancers.run` measures it (the same layout as ``bench.json``'s ``balancers``)."""
    tasks = build_tasks(params)
    size = SIZES[device.type]
    data = synthetic_fold(params, tasks, size)
    per = {name: attempt(functools.partial(train_one, params, tasks, name, data, device)) for name in BALANCERS}
    cost = attempt(
        functools.partial(
            balancers.run,
            params,
            None,
            steps=size.timed_steps,
            batch_size=size.batch_size,
            image_size=size.image_size,
            memory_rounds=0 if device.type == "cpu" else 1,
        )
    )
    failed = {name: figures["error"] for name, figures in per.items() if not figures["passed"]}
    if cost["passed"]:
        for name, figures in per.items():
            figures |= cost["balancers"][name]
    else:
        failed["step cost"] = cost["error"]
    return {
        "passed": not failed,
        "error": "; ".join(f"{name}: {error}" for name, error in failed.items()) or None,
        "device": str(device),
        "model": params.model.name,
        "image_size": size.image_size,
        "batch_size": size.batch_size,
        "epochs": EPOCHS,
        "trainer_steps": EPOCHS * size.steps_per_epoch,
        "steps": cost.get("steps"),
        "torch_threads": cost.get("torch_threads"),
        "precision": (amp := resolve_amp(params.train.amp, device)),
        "channels_last": resolve_channels_last(params.train.channels_last, amp),
        "memory_measured": device.type == "cuda",
        "balancers": per,
        "paper_table_iii": PAPER_TABLE_III,
    }


def predict_on_device(params: Params, device: torch.device, work: Path) -> dict[str, Any]:
    """A seeded multi-task and STL network, each saved as a training checkpoint in ``work`` and predicted on
    ``device`` by :class:`MultiTaskPyfunc` for :data:`PREDICT_IMAGES` synthetic images ``(B, C, S, S)``;
    ``models``: per model the output shape of each task (``(S, S)``, ``(K, S, S)`` or ``(K,)``), of its masks
    and the predicted class names."""
    tasks = build_tasks(params)
    size = params.data.image_size
    rows = balancers.synthetic_rows(tasks, PREDICT_IMAGES, size, params.data.channels, seed=2)
    images = to_tensors(rows, torch.device("cpu"))["image"].numpy()
    models = {}
    for name, balancer in (("multi_task", "equal"), ("stl", "stl")):
        torch.manual_seed(params.seed)
        checkpoint = work / f"{name}.pt"
        save_checkpoint(checkpoint, {"model": balancer_class(balancer).build_network(params, tasks).state_dict()})
        model = MultiTaskPyfunc().load(model_params(model_config(params, balancer)), [checkpoint], balancer, device)
        placed = {p.device.type for p in model.network.parameters()}
        if placed != {device.type}:
            raise PipelineError(f"{name}: the loaded network's parameters are on {sorted(placed)}, not {device.type}")
        frame = model.predict(None, images)
        outputs = {t.name: np.stack(frame[t.name].to_list()) for t in tasks}
        for task, probabilities in outputs.items():
            if not (np.isfinite(probabilities).all() and 0 <= probabilities.min() and probabilities.max() <= 1):
                raise PipelineError(f"{name}: task {task} gave probabilities outside [0, 1] or not finite")
        predictions = [image_prediction(tasks, row, (size, size)) for row in frame.to_dict("records")]
        masks = {task: sorted({p.masks[task].shape for p in predictions}) for task in predictions[0].masks}
        if any(shapes != [(size, size)] for shapes in masks.values()):
            raise PipelineError(f"{name}: mask shapes {masks}, expected ({size}, {size})")
        models[name] = {
            "images": len(frame),
            "output_shapes": {task: list(p.shape[1:]) for task, p in outputs.items()},
            "mask_shapes": {task: list(shapes[0]) for task, shapes in masks.items()},
            "classes": {task: [p.classes[task][0] for p in predictions] for task in predictions[0].classes},
        }
    return {"models": models}


def run(params: Params, device: str = "auto", out: Path = paths.REPORTS / "gpu_check.json") -> dict[str, Any]:
    """Run every check on ``device`` (``auto``, ``cuda`` or ``cpu``), print a table, write ``out`` atomically.

    ConfigError when ``cuda`` is asked for and not there (nothing is written); PipelineError naming the first
    failed check, after writing ``out``, when any check fails.
    """
    started = time.perf_counter()
    target = check_device(device)
    env = environment(target)
    trained = check_params(params, target, env["precision"])
    with tempfile.TemporaryDirectory(prefix="mtl-gpu-check-") as work:
        results: dict[str, Any] = {
            "device": str(target),
            "environment": env,
            "distributed": attempt(functools.partial(distributed_smoke, target)),
            "training": training(trained, target),
            "predict": attempt(functools.partial(predict_on_device, trained, target, Path(work))),
        }
    failed = [check for check in CHECKS if not results[check]["passed"]]
    results["passed"] = not failed
    results["wall_s"] = time.perf_counter() - started
    atomic_write_json(out, results)
    print("\n".join(table(results)))
    print(f"written {out} ({results['wall_s']:.0f} s)")
    if failed:
        raise PipelineError(f"gpu-check on {target}: {failed[0]} failed: {results[failed[0]]['error']} (see {out})")
    return results


def table(results: dict[str, Any]) -> list[str]:
    """The printed summary of :func:`run`'s results."""
    env, trained, smoke, predicted = (results[k] for k in ("environment", "training", "distributed", "predict"))
    status = {True: "passed", False: "FAILED"}
    lines = [
        f"gpu-check on {results['device']} ({env['device_name']}): {status[results['passed']]}",
        (
            f"torch {env['torch']}, CUDA {env['cuda_version']}, cuDNN {env['cudnn_version']}, "
            f"NCCL {env['nccl_version'] or env['nccl_available']}, "
            f"capability {env['compute_capability'] or env['cpu_capability']}, bf16 native {env['bf16_native']}, "
            f"precision {env['precision']}"
        ),
        (
            f"distributed: {status[smoke['passed']]} ({BACKENDS[torch.device(results['device']).type]} all_reduce, "
            f"one rank){': ' + smoke['error'] if smoke['error'] else ''}"
        ),
        (
            f"training: {status[trained['passed']]} (Trainer, {trained['epochs']} epochs, {trained['trainer_steps']} "
            f"steps per balancer, precision {trained['precision']}){': ' + trained['error'] if trained['error'] else ''}"
        ),
    ]
    for name, r in trained["balancers"].items():
        if r["passed"]:
            trend = "fell" if r["train_loss_decreased"] else "did not fall"
            lines.append(f"  {name:<12} losses finite, training loss {trend}")
    if "step_ms_median" in trained["balancers"]["equal"]:
        lines += balancers.table(trained)
    paper = trained["paper_table_iii"]
    lines.append(
        f"  ({paper['source']}: gradnorm {paper['gradnorm_time_ratio_vs_equal']}× equal's step time, "
        f"{paper['gradnorm_memory_ratio_vs_equal']}× its memory)"
    )
    if predicted["passed"]:
        lines += [
            f"predict: passed ({name}, {p['images']} images: "
            + ", ".join(f"{task} {tuple(shape)}" for task, shape in p["output_shapes"].items())
            + ")"
            for name, p in predicted["models"].items()
        ]
    else:
        lines.append(f"predict: FAILED: {predicted['error']}")
    return lines
