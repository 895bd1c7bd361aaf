"""The default recipe under other seeds (``mtl-pipeline seeds``, ``make seeds``): does it pass, how far do figures move?

``seed`` decides the synthetic images, the split, the augmented copies, the initial weights and the batch order,
so one seed's figures are one draw. For each seed this builds the data with the real data stages, trains every
balancer of ``train.balancers`` on every fold with the training loop the ``train`` stage runs, scores the best
epoch's model on the test split with the stage's own evaluation, and applies ``compare --strict``'s rule (every
balancer's fold-mean primary test metric above the best trivial predictor's). Two things differ from ``make run``,
to fit five seeds into an hour on 2 cores: training runs in this process instead of a 1-worker Ray Train job
(the same :class:`~pipeline.train.loop.Trainer`), and ATDWA uses ``balancer.atdwa`` as configured instead of the
Ray Tune sweep's pick. Writes ``seeds.json`` (per seed: minutes, passed, every balancer's fold-mean test
figures and its verdict) and prints the range over the seeds per balancer. A benchmark, not a test.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline.atomic import atomic_write_json
from pipeline.balancers import balancer_class
from pipeline.config import Params, deep_merge, parse_params
from pipeline.data.build import build_data_root
from pipeline.data.folds import load_fold, load_test
from pipeline.evaluate import compare
from pipeline.tasks import build_tasks
from pipeline.train.loop import Trainer
from pipeline.train.train import evaluate_on_driver, fold_summary, write_metrics

SHOWN = ("dice", "iou", "auc", "accuracy", "f1")


def run(params: Params, seeds: Sequence[int], workdir: Path, out: Path) -> dict[str, Any]:
    """Train and score ``params``'s recipe once per seed under ``workdir/seed_<s>``; write and return the results."""
    results = {}
    for seed in seeds:
        results[str(seed)] = _run_seed(_with_seed(params, seed), Path(workdir) / f"seed_{seed}")
        atomic_write_json(out, results)  # what is done so far survives an interruption
    _print_ranges(results)
    return results


def _with_seed(params: Params, seed: int) -> Params:
    return parse_params(deep_merge(params.model_dump(mode="json"), {"seed": seed}), f"params with seed {seed}")


def _run_seed(params: Params, workspace: Path) -> dict[str, Any]:
    started = time.perf_counter()
    data = build_data_root(params, workspace / "data")
    tasks, test = build_tasks(params), load_test(data)
    documents = {}
    for balancer in params.train.balancers:
        folds, history = {}, []
        for fold in params.folds:
            trainer = Trainer(params, tasks, balancer, load_fold(data, fold), fold)
            result = trainer.fit()
            model = balancer_class(balancer).build_network(params, tasks)
            model.load_state_dict(trainer.best_model)
            folds[f"fold_{fold}"] = fold_summary(result, evaluate_on_driver(params, model, tasks, test))
            history.extend(result.history)
        documents[balancer] = write_metrics(tasks, balancer, folds, history, test, workspace / "metrics" / balancer)
    verdicts = {row["balancer"]: row for row in compare.verdicts(params, workspace / "metrics")}
    minutes = (time.perf_counter() - started) / 60
    passed = all(row["beats"] for row in verdicts.values())
    print(f"seed {params.seed}: {minutes:.1f} min, compare --strict {'passed' if passed else 'FAILED'}", flush=True)
    return {
        "minutes": minutes,
        "passed": passed,
        "threads": torch.get_num_threads(),
        "test": {b: doc.mean.test for b, doc in documents.items()},
        "beats_trivial": {b: row["beats"] for b, row in verdicts.items()},
    }


def _print_ranges(results: dict[str, Any]) -> None:
    """Per balancer and task metric, ``min–max`` over the seeds."""
    first = next(iter(results.values()))["test"]
    for balancer, tasks in first.items():
        cells = [
            f"{task}.{metric} {min(v):.3f}–{max(v):.3f}"
            for task, metrics in tasks.items()
            for metric in metrics
            if metric in SHOWN and (v := [r["test"][balancer][task][metric] for r in results.values()])
        ]
        print(f"{balancer:<12} " + "  ".join(cells))
    passed = sum(r["passed"] for r in results.values())
    print(f"compare --strict's rule held for {passed} of {len(results)} seeds")
