"""No import cycle among the modules of ``stream_migrator/``, read from the source with ``ast``.

Every ``import`` and ``from ... import`` counts, at module level and inside
functions: a lazy import hides a cycle, it does not remove it. Only imports
under ``if TYPE_CHECKING:`` are left out; they never run.

How an import in module X becomes edges of the graph:

- ``import a.b.c``, or ``from a.b import c`` where ``c`` is a submodule: an edge
  to ``a.b.c`` and to each package on the way (``a``, ``a.b``) that is not one of
  X's own, since importing a submodule first runs its packages' ``__init__``.
  X's own packages are already initialising whenever X runs, so reaching into
  them for a submodule closes no cycle.
- ``from a.b import name`` (``name`` not a submodule) reads an attribute of
  ``a.b`` while X is imported: an edge to ``a.b``, even when ``a.b`` is one of
  X's own packages. When ``a.b/__init__.py`` resolves ``name`` lazily
  (``lazy_exports``, PEP 562, see ``stream_migrator/_lazy.py``), also an edge to
  the module it resolves ``name`` from: that import runs as X's import
  statement does. The lazy table itself is no import of the package; only
  what its ``__init__`` really imports is.
- Relative imports resolve against X's package.
"""

from __future__ import annotations

import ast
import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "stream_migrator"


@dataclass(frozen=True)
class Edge:
    """X imports ``target``, at ``line`` of X's file."""

    target: str
    line: int


@dataclass(frozen=True)
class _Module:
    name: str
    path: Path

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def package(self) -> str:
        """The package relative imports resolve against."""
        return self.name if self.is_package else self.name.rpartition(".")[0]

    @property
    def own_packages(self) -> set[str]:
        parts = self.name.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def _modules(package_dir: Path) -> dict[str, _Module]:
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        modules[name] = _Module(name, path)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


class _ImportStatements(ast.NodeVisitor):
    """Every import statement of a module, in functions and classes too, except type-only ones."""

    def __init__(self) -> None:
        self.found: list[ast.Import | ast.ImportFrom] = []

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.append(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.found.append(node)


def _lazy_exports(tree: ast.Module, path: Path) -> dict[str, str]:
    """The ``{name: module}`` table a package ``__init__`` gives ``lazy_exports``, if any."""
    tables = {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    exports: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if called != "lazy_exports":
            continue
        table = node.args[1] if len(node.args) > 1 else None
        if isinstance(table, ast.Name):
            table = tables.get(table.id)
        if not isinstance(table, ast.Dict):
            raise AssertionError(
                f"{path}:{node.lineno}: lazy_exports without a literal table; give it a dict "
                "literal (or a name bound to one) so this test can read the re-exports"
            )
        exports.update(ast.literal_eval(table))
    return exports


def _targets(
    module: _Module,
    node: ast.Import | ast.ImportFrom,
    lazy: dict[str, dict[str, str]],
    modules: dict[str, _Module],
) -> Iterator[tuple[str, bool]]:
    """What one import statement imports: (module, whether an attribute of it is read)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, False
        return
    if node.level:
        base = module.package.split(".")
        base = base[: len(base) - (node.level - 1)]
        source = ".".join([*base, node.module] if node.module else base)
    else:
        source = node.module or ""
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        if submodule in modules:
            yield submodule, False
            continue
        yield source, True  # an attribute read (or ``*``)
        resolved = lazy.get(source, {}).get(alias.name)
        if resolved is not None:
            yield resolved, True


def _steps(
    module: _Module, target: str, explicit: bool, modules: dict[str, _Module]
) -> Iterator[str]:
    """``target`` and the packages on its way, except ``module``'s own (see above)."""
    parts = target.split(".")
    for i in range(1, len(parts) + 1):
        step = ".".join(parts[:i])
        if step not in modules or step == module.name:
            continue
        if step in module.own_packages and not (explicit and i == len(parts)):
            continue
        yield step


def import_graph(package_dir: Path) -> dict[str, dict[str, Edge]]:
    """Module -> {imported module: first edge} for every module under ``package_dir``."""
    modules = _modules(package_dir)
    trees = {name: ast.parse(m.path.read_text(), str(m.path)) for name, m in modules.items()}
    lazy = {
        name: _lazy_exports(tree, modules[name].path)
        for name, tree in trees.items()
        if modules[name].is_package
    }
    graph: dict[str, dict[str, Edge]] = {}
    for name, tree in trees.items():
        finder = _ImportStatements()
        finder.visit(tree)
        edges: dict[str, Edge] = {}
        for node in finder.found:
            for target, explicit in _targets(modules[name], node, lazy, modules):
                for step in _steps(modules[name], target, explicit, modules):
                    edges.setdefault(step, Edge(step, node.lineno))
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, dict[str, Edge]]) -> Iterator[list[str]]:
    """One shortest cycle through each strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    for group in groups:
        yield _shortest_cycle(graph, group, min(group))


def _shortest_cycle(graph: dict[str, dict[str, Edge]], group: set[str], start: str) -> list[str]:
    """Breadth first inside ``group``: the shortest way from ``start`` back to it."""
    paths = {start: [start]}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph[node]):
            if nxt == start:
                return [*paths[node], start]
            if nxt in group and nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError(f"{start} is in a strongly connected group but on no cycle")


def _describe(cycle: list[str], graph: dict[str, dict[str, Edge]], package_dir: Path) -> str:
    modules = _modules(package_dir)
    steps = [
        f"  {a} ({modules[a].path.relative_to(package_dir.parent)}:{graph[a][b].line}) imports {b}"
        for a, b in itertools.pairwise(cycle)
    ]
    return " -> ".join(cycle) + "\n" + "\n".join(steps)


def assert_no_cycle(package_dir: Path) -> None:
    graph = import_graph(package_dir)
    found = [_describe(c, graph, package_dir) for c in _cycles(graph)]
    assert not found, "import cycle(s):\n" + "\n".join(found)


def test_stream_migrator_has_no_import_cycle() -> None:
    """No module of stream_migrator/ imports itself back, at any depth, lazily or not."""
    graph = import_graph(PACKAGE_DIR)
    assert len(graph) == len(list(PACKAGE_DIR.rglob("*.py")))  # every module was read
    assert_no_cycle(PACKAGE_DIR)


_LAZY_INIT = (
    "from pkg._lazy import lazy_exports\n"
    "__getattr__ = lazy_exports(__name__, {'Thing': 'pkg.sub.a'})\n"
)


def _sub(init: str, b_imports: str) -> dict[str, str]:
    """Package ``pkg.sub`` whose module ``a`` imports ``pkg.b``; ``b`` imports from ``pkg.sub``."""
    return {"sub/__init__.py": init, "sub/a.py": "from pkg.b import z\n", "b.py": b_imports}


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        pytest.param(
            {"a.py": "from pkg import b\n", "b.py": "import pkg.a\n"}, True, id="absolute"
        ),
        pytest.param(
            {"a.py": "from . import b\n", "b.py": "from .a import x\n"}, True, id="relative"
        ),
        pytest.param(
            {
                "a.py": "import pkg.b\n",
                "b.py": "def f():\n    from pkg.c import y\n",
                "c.py": "from pkg import a\n",
            },
            True,
            id="function-level, three modules",
        ),
        pytest.param(
            _sub("from pkg.sub.a import Thing\n", "from pkg.sub import other\n"),
            True,
            id="package __init__ import",
        ),
        pytest.param(
            _sub(_LAZY_INIT, "from pkg.sub import Thing\n"), True, id="lazy re-export imported"
        ),
        pytest.param(_sub("", "from pkg.sub.a import Thing\n"), True, id="submodule in a package"),
        pytest.param(
            _sub(_LAZY_INIT, "from pkg.sub import other\n"), False, id="lazy re-export not imported"
        ),
        pytest.param(
            {
                "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.b\n",
                "b.py": "from pkg import a\n",
            },
            False,
            id="type-only import",
        ),
        pytest.param(
            {
                "sub/__init__.py": "from pkg.sub.a import Thing\n",
                "sub/a.py": "from pkg.sub import b\n",
                "sub/b.py": "X = 1\n",
            },
            False,
            id="a submodule of its own package",
        ),
    ],
)
def test_cycle_check_follows_what_runs(tmp_path: Path, files: dict[str, str], cycle: bool) -> None:
    """An import that closes a circle at run time fails the check, naming the modules on it."""
    package = tmp_path / "pkg"
    for rel, text in {"__init__.py": "", "_lazy.py": "", **files}.items():
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text(text)
    if not cycle:
        assert_no_cycle(package)
        return
    with pytest.raises(AssertionError, match=r"import cycle\(s\):\n.*pkg\.\w+ -> pkg"):
        assert_no_cycle(package)
