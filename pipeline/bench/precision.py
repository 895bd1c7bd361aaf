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

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.atomic import atomic_write_json
from pipeline.config import Params, deep_merge, parse_params
from pipeline.data.build import build_data_root
from pipeline.data.folds import ArraySet, FoldData, load_fold, load_test
from pipeline.evaluate.inference import ModelPass, model_pass
from pipeline.evaluate.statistics import paired_test
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


def command(params: Params, seeds: Sequence[int] | None, balancers: Sequence[str] | None, out: Path) -> dict[str, Any]:
    """``mtl-pipeline precision``: :func:`run` on a data root of ``params`` built in a temporary folder by the real
    data stages, for every training seed of ``seeds``; prints :func:`table` and writes the results to ``out``."""
    with tempfile.TemporaryDirectory(prefix="mtl-precision-") as work:
        data_root = build_data_root(params, Path(work) / "data")
        results = run(params, data_root, balancers=balancers, seeds=seeds)
    print("\n".join(table(results)))
    atomic_write_json(out, results)
    return results


def run(
    params: Params,
    data_root: Path,
    fold: int = 0,
    epochs: int | None = None,
    balancers: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Train each of ``balancers`` (default ``train.balancers``) with each training seed of ``seeds`` (default: the
    params' ``seed``) on ``fold`` of ``data_root`` in both :data:`FORMATS` (``epochs``: default ``train.epochs``) and
    compare their test figures per image.

    Returns ``runs`` (per balancer and seed, per task the paired comparison), and per headline metric
    ``max_abs_delta`` and ``mean_delta`` over the runs and ``seed_spread``: with several seeds, what they move the
    float32 figure, measured here (the range over the seeds, averaged over the balancers); with one, :data:`SEED_SPREAD`.
    """
    tasks = build_tasks(params)
    data, test = load_fold(data_root, fold), load_test(data_root)
    seeds = tuple(seeds or (params.seed,))
    runs: list[dict[str, Any]] = []
    for balancer in balancers or params.train.balancers:
        for seed in seeds:
            seeded = params.model_copy(update={"seed": seed})
            passes = {
                name: _train_and_score(seeded, tasks, balancer, data, test, fold, fmt, epochs)
                for name, fmt in FORMATS.items()
            }
            runs.append(
                {
                    "balancer": balancer,
                    "seed": seed,
                    "tasks": {t.name: paired(t, passes["bf16"], passes["float32"]) for t in tasks},
                }
            )
    deltas: dict[str, list[float]] = {}
    for r in runs:
        for figures in r["tasks"].values():
            deltas.setdefault(figures["metric"], []).append(figures["delta"])
    return {
        "fold": fold,
        "epochs": epochs or params.train.epochs,
        "test_images": len(test),
        "seeds": list(seeds),
        "runs": runs,
        "max_abs_delta": {metric: max(abs(d) for d in values) for metric, values in deltas.items()},
        "mean_delta": {metric: float(np.mean(values)) for metric, values in deltas.items()},
        "seed_spread": seed_spread(runs) if len(seeds) > 1 else {m: SEED_SPREAD[m] for m in deltas},
        "seed_spread_source": "measured" if len(seeds) > 1 else "README: Reproducibility (make seeds)",
    }


def seed_spread(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Per headline metric, the range of each balancer's float32 figure over its seeds, averaged over balancers."""
    figures: dict[tuple[str, str, str], list[float]] = {}  # (balancer, task, metric) → float32 figure per seed
    for r in runs:
        for task, f in r["tasks"].items():
            figures.setdefault((r["balancer"], task, f["metric"]), []).append(f["float32"])
    ranges: dict[str, list[float]] = {}
    for (_, _, metric), values in figures.items():
        ranges.setdefault(metric, []).append(float(np.ptp(values)))
    return {metric: float(np.mean(values)) for metric, values in ranges.items()}


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
    column = "dice" if metric == "dice" else "correct"
    test = paired_test(metric, candidate.per_image[task.name][column], reference.per_image[task.name][column])
    return {"metric": metric, **figures, "delta": figures["bf16"] - figures["float32"], "p_value": test["p_value"]}


def table(results: dict[str, Any]) -> list[str]:
    head = f"fold {results['fold']}, {results['epochs']} epochs, {results['test_images']} test images"
    lines = [f"{head}; bf16 + channels-last vs float32 (test figure, Δ, paired p)"]
    for r in results["runs"]:
        lines.append(
            f"  {r['balancer']:12s} seed {r['seed']:<3d} "
            + " | ".join(
                f"{task} {f['metric']} {f['float32']:.4f} → {f['bf16']:.4f} (Δ {f['delta']:+.4f}, p {f['p_value']:.2f})"
                for task, f in r["tasks"].items()
            )
        )
    lines.append(
        "largest |Δ|: "
        + ", ".join(
            f"{m} {v:.4f} (seed spread {results['seed_spread'][m]:.4f}; mean Δ {results['mean_delta'][m]:+.4f})"
            for m, v in results["max_abs_delta"].items()
        )
        + f"; seed spread: {results['seed_spread_source']}"
    )
    return lines
