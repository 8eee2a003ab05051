"""The package's layout rules, read from its source: the layers import one way down, only
cli/ imports click, no module reaches into another's private names, no import cycles
(lazy imports included), no module grows past about 600 lines, and every module has its
mirror test module (tests/X/test_Y.py for vmxprobe/X/Y.py)."""

from __future__ import annotations

import ast
import os
from functools import cache

import pytest

from tests import REPO

PACKAGE = os.path.join(REPO, "vmxprobe")
MAX_LINES = 600

# Lowest first: a module may import from its own layer and the layers before it.
LAYERS = [
    ("vmxprobe", "vmxprobe.exitcodes", "vmxprobe.files", "vmxprobe.durations", "vmxprobe.arch"),
    ("vmxprobe.host",),
    ("vmxprobe.kernel",),
    ("vmxprobe.pipeline",),
    ("vmxprobe.render", "vmxprobe.fleet"),
    ("vmxprobe.cli", "vmxprobe.__main__"),
]

Import = tuple[str, list[str], int]  # module, names taken from it, line


def layer_of(module: str) -> int:
    """The layer of the longest prefix that names the module."""
    matches = [
        (len(p), i)
        for i, prefixes in enumerate(LAYERS)
        for p in prefixes
        if module == p or module.startswith(p + ".")
    ]
    assert matches, module
    return max(matches)[1]


@cache
def modules() -> dict[str, str]:
    """Module name -> file path, for every module of the package."""
    out = {}
    for top, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(top, name)
                rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


def parse_imports(source: str, package: str, known: set[str]) -> list[Import]:
    """Every import anywhere in `source` (inside functions too: a lazy import is still
    an edge). `package` resolves relative imports; `known` says which dotted names are
    modules, so that `from vmxprobe.kernel import pages` counts as importing a module."""
    out: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [a.name for a in node.names]
            submodules = [n for n in names if f"{base}.{n}" in known]
            out.append((base, [n for n in names if n not in submodules], node.lineno))
            out += [(f"{base}.{n}", [], node.lineno) for n in submodules]
    return out


@cache
def imports(module: str) -> list[Import]:
    path = modules()[module]
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    with open(path, encoding="utf-8") as f:
        return parse_imports(f.read(), package, set(modules()))


def upward(module: str, found: list[Import], known: set[str]) -> list[str]:
    mine = layer_of(module)
    return sorted({m for m, _, _ in found if m in known and layer_of(m) > mine})


def click_lines(module: str, found: list[Import]) -> list[int]:
    if module == "vmxprobe.cli" or module.startswith("vmxprobe.cli."):
        return []
    return [line for m, _, line in found if m == "click" or m.startswith("click.")]


def private_names(module: str, found: list[Import]) -> list[str]:
    return [
        f"{m}.{n}"
        for m, names, _ in found
        for n in names
        if n.startswith("_") and not n.startswith("__") and m != module
    ]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state:
                cycle = visit(n)
                if cycle:
                    return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def mirror_of(module: str, path: str) -> str | None:
    """The test module that mirrors a module (relative to the repository), or None for a
    package's __init__ and for __main__, which have none of their own."""
    if path.endswith("__init__.py") or module.endswith(".__main__"):
        return None
    *packages, name = module.split(".")[1:]
    return os.path.join("tests", *packages, f"test_{name}.py")


def missing_mirror(module: str, path: str, exists=os.path.isfile) -> str | None:
    """The mirror test module's path when it does not exist, else None."""
    mirror = mirror_of(module, path)
    return mirror if mirror is not None and not exists(os.path.join(REPO, mirror)) else None


def test_the_package_is_found():
    assert {
        "vmxprobe.cli",
        "vmxprobe.host.sources",
        "vmxprobe.kernel.verdict",
        "vmxprobe.render.report",
        "vmxprobe.pipeline",
    } <= set(modules())


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_go_one_way_down(module):
    assert not upward(module, imports(module), set(modules())), "imports from a higher layer"


@pytest.mark.parametrize("module", sorted(modules()))
def test_only_cli_imports_click(module):
    assert not click_lines(module, imports(module)), "only vmxprobe.cli may import click"


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_private_name_is_imported_from_another_module(module):
    assert not private_names(module, imports(module))


def test_no_import_cycles():
    known = set(modules())
    graph = {m: {n for n, _, _ in imports(m) if n in known and n != m} for m in known}
    assert find_cycle(graph) is None


@pytest.mark.parametrize("module", sorted(modules()))
def test_modules_stay_small(module):
    with open(modules()[module], encoding="utf-8") as f:
        lines = sum(1 for _ in f)
    assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES}): split it"


@pytest.mark.parametrize("module", sorted(modules()))
def test_every_module_has_its_mirror_test_module(module):
    missing = missing_mirror(module, modules()[module])
    assert missing is None, f"{module} has no test module: write {missing}"


def test_each_rule_catches_what_it_is_for():
    """The same checks on sources made up here: each breaks one rule."""
    known = {
        "vmxprobe.kernel.verdict",
        "vmxprobe.cli.common",
        "vmxprobe.host.sources",
        "vmxprobe.kernel.pages",
        "vmxprobe.kernel",
    }
    kernel_source = (
        "def f():\n    from vmxprobe.cli.common import Fail\n"
        "import click\nfrom vmxprobe.host.sources import _Refused\n"
        "from . import pages\n"
    )
    found = parse_imports(kernel_source, "vmxprobe.kernel", known)
    assert upward("vmxprobe.kernel.verdict", found, known) == ["vmxprobe.cli.common"]
    assert click_lines("vmxprobe.kernel.verdict", found) == [3]
    assert click_lines("vmxprobe.cli.scan", found) == []
    assert private_names("vmxprobe.kernel.verdict", found) == ["vmxprobe.host.sources._Refused"]
    assert ("vmxprobe.kernel.pages", [], 5) in found
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert mirror_of("vmxprobe.host.identity", "vmxprobe/host/identity.py") == "tests/host/test_identity.py"
    assert mirror_of("vmxprobe.files", "vmxprobe/files.py") == "tests/test_files.py"
    assert mirror_of("vmxprobe.kernel", "vmxprobe/kernel/__init__.py") is None
    assert mirror_of("vmxprobe.__main__", "vmxprobe/__main__.py") is None
    have = {os.path.join(REPO, "tests", "kernel", "test_tdx.py")}
    assert missing_mirror("vmxprobe.kernel.tdx", "vmxprobe/kernel/tdx.py", have.__contains__) is None
    assert (
        missing_mirror("vmxprobe.kernel.access", "vmxprobe/kernel/access.py", have.__contains__)
        == "tests/kernel/test_access.py"
    )
