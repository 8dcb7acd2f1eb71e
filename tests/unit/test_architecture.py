"""The import graph of ``src/`` keeps the layers of docs/architecture.md and has no cycle.

Every ``import`` and ``from … import`` counts, wherever it stands: at module level, inside a
function, or under ``if TYPE_CHECKING:`` (a cycle that only the type checker sees still ties
the two modules together for a reader).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "echo_identity"
DOCUMENT = ROOT / "docs" / "architecture.md"
_LAYER_LINE = re.compile(r"^(\d+)\.\s+(.*)$")
_NAME = re.compile(r"`([a-z_./]+)`")


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> Iterator[Import]:
    """The modules of ``known`` that ``name`` imports (a name imported from a package counts
    as its submodule when there is one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            submodules = [f"{module}.{alias.name}" for alias in node.names]
            targets = [target for target in submodules if target in known] or [module]
        for target in targets:
            while target and target not in known:  # `import a.b.c` names a module of a.b.c
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("echo_identity"):
                yield Import(name, target, node.lineno)


def graph() -> dict[str, list[Import]]:
    found = modules()
    known = set(found)
    return {name: list(imports_of(name, path, known)) for name, path in found.items()}


def layers() -> dict[str, int]:
    """``docs/architecture.md`` "Layers": a numbered list, lowest first, naming the packages
    and modules of each layer in backquotes (``audit/http/`` or ``services.py``)."""
    text = DOCUMENT.read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    result: dict[str, int] = {}
    for line in section.splitlines():
        match = _LAYER_LINE.match(line.strip())
        if not match:
            continue
        for item in _NAME.findall(match.group(2)):
            dotted = item.strip("/").removesuffix(".py").replace("/", ".")
            result[f"echo_identity.{dotted}"] = int(match.group(1))
    return result


def layer_of(module: str, table: dict[str, int]) -> int | None:
    """The layer of the longest listed prefix of ``module`` (``None``: the package root)."""
    candidate = module
    while candidate:
        if candidate in table:
            return table[candidate]
        candidate = candidate.rpartition(".")[0]
    return None


def cycles(edges: dict[str, list[Import]]) -> list[list[str]]:
    """Groups of two or more modules that each reach every other one (by reachability: the
    graph has a few hundred modules, so plainness beats speed)."""
    reach: dict[str, set[str]] = {}
    for start in edges:
        seen: set[str] = set()
        todo = [edge.target for edge in edges[start]]
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(edge.target for edge in edges.get(node, []))
        reach[start] = seen
    groups: list[list[str]] = []
    placed: set[str] = set()
    for start in edges:
        if start in placed or start not in reach[start]:
            continue
        group = sorted(node for node in reach[start] if start in reach.get(node, set()))
        placed.update(group)
        groups.append(group)
    return groups


def test_no_two_modules_of_src_import_each_other_even_indirectly() -> None:
    found = cycles(graph())
    assert found == [], "\n".join(" <-> ".join(group) for group in found)


def test_every_module_belongs_to_a_documented_layer() -> None:
    table = layers()
    unplaced = [
        name for name in modules() if name != "echo_identity" and layer_of(name, table) is None
    ]
    assert unplaced == [], "add these to the Layers list of docs/architecture.md"


def test_no_import_runs_up_to_a_higher_layer() -> None:
    table = layers()
    upward = [
        f"{edge.source}:{edge.line} imports {edge.target}"
        for edges in graph().values()
        for edge in edges
        if (layer_of(edge.target, table) or 0) > (layer_of(edge.source, table) or 0)
    ]
    assert upward == [], "\n".join(upward)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from echo_identity.b import c\n", ["echo_identity.b.c"]),
        ("from echo_identity.b import name\n", ["echo_identity.b"]),
        ("def f():\n    from echo_identity.b.c import x\n", ["echo_identity.b.c"]),
        ("if TYPE_CHECKING:\n    import echo_identity.b.c.x\n", ["echo_identity.b.c"]),
        ("from .c import x\n", ["echo_identity.b.c"]),
        ("from . import c\n", ["echo_identity.b.c"]),
    ],
)
def test_the_walk_counts_every_kind_of_import(
    tmp_path: Path, source: str, expected: list[str]
) -> None:
    path = tmp_path / "a.py"
    path.write_text(source)
    known = {"echo_identity.b", "echo_identity.b.c", "echo_identity.b.a"}
    found = [edge.target for edge in imports_of("echo_identity.b.a", path, known)]
    assert found == expected


def test_a_cycle_through_three_modules_is_found() -> None:
    edges = {
        "a": [Import("a", "b", 1)],
        "b": [Import("b", "c", 1)],
        "c": [Import("c", "a", 1)],
        "d": [Import("d", "a", 1)],
    }
    assert cycles(edges) == [["a", "b", "c"]]


def test_an_upward_import_is_reported(tmp_path: Path) -> None:
    table = {"echo_identity.web": 5, "echo_identity.idp": 8}
    assert layer_of("echo_identity.web.errors", table) == 5
    assert layer_of("echo_identity.idp.endpoints.token", table) == 8
    assert layer_of("echo_identity.other", table) is None
