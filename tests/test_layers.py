"""The layering of docs/architecture.md, checked against every module's imports.

The layer table is read from the document itself (the first table under its "Layers"
heading), so the document and this test cannot drift apart. Every module under
``openenv_ws/`` and ``envs/`` (tests excluded) is given the layer of the most specific
glob that matches its path, and its imports are read with :mod:`ast`, without importing
anything: imports inside functions and under ``if TYPE_CHECKING:`` count like any other.

An import names one module: ``from ..sandbox import Backend`` the package's ``__init__.py``,
``from . import reaper`` the submodule ``reaper.py``, ``import a.b.c`` the module ``a/b/c.py``.
The parent packages Python runs on the way are not counted (else every module would import
the top-level package). Imports by string (entry points, ``importlib``) are not imports here.
"""

from __future__ import annotations

import ast
import functools
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = "docs/architecture.md"

PACKAGES = {"openenv_ws": "openenv_ws", "openenv_ws_envs": "envs"}
"""Import name -> folder in the repository (the environment library installs as ``openenv_ws_envs``)."""

ENV_LIBRARY = "E"
"""The label of the environment library's row: beside the package, not one of its numbered layers."""
ENV_LIBRARY_MAY_IMPORT = 2
"""The environment library may import layers 1..this one only (never the core, sandboxes, server, client, tools)."""

CORE = "session core"
"""The name of the core's row: it must not import I/O or event-loop libraries, not even indirectly."""
IO_MODULES = frozenset({"asyncio", "anyio", "socket", "trio", "websockets", "starlette", "uvicorn"})


# ------------------------------------------------------------------ the layer table


@dataclass(frozen=True)
class Layer:
    label: str  # "1".."9", or ENV_LIBRARY
    name: str
    globs: tuple[str, ...]

    @property
    def rank(self) -> int | None:
        return int(self.label) if self.label.isdigit() else None


class TableError(Exception):
    """The layer table of the document cannot be read."""


def parse_layers(markdown: str) -> list[Layer]:
    """Read the first table under a ``Layers`` heading: columns ``#``, ``layer``, ``modules``."""
    lines = markdown.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"#+\s+Layers\b", line)), None)
    if start is None:
        raise TableError("no 'Layers' heading")
    table: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.lstrip().startswith("|"):
            table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif table:
            break
    if len(table) < 3:
        raise TableError("no table (a header, a separator and rows) under the 'Layers' heading")
    header = [cell.lower() for cell in table[0]]
    try:
        col_label, col_name, col_modules = header.index("#"), header.index("layer"), header.index("modules")
    except ValueError:
        raise TableError(f"the table's columns must include '#', 'layer' and 'modules', not {table[0]}") from None
    layers = []
    for row in table[2:]:
        label, name, modules = row[col_label], row[col_name], row[col_modules]
        if not (label.isdigit() or label == ENV_LIBRARY):
            raise TableError(f"row {row}: '#' must be a layer number or {ENV_LIBRARY!r}, not {label!r}")
        globs = tuple(re.findall(r"`([^`]+)`", modules))
        if not globs or any("/" not in g for g in globs):
            raise TableError(f"row {label} ({name}): the modules cell must hold only path globs in backticks")
        layers.append(Layer(label, name, globs))
    labels = [layer.label for layer in layers]
    numbers = sorted(layer.rank for layer in layers if layer.rank is not None)
    if numbers != list(range(1, len(numbers) + 1)) or len(set(labels)) != len(labels):
        raise TableError(f"layers must be numbered 1..n once each (and {ENV_LIBRARY!r} once), got {labels}")
    return layers


def glob_regex(glob: str) -> re.Pattern[str]:
    """``**`` spans any number of folders, ``*`` and ``?`` stay within one path segment."""
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out))


def specificity(glob: str) -> tuple[int, int]:
    """An exact path beats any pattern; among patterns, the longer literal prefix wins."""
    wild = re.search(r"[*?]", glob)
    return (0, wild.start()) if wild else (1, len(glob))


def layer_of(path: str, layers: Iterable[Layer]) -> Layer | None:
    """The layer of the most specific glob matching ``path``; None if none does."""
    matches = [(specificity(g), g, layer) for layer in layers for g in layer.globs if glob_regex(g).fullmatch(path)]
    if not matches:
        return None
    matches.sort(key=lambda m: m[0], reverse=True)
    best = [m for m in matches if m[0] == matches[0][0]]
    if len({m[2].label for m in best}) > 1:
        rows = ", ".join(f"`{g}` (layer {layer.label})" for _, g, layer in best)
        raise TableError(f"{path} matches {rows} equally: make one glob more specific")
    return best[0][2]


# ------------------------------------------------------------------ the modules and their imports


def is_module(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.endswith(".py") and not name.startswith("test_") and name != "conftest.py"


def read_sources(root: Path) -> dict[str, str]:
    """Every module of the package and the environment library: repo-relative path -> source."""
    sources = {}
    for folder in PACKAGES.values():
        for file in sorted((root / folder).rglob("*.py")):
            path = file.relative_to(root).as_posix()
            if is_module(path) and "__pycache__" not in path:
                sources[path] = file.read_text(encoding="utf-8")
    return sources


def dotted(path: str) -> str:
    """``envs/coding/environment.py`` -> ``openenv_ws_envs.coding.environment``; a package -> its name."""
    folder, _, rest = path.partition("/")
    import_name = next(name for name, f in PACKAGES.items() if f == folder)
    parts = [import_name, *rest.removesuffix(".py").split("/")]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@dataclass
class Graph:
    edges: dict[str, dict[str, int]] = field(default_factory=dict)
    """module path -> {imported module path: line of the first such import}"""
    external: dict[str, dict[str, int]] = field(default_factory=dict)
    """module path -> {top-level name of a third-party or stdlib import: line}"""
    unresolved: list[str] = field(default_factory=list)
    """first-party imports that name no module of the tree"""


def scan(sources: Mapping[str, str]) -> Graph:
    """Read every import of every module with ``ast``, resolved to module paths."""
    index = {dotted(path): path for path in sources}
    graph = Graph()
    for path, source in sources.items():
        edges = graph.edges.setdefault(path, {})
        external = graph.external.setdefault(path, {})
        package = dotted(path) if path.endswith("/__init__.py") else dotted(path).rpartition(".")[0]

        def add(name: str, line: int, path: str = path, edges: dict[str, int] = edges) -> None:
            if name in index:
                if index[name] != path:
                    edges.setdefault(index[name], line)
            else:
                graph.unresolved.append(f"{path}, line {line}: {name} is no module of the tree")

        for node in ast.walk(ast.parse(source, filename=path)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.partition(".")[0]
                    if top in PACKAGES:
                        add(alias.name, node.lineno)
                    else:
                        external.setdefault(top, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    if node.level - 1 >= len(base):
                        graph.unresolved.append(f"{path}, line {node.lineno}: relative import beyond the top")
                        continue
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                top = target.partition(".")[0]
                if top not in PACKAGES:
                    if top != "__future__":
                        external.setdefault(top, node.lineno)
                    continue
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    add(submodule if submodule in index else target, node.lineno)
    return graph


# ------------------------------------------------------------------ cycles


def find_cycles(edges: Mapping[str, Iterable[str]]) -> list[tuple[list[str], set[str]]]:
    """Each group of modules that reach each other (Tarjan's SCCs), with one shortest cycle ``[a, ..., a]``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(start: str) -> None:  # iterative: no recursion limit on long chains
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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

    for node in sorted(edges):
        if node not in index:
            connect(node)

    cycles = []
    for group in groups:
        start = min(group)
        came_from: dict[str, str] = {}
        queue = deque([start])
        while queue:  # breadth first, inside the group, back to start: a shortest cycle
            node = queue.popleft()
            children = sorted(edges.get(node, ()))
            if start in children and node != start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                cycles.append(([*reversed(path), start], group))
                break
            for child in children:
                if child in group and child != start and child not in came_from:
                    came_from[child] = node
                    queue.append(child)
    return sorted(cycles, key=lambda found: found[0])


# ------------------------------------------------------------------ the checks


@dataclass
class Report:
    unplaced: list[str] = field(default_factory=list)
    unused_globs: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    cycles: list[str] = field(default_factory=list)
    upward: list[str] = field(default_factory=list)
    impure: list[str] = field(default_factory=list)
    env_library: list[str] = field(default_factory=list)


def check(layers: list[Layer], sources: Mapping[str, str]) -> Report:
    report = Report()
    graph = scan(sources)
    report.unresolved = sorted(graph.unresolved)
    placed: dict[str, Layer] = {}
    for path in sorted(sources):
        try:
            layer = layer_of(path, layers)
        except TableError as exc:
            report.unplaced.append(str(exc))
            continue
        if layer is None:
            report.unplaced.append(f"{path} matches no row: every module must have a layer")
        else:
            placed[path] = layer
    for layer in layers:
        for glob in layer.globs:
            if not any(glob_regex(glob).fullmatch(path) for path in sources):
                report.unused_globs.append(f"`{glob}` (layer {layer.label}) matches no module")

    for cycle, group in find_cycles(graph.edges):
        others = sorted(group - set(cycle))
        also = f" (and {', '.join(others)}: all reach each other)" if others else ""
        report.cycles.append(" -> ".join(cycle) + also)

    for src, targets in sorted(graph.edges.items()):
        if src not in placed:
            continue
        mine = placed[src]
        for dst, line in sorted(targets.items()):
            if dst not in placed:
                continue
            theirs = placed[dst]
            if mine.rank is None or theirs.label == mine.label:
                continue  # the environment library is checked below, with what it reaches through others
            if theirs.rank is None or theirs.rank > mine.rank:
                report.upward.append(f"{src} -> {dst} (layer {mine.label} imports layer {theirs.label}), line {line}")

    for path in sorted(p for p, layer in placed.items() if layer.rank is None):
        for chain, theirs, line in _reach_above(path, graph, placed):
            through = f" through {', '.join(chain[:-1])}" if chain[:-1] else ""
            imports = " -> ".join([path, *chain])
            relation = f"layer {ENV_LIBRARY} imports layer {theirs.label}{through}"
            report.env_library.append(f"{imports} ({relation}), line {line}")

    core = [path for path, layer in placed.items() if layer.name == CORE]
    for path in sorted(core):
        for module, via, line in _io_imports(path, graph):
            where = f" through {' -> '.join(via)} (line {line} of {via[-1]})" if via else f", line {line}"
            report.impure.append(f"{path} imports {module}{where}")
    return report


def _reach_above(start: str, graph: Graph, placed: Mapping[str, Layer]) -> list[tuple[list[str], Layer, int]]:
    """What above layer ENV_LIBRARY_MAY_IMPORT an environment module imports, itself or through others.

    Each as (the chain of imports after ``start``, the layer reached, the line of ``start``'s import).
    Through others means through modules without a layer: ``openenv_ws/gym.py`` led to the client.
    """
    found = []
    seen = {start}
    queue: deque[tuple[list[str], int]] = deque([([start], 0)])
    while queue:
        chain, first_line = queue.popleft()
        for child, line in sorted(graph.edges.get(chain[-1], {}).items()):
            if child in seen:
                continue
            seen.add(child)
            line = first_line or line
            layer = placed.get(child)
            if layer is None:  # follow it: a module with a layer answers for its own imports
                queue.append(([*chain, child], line))
            elif layer.rank is not None and layer.rank > ENV_LIBRARY_MAY_IMPORT:
                found.append(([*chain[1:], child], layer, line))
    return found


def _io_imports(start: str, graph: Graph) -> list[tuple[str, list[str], int]]:
    """The I/O libraries ``start`` imports, itself or through the first-party modules it imports."""
    found = []
    seen = {start}
    queue: deque[tuple[str, list[str]]] = deque([(start, [])])
    while queue:
        path, via = queue.popleft()
        for module, line in sorted(graph.external.get(path, {}).items()):
            if module in IO_MODULES:
                found.append((module, via, line))
        for child in sorted(graph.edges.get(path, {})):
            if child not in seen:
                seen.add(child)
                queue.append((child, [*via, child]))
    return found


@functools.cache
def report() -> Report:
    return check(layers(), read_sources(ROOT))


@functools.cache
def layers() -> list[Layer]:
    try:
        return parse_layers((ROOT / DOC).read_text(encoding="utf-8"))
    except (OSError, TableError) as exc:
        problem = f"{DOC}: {exc}"
    pytest.fail(problem, pytrace=False)


def fail_on(problems: list[str], headline: str) -> None:
    if problems:
        pytest.fail(f"{len(problems)} {headline}:\n  " + "\n  ".join(problems), pytrace=False)


# ------------------------------------------------------------------ the tree


def test_the_layer_table_names_the_core_and_the_environment_library():
    names = {layer.name: layer.label for layer in layers()}
    assert CORE in names, f"{DOC}: no row named {CORE!r}"
    assert ENV_LIBRARY in names.values(), f"{DOC}: no row {ENV_LIBRARY!r} for the environment library (envs/**)"


def test_every_module_has_one_layer():
    fail_on(report().unplaced, f"modules without a layer in {DOC} (add a row or a glob)")


def test_every_glob_of_the_table_names_a_module():
    fail_on(report().unused_globs, f"globs in {DOC} name no module (a renamed module? fix the table)")


def test_every_import_of_the_package_resolves():
    fail_on(report().unresolved, "imports name no module of the tree")


def test_no_import_cycles():
    fail_on(report().cycles, "import cycles (type-hint imports included: move the shared names down a layer)")


def test_no_module_imports_a_higher_layer():
    fail_on(report().upward, f"imports go up the layers of {DOC} (a module imports only its own layer and lower ones)")


def test_the_session_core_imports_no_io():
    fail_on(report().impure, f"imports of I/O libraries ({', '.join(sorted(IO_MODULES))}) by the session core")


def test_the_environment_library_imports_layers_1_and_2_only():
    fail_on(report().env_library, f"imports of the environment library beyond layer {ENV_LIBRARY_MAY_IMPORT}")


# ------------------------------------------------------------------ the checker itself, on made-up trees

TABLE = """\
# A house

## Layers

| # | layer | modules | notes |
|---|---|---|---|
| 1 | protocol | `openenv_ws/protocol.py` | |
| 2 | environment API | `openenv_ws/env.py` | |
| 3 | session core | `openenv_ws/core/**` | pure |
| 4 | server | `openenv_ws/server/**`, `openenv_ws/openenv/**` | |
| 5 | client | `openenv_ws/client/**`, `openenv_ws/openenv/client.py` | |
| 6 | package | `openenv_ws/__init__.py` | |
| E | environment library | `envs/**` | layers 1-2 only |

## Next
"""


def test_the_table_is_read_from_markdown():
    parsed = parse_layers(TABLE)
    assert [layer.label for layer in parsed] == ["1", "2", "3", "4", "5", "6", "E"]
    assert parsed[3] == Layer("4", "server", ("openenv_ws/server/**", "openenv_ws/openenv/**"))
    with pytest.raises(TableError, match="numbered"):
        parse_layers(TABLE.replace("| 5 | client", "| 7 | client"))
    with pytest.raises(TableError, match="no 'Layers' heading"):
        parse_layers("# Nothing here\n")


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("openenv_ws/core/**", "openenv_ws/core/server.py", True),
        ("openenv_ws/core/**", "openenv_ws/core/__init__.py", True),
        ("openenv_ws/sandbox/**", "openenv_ws/sandbox/docker/pool.py", True),
        ("openenv_ws/core/**", "openenv_ws/core.py", False),
        ("openenv_ws/*.py", "openenv_ws/env.py", True),
        ("openenv_ws/*.py", "openenv_ws/server/app.py", False),
        ("envs/**/environment.py", "envs/environment.py", True),
        ("envs/**/environment.py", "envs/gym/environment.py", True),
        ("openenv_ws/protocol.py", "openenv_ws/protocolXpy", False),
    ],
)
def test_globs(glob, path, matches):
    assert bool(glob_regex(glob).fullmatch(path)) is matches


def test_the_most_specific_glob_wins():
    parsed = parse_layers(TABLE)
    assert layer_of("openenv_ws/openenv/client.py", parsed).name == "client"  # exact path over `**`
    assert layer_of("openenv_ws/openenv/ws.py", parsed).name == "server"
    assert layer_of("openenv_ws/tools/cli.py", parsed) is None
    deeper = [Layer("1", "a", ("x/**",)), Layer("2", "b", ("x/y/**",))]
    assert layer_of("x/y/z.py", deeper).name == "b"
    with pytest.raises(TableError, match="equally"):
        layer_of("x/a.py", [Layer("1", "a", ("x/*.py",)), Layer("2", "b", ("x/?.py",))])


def test_imports_are_resolved_like_python_does():
    sources = {
        "openenv_ws/__init__.py": "from .server import app\nfrom . import __version__\n",
        "openenv_ws/server/__init__.py": "",
        "openenv_ws/server/app.py": (
            "from typing import TYPE_CHECKING\n"
            "import anyio.abc\n"
            "from ..client import EnvSession\n"  # a name of the package: its __init__.py
            "from .. import protocol\n"  # a submodule
            "if TYPE_CHECKING:\n"
            "    from openenv_ws.client.session import Link\n"
            "def later():\n"
            "    import openenv_ws.env\n"
            "    from .gone import x\n"
        ),
        "openenv_ws/client/__init__.py": "",
        "openenv_ws/client/session.py": "",
        "openenv_ws/protocol.py": "",
        "openenv_ws/env.py": "",
        "envs/gym/environment.py": "from .. import _lib\nfrom openenv_ws_envs._lib.child import run\n",
        "envs/_lib/__init__.py": "",
        "envs/_lib/child.py": "",
    }
    graph = scan(sources)
    assert set(graph.edges["openenv_ws/server/app.py"]) == {
        "openenv_ws/client/__init__.py",
        "openenv_ws/protocol.py",
        "openenv_ws/client/session.py",
        "openenv_ws/env.py",
    }
    assert set(graph.edges["openenv_ws/__init__.py"]) == {"openenv_ws/server/app.py"}  # itself: not an edge
    assert set(graph.edges["envs/gym/environment.py"]) == {"envs/_lib/__init__.py", "envs/_lib/child.py"}
    assert graph.external["openenv_ws/server/app.py"] == {"typing": 1, "anyio": 2}
    assert graph.unresolved == ["openenv_ws/server/app.py, line 9: openenv_ws.server.gone is no module of the tree"]


def test_cycles_are_found_and_named():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}, "g": {"a"}}
    assert find_cycles(edges) == [(["a", "b", "c", "a"], {"a", "b", "c"}), (["e", "f", "e"], {"e", "f"})]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    shortcut = {"a": {"b", "c"}, "b": {"c"}, "c": {"a"}}  # the shortest cycle, and the whole group
    assert find_cycles(shortcut) == [(["a", "c", "a"], {"a", "b", "c"})]
    chain = {str(i): {str(i + 1)} for i in range(5000)} | {"5000": {"0"}}  # no recursion limit
    [(cycle, group)] = find_cycles(chain)
    assert len(cycle) == 5002 and len(group) == 5001


def test_the_checker_catches_a_cycle_an_upward_import_an_impure_core_and_a_greedy_env():
    sources = {
        "openenv_ws/__init__.py": "",
        "openenv_ws/protocol.py": "from .core import state\n",
        "openenv_ws/env.py": "from .protocol import Frame\n",
        "openenv_ws/core/__init__.py": "",
        "openenv_ws/core/state.py": "from ..env import Environment\n",
        "openenv_ws/core/pure.py": "from . import state\n",
        "openenv_ws/server/__init__.py": "",
        "openenv_ws/server/sessions.py": "from .metrics import Metrics\nfrom ..client import connect\n",
        "openenv_ws/server/metrics.py": "import typing\nif typing.TYPE_CHECKING:\n    from .sessions import Session\n",
        "openenv_ws/client/__init__.py": "",
        "openenv_ws/client/gym.py": "",
        "envs/__init__.py": "",
        "envs/gym/environment.py": "from openenv_ws.client import gym\nfrom openenv_ws.env import Environment\n",
        "envs/shell/environment.py": "import json\nfrom openenv_ws import facade\n",
        "openenv_ws/facade.py": "from .client.gym import make\n",  # in no row of TABLE
    }
    sources["openenv_ws/server/tap.py"] = "from .sessions import Session\n"
    sources["openenv_ws/server/sessions.py"] += "from .tap import Tap\n"
    sources["openenv_ws/env.py"] += "import anyio\n"
    found = check(parse_layers(TABLE), sources)
    assert found.cycles == [
        "openenv_ws/core/state.py -> openenv_ws/env.py -> openenv_ws/protocol.py -> openenv_ws/core/state.py",
        "openenv_ws/server/metrics.py -> openenv_ws/server/sessions.py -> openenv_ws/server/metrics.py"
        " (and openenv_ws/server/tap.py: all reach each other)",
    ]
    assert found.upward == [
        "openenv_ws/protocol.py -> openenv_ws/core/state.py (layer 1 imports layer 3), line 1",
        "openenv_ws/server/sessions.py -> openenv_ws/client/__init__.py (layer 4 imports layer 5), line 2",
    ]
    assert found.env_library == [
        "envs/gym/environment.py -> openenv_ws/client/gym.py (layer E imports layer 5), line 1",
        "envs/shell/environment.py -> openenv_ws/facade.py -> openenv_ws/client/gym.py"
        " (layer E imports layer 5 through openenv_ws/facade.py), line 2",
    ]
    assert found.impure == [
        "openenv_ws/core/pure.py imports anyio through openenv_ws/core/state.py -> openenv_ws/env.py"
        " (line 2 of openenv_ws/env.py)",
        "openenv_ws/core/state.py imports anyio through openenv_ws/env.py (line 2 of openenv_ws/env.py)",
    ]
    assert found.unplaced == ["openenv_ws/facade.py matches no row: every module must have a layer"]
    assert found.unresolved == []
