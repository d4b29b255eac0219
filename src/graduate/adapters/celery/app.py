"""The one place a Celery app is built, for workers and for the engine that sends to them.

Client and worker must agree on task names, the queue and the settings; building the
app in one function from the same inputs (flow, services, settings) is what makes
them agree. Nothing happens at import time: the app exists only once asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery

from graduate.adapters.celery import chain, state_machine
from graduate.adapters.celery.resources import ProcessResources
from graduate.adapters.celery.settings import celery_conf
from graduate.errors import ConfigError
from graduate.flow import Flow

STRATEGIES = ("chain", "state-machine")


def queue_name(flow: Flow, strategy: str, run_id: str) -> str:
    """One queue per flow, strategy and run: a chain worker cannot run state-machine
    tasks, and a run's workers never take what an earlier run left in the broker."""
    return f"graduate.{flow.name}.{strategy}.{run_id}" if run_id else (
        f"graduate.{flow.name}.{strategy}")


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown Celery strategy {strategy!r}; choose one of: "
                          f"{', '.join(STRATEGIES)} (engines celery-chain, "
                          "celery-state-machine)")
    return strategy


def create_app(flow: Flow, services: Mapping[str, Any], settings: Mapping[str, Any], *,
               strategy: str, run_id: str, resources: ProcessResources | None = None) -> Celery:
    """A Celery app with the strategy's tasks registered, routed to the flow's queue."""
    check_strategy(strategy)
    broker = services.get("broker_url")
    if not broker:
        raise ConfigError("the Celery engines need a broker; give one with --broker-url or "
                          "GRADUATE_BROKER_URL (redis://host:port/0), or let graduate start "
                          "a local Redis")
    resources = resources or ProcessResources(services)
    app = Celery(f"graduate.{flow.name}", broker=broker,
                 backend=services.get("result_backend_url"), set_as_current=False)
    app.conf.update(celery_conf(settings))
    app.conf.task_default_queue = queue_name(flow, strategy, run_id)
    if strategy == "chain":
        chain.register(app, flow, resources)
    else:
        state_machine.register(app, flow, resources, settings, run_id)
    return app
