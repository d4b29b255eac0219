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
    # Pings and inspects go to the run's own workers only: on a broker that other runs
    # share (one RabbitMQ vhost, matrix cells side by side), a broadcast on Celery's
    # default control exchange is answered by theirs too, and an inspect that stops at
    # as many replies as the queue has consumers could count theirs instead.
    app.conf.control_exchange = queue_name(flow, strategy, run_id)
    if strategy == "chain":
        chain.register(app, flow, resources)
    else:
        state_machine.register(app, flow, resources, settings, run_id)
    return app


def close_app(app: Celery) -> None:
    """Close an app this process sent tasks with, its result subscriptions dropped first.

    graduate reads results from the backend's keys and never waits on one, yet Celery's
    Redis backend subscribes the sending process to every task it sends, and each
    AsyncResult unsubscribes when it is collected. One that only the cycle collector
    frees (held by an exception's traceback, say) goes at any later moment, after the
    run's Redis is gone: its __del__ then retries the dead server and raises. Python
    reports that through sys.unraisablehook; pytest's hook formats the traceback with
    ast.parse, and when the collection fell inside another ast.parse (pytest rewriting a
    module it imports) CPython 3.11 fails that outer parse with "SystemError: AST
    constructor recursion depth mismatch". So the subscriptions end here: closing the
    pubsub connection sends nothing (it works with the backend already gone), and a
    result collected later finds nothing to unsubscribe.
    """
    consumer = getattr(app.backend, "result_consumer", None)
    subscribed = getattr(consumer, "subscribed_to", None)
    if consumer is not None and isinstance(subscribed, set):
        consumer.stop()
        subscribed.clear()
    app.close()
