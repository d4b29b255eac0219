"""Settings: command-line flags over GRADUATE_* environment variables over pyproject.toml.

`[tool.graduate]` in the project's `pyproject.toml` holds the team's defaults; an
environment variable overrides it for one shell, a flag for one command.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from graduate.errors import ConfigError
from graduate.files import parse_toml, read_text

STATE_DIR_NAME = ".graduate"


@dataclass(frozen=True)
class Settings:
    """Where things are and which services to use; None means "start a local one"."""

    project_dir: Path
    spikes: str = "spikes"
    evidence: str = f"{STATE_DIR_NAME}/evidence"
    temporal_address: str | None = None
    temporal_namespace: str = "default"
    temporal_tls_cert: str | None = None
    temporal_tls_key: str | None = None
    temporal_tls_ca: str | None = None
    temporal_api_key: str | None = None
    temporal_cli: str | None = None
    broker_url: str | None = None
    result_backend_url: str | None = None
    ledger_url: str | None = None
    app_db_url: str | None = None

    @property
    def spikes_dir(self) -> Path:
        return self.project_dir / self.spikes

    @property
    def evidence_dir(self) -> Path:
        return self.project_dir / self.evidence

    @property
    def state_dir(self) -> Path:
        return self.project_dir / STATE_DIR_NAME

    @property
    def ledger(self) -> str:
        return self.ledger_url or str(self.state_dir / "ledger.sqlite3")

    @property
    def app_db(self) -> str:
        """The Celery state machine's own tables, kept apart from the ledger."""
        return self.app_db_url or str(self.state_dir / "app.sqlite3")


_KEYS = tuple(f.name for f in fields(Settings) if f.name != "project_dir")


def env_var(key: str) -> str:
    return f"GRADUATE_{key.upper()}"


def find_project_dir(start: Path | None = None) -> Path:
    """The nearest folder upwards with a pyproject.toml that has [tool.graduate], else cwd."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and _graduate_table(pyproject) is not None:
            return folder
    return here


def graduate_subtable(project_dir: Path, name: str) -> tuple[Any, str]:
    """`[tool.graduate.NAME]` of the project's pyproject.toml (None when absent), and
    where it is, for messages."""
    pyproject = project_dir / "pyproject.toml"
    where = f"{pyproject} [tool.graduate.{name}]"
    if not pyproject.is_file():
        return None, where
    return (_graduate_table(pyproject) or {}).get(name), where


def _graduate_table(pyproject: Path) -> dict[str, Any] | None:
    """`[tool.graduate]` of a pyproject.toml, or None when it has none."""
    data = parse_toml(read_text(pyproject, "settings file", ConfigError), str(pyproject),
                      ConfigError)
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise ConfigError(f"{pyproject}: tool = {tool!r} must be a table; write [tool] "
                          "sections (such as [tool.graduate]) instead")
    table = tool.get("graduate")
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: tool.graduate = {table!r} must be a table; write "
                          "the settings under a [tool.graduate] header")
    return table


def load_settings(overrides: Mapping[str, Any] | None = None,
                  project_dir: Path | None = None) -> Settings:
    """Resolve every setting: flag (`overrides`, None = unset) > environment > pyproject."""
    root = project_dir or find_project_dir()
    pyproject = root / "pyproject.toml"
    table: dict[str, Any] = {}
    if pyproject.is_file():
        table = dict(_graduate_table(pyproject) or {})
    table = {key.replace("-", "_"): value for key, value in table.items()}
    # Sub-tables belong to their own modules: [tool.graduate.gates] to graduate.adr.gates,
    # [tool.graduate.profiles] to graduate.chaos.profiles, [tool.graduate.apps] to
    # graduate.apps.
    if unknown := sorted(set(table) - set(_KEYS) - {"gates", "profiles", "apps"}):
        raise ConfigError(f"{pyproject} [tool.graduate] has unknown key(s) {unknown}; "
                          f"known keys: {', '.join(_KEYS)}")
    values: dict[str, Any] = {}
    for key in _KEYS:
        value = (overrides or {}).get(key)
        where = "given"
        if value is None:
            value = os.environ.get(env_var(key)) or None  # set but empty: unset
            where = f"in {env_var(key)}"
        if value is None:
            value = table.get(key)
            where = f"in {pyproject} [tool.graduate]"
            if value == "":
                raise ConfigError(f"setting {key} = '' {where} is empty; give a value, or "
                                  "remove the line for the default")
        if value is not None:
            if not isinstance(value, str):
                raise ConfigError(f"setting {key} = {value!r} must be a string ({where}); "
                                  f"write {key} = \"...\"")
            values[key] = value
    return Settings(project_dir=root, **values)
