"""Link the modules' raw facts into one project: tasks first, then how they start one
another, then the signs around them, with a finding for each.
"""

from __future__ import annotations

from pathlib import Path

from graduate.migrate.inventory.config import read_settings
from graduate.migrate.inventory.model import FindingKind, Location, Skipped
from graduate.migrate.inventory.project import Project, text
from graduate.migrate.inventory.reader import ModuleFacts
from graduate.migrate.inventory.signs import read_signs
from graduate.migrate.inventory.starts import read_starts
from graduate.migrate.inventory.symbols import Symbols
from graduate.migrate.inventory.tasks import read_tasks


def link(root: Path, modules: list[ModuleFacts]) -> Project:
    """The project-wide picture of `modules` (read from files under `root`)."""
    symbols = Symbols(modules, root.name if (root / "__init__.py").is_file() else None)
    unbound = symbols.bring_star_imports()
    project = Project(root, symbols, read_settings(root, modules, symbols))
    read_tasks(project, modules)
    for facts, module, line, why in unbound:
        project.skipped.append(Skipped(
            Location(facts.path, line),
            f"star import from {module}: {why}, so the names it brings are not known "
            "without running the code; tasks used through them are not linked"))
    for facts in modules:
        read_starts(project, facts)
    read_signs(project, modules)
    _settings_findings(project)
    return project


def _settings_findings(project: Project) -> None:
    for value in project.settings.values:
        project.find(FindingKind.SETTING, value.key, value.location,
                     f"{value.written} = {text(value.value)}")
    included = [v for v in project.settings.values if v.key in ("include", "imports")]
    for setting in included:
        names = setting.value if isinstance(setting.value, tuple) else (setting.value,)
        for name in names:
            if isinstance(name, str) and project.symbols.module(name) is None:
                project.skipped.append(Skipped(
                    setting.location, f"{setting.key} names module {name!r}, which is not "
                                      "under the inventory's root: its tasks are not read"))

