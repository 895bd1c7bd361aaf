"""Which ``pipeline`` modules a module imports when it runs, read from the source (no import is executed)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "pipeline"


def source_file(module: str) -> Path | None:
    path = ROOT.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None  # a name imported from a module, not a module


def _executed(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:`` (imported for annotations, never run)."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            todo += node.orelse
            continue
        todo += ast.iter_child_nodes(node)
    return nodes


def _package_modules(package: str) -> set[str]:
    """Every module of ``package`` (what :func:`pipeline.plugins.discover` imports)."""
    folder = ROOT.joinpath(*package.split("."))
    return {f"{package}.{path.stem}" for path in folder.glob("*.py") if path.stem != "__init__"}


def _discovered_package(node: ast.AST, module: str) -> str | None:
    """The package a ``discover(__name__, ...)`` or ``discover("a.b", ...)`` call imports every module of."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = node.func
    if (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)) != "discover":
        return None
    first = node.args[0]
    if isinstance(first, ast.Name) and first.id == "__name__":
        return module
    return first.value if isinstance(first, ast.Constant) else None


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Module names ``tree`` (the source of ``module``) imports when run; ``from a import b`` also yields ``a.b``,
    and a plug-in package's ``discover(__name__, ...)`` every module of that package."""
    names = set()
    for node in _executed(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(node.args[0].value)
        elif (package := _discovered_package(node, module)) is not None:
            names |= _package_modules(package)
    return names


def closure(modules: set[str], leaves: frozenset[str] = frozenset()) -> set[str]:
    """Repository-relative files of ``modules`` and everything they import from ``pipeline``, transitively;
    the imports of ``leaves`` are not followed."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen or module.split(".")[0] != PACKAGE or (source := source_file(module)) is None:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b
        if module not in leaves:
            todo += imported_modules(ast.parse(source.read_text()), module, source.name == "__init__.py")
    return {str(source_file(m).relative_to(ROOT)) for m in seen}
