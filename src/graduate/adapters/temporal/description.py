"""How graduate describes the Temporal engine (no SDK import: read before any run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graduate.adapters.base import Capabilities, Engine
from graduate.adapters.registry import EngineDescription
from graduate.adapters.temporal import settings
from graduate.flow import Flow
from graduate.services.model import Services

NAME = "temporal"


def _open(flow: Flow, services: Services, run_dir: Path, *,
          settings: dict[str, Any] | None = None,
          worker_services: Services | None = None) -> Engine:
    from graduate.adapters.temporal.engine import TemporalEngine

    return TemporalEngine(flow, services, run_dir, settings=settings,
                          worker_services=worker_services)


TEMPORAL = EngineDescription(
    name=NAME, title="Temporal", product="Temporal", side="temporal",
    summary="Temporal: a durable workflow whose steps are activities; the Temporal server "
            "keeps its progress",
    capabilities=Capabilities(durable_progress=True, signals=True, timers=True,
                              compensation=True, versioning=True, server=True),
    needs_server=True, needs_broker=False, open=_open,
    check_settings=settings.check_overrides,
    tuned={"graceful_shutdown_timeout": 10.0, "heartbeat_timeout": 2.0},
    example_setting="heartbeat_timeout = 5",
)
DESCRIPTIONS = (TEMPORAL,)
