"""The package is layered and imports only point down: a layer runs nothing of the layers above it.

From the bottom: the foundations (params, errors, paths, atomic writes, typed documents, logs, plug-in discovery), the
data stages, the tasks, the networks, the runtime every model-running stage shares, balancers and tracking, training,
the sweep, evaluation, the registry, and the tools on top (wound follow-up, benchmarks, the command line).
``if TYPE_CHECKING:`` imports are annotations only and may point anywhere.
"""

import ast

import pytest

from tests.imports import PACKAGE, ROOT, imported_modules

LAYERS = (
    {"config", "environment", "errors", "paths", "atomic", "logs", "stage_files", "plugins", "__init__"},
    {"data"},
    {"tasks"},
    {"models"},
    {"runtime"},
    {"balancers", "tracking"},
    {"train"},
    {"tune"},
    {"evaluate"},
    {"registry"},
    {"followup", "bench", "profiles", "submit", "cli", "__main__"},
)


def _layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else "__init__"
    layer = next((i for i, names in enumerate(LAYERS) if part in names), None)
    assert layer is not None, f"{module}: place {part!r} in tests/test_layers.py's LAYERS"
    return layer


def _modules() -> list[str]:
    return [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in sorted((ROOT / PACKAGE).rglob("*.py"))]


@pytest.mark.parametrize("module", _modules())
def test_a_module_imports_nothing_from_a_layer_above_it(module):
    path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    is_package = path.name == "__init__.py"
    name = module.removesuffix(".__init__")
    imported = {
        m
        for m in imported_modules(ast.parse(path.read_text()), name, is_package)
        if m.split(".")[0] == PACKAGE and m != PACKAGE
    }
    above = sorted(m for m in imported if _layer(m) > _layer(name))
    assert not above, f"{path.relative_to(ROOT)} (layer {_layer(name)}) imports from layers above it: {above}"
