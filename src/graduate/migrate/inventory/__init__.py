"""`graduate inventory`: read a Celery codebase (never importing or running it) and find
what should graduate to a workflow engine: tasks, settings, canvas, beat, hand-made state
machines, compensation, the hazards they run with, and flows ranked with reasons.

    >>> from graduate import inventory
    >>> found = inventory("path/to/celery/project")
    >>> [(f.name, f.recommendation) for f in found.flows]
"""

from __future__ import annotations

import os
from pathlib import Path

from graduate.errors import ConfigError
from graduate.migrate.inventory.model import (
    Evidence,
    Finding,
    FindingKind,
    FlowCandidate,
    FlowStep,
    Hazard,
    Inventory,
    Location,
    Recommendation,
    Score,
    Severity,
    Skipped,
)

__all__ = [
    "Evidence",
    "Finding",
    "FindingKind",
    "FlowCandidate",
    "FlowStep",
    "Hazard",
    "Inventory",
    "Location",
    "Recommendation",
    "Score",
    "Severity",
    "Skipped",
    "inventory",
]


def inventory(path: str | os.PathLike[str]) -> Inventory:
    """Read the Celery code under `path` (a directory or one file) and return what it finds.

    Raises ConfigError when `path` does not exist, is neither a directory nor a file, or
    is a file whose name does not end in .py.
    Code it cannot read (syntax errors, dynamic task names, star imports of a module
    that computes its `__all__`) is listed in
    `Inventory.skipped` with the reason; it never stops the inventory. The codebase's own
    tests (`tests/` folders, `test_*.py`, `*_test.py`, `conftest.py`) are not read.
    """
    # The parser (libcst) loads here, not when graduate is imported: workers never need it.
    from graduate.migrate.inventory.flows import group
    from graduate.migrate.inventory.hazards import hazards
    from graduate.migrate.inventory.link import link
    from graduate.migrate.inventory.reader import ModuleFacts
    from graduate.migrate.inventory.scoring import rank, score
    from graduate.migrate.inventory.source import python_files, read_all

    if not os.fspath(path).strip():  # Path("") is the current folder: never meant
        raise ConfigError("inventory: the path is empty; give the folder of a Celery "
                          "codebase (or one .py file), for example src/")
    root = Path(path)
    if not root.exists():
        raise ConfigError(f"inventory: {root} does not exist; give the folder of a Celery "
                          "codebase (or one .py file)")
    if not (root.is_dir() or root.is_file()):
        raise ConfigError(f"inventory: {root} is neither a folder nor a file; give the folder "
                          "of a Celery codebase (or one .py file)")
    if root.is_file() and root.suffix != ".py":  # read as Python, it would find nothing
        raise ConfigError(f"inventory: {root} is not a Python file (.py); give the folder of "
                          "a Celery codebase, or one of its .py files")
    sources = list(python_files(root))
    read = read_all(sources)
    modules = [r for r in read if isinstance(r, ModuleFacts)]
    skipped = [r for r in read if isinstance(r, Skipped)]
    project = link(root, modules)
    found = hazards(project)
    flows = rank([score(project, g, found) for g in group(project)])
    return Inventory(
        root=str(root), files=len(sources),
        findings=tuple(sorted(project.findings, key=lambda f: (f.location, f.kind))),
        hazards=tuple(dict.fromkeys(h for _, h in found)), flows=tuple(flows),
        skipped=tuple(sorted([*skipped, *project.skipped], key=lambda s: s.location)),
        settings=project.settings.summary())


def flow_named(found: Inventory, name: str) -> FlowCandidate:
    """The flow called `name`, or a ConfigError listing the flows there are."""
    for flow in found.flows:
        if flow.name == name:
            return flow
    known = ", ".join(f.name for f in found.flows) or "none"
    raise ConfigError(f"inventory: no flow named {name!r} in {found.root}; flows found: {known}")
