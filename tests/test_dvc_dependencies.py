"""`dvc.yaml` declares exactly the code each stage runs, so an edit re-runs the stages it can change and no others.

A stage's code is the import closure (within ``pipeline``) of what its command runs: ``python -m pipeline <stage>``
imports ``pipeline/__main__.py``, ``pipeline/cli.py``'s module-level imports and the module of the stage's
command in ``cli.COMMANDS``. Imports are read from the source (``import``, ``from … import``, including inside
functions, and ``importlib.import_module("…")``; not those under ``if TYPE_CHECKING:``, which never run), and
packages bring their ``__init__.py``. A directory in ``deps`` stands for every ``.py`` file under it.
"""

import ast

import pytest
import yaml

from pipeline.cli import COMMANDS
from tests.imports import PACKAGE, ROOT, closure, imported_modules


def _command_code(stage: str) -> set[str]:
    """Files ``python -m pipeline <stage>`` runs: the entry points, what ``cli.py`` imports at module level and
    the module of the stage's command (``cli.COMMANDS``; the other commands' modules do not run), and the
    closure of what they import."""
    cli = ast.parse((ROOT / "pipeline/cli.py").read_text())
    top_level = set()
    for node in cli.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            top_level |= imported_modules(node, "pipeline.cli", False)
    (command,) = [c for c in COMMANDS if c.name == stage]
    return closure(top_level | {command.module, "pipeline.__main__"}, leaves=frozenset({"pipeline.cli"}))


def _declared_code(deps: list) -> set[str]:
    files = set()
    for dep in deps:
        path = ROOT / dep
        if dep.startswith(f"{PACKAGE}/"):
            found = sorted(path.rglob("*.py")) if path.is_dir() else [path]
            files |= {str(p.relative_to(ROOT)) for p in found if "__pycache__" not in p.parts}
    return files


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_each_stage_depends_on_exactly_the_code_it_runs(stage):
    definition = STAGES[stage].get("do", STAGES[stage])  # a foreach stage's template
    runs, declared = _command_code(stage), _declared_code(definition.get("deps", []))
    assert not runs - declared, f"dvc.yaml stage {stage!r} misses deps it imports: {sorted(runs - declared)}"
    assert not declared - runs, f"dvc.yaml stage {stage!r} depends on code it never imports: {sorted(declared - runs)}"


def test_the_closure_follows_function_level_and_importlibimported_modules():
    """The reader of imports itself: the train command names its stage module, the stage module imports the
    training loop, the loop imports the balancers package, which imports (discovers) every balancer."""
    code = _command_code("train")
    assert {
        "pipeline/train/train.py",
        "pipeline/train/loop.py",
        "pipeline/balancers/gradnorm.py",
        "pipeline/config.py",
        "pipeline/__init__.py",
        "pipeline/__main__.py",
    } <= code
    assert "pipeline/registry/promote.py" not in code
