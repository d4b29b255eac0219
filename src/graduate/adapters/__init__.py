"""Engine adapters: one package per engine, all behind `graduate.adapters.base.Engine`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from graduate.adapters.base import Engine
from graduate.errors import ConfigError
from graduate.flow import Flow
from graduate.services.model import Services

ENGINES = ("temporal", "celery-chain", "celery-state-machine")


def needs_temporal(engine: str) -> bool:
    return engine == "temporal"


def check_engine(name: str) -> str:
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}")
    return name


def check_settings(name: str, overrides: Mapping[str, Any]) -> None:
    """Raise ConfigError unless `overrides` are settings engine `name` knows."""
    check_engine(name)
    if name == "temporal":
        from graduate.adapters.temporal import settings as temporal_settings

        temporal_settings.check_overrides(overrides)
    else:
        from graduate.adapters.celery import settings as celery_settings

        celery_settings.check_overrides(name.removeprefix("celery-"), overrides)


def open_engine(name: str, flow: Flow, services: Services, run_dir: Path, *,
                settings: dict[str, Any] | None = None,
                worker_services: Services | None = None) -> Engine:
    """The adapter for `name`, connected to `services`, running `flow`.

    `settings` overrides the engine's defaults; `worker_services`, when given, is what
    the workers connect to instead of `services` (see `Engine`).
    """
    check_engine(name)
    if name == "temporal":
        from graduate.adapters.temporal.engine import TemporalEngine

        return TemporalEngine(flow, services, run_dir, settings=settings,
                              worker_services=worker_services)
    from graduate.adapters.celery import CeleryEngine

    strategy = name.removeprefix("celery-")
    return CeleryEngine(flow, services, run_dir, strategy=strategy, settings=settings,
                        worker_services=worker_services)
