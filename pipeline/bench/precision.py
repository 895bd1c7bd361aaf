"""Mixed precision's effect on accuracy: each balancer trained on one fold in float32 and in bf16, paired per image.

For every balancer of ``train.balancers`` the production :class:`~pipeline.train.loop.Trainer` trains the same fold
from the same seed twice, in float32 (contiguous) and in bf16 autocast with channels-last (what ``train.amp = auto``
runs where bf16 is native); each best-validation model is then scored on the same test images in float32
(:func:`~pipeline.evaluate.inference.model_pass`, as the ``evaluate`` stage scores), so the difference is the
training's. Per task the pair is compared as the report compares balancers: Wilcoxon signed-rank on per-image
Dice, exact McNemar on per-image correctness (:mod:`pipeline.evaluate.statistics`).

The figures are, per headline metric, the largest |bf16 − float32| over the balancers, against what a change of seed
moves one balancer's figure (:data:`SEED_SPREAD`), and the mean signed difference (a systematic loss would show
there): the decision rule of ``train.amp = auto``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import Params, deep_merge, parse_params
from pipeline.data.folds import ArraySet, FoldData, load_fold, load_test
from pipeline.evaluate.inference import ModelPass, model_pass
from pipeline.evaluate.statistics import mcnemar_exact, wilcoxon_dice
from pipeline.tasks import Task, build_tasks
from pipeline.train.loop import Trainer

FORMATS = {
    "float32": {"amp": "off", "channels_last": False},
    "bf16": {"amp": "bf16", "channels_last": True},
}
SEED_SPREAD = {"dice": 0.031, "accuracy": 0.104}
"""What a change of seed moves one balancer's test figure on the default profile: the range over seeds 1, 2, 3, 7 and 42
(README: Reproducibility, ``make seeds``), averaged over the five balancers measured there. Lesion Dice ranges
0.024 (ATDWA) to 0.041 (uncertainty), diagnosis accuracy 0.07 (ATDWA) to 0.15 (GradNorm)."""
HEADLINE = {"binary_segmentation": "dice", "multiclass_segmentation": "dice", "classification": "accuracy"}


def run(
    params: Params,
    data_root: Path,
    fold: int = 0,
    epochs: int | None = None,
    balancers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Train each of ``balancers`` (default ``train.balancers``) on ``fold`` of ``data_root`` in both :data:`FORMATS`
    (``epochs``: default ``train.epochs``) and compare their test figures per image; returns per balancer and task
    the paired test, and ``max_abs_delta`` per headline metric."""
    tasks = build_tasks(params)
    data, test = load_fold(data_root, fold), load_test(data_root)
    per_balancer: dict[str, dict[str, Any]] = {}
    for balancer in balancers or params.train.balancers:
        passes = {
            name: _train_and_score(params, tasks, balancer, data, test, fold, fmt, epochs)
            for name, fmt in FORMATS.items()
        }
        per_balancer[balancer] = {t.name: paired(t, passes["bf16"], passes["float32"]) for t in tasks}
    signed: dict[str, list[float]] = {}
    for task in tasks:
        signed.setdefault(HEADLINE[task.kind], []).extend(r[task.name]["delta"] for r in per_balancer.values())
    deltas = {metric: max(abs(d) for d in values) for metric, values in signed.items()}
    return {
        "fold": fold,
        "epochs": epochs or params.train.epochs,
        "test_images": len(test),
        "balancers": per_balancer,
        "max_abs_delta": deltas,
        "mean_delta": {metric: float(np.mean(values)) for metric, values in signed.items()},
        "seed_spread": {m: SEED_SPREAD[m] for m in deltas},
    }


def _train_and_score(
    params: Params,
    tasks: tuple[Task, ...],
    balancer: str,
    data: FoldData,
    test: ArraySet,
    fold: int,
    fmt: dict[str, Any],
    epochs: int | None,
) -> ModelPass:
    """``balancer`` trained on ``data`` in format ``fmt``; its best-validation model scored on ``test`` in float32."""
    train = fmt | ({"epochs": epochs} if epochs else {})
    formatted = parse_params(deep_merge(params.model_dump(mode="json"), {"train": train}), "precision benchmark")
    trainer = Trainer(formatted, tasks, balancer, data, fold)
    trainer.fit()
    model = trainer.model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # stub lacks it
    model.load_state_dict(trainer.best_model)  # scored as the evaluate stage scores: float32, contiguous
    return model_pass(model, tasks, test, params.train.batch_size, trainer.device, keep=np.arange(0))


def paired(task: Task, candidate: ModelPass, reference: ModelPass) -> dict[str, Any]:
    """``candidate`` against ``reference`` on ``task``: the headline figure of each, their difference and the
    paired test's p-value (Wilcoxon on per-image Dice, or exact McNemar on per-image correctness)."""
    metric = HEADLINE[task.kind]
    figures = {"bf16": candidate.metrics[task.name][metric], "float32": reference.metrics[task.name][metric]}
    if metric == "dice":
        test = wilcoxon_dice(candidate.per_image[task.name]["dice"], reference.per_image[task.name]["dice"])
    else:
        test = mcnemar_exact(candidate.per_image[task.name]["correct"], reference.per_image[task.name]["correct"])
    return {"metric": metric, **figures, "delta": figures["bf16"] - figures["float32"], "p_value": test["p_value"]}


def table(results: dict[str, Any]) -> list[str]:
    head = f"fold {results['fold']}, {results['epochs']} epochs, {results['test_images']} test images"
    lines = [f"{head}; bf16 + channels-last vs float32 (test figure, Δ, paired p)"]
    for balancer, per_task in results["balancers"].items():
        lines.append(
            f"  {balancer:12s} "
            + " | ".join(
                f"{task} {r['metric']} {r['float32']:.4f} → {r['bf16']:.4f} (Δ {r['delta']:+.4f}, p {r['p_value']:.2f})"
                for task, r in per_task.items()
            )
        )
    lines.append(
        "largest |Δ|: "
        + ", ".join(
            f"{m} {v:.4f} (seed spread {results['seed_spread'][m]}; mean Δ {results['mean_delta'][m]:+.4f})"
            for m, v in results["max_abs_delta"].items()
        )
    )
    return lines
