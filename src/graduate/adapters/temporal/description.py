"""How graduate describes the Temporal engine (no SDK import: read before any run)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graduate.adapters.base import Capabilities, Engine
from graduate.adapters.registry import EngineDescription
from graduate.adapters.temporal import settings
from graduate.errors import ConfigError
from graduate.flow import Flow
from graduate.services.model import Services

if TYPE_CHECKING:
    from graduate.apps import App

NAME = "temporal"
# The process each of its workers runs as.
WORKER_MODULE = "graduate.adapters.temporal.worker"


def _open(flow: Flow, services: Services, run_dir: Path, *,
          settings: dict[str, Any] | None = None,
          worker_services: Services | None = None, app: App | None = None,
          queue: str | None = None) -> Engine:
    from graduate.adapters.temporal.engine import TemporalEngine

    return TemporalEngine(flow, services, run_dir, settings=settings,
                          worker_services=worker_services, queue=queue)


TEMPORAL = EngineDescription(
    name=NAME, title="Temporal", product="Temporal", side="temporal",
    summary="Temporal: a durable workflow whose steps are activities; the Temporal server "
            "keeps its progress",
    capabilities=Capabilities(durable_progress=True, signals=True, timers=True,
                              compensation=True, versioning=True, server=True,
                              # The workflow keeps every signal it is sent (on_signal).
                              worker_versioning=True, early_signals=True),
    needs_server=True, needs_broker=False, open=_open,
    check_settings=settings.check_overrides,
    tuned={"graceful_shutdown_timeout": 10.0, "heartbeat_timeout": 2.0},
    example_setting="heartbeat_timeout = 5", plain_module="graduate.adapters.temporal.plain",
    worker_modules=(WORKER_MODULE,),
)


def _open_app(flow: Flow, services: Services, run_dir: Path, *,
              settings: dict[str, Any] | None = None,
              worker_services: Services | None = None, app: App | None = None,
              queue: str | None = None) -> Engine:
    # A team's app names its own task queue, whoever starts its workers.
    del queue
    from graduate.adapters.temporal.app_engine import TemporalAppEngine

    if app is None:
        raise ConfigError(f"engine {APP_NAME!r} runs a team's declared app: graduate chaos APP "
                          "--engine temporal")
    return TemporalAppEngine(app, flow, services, run_dir, settings=settings,
                             worker_services=worker_services)


def _no_settings(overrides: Mapping[str, Any]) -> None:
    if overrides:
        raise ConfigError(f"a team's Temporal app takes its timeouts and retry policies from "
                          f"its own code; a profile cannot set {', '.join(sorted(overrides))} "
                          f"for {APP_NAME}")


APP_NAME = "temporal-app"
TEMPORAL_APP = EngineDescription(
    name=APP_NAME, title="the team's Temporal app", product="Temporal", side="temporal",
    summary="the team's own Temporal workflow and activities, run by graduate; the Temporal "
            "server keeps its progress",
    # Not versioning: graduate cannot write a new version of the team's code to deploy.
    capabilities=Capabilities(durable_progress=True, signals=True, timers=True,
                              compensation=True, versioning=False, server=True),
    needs_server=True, needs_broker=False, open=_open_app, check_settings=_no_settings,
    runs_app="temporal", app_module="graduate.adapters.temporal.application",
)
DESCRIPTIONS = (TEMPORAL, TEMPORAL_APP)
