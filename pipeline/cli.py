"""Command line: one sub-command per pipeline stage (``python -m pipeline --help``).

Every stage reads the validated params and writes exactly the outputs ``dvc.yaml`` declares.
Project errors are printed as one line (``error: ...``) with exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import logs, paths
from pipeline.bench import PARTS
from pipeline.config import DEFAULT_PARAMS, load_params
from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Option:
    """One argument of a sub-command, as ``argparse.ArgumentParser.add_argument`` takes it; its ``dest`` is the
    keyword it is passed to the command's function under."""

    flags: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)


def option(*flags: str, **settings: Any) -> Option:
    return Option(flags, settings)


@dataclass(frozen=True)
class Command:
    """A sub-command: ``<module>.<function>(params, **options)`` (``params`` only where ``takes_params``;
    ``params_path``, the ``--params`` file, too where ``takes_params_path``; ``commands``, the names of every
    sub-command, where ``takes_commands``)."""

    name: str
    module: str
    help: str
    options: tuple[Option, ...] = ()
    function: str = "run"
    takes_params: bool = True
    takes_params_path: bool = False
    takes_commands: bool = False


OUT_DIR = "out_dir"
COMMANDS = (
    Command(
        "ingest",
        "pipeline.data.ingest",
        "read the dataset (synthetic, folder, archive or S3) into a manifest",
        (option("--out", dest=OUT_DIR, type=Path, default=paths.INGESTED),),
    ),
    Command(
        "split",
        "pipeline.data.split",
        "stratified train/test split and k folds on train",
        (
            option("--ingested", type=Path, default=paths.INGESTED),
            option("--out", dest=OUT_DIR, type=Path, default=paths.SPLIT),
        ),
    ),
    Command(
        "preprocess",
        "pipeline.data.preprocess",
        "resize and normalise every image into memory-mappable arrays",
        (
            option("--ingested", type=Path, default=paths.INGESTED),
            option("--out", dest=OUT_DIR, type=Path, default=paths.PREPROCESSED),
        ),
    ),
    Command(
        "augment",
        "pipeline.data.augment",
        "offline albumentations expansion of the training split",
        (
            option("--preprocessed", type=Path, default=paths.PREPROCESSED),
            option("--split", type=Path, default=paths.SPLIT),
            option("--out", dest=OUT_DIR, type=Path, default=paths.AUGMENTED),
        ),
    ),
    Command(
        "train",
        "pipeline.train.train",
        "train one balancer on every configured fold",
        (
            option("balancer", help="a balancer of train.balancers (pipeline/balancers/)"),
            option("--data", type=Path, default=paths.DATA),
            option("--out", dest="models", type=Path, default=paths.MODELS),
            option("--metrics", type=Path, default=paths.METRICS),
            option("--tuned", type=Path, help="params overlays per balancer written by `tune` (tuned_params.yaml)"),
        ),
        function="run_command",
    ),
    Command(
        "tune",
        "pipeline.tune.tune",
        "grid sweep (Ray Tune) of one balancer's settings (tune.balancer, tune.grid), cross-validated on the folds",
        (
            option("--data", type=Path, default=paths.DATA),
            option("--out", dest="reports", type=Path, default=paths.REPORTS),
        ),
    ),
    Command(
        "bench",
        "pipeline.bench.suite",
        "benchmark suite: balancer overhead, input path, distributed overhead, data scaling",
        (
            option("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run (default: all)"),
            option("--out", type=Path, default=paths.REPORTS / "bench.json"),
            option("--quick", action="store_true", help="fewest rounds: checks the suite runs, figures are rough"),
        ),
        takes_params_path=True,
    ),
    Command(
        "precision",
        "pipeline.bench.precision",
        "bf16 against float32, per balancer and training seed, paired per test image (the train.amp: auto evidence)",
        (
            option("--seeds", type=int, nargs="+", help="training seeds (default: the params' seed)"),
            option("--balancers", nargs="+", help="default: train.balancers"),
            option("--out", type=Path, default=paths.REPORTS / "precision.json"),
        ),
        function="command",
    ),
    Command(
        "time-stages",
        "pipeline.bench.run_time",
        "run a command (make run: dvc repro) and record its wall time per DVC stage in reports/run_time.json",
        (
            option("command", nargs="+", help="the command and its arguments, after `--` (e.g. -- dvc repro)"),
            option("--since", type=float, help="epoch seconds the run started at (make run: before the install)"),
            option("--out", type=Path, default=paths.REPORTS / "run_time.json"),
        ),
        function="record",
        takes_params=False,
    ),
    Command(
        "seeds",
        "pipeline.bench.seeds",
        "train and score every balancer once per seed: does each pass, the figures' range",
        (
            option("--seeds", type=int, nargs="+", default=[1, 2, 3, 7, 42]),
            option(
                "--workdir",
                type=Path,
                default=Path("seed_runs"),
                help="each seed's data and metrics (default: seed_runs/)",
            ),
            option("--out", type=Path, default=paths.REPORTS / "seeds.json"),
        ),
    ),
    Command(
        "gpu-check",
        "pipeline.bench.gpu_check",
        "prove the device path in minutes: environment, all-reduce, every balancer and stl, predict",
        (
            option(
                "--device", choices=("auto", "cuda", "cpu"), default="auto", help="default: auto (CUDA when present)"
            ),
            option("--out", type=Path, default=paths.REPORTS / "gpu_check.json"),
        ),
    ),
    Command(
        "compare",
        "pipeline.evaluate.compare",
        "test metrics of every balancer against trivial predictors",
        (
            option("--metrics", dest="metrics_dir", type=Path, default=paths.METRICS),
            option("--strict", action="store_true", help="exit non-zero if a balancer does not beat them"),
        ),
    ),
    Command(
        "compare-runs",
        "pipeline.evaluate.runs_compared",
        "two runs' test figures per balancer, paired image by image (e.g. float32 against bf16)",
        (
            option("reference", type=Path, help="reports folder (or workspace) of the reference run"),
            option("candidate", type=Path, help="reports folder (or workspace) of the run compared with it"),
        ),
        takes_params=False,
    ),
    Command(
        "evaluate",
        "pipeline.evaluate.evaluate",
        "every balancer's fold models on the test split, with paired tests against equal",
        (
            option("--data", type=Path, default=paths.DATA),
            option("--models", dest="models_dir", type=Path, default=paths.MODELS),
            option("--metrics", dest="metrics_dir", type=Path, default=paths.METRICS),
            option("--out", dest="reports", type=Path, default=paths.REPORTS),
        ),
    ),
    Command(
        "report",
        "pipeline.evaluate.report",
        "reports/report.md and report.html from the evaluation, logged to MLflow",
        (
            option("--data", type=Path, default=paths.DATA),
            option("--metrics", dest="metrics_dir", type=Path, default=paths.METRICS),
            option("--reports", type=Path, default=paths.REPORTS),
        ),
    ),
    Command(
        "promote",
        "pipeline.registry.promote",
        "register the best validated checkpoint in MLflow; champion if it passes the gate",
        (
            option("--models", dest="models_dir", type=Path, default=paths.MODELS),
            option("--metrics", dest="metrics_dir", type=Path, default=paths.METRICS),
            option(
                "--data",
                dest="data_root",
                type=Path,
                default=paths.DATA,
                help="data root holding split/, preprocessed/, augmented/",
            ),
            option("--report", type=Path, default=paths.REPORTS / "promotion.json"),
        ),
    ),
    Command(
        "predict",
        "pipeline.registry.predict",
        "lesion masks and diagnoses of image files and folders by a registered model",
        (
            option("inputs", type=Path, nargs="+", help="image files and/or folders (searched recursively)"),
            option("--model-uri", help="MLflow model URI (default: models:/<registry.model_name>@champion)"),
            option(
                "--out",
                dest=OUT_DIR,
                type=Path,
                default=Path("predictions"),
                help="output folder (default: predictions)",
            ),
        ),
    ),
    Command(
        "track",
        "pipeline.followup.track",
        "one wound over its visits: area, tissue fractions and their change, by date",
        (
            option("series", type=Path, help="folder of images with a date in each name, or a CSV (columns path,date)"),
            option(
                "--model",
                "--model-uri",
                dest="model_uri",
                metavar="URI",
                help="MLflow model URI (default: models:/<registry.model_name>@champion)",
            ),
            option(
                "--masks",
                type=Path,
                metavar="DIR",
                help="measure these index masks (same file names) instead of a model",
            ),
            option("--pixel-spacing-mm", type=float, metavar="MM", help="pixel side in mm: also report areas in cm²"),
            option(
                "--out",
                dest=OUT_DIR,
                type=Path,
                default=paths.REPORTS / "track",
                metavar="DIR",
                help="output folder (default: reports/track)",
            ),
        ),
    ),
    Command(
        "submit",
        "pipeline.submit",
        "run a pipeline command as a Ray job on a cluster (`ray job submit`)",
        (
            option(
                "stage_args",
                nargs="+",
                metavar="stage",
                help="the command and its arguments, after `--` (e.g. -- train atdwa)",
            ),
            option(
                "--address",
                help="the cluster: host:port (GCS) or http://host:8265 (default: ray.address, $RAY_ADDRESS)",
            ),
            option(
                "--working-dir", type=Path, default=Path("."), help="project folder uploaded to the job (default: .)"
            ),
            option("--env", action="append", default=[], metavar="NAME", help="also forward this variable to the job"),
            option("--no-wait", dest="wait", action="store_false", help="return once the job is submitted"),
        ),
        takes_commands=True,
    ),
    Command(
        "apply-profile",
        "pipeline.profiles",
        "merge a named profile (e.g. 'paper') into the params file",
        (
            option("profile"),
            option("--data", help="the dataset (folder, archive or s3:// prefix) the profile reads: data.source"),
        ),
        function="apply",
        takes_params=False,
        takes_params_path=True,
    ),
)
"""Every sub-command; ``dvc.yaml``'s stages run the ones of the same name (tests/test_dvc_dependencies.py reads
each one's module from here)."""


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
    names = tuple(c.name for c in COMMANDS)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        keywords = [p.add_argument(*o.flags, **o.settings).dest for o in command.options]
        if command.takes_commands:
            p.set_defaults(commands=names)
            keywords.append("commands")
        p.set_defaults(command_spec=command, keywords=keywords)
    return parser


def run_command(args: argparse.Namespace) -> None:
    """Call the function of ``args``' sub-command with the params file's params and its options."""
    command: Command = args.command_spec
    function = getattr(importlib.import_module(command.module), command.function)
    positional = (load_params(args.params),) if command.takes_params else ()
    keywords = {name: getattr(args, name) for name in args.keywords}
    if command.takes_params_path:
        keywords["params_path"] = args.params
    function(*positional, **keywords)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.verbose)
    try:
        run_command(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
