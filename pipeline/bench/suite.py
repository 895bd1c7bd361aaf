"""``mtl-pipeline bench``: run the benchmark parts, check the targets, print a table, write ``reports/bench.json``.

The input and distributed parts train on a default-profile data root built in a temporary folder by
the real data stages (:func:`pipeline.data.build.build_data_root`); nothing under ``data/`` is read
or written. ``bench.json`` holds every part's figures, the machine, and one entry per target
``{"figure", "value", "target", "met"}``. A missed target is reported, not raised: the benchmark
measures, and the exit status stays 0.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline import paths
from pipeline.atomic import atomic_write_json
from pipeline.bench import PARTS, balancers, distributed, formats, input_path, precision, run_time, scaling
from pipeline.config import Params
from pipeline.data.build import build_data_root

MODULES = {
    "make_run": run_time,
    "balancers": balancers,
    "formats": formats,
    "precision": precision,
    "input": input_path,
    "distributed": distributed,
    "scaling": scaling,
}
LIGHT_BALANCERS = ("uncertainty", "dwa", "atdwa")


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets for the parts in ``results``: ``{"figure", "value", "target", "met"}`` each."""
    out = []

    def check(figure: str, value: float, op: str, bound: float) -> None:
        met = value <= bound if op == "<=" else value >= bound
        out.append({"figure": figure, "value": value, "target": f"{op} {bound}", "met": bool(met)})

    if results.get("make_run", {}).get("complete"):
        check("make_run.total_s", results["make_run"]["total_s"], "<=", run_time.TARGET_S)
    if "balancers" in results:
        per = results["balancers"]["balancers"]
        if "gradnorm" in per:
            check("balancers.gradnorm.time_ratio_vs_equal", per["gradnorm"]["time_ratio_vs_equal"], "<=", 1.15)
            check("balancers.gradnorm.memory_ratio_vs_equal", per["gradnorm"]["memory_ratio_vs_equal"], "<=", 1.10)
        for name in LIGHT_BALANCERS:
            if name in per:
                check(f"balancers.{name}.time_ratio_vs_equal", per[name]["time_ratio_vs_equal"], "<=", 1.02)
                check(f"balancers.{name}.memory_ratio_vs_equal", per[name]["memory_ratio_vs_equal"], "<=", 1.02)
    if "precision" in results:
        for metric, delta in results["precision"]["max_abs_delta"].items():
            check(f"precision.bf16_max_abs_delta.{metric}", delta, "<=", results["precision"]["seed_spread"][metric])
    if "distributed" in results:
        check(
            "distributed.ray_1_worker_vs_in_process", results["distributed"]["ray_1_worker_vs_in_process"], "<=", 1.10
        )
    if "input" in results:
        check("input.loader.loader_headroom", results["input"]["loader"]["loader_headroom"], ">=", 3.0)
        check("input.augment.stage_vs_bare", results["input"]["augment"]["stage_vs_bare"], ">=", 0.8)
    return out


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def run(
    params: Params,
    params_path: Path,
    parts: Sequence[str] = PARTS,
    out: Path = paths.REPORTS / "bench.json",
    quick: bool = False,
) -> dict[str, Any]:
    """Run ``parts`` (in :data:`PARTS` order), print each part's table and the targets, write ``out``.

    ``quick`` cuts every part's rounds to the minimum (a smoke run for tests, not for figures).
    """
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown benchmark parts {unknown}; choose from {list(PARTS)}")
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine()}
    work = Path(tempfile.mkdtemp(prefix="mtl-bench-"))
    try:
        data_root = work / "data"  # built only for the parts that read data
        if {"precision", "input", "distributed"} & set(parts):
            build_data_root(params, data_root)
        for part in (p for p in PARTS if p in parts):
            t = time.perf_counter()
            if part == "make_run":
                results[part] = run_time.run()
            elif part == "balancers":
                results[part] = balancers.run(
                    params, params_path, **({"steps": 2, "memory_rounds": 1} if quick else {})
                )
            elif part == "formats":
                results[part] = formats.run(params, **({"steps": 2} if quick else {}))
            elif part == "precision":
                results[part] = precision.run(
                    params, data_root, epochs=1 if quick else None, balancers=("equal",) if quick else None
                )
            elif part == "input":
                results[part] = input_path.run(
                    params, data_root, **({"rounds": 2, "augment_rounds": 1} if quick else {})
                )
            elif part == "distributed":
                results[part] = distributed.run(params, data_root, rounds=1 if quick else 2)
            else:
                results[part] = scaling.run(params, rounds=1 if quick else 2)
            results[part]["wall_s"] = time.perf_counter() - t
            print(
                f"\n== {part} ({results[part]['wall_s']:.0f} s)",
                *MODULES[part].table(results[part]),
                sep="\n",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["targets"] = targets(results)
    results["wall_s"] = time.perf_counter() - started
    atomic_write_json(out, results)
    print("\n".join(summary(results)))
    print(f"written {out} ({results['wall_s']:.0f} s)")
    return results


def summary(results: dict[str, Any]) -> list[str]:
    """Every part's table and the targets, printed again at the end (Ray's worker logs interleave with
    the tables printed as each part finishes)."""
    lines = ["", "== summary"]
    for part in (p for p in PARTS if p in results):
        lines += [f"-- {part}", *MODULES[part].table(results[part])]
    lines.append("-- targets")
    lines += [
        f"{'met   ' if t['met'] else 'MISSED'} {t['figure']} = {t['value']:.3f} (target {t['target']})"
        for t in results["targets"]
    ]
    return lines
