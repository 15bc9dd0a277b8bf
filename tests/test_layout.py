"""The layout rules of docs/architecture.md, checked on the source.

- no module reads a private attribute (``obj._name``) that another module defines,
  so every collaboration between modules goes through public names;
- the import graph of icij_nb has no loop, counting imports inside functions and
  under ``TYPE_CHECKING`` (a lazy import that hides a loop is still a loop);
- every module stays under the size at which it must be split.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "icij_nb"
MAX_LINES = 600
#: underscore names that are public protocols of Python and its libraries
PROTOCOLS = {"_replace", "_repr_mimebundle_", "_register_atexit"}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def own_names(tree: ast.AST) -> set[str]:
    """Private names the module defines: its attributes, methods and globals."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ entries
    return names


def private_reads(tree: ast.AST) -> list[tuple[int, str]]:
    own = own_names(tree)
    reads = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        if not attr.startswith("_") or attr.startswith("__") or attr in PROTOCOLS:
            continue
        if attr in own:
            continue
        reads.append((node.lineno, ast.unparse(node)))
    return reads


def test_no_module_reads_another_objects_private_attributes():
    found = []
    for name, path in modules().items():
        for line, text in private_reads(ast.parse(path.read_text())):
            found.append(f"{name}:{line}: {text}")
    assert found == [], "\n".join(found)


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base])
                base = base.rstrip(".")
            # ``from package import module`` imports the module, not a name
            names = [f"{base}.{a.name}" for a in node.names]
            targets = [n for n in names if n in known] or [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            # A module's own packages are imported with it, by Python itself.
            if target and not (name == target or name.startswith(target + ".")):
                out.add(target)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_loop():
    found = modules()
    known = set(found)
    graph = {name: imports_of(name, path, known) for name, path in found.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_loop_finder_finds_a_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_private_read_finder_finds_a_read():
    source = "def f(tm, self):\n    self._x = 1\n    return tm._tasks, self._x"
    assert [text for _, text in private_reads(ast.parse(source))] == ["tm._tasks"]


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_is_small_enough_to_read(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines < MAX_LINES, f"{name} has {lines} lines; split it (one noun each)"
