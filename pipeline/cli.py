"""Command line: one sub-command per pipeline stage (``python -m pipeline --help``).

Every stage reads the validated params and writes exactly the outputs ``dvc.yaml`` declares.
Project errors are printed as one line (``error: ...``) with exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from pipeline import logs, paths
from pipeline.bench import PARTS
from pipeline.config import DEFAULT_PARAMS, load_params, with_overlay
from pipeline.errors import PipelineError


def _ingest(params, args) -> None:
    importlib.import_module("pipeline.data.ingest").run(params, out_dir=args.out)


def _split(params, args) -> None:
    importlib.import_module("pipeline.data.split").run(params, ingested=args.ingested, out_dir=args.out)


def _preprocess(params, args) -> None:
    importlib.import_module("pipeline.data.preprocess").run(params, ingested=args.ingested, out_dir=args.out)


def _augment(params, args) -> None:
    importlib.import_module("pipeline.data.augment").run(
        params, preprocessed=args.preprocessed, split=args.split, out_dir=args.out
    )


def _train(params, args) -> None:
    if args.tuned is not None:
        params = with_overlay(params, args.tuned, args.balancer)
    importlib.import_module("pipeline.train.stage").run(
        params,
        balancer=args.balancer,
        data=paths.DATA,
        out_dir=args.out / args.balancer,
        metrics_dir=args.metrics / args.balancer,
    )


def _tune(params, args) -> None:
    importlib.import_module("pipeline.tune.stage").run(params, data=paths.DATA, reports=args.out)


def _bench(params, args) -> None:
    importlib.import_module("pipeline.bench.suite").run(
        params, params_path=args.params, parts=args.parts, out=args.out, quick=args.quick
    )


def _seeds(params, args) -> None:
    importlib.import_module("pipeline.bench.seeds").run(params, args.seeds, workdir=args.workdir, out=args.out)


def _gpu_check(params, args) -> None:
    importlib.import_module("pipeline.bench.gpu_check").run(params, device=args.device, out=args.out)


def _compare(params, args) -> None:
    importlib.import_module("pipeline.evaluate.compare").run(params, metrics_dir=args.metrics, strict=args.strict)


def _evaluate(params, args) -> None:
    importlib.import_module("pipeline.evaluate.stage").run(
        params, data=args.data, models_dir=args.models, metrics_dir=args.metrics, reports=args.out
    )


def _report(params, args) -> None:
    importlib.import_module("pipeline.evaluate.report").run(
        params, data=args.data, metrics_dir=args.metrics, reports=args.reports
    )


def _promote(params, args) -> None:
    importlib.import_module("pipeline.registry.stage").run(
        params, models_dir=args.models, metrics_dir=args.metrics, data_root=args.data, report=args.report
    )


def _predict(params, args) -> None:
    importlib.import_module("pipeline.registry.predict").run(
        params, inputs=args.inputs, out_dir=args.out, model_uri=args.model_uri
    )


def _track(params, args) -> None:
    importlib.import_module("pipeline.followup.command").run(
        params,
        series=args.series,
        out_dir=args.out,
        model_uri=args.model_uri,
        masks=args.masks,
        pixel_spacing_mm=args.pixel_spacing_mm,
    )


def _submit(params, args) -> None:
    importlib.import_module("pipeline.submit").run(
        params,
        args.stage,
        commands=args.commands,
        address=args.address,
        working_dir=args.working_dir,
        env=args.env,
        wait=not args.no_wait,
    )


def _apply_profile(params, args) -> None:
    importlib.import_module("pipeline.profiles").apply(args.profile, args.params, args.data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtl-pipeline", description="Multi-task medical imaging pipeline (DVC stages, Ray, MLflow)."
    )
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params file (default: params.yaml)")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help=f"Ray's and MLflow's informational messages too (or {logs.VERBOSE_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = add("ingest", _ingest, "read the dataset (synthetic, folder, archive or S3) into a manifest")
    p.add_argument("--out", type=Path, default=paths.INGESTED)

    p = add("split", _split, "stratified train/test split and k folds on train")
    p.add_argument("--ingested", type=Path, default=paths.INGESTED)
    p.add_argument("--out", type=Path, default=paths.SPLIT)

    p = add("preprocess", _preprocess, "resize and normalise every image into memory-mappable arrays")
    p.add_argument("--ingested", type=Path, default=paths.INGESTED)
    p.add_argument("--out", type=Path, default=paths.PREPROCESSED)

    p = add("augment", _augment, "offline albumentations expansion of the training split")
    p.add_argument("--preprocessed", type=Path, default=paths.PREPROCESSED)
    p.add_argument("--split", type=Path, default=paths.SPLIT)
    p.add_argument("--out", type=Path, default=paths.AUGMENTED)

    p = add("train", _train, "train one balancer on every configured fold")
    p.add_argument("balancer", help="a balancer of train.balancers (pipeline/balancers/)")
    p.add_argument("--out", type=Path, default=paths.MODELS)
    p.add_argument("--metrics", type=Path, default=paths.METRICS)
    p.add_argument(
        "--tuned", type=Path, default=None, help="params overlays per balancer written by `tune` (tuned_params.yaml)"
    )

    p = add("tune", _tune, "grid sweep (Ray Tune) of ATDWA's gamma, T0 and window, cross-validated on the folds")
    p.add_argument("--out", type=Path, default=paths.REPORTS)

    p = add("bench", _bench, "benchmark suite: balancer overhead, input path, distributed overhead, data scaling")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run (default: all)")
    p.add_argument("--out", type=Path, default=paths.REPORTS / "bench.json")
    p.add_argument("--quick", action="store_true", help="fewest rounds: checks the suite runs, figures are rough")

    p = add("seeds", _seeds, "train and score every balancer once per seed: does each pass, the figures' range")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 7, 42])
    p.add_argument(
        "--workdir", type=Path, default=Path("seed_runs"), help="each seed's data and metrics (default: seed_runs/)"
    )
    p.add_argument("--out", type=Path, default=paths.REPORTS / "seeds.json")

    p = add(
        "gpu-check",
        _gpu_check,
        "prove the device path in minutes: environment, all-reduce, every balancer and stl, predict",
    )
    p.add_argument(
        "--device", choices=("auto", "cuda", "cpu"), default="auto", help="default: auto (CUDA when present)"
    )
    p.add_argument("--out", type=Path, default=paths.REPORTS / "gpu_check.json")

    p = add("compare", _compare, "test metrics of every balancer against trivial predictors")
    p.add_argument("--metrics", type=Path, default=paths.METRICS)
    p.add_argument("--strict", action="store_true", help="exit non-zero if a balancer does not beat them")

    p = add("evaluate", _evaluate, "every balancer's fold models on the test split, with paired tests against equal")
    p.add_argument("--data", type=Path, default=paths.DATA)
    p.add_argument("--models", type=Path, default=paths.MODELS)
    p.add_argument("--metrics", type=Path, default=paths.METRICS)
    p.add_argument("--out", type=Path, default=paths.REPORTS)

    p = add("report", _report, "reports/report.md and report.html from the evaluation, logged to MLflow")
    p.add_argument("--data", type=Path, default=paths.DATA)
    p.add_argument("--metrics", type=Path, default=paths.METRICS)
    p.add_argument("--reports", type=Path, default=paths.REPORTS)

    p = add("promote", _promote, "register the best validated checkpoint in MLflow; champion if it passes the gate")
    p.add_argument("--models", type=Path, default=paths.MODELS)
    p.add_argument("--metrics", type=Path, default=paths.METRICS)
    p.add_argument("--data", type=Path, default=paths.DATA, help="data root holding split/, preprocessed/, augmented/")
    p.add_argument("--report", type=Path, default=paths.REPORTS / "promotion.json")

    p = add("predict", _predict, "lesion masks and diagnoses of image files and folders by a registered model")
    p.add_argument("inputs", type=Path, nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--model-uri", help="MLflow model URI (default: models:/<registry.model_name>@champion)")
    p.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default: predictions)")

    p = add("track", _track, "one wound over its visits: area, tissue fractions and their change, by date")
    p.add_argument("series", type=Path, help="folder of images with a date in each name, or a CSV (columns path,date)")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--model",
        "--model-uri",
        dest="model_uri",
        metavar="URI",
        help="MLflow model URI (default: models:/<registry.model_name>@champion)",
    )
    source.add_argument(
        "--masks", type=Path, metavar="DIR", help="measure these index masks (same file names) instead of a model"
    )
    p.add_argument("--pixel-spacing-mm", type=float, metavar="MM", help="pixel side in mm: also report areas in cm²")
    p.add_argument(
        "--out",
        type=Path,
        default=paths.REPORTS / "track",
        metavar="DIR",
        help="output folder (default: reports/track)",
    )

    submit = p = add("submit", _submit, "run a pipeline command as a Ray job on a cluster (`ray job submit`)")
    p.add_argument("stage", nargs="+", help="the command and its arguments, after `--` (e.g. -- train atdwa)")
    p.add_argument(
        "--address", help="the cluster: host:port (GCS) or http://host:8265 (default: ray.address, $RAY_ADDRESS)"
    )
    p.add_argument(
        "--working-dir", type=Path, default=Path("."), help="project folder uploaded to the job (default: .)"
    )
    p.add_argument("--env", action="append", default=[], metavar="NAME", help="also forward this variable to the job")
    p.add_argument("--no-wait", action="store_true", help="return once the job is submitted")

    p = add("apply-profile", _apply_profile, "merge a named profile (e.g. 'paper') into the params file")
    p.add_argument("profile")
    p.add_argument("--data", help="the dataset (folder, archive or s3:// prefix) the profile reads: data.source")
    submit.set_defaults(commands=tuple(sub.choices))  # what a submitted job may run
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.verbose)
    try:
        params = None if args.command == "apply-profile" else load_params(args.params)
        args.func(params, args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
