"""A trivial extra engine, for the test that adding an engine needs no core edit.

It declares no broker, no server, no pool children and no versioning guard, so the
faults that need one of them must say they do not apply to it, from its description
alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from graduate.adapters.base import Capabilities, Engine
from graduate.adapters.registry import EngineDescription
from graduate.apps import App
from graduate.errors import ConfigError
from graduate.flow import Flow
from graduate.services.model import Services


def _open(flow: Flow, services: Services, run_dir: Path, *,
          settings: dict[str, Any] | None = None,
          worker_services: Services | None = None, app: App | None = None,
          queue: str | None = None) -> Engine:
    raise ConfigError("the toy engine only exists to be described")


def _check(overrides: Mapping[str, Any]) -> None:
    unknown = set(overrides) - {"speed"}
    if unknown:
        raise ConfigError(f"{sorted(unknown)} are not settings of the toy engine")


def declare(value: Any, where: str) -> dict[str, Any]:
    """A team's app on the toy engine: `[tool.graduate.apps.NAME.toy]`, any table."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table")
    return dict(value)


def check(declaration: Mapping[str, Any], where: str, flow: Flow) -> None:
    """A toy app refers to no module of the team's: there is nothing to import."""
    if "module" in declaration:
        raise ConfigError(f"{where}: the toy engine runs no module of the team's")


TOY = EngineDescription(
    name="toy", title="a toy engine", product="Toy", side="celery",
    summary="Toy: steps run in the worker's own thread, nothing kept anywhere",
    capabilities=Capabilities(durable_progress=False, signals=True, timers=False,
                              compensation=False, versioning=False),
    needs_server=False, needs_broker=False, open=_open, check_settings=_check,
    tuned={"speed": 2}, example_setting="speed = 2",
)
# The same engine with what a full package may add: a plain-SDK baseline to bench
# against, and an app engine that runs a team's toy app (declared by this module).
TOY_BASELINE = replace(TOY, plain_module=__name__)
TOY_APP = replace(TOY, name="toy-app", title="the team's toy app", runs_app="toy",
                  app_module=__name__)
