"""A team's own Celery app: its declaration, and the shape of what the declaration names.

    [tool.graduate.apps.NAME.celery]
    app = "module:app"          # the celery.Celery instance
    queues = ["orders"]         # the queues its workers consume
    beat = false                # whether the app's beat runs beside its workers
    start = "module:start"      # (graduate.flow.InstanceRequest) -> None: send its tasks
    signal = "module:signal"    # (instance_id, name, payload) -> None: a human decision,
                                # as the team's API takes it; needed when the flow waits
    outcome = "module:outcome"  # (instance_id) -> str | None: how the instance ended in
                                # the team's own records ("rejected", "expired", ...),
                                # None until it has; needed when a wait of the flow
                                # sends notices
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery

from graduate.adapters.celery.app_worker import load_app
from graduate.adapters.celery.instrument import install
from graduate.adapters.celery.settings import recorded_settings
from graduate.apps import check_function, reference, resolve, table_of
from graduate.errors import ConfigError
from graduate.flow import Flow, InstanceRequest
from graduate.instrument import Correlation, propagating, trace_parent

APP_SHAPE = "the celery.Celery instance of the team's app"
START_SHAPE = ("def start(request): send the tasks of one instance for the "
               "graduate.flow.InstanceRequest (graduate carries its correlation)")
OUTCOME_SHAPE = ("def outcome(instance_id): how the instance ended in the team's own "
                 "records, \"rejected\" or \"expired\" at a wait (or a wait's reason as "
                 "graduate words it), anything else otherwise; None until it has ended")
SIGNAL_SHAPE = ("def signal(instance_id, name, payload): deliver a human decision (the "
                "flow's wait signal, payload {\"decision\": ...}) as the team's API does")


def declare(value: Any, where: str) -> dict[str, Any]:
    table = table_of(value, where, {"app", "queues", "beat", "start", "signal", "outcome"})
    queues = table.get("queues")
    if not isinstance(queues, list) or not queues or not all(
            isinstance(q, str) and q for q in queues):
        raise ConfigError(f"{where}: queues = {queues!r} must list the queues the app's "
                          "workers consume, for example queues = [\"orders\"]")
    beat = table.get("beat", False)
    if not isinstance(beat, bool):
        raise ConfigError(f"{where}: beat = {beat!r} must be true or false")
    declaration = {"app": reference(table, "app", where, APP_SHAPE), "queues": list(queues),
                   "beat": beat, "start": reference(table, "start", where, START_SHAPE)}
    if "signal" in table:
        declaration["signal"] = reference(table, "signal", where, SIGNAL_SHAPE)
    if "outcome" in table:
        declaration["outcome"] = reference(table, "outcome", where, OUTCOME_SHAPE)
    return declaration


def check(declaration: Mapping[str, Any], where: str, flow: Flow) -> None:
    try:
        load_app(declaration["app"])
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from error
    start = resolve(declaration["start"], where)
    check_function(start, declaration["start"], where, parameters=1, coroutine=False,
                   shape=START_SHAPE)
    if "signal" not in declaration:
        if flow.waits:
            raise ConfigError(f"{where}: flow {flow.name!r} waits for "
                              f"{', '.join(w.signal for w in flow.waits)}, but the app "
                              f"declares no signal; add signal = \"module:function\", "
                              f"{SIGNAL_SHAPE}")
        return
    deliver = resolve(declaration["signal"], where)
    check_function(deliver, declaration["signal"], where, parameters=3, coroutine=False,
                   shape=SIGNAL_SHAPE)
    if "outcome" in declaration:
        check_function(resolve(declaration["outcome"], where), declaration["outcome"], where,
                       parameters=1, coroutine=False, shape=OUTCOME_SHAPE)
    elif any(w.notices for w in flow.waits):
        raise ConfigError(f"{where}: flow {flow.name!r} sends a notice when a wait is "
                          "rejected or expires, but the app declares no outcome to tell "
                          f"how an instance ended; add outcome = \"module:function\", "
                          f"{OUTCOME_SHAPE}")


def start(declaration: Mapping[str, Any], request: InstanceRequest) -> None:
    """Start one instance with the team's start function; every message it sends
    carries graduate's correlation."""
    install()
    start_function = resolve(declaration["start"], f"start function {declaration['start']}")
    # The instance's trace is the parent of the app's own spans, when it traces.
    with (propagating(Correlation(request.instance_id, request.correlation_id,
                                  request.trace_id)), trace_parent(request.trace_id)):
        start_function(request)


def signal(declaration: Mapping[str, Any], request: InstanceRequest, name: str,
           payload: Mapping[str, Any]) -> None:
    """Deliver a human decision through the team's signal function; the tasks it sends
    carry the instance's correlation and trace."""
    install()
    deliver = resolve(declaration["signal"], f"signal function {declaration['signal']}")
    with (propagating(Correlation(request.instance_id, request.correlation_id,
                                  request.trace_id)), trace_parent(request.trace_id)):
        deliver(request.instance_id, name, dict(payload))


def outcome(declaration: Mapping[str, Any], instance_id: str) -> str | None:
    """How the instance ended, in the team's own records (the declared outcome); None
    while it has not, as far as they say."""
    said = resolve(declaration["outcome"], f"outcome function {declaration['outcome']}")(
        instance_id)
    return None if said is None else str(said)


def app_settings(app: Celery) -> dict[str, Any]:
    """The team's own values of the settings that decide what a fault does, for evidence."""
    return recorded_settings(app.conf, str(app.conf.broker_url or ""))
