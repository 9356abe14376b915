"""The library's import graph: layers that import only downward, no cycle, no borrowed names.

A reader learns the library bottom-up (the world and the datasets, then the models, then the
experiments that the chapters run), which holds only while no module reaches up. A new module has
to be given its layer here, which is the moment to ask where it belongs.
"""
from __future__ import annotations

import ast
import re
import tomllib

from conftest import ROOT

PACKAGE = ROOT / "llmrec_lab"
# Lowest first. A module may import from its own layer or any layer below it.
LAYERS = [
    {"llmrec_lab", "config", "io", "metrics", "stats"},  # plumbing every layer shares
    {"world", "datasets", "splits"},  # the data: synthetic worlds with truth, real datasets
    {"encoders", "kg", "lus"},  # frozen encoders, knowledge graphs, long-term simulation
    {"models", "train", "text_batches", "checkpoints", "acceleration", "optimizer"},  # models; loop
    {"evaluation"},  # rating and ranking protocols over fitted models
    {"experiments"},  # one chapter's experiment each
    {"cli", "exercises"},  # what a user or a notebook calls
]


def _modules() -> dict[str, ast.Module]:
    """Every module of the package, by dotted name (a package by its own name)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def _imports(tree: ast.Module, modules: dict[str, ast.Module]) -> set[str]:
    """The package's modules that ``tree`` imports, at top level or inside a function."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("llmrec_lab"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("llmrec_lab"))
    return out


def _layer(module: str) -> int:
    top = "llmrec_lab" if module == "llmrec_lab" else module.split(".")[1]
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module} belongs to no layer: add {top!r} to LAYERS in {__file__}")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(tree, modules) - {name} for name, tree in modules.items()}


def test_imports_point_down():
    upward = [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
              for a, deps in _graph().items() for b in deps if _layer(b) > _layer(a)]
    assert not upward, "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """Each import cycle that a depth-first walk meets, as ``a -> b -> a``."""
    state, cycles = {}, []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "\n".join(cycles)


def test_no_module_named_after_a_dependency():
    """``llmrec_lab/peft.py`` once shadowed the ``peft`` package it imported, in every reader's
    mind if not in Python's: a module's name says what it holds, not what it uses."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra]
    dependencies = {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower().replace("-", "_")
                    for r in requirements}
    assert {"peft", "torch", "pykeen"} <= dependencies  # the parse found the names
    clashes = sorted(name for name in _modules()
                     if name.rsplit(".", 1)[-1].lower() in dependencies)
    assert not clashes, f"modules named after a dependency: {clashes}"


def test_the_checks_catch_what_they_look_for():
    """The graph reader sees an upward import and a cycle when there is one."""
    inside_a_function = "def f():\n    from llmrec_lab.world import generate"
    modules = {"llmrec_lab.world.generate": ast.parse("from llmrec_lab.experiments import x"),
               "llmrec_lab.experiments": ast.parse(inside_a_function)}
    graph = {name: _imports(tree, modules) for name, tree in modules.items()}
    assert graph == {"llmrec_lab.world.generate": {"llmrec_lab.experiments"},
                     "llmrec_lab.experiments": {"llmrec_lab.world.generate"}}
    assert _layer("llmrec_lab.experiments") > _layer("llmrec_lab.world.generate")
    assert _cycles(graph) == ["llmrec_lab.experiments -> llmrec_lab.world.generate -> "
                              "llmrec_lab.experiments"]
