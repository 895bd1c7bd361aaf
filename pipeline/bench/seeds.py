"""The default profile under other seeds (``mtl-pipeline seeds``, ``make seeds``): does it pass, how far do figures move?

``seed`` decides the synthetic images, the split, the augmented copies, the initial weights and the batch order,
so one seed's figures are one draw. For each seed this runs the whole default pipeline, exactly as ``make run``
does, in a scratch copy of the project (``pipeline/``, ``profiles/``, ``dvc.yaml`` and ``params.yaml`` with only
``seed`` changed; its own DVC cache, MLflow store and Ray session): ``dvc repro``, then ``compare --strict``.
It writes ``seeds.json`` (per seed: wall time, whether ``compare --strict`` passed, every balancer's fold-mean test
figures) and prints the range over the seeds per balancer, the figures the README reports. Minutes per seed, so a
benchmark, not a test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.atomic import atomic_write_json

PROJECT = Path(__file__).resolve().parents[2]
COPIED = ("pipeline", "profiles", "dvc.yaml")


def run(params_path: Path, seeds: Sequence[int], workdir: Path, out: Path) -> dict[str, Any]:
    """Run the pipeline of ``params_path`` once per seed under ``workdir/seed_<s>``; write and return the results."""
    results = {str(seed): _run_seed(params_path, seed, Path(workdir) / f"seed_{seed}") for seed in seeds}
    atomic_write_json(out, results)
    _print_ranges(results)
    return results


def _run_seed(params_path: Path, seed: int, workspace: Path) -> dict[str, Any]:
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.mkdir(parents=True)
    for item in COPIED:
        (shutil.copytree if (PROJECT / item).is_dir() else shutil.copy)(PROJECT / item, workspace / item)
    params = yaml.safe_load(Path(params_path).read_text()) | {"seed": seed}
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}  # each seed its own local store
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(workspace)  # the copy's code in every process, Ray's workers too (they inherit it)
    log = workspace / "log.txt"
    start = time.perf_counter()
    with log.open("w") as sink:
        for command in (["dvc", "init", "--no-scm", "-q"], ["dvc", "repro"]):
            subprocess.run(command, cwd=workspace, env=env, stdout=sink, stderr=subprocess.STDOUT, check=True)
        wall_s = time.perf_counter() - start
        compare = subprocess.run([sys.executable, "-m", "pipeline", "compare", "--strict"], cwd=workspace, env=env,
                                 stdout=sink, stderr=subprocess.STDOUT)
    balancers = params["train"]["balancers"]
    figures = {b: json.loads((workspace / "metrics" / b / "metrics.json").read_text()) for b in balancers}
    print(f"seed {seed}: {wall_s / 60:.1f} min, compare --strict {'passed' if compare.returncode == 0 else 'FAILED'}",
          flush=True)
    return {"wall_s": wall_s, "passed": compare.returncode == 0, "log_bytes": log.stat().st_size,
            "test": figures}


def _print_ranges(results: dict[str, Any]) -> None:
    """Per balancer and headline figure, ``min–max`` over the seeds."""
    first = next(iter(results.values()))["test"]
    for balancer, figures in first.items():
        cells = []
        for task, metrics in figures.items():
            if not isinstance(metrics, dict):
                continue
            for metric in metrics:
                values = [r["test"][balancer][task][metric] for r in results.values()]
                cells.append(f"{task}.{metric} {min(values):.3f}–{max(values):.3f}")
        print(f"{balancer:<12} " + "  ".join(cells))
    passed = sum(r["passed"] for r in results.values())
    print(f"compare --strict passed for {passed} of {len(results)} seeds")
