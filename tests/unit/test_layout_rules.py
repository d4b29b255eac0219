"""The rules that keep each idea in one place (DESIGN.md, "Layout"), read from the source:
a fault's name is compared only in its own module, an engine's only under `adapters/`,
and the command line and the pytest plugin reach a run only through `graduate`."""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from graduate.adapters import all_engine_names, describe
from graduate.chaos.faults import fault_names

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "graduate"
# The modules that run a flow, and `graduate.apps` that resolves what a run runs: the
# shells call them through `graduate` (resolve, run, chaos, matrix, signal and the values
# they return), never directly.
RUN_MACHINERY = ("graduate.api", "graduate.runner", "graduate.runs", "graduate.chaos.harness",
                 "graduate.chaos.matrix", "graduate.apps")


@functools.cache
def _parsed() -> tuple[tuple[str, ast.Module], ...]:
    return tuple((path.relative_to(PACKAGE).as_posix(),
                  ast.parse(path.read_text(encoding="utf-8")))
                 for path in sorted(PACKAGE.rglob("*.py")))


def _sources(*under: str) -> Iterator[tuple[str, ast.Module]]:
    return ((module, tree) for module, tree in _parsed()
            if not under or module.startswith(under))


def _texts(node: ast.expr) -> Iterator[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.Tuple | ast.List | ast.Set):
        for item in node.elts:
            yield from _texts(item)


def _compared(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Each text a comparison (`==`, `!=`, `in`, a `case`) holds a value against."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                yield from ((node.lineno, text) for text in _texts(side))
        elif isinstance(node, ast.MatchValue):
            yield from ((node.value.lineno, text) for text in _texts(node.value))


def test_no_fault_name_is_compared_outside_its_module() -> None:
    names = set(fault_names())
    found = [f"{module}:{line}: {text!r}" for module, tree in _sources()
             if not module.startswith("chaos/faults/")
             for line, text in _compared(tree) if text in names]
    # The report templates too: `{% if c.fault == "none" %}`.
    compared = re.compile(r"""(?:==|!=|\bin)\s*\(?["']([a-z-]+)["']""")
    for template in sorted((PACKAGE / "reports" / "templates").glob("*.j2")):
        for line, text in enumerate(template.read_text(encoding="utf-8").splitlines(), 1):
            found += [f"{template.name}:{line}: {name!r}" for name in compared.findall(text)
                      if name in names]

    assert found == []


def test_no_engine_name_is_compared_outside_the_adapters() -> None:
    # "temporal" also names a side of the decision table and a service (the server
    # `graduate env up` keeps); those are compared as such, so only the names that are
    # an engine's alone can be told apart in the source.
    shared = {describe(name).side for name in all_engine_names()} | {"temporal", "redis"}
    names = set(all_engine_names()) - shared
    found = [f"{module}:{line}: {text!r}" for module, tree in _sources()
             if not module.startswith("adapters/")
             for line, text in _compared(tree) if text in names]

    assert names
    assert found == []


@pytest.mark.parametrize("shell", ["cli/", "testing/"])
def test_the_shells_reach_a_run_only_through_the_package(shell: str) -> None:
    """Constants for help texts aside (a matrix's default faults), what the CLI and the
    plugin take from the run's own modules comes through `graduate`."""
    found = []
    for module, tree in _sources(shell):
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                    RUN_MACHINERY):
                found += [f"{module}:{node.lineno}: {node.module}.{alias.name}"
                          for alias in node.names if not alias.name.isupper()]
            elif isinstance(node, ast.Import):
                found += [f"{module}:{node.lineno}: {alias.name}" for alias in node.names
                          if alias.name.startswith(RUN_MACHINERY)]

    assert found == []
