"""The layout is the architecture: the import graph of cough/, derived with ``ast`` (every
import, at module level or inside a function), has no cycle and follows the package table of
docs/architecture.md; TensorFlow's environment is set in one place."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

from .conftest import ROOT

PACKAGE = ROOT / "cough"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = ROOT / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """``(cough module -> cough modules it imports, cough module -> top-level third-party packages)``."""
    ours: dict[str, set[str]] = defaultdict(set)
    theirs: dict[str, set[str]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module(path)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                # `from . import text` imports the module cough.report.text, not the package
                targets = [f"{target}.{a.name}" if _is_module(f"{target}.{a.name}") else target for a in node.names]
            else:
                continue
            for target in targets:
                if target == "cough" or target.startswith("cough."):
                    ours[module].add(target)
                else:
                    theirs[module].add(target.split(".")[0])
    return ours, theirs


def unit(module: str) -> str:
    """The row of the package table a module belongs to: ``cough.audio.melspec`` -> ``audio``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "cough"


def package_table() -> dict[str, tuple[set[str], set[str]]]:
    """docs/architecture.md's package table: package -> (may import, never imports)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \| ([^|]+) \|$", text, re.M)
    split = lambda cell: {w.strip() for w in cell.split(",") if w.strip() not in ("", "-")}  # noqa: E731
    return {name: (split(may), split(never)) for name, may, never in rows}


def test_every_package_has_a_row_and_a_docstring_that_says_what_it_owns():
    table = package_table()
    units = {unit(_module(p)) for p in PACKAGE.rglob("*.py")} - {"cough", "__main__"}
    assert units == set(table), f"packages without a row: {units - set(table)}, rows without one: {set(table) - units}"
    for init in PACKAGE.glob("*/__init__.py"):
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} has no docstring"


def test_imports_follow_the_package_table():
    table = package_table()
    ours, theirs = import_graph()
    wrong = sorted(f"{module} imports {target}" for module, targets in ours.items() for target in targets
                   if unit(module) in table and unit(target) not in {unit(module), "cough", *table[unit(module)][0]})
    assert not wrong, "imports that docs/architecture.md does not allow:\n" + "\n".join(wrong)
    banned = sorted(f"{module} imports {package}" for module, packages in theirs.items() for package in packages
                    if unit(module) in table and package in table[unit(module)][1])
    assert not banned, "\n".join(banned)


def test_the_import_graph_has_no_cycle():
    ours, _ = import_graph()
    graph = {m: {t for t in targets if t != m} for m, targets in ours.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return path + [module, target]
            if target not in state and (cycle := visit(target, path + [module])):
                return cycle
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [])
            assert cycle is None, "import cycle: " + " -> ".join(cycle[cycle.index(cycle[-1]):])


def test_the_graph_sees_lazy_imports_and_both_kinds_of_from_import():
    """The checks above are only as good as the graph: it must see an import inside a function."""
    ours, theirs = import_graph()
    assert "cough.tables.storage" in ours["cough.model.store"]          # inside write_model
    assert "cough.report.text" in ours["cough.report.page"]             # from . import text as T
    assert "ray" in theirs["cough.tables.archive"]                       # inside listing_dataset


def test_tensorflow_environment_is_set_in_one_place():
    """TF_* variables are named only where cough.runtime.tensorflow_env builds them."""
    setters = sorted(str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
                     if re.search(r"[\"']TF_(USE_LEGACY_KERAS|CPP_MIN_LOG_LEVEL|ENABLE_ONEDNN_OPTS)[\"']", p.read_text()))
    assert setters == ["cough/runtime.py"]
