"""The package's layering: imports point down only.

Three checks anyone can rerun: the graph of top-level imports between wdist
modules is a DAG; every module imports alone in a fresh interpreter (with the
``wdist`` facade replaced by an empty package, so the facade's import order
cannot hide a cycle); and no function imports anything except the libraries
that are slow to import and only needed by some commands.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import wdist

PACKAGE = Path(wdist.__file__).parent
MODULES = sorted(
    ".".join(("wdist", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
)
#: Imported inside functions on purpose: each takes about a second and serves few commands.
LAZY_OK = ("ot", "matplotlib", "sklearn", "safetensors")


def _path(module: str) -> Path:
    parts = module.split(".")[1:]
    file = PACKAGE.joinpath(*parts).with_suffix(".py")
    return file if file.exists() else PACKAGE.joinpath(*parts, "__init__.py")


def _resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """The wdist modules that one ``from ... import ...`` statement loads."""
    is_package = _path(module).name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - node.level + 1]
    elif not (node.module or "").startswith("wdist"):
        return []
    else:
        base = []
    target = ".".join(base + ([node.module] if node.module else []))
    names = [f"{target}.{a.name}" for a in node.names]
    return [n for n in names if n in MODULES] or ([target] if target in MODULES else [])


def _top_level_imports(module: str) -> set[str]:
    tree = ast.parse(_path(module).read_text())
    deps: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            deps.update(_resolve(module, node))
        elif isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name in MODULES)
    return deps - {module}


def test_the_import_graph_is_a_dag():
    graph = {m: _top_level_imports(m) for m in MODULES}
    assert graph["wdist.cli"] and graph["wdist"]  # the parser sees imports at all
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:  # pragma: no cover - the failure message
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")
    assert order.index("wdist.results") < order.index("wdist.estimator") < order.index("wdist.checks")
    assert order.index("wdist.folders") < order.index("wdist.cli")
    assert "wdist.cli" not in graph["wdist.demo"] and "wdist.estimator" not in graph["wdist.exact"]


ALONE = """
import importlib, sys, types
failed = {{}}
for module in {modules!r}:
    for name in [n for n in sys.modules if n == "wdist" or n.startswith("wdist.")]:
        del sys.modules[name]  # no wdist module loaded: each import starts from nothing
    package = types.ModuleType("wdist")
    package.__path__ = [{path!r}]
    sys.modules["wdist"] = package  # the facade's own imports must not mask a cycle
    try:
        importlib.import_module(module)
    except Exception as exc:
        failed[module] = repr(exc)
print(failed)
"""


def test_every_module_imports_alone_in_a_fresh_interpreter():
    # One interpreter for all modules (torch is imported once, 30x cheaper than
    # one process each); before each import every wdist module is unloaded.
    code = ALONE.format(path=str(PACKAGE), modules=[m for m in MODULES if m != "wdist"])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "{}", proc.stdout


def test_functions_import_only_the_slow_optional_libraries():
    local = []
    for module in MODULES:
        for node in ast.walk(ast.parse(_path(module).read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    names = [a.name for a in inner.names]
                elif isinstance(inner, ast.ImportFrom):
                    names = ["." * inner.level + (inner.module or "")]
                else:
                    continue
                local += [f"{module}.{node.name}: {n}" for n in names if n.split(".")[0] not in LAZY_OK]
    assert not local, local


def test_importing_wdist_loads_none_of_the_slow_libraries():
    code = "import sys, wdist; print(sorted({m.split('.')[0] for m in sys.modules} & {'ot', 'matplotlib', 'sklearn'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    assert out.strip() == "[]"
