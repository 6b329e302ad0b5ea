"""The package's layering, enforced: ``cli → run → report → config → stages → beam → core``.

A module imports only from its own layer or below; a stage package never imports another stage
package; ``core`` never imports Beam at module level; imports sit at module top (an import inside
a function only defers a heavy optional dependency and says so with a ``# lazy:`` comment); and
no import cycle exists between winnow's modules.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "winnow"
LAYERS = {"core": 0, "beam": 1, "stages": 2, "config": 3, "report": 4, "run": 5, "cli": 6}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> tuple[int, str] | None:
    """(rank, unit) of a winnow module; unit is what may not import its peers (a stage package)."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        return None  # the package root (``winnow.__version__``) is importable from anywhere
    unit = ".".join(parts[:3]) if parts[1] == "stages" else parts[1]
    return LAYERS[parts[1]], unit


def _imported(node: ast.Import | ast.ImportFrom, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level or not node.module:
        return []
    # ``from winnow.stages.order import ordering`` imports the submodule.
    subs = [f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in known]
    return subs or [node.module]


def layering_problems(root: Path) -> list[str]:
    """Every breach of the rules above in the package at ``root``."""
    files = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    known = set(files)
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        tree = ast.parse(source)
        top = {id(node) for node in tree.body}
        graph[module] = set()
        own = _layer(module)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets = _imported(node, known)
            at_top = id(node) in top
            for target in targets:
                where = f"{path.relative_to(root.parent)}:{node.lineno}"
                if not target.startswith("winnow"):
                    if module.startswith("winnow.core") and target.startswith("apache_beam") and at_top:
                        problems.append(f"{where}: core imports Beam ({target})")
                    if not at_top and "# lazy:" not in " ".join(lines[node.lineno - 1 : node.end_lineno]):
                        problems.append(f"{where}: import of {target} inside a function without a `# lazy:` reason")
                    continue
                if not at_top:
                    problems.append(f"{where}: import of {target} inside a function (imports go at module top)")
                    continue
                target_module = target if target in known else target.rsplit(".", 1)[0]
                graph[module].add(target_module)
                theirs = _layer(target_module)
                if own is None or theirs is None:
                    continue
                if theirs[0] > own[0]:
                    problems.append(f"{where}: {module} imports upward from {target_module}")
                elif theirs[0] == own[0] == LAYERS["stages"] and theirs[1] != own[1]:
                    problems.append(f"{where}: stage {own[1]} imports another stage, {target_module}")
    problems.extend(f"import cycle: {' → '.join(cycle)}" for cycle in _cycles(graph))
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in graph:
                continue
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_keeps_its_layers() -> None:
    assert layering_problems(PACKAGE) == []


def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "winnow"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("data", "__pycache__"))
    return copy


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_an_upward_import_a_cross_stage_import_and_a_cycle_are_caught(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    _append(copy / "core" / "hashing.py", "from winnow.beam.contract import KEPT")
    _append(copy / "stages" / "tag" / "stage.py", "from winnow.stages.score.config import ScoreConfig")
    _append(copy / "beam" / "contract.py", "import winnow.beam.cuts")
    problems = layering_problems(copy)
    assert any("core/hashing.py" in p and "upward" in p for p in problems)
    assert any("stage winnow.stages.tag imports another stage" in p for p in problems)
    assert any(p.startswith("import cycle:") and "winnow.beam.contract" in p for p in problems)


def test_a_function_level_import_needs_a_reason(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    _append(copy / "core" / "text.py", "def late():\n    import scipy\n    return scipy")
    _append(copy / "core" / "stats.py", "def later():\n    from winnow.core.hashing import h64\n    return h64")
    problems = layering_problems(copy)
    assert any("core/text.py" in p and "without a `# lazy:` reason" in p for p in problems)
    assert any("core/stats.py" in p and "inside a function" in p for p in problems)
