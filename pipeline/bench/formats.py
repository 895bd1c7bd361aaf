"""Precision and layout: step time of the ``equal`` balancer in each ``train.amp`` × ``train.channels_last``.

The same model and batches as the balancer benchmark (:mod:`pipeline.bench.balancers`), one copy per
format, steps interleaved; ratios are to float32 with the contiguous (NCHW) layout, the default.
fp16 is measured on CUDA only: CPUs without native fp16 convolutions take seconds per step (a
width-16 model at 32 px, 2 cores here: about 2 s per step, over 10× float32).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from pipeline.bench.balancers import (
    WARMUP_STEPS,
    contender,
    default_image_size,
    fixed_batches,
    synchronizer,
    train_step,
)
from pipeline.bench.timing import interleaved, median
from pipeline.config import Params, deep_merge, parse_params
from pipeline.runtime.device import select_device
from pipeline.tasks import build_tasks

FORMATS = {
    "float32": {"amp": "off", "channels_last": False},
    "float32_channels_last": {"amp": "off", "channels_last": True},
    "bf16": {"amp": "bf16", "channels_last": False},
    "bf16_channels_last": {"amp": "bf16", "channels_last": True},
}
CUDA_FORMATS = {
    "fp16": {"amp": "fp16", "channels_last": False},
    "fp16_channels_last": {"amp": "fp16", "channels_last": True},
}


def run(params: Params, steps: int = 10, batch_size: int = 16, image_size: int | None = None) -> dict[str, Any]:
    """Median step time (ms) of each format of :data:`FORMATS` (and :data:`CUDA_FORMATS` on a GPU), and its
    ratio to ``float32``."""
    device = select_device(params.train.device)
    image_size = image_size or default_image_size(device)
    tasks = build_tasks(params)
    loss_fns = [t.loss_fn() for t in tasks]
    batches = fixed_batches(tasks, 4, batch_size, image_size, params.data.channels, device)

    def stepper(train: dict[str, Any]) -> Callable[[], None]:
        formatted = parse_params(deep_merge(params.model_dump(mode="json"), {"train": train}), "format benchmark")
        c = contender("equal", formatted, tasks, device)
        c.model.train()
        cycle = itertools.cycle(batches)
        return lambda: train_step(c, tasks, loss_fns, next(cycle))

    formats = FORMATS | (CUDA_FORMATS if device.type == "cuda" else {})
    seconds = interleaved(
        {name: stepper(train) for name, train in formats.items()},
        rounds=steps,
        warmup=WARMUP_STEPS,
        sync=synchronizer(device),
    )
    ms = {name: 1e3 * median(s) for name, s in seconds.items()}
    return {
        "device": str(device),
        "batch_size": batch_size,
        "image_size": image_size,
        "steps": len(seconds["float32"]),
        "step_ms_median": ms,
        "time_ratio_vs_float32": {name: t / ms["float32"] for name, t in ms.items()},
    }


def table(results: dict[str, Any]) -> list[str]:
    ratio = results["time_ratio_vs_float32"]
    return [
        f"equal, batch {results['batch_size']} at {results['image_size']}px on {results['device']}: "
        + ", ".join(f"{name} {ms:.0f} ms ({ratio[name]:.2f}×)" for name, ms in results["step_ms_median"].items())
    ]
