"""A team's own Celery app: its declaration, and the shape of what the declaration names.

    [tool.graduate.apps.NAME.celery]
    app = "module:app"          # the celery.Celery instance
    queues = ["orders"]         # the queues its workers consume
    beat = false                # whether the app's beat runs beside its workers
    start = "module:start"      # (graduate.flow.InstanceRequest) -> None: send its tasks
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graduate.adapters.celery.app_worker import load_app
from graduate.adapters.celery.instrument import install
from graduate.apps import check_function, reference, resolve, table_of
from graduate.errors import ConfigError
from graduate.flow import InstanceRequest
from graduate.instrument import Correlation, propagating

APP_SHAPE = "the celery.Celery instance of the team's app"
START_SHAPE = ("def start(request): send the tasks of one instance for the "
               "graduate.flow.InstanceRequest (graduate carries its correlation)")


def declare(value: Any, where: str) -> dict[str, Any]:
    table = table_of(value, where, {"app", "queues", "beat", "start"})
    queues = table.get("queues")
    if not isinstance(queues, list) or not queues or not all(
            isinstance(q, str) and q for q in queues):
        raise ConfigError(f"{where}: queues = {queues!r} must list the queues the app's "
                          "workers consume, for example queues = [\"orders\"]")
    beat = table.get("beat", False)
    if not isinstance(beat, bool):
        raise ConfigError(f"{where}: beat = {beat!r} must be true or false")
    return {"app": reference(table, "app", where, APP_SHAPE), "queues": list(queues),
            "beat": beat, "start": reference(table, "start", where, START_SHAPE)}


def check(declaration: Mapping[str, Any], where: str) -> None:
    try:
        load_app(declaration["app"])
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from error
    start = resolve(declaration["start"], where)
    check_function(start, declaration["start"], where, parameters=1, coroutine=False,
                   shape=START_SHAPE)


def start(declaration: Mapping[str, Any], request: InstanceRequest) -> None:
    """Start one instance with the team's start function; every message it sends
    carries graduate's correlation."""
    install()
    start_function = resolve(declaration["start"], f"start function {declaration['start']}")
    with propagating(Correlation(request.instance_id, request.correlation_id,
                                 request.trace_id)):
        start_function(request)
