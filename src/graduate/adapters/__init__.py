"""Engine adapters: one package per engine, all behind `graduate.adapters.base.Engine`,
each described once in the registry (`graduate.adapters.registry`)."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graduate.adapters import celery as _celery
from graduate.adapters import temporal as _temporal
from graduate.adapters.base import Engine
from graduate.adapters.plain import PlainClient, PlainSpec
from graduate.adapters.registry import (
    EngineDescription,
    all_engine_names,
    app_modules,
    describe,
    engine_for_app,
    engine_names,
    engines,
    plain_modules,
    register,
)
from graduate.errors import ConfigError
from graduate.flow import Flow
from graduate.services.model import Services
from graduate.services.provider import Needs

if TYPE_CHECKING:
    from graduate.apps import App

__all__ = [
    "EngineDescription",
    "all_engine_names",
    "app_modules",
    "check_engine",
    "check_settings",
    "describe",
    "engine_for_app",
    "engine_names",
    "engines",
    "needs",
    "open_engine",
    "open_plain",
    "plain_modules",
    "register",
]

for _description in (*_temporal.DESCRIPTIONS, *_celery.DESCRIPTIONS):
    register(_description)

# Where `graduate.effect` learns which instance and attempt it runs in: each adapter's
# module with a `current()` function, asked only once its SDK module is loaded.
CONTEXT_PROVIDERS = {
    "temporalio.activity": "graduate.adapters.temporal.instrument",
    "celery": "graduate.adapters.celery.instrument",
}


def check_engine(name: str) -> str:
    describe(name)
    return name


def check_settings(name: str, overrides: Mapping[str, Any]) -> None:
    """Raise ConfigError unless `overrides` are settings engine `name` knows."""
    describe(name).check_settings(overrides)


def open_engine(name: str, flow: Flow, services: Services, run_dir: Path, *,
                settings: dict[str, Any] | None = None,
                worker_services: Services | None = None, app: App | None = None,
                queue: str | None = None) -> Engine:
    """The adapter for `name`, connected to `services`, running `flow`.

    `settings` overrides the engine's defaults; `worker_services`, when given, is what
    the workers connect to instead of `services` (see `Engine`). An app engine runs
    `app`, the team's own code, and takes `flow` as what to expect of it. `queue` names
    the queues its client sends to, when they are registered workers' (see `Opener`).
    """
    return describe(name).open(flow, services, run_dir, settings=settings,
                               worker_services=worker_services, app=app, queue=queue)


def needs(names: Sequence[str]) -> Needs:
    """The services runs on the engines `names` need, from each one's description."""
    described = [describe(name) for name in names]
    return Needs(temporal=any(d.needs_server for d in described),
                 broker=any(d.needs_broker for d in described))


@contextlib.contextmanager
def open_plain(engine: str, spec: PlainSpec, run_dir: Path) -> Iterator[PlainClient]:
    """A worker process and a client for `engine`'s plain baseline; the worker is stopped
    on exit. ConfigError for an engine that has none."""
    baselines = plain_modules()
    if engine not in baselines:
        raise ConfigError(f"engine {engine!r} has no plain baseline to bench against; "
                          f"these do: {', '.join(baselines)}")
    module = importlib.import_module(baselines[engine])
    worker = module.start_worker(spec, run_dir)
    try:
        client = module.open_client(spec)
        try:
            yield client
        finally:
            client.close()
    finally:
        worker.stop()
