"""Scaling with data: wall time of the preprocess and augment stages at 1×, 2× and 4× the synthetic dataset.

The synthetic counts of ``data.synthetic`` are multiplied; each size's ingest and split run once,
untimed. The six (stage, size) runs are then interleaved over ``rounds`` rounds (each run rewrites
its stage's output folder; the warm-up round also creates the preprocessed arrays augment reads).
A least-squares line through (images, median seconds) gives each stage's cost per image (the
slope), its fixed cost (the intercept: process-pool start-up, manifest and hashing) and r².
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from scipy import stats

from pipeline.bench.timing import interleaved, median
from pipeline.config import Params, deep_merge, parse_params
from pipeline.data import augment, ingest, preprocess, split
from pipeline.data.split import read_split

MULTIPLES = (1, 2, 4)


def scaled(params: Params, multiple: int) -> Params:
    """``params`` with every synthetic class count multiplied by ``multiple``."""
    counts = params.data.synthetic
    return parse_params(
        deep_merge(
            params.model_dump(mode="json"),
            {
                "data": {
                    "synthetic": {
                        "n_normal": counts.n_normal * multiple,
                        "n_benign": counts.n_benign * multiple,
                        "n_malignant": counts.n_malignant * multiple,
                    }
                }
            },
        ),
        f"synthetic dataset × {multiple}",
    )


def run(params: Params, rounds: int = 2) -> dict[str, Any]:
    """Median seconds of each (stage, size), and per stage the fitted slope, intercept and r²."""
    if params.data.source != ingest.SYNTHETIC:
        params = parse_params(deep_merge(params.model_dump(mode="json"), {"data": {"source": "synthetic"}}), "bench")
    work = Path(tempfile.mkdtemp(prefix="mtl-bench-scaling-"))
    contenders, images = {}, {}
    try:
        for m in MULTIPLES:
            p, root = scaled(params, m), work / f"x{m}"
            ingest.run(p, out_dir=root / "ingested")
            split.run(p, ingested=root / "ingested", out_dir=root / "split")
            sets = read_split(root / "split")
            images[f"preprocess_{m}x"] = len(sets.train) + len(sets.test)
            images[f"augment_{m}x"] = len(sets.train) * p.augment.copies_per_image
            contenders[f"preprocess_{m}x"] = lambda p=p, root=root: preprocess.run(
                p, ingested=root / "ingested", out_dir=root / "preprocessed"
            )
        for m in MULTIPLES:
            p, root = scaled(params, m), work / f"x{m}"
            contenders[f"augment_{m}x"] = lambda p=p, root=root: augment.run(
                p, preprocessed=root / "preprocessed", split=root / "split", out_dir=root / "augmented"
            )
        seconds = interleaved(contenders, rounds=rounds, warmup=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results: dict[str, Any] = {"multiples": list(MULTIPLES), "rounds": rounds, "workers": params.data.workers}
    for stage in ("preprocess", "augment"):
        names = [f"{stage}_{m}x" for m in MULTIPLES]
        x, y = [images[n] for n in names], [median(seconds[n]) for n in names]
        fit = stats.linregress(x, y)
        results[stage] = {
            "images": dict(zip(names, x)),
            "seconds_median": dict(zip(names, y)),
            "slope_ms_per_image": 1e3 * fit.slope,
            "intercept_s": fit.intercept,
            "r_squared": fit.rvalue**2,
            "time_ratio_4x_vs_1x": y[-1] / y[0],
        }
    return results


def table(results: dict[str, Any]) -> list[str]:
    lines = []
    for stage in ("preprocess", "augment"):
        r = results[stage]
        sizes = ", ".join(f"{n} img {s:.2f} s" for n, s in zip(r["images"].values(), r["seconds_median"].values()))
        lines.append(
            f"{stage} ({results['workers']} workers): {sizes}; slope {r['slope_ms_per_image']:.2f} ms/img, "
            f"intercept {r['intercept_s']:.2f} s, r² {r['r_squared']:.4f}, 4× data → "
            f"{r['time_ratio_4x_vs_1x']:.2f}× time"
        )
    return lines
