"""A team's own Temporal app: its declaration, and the shape of what the declaration names.

    [tool.graduate.apps.NAME.temporal]
    worker = "module:create_worker"   # () -> graduate.apps.TemporalWorker (its
                                      # interceptors go on the worker and the client)
    start = "module:start"            # async (client, graduate.flow.InstanceRequest) -> None

Only this module knows Temporal's definitions; it imports temporalio when it checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graduate.apps import TemporalWorker, check_function, reference, resolve, table_of
from graduate.errors import ConfigError
from graduate.flow import Flow, InstanceRequest
from graduate.instrument import Correlation, propagating, trace_parent
from graduate.services.model import TemporalTarget

WORKER_SHAPE = ("a function taking no argument that returns graduate.apps.TemporalWorker("
                "task_queue=..., workflows=[...], activities=[...])")
START_SHAPE = ("async def start(client, request): start one workflow for the "
               "graduate.flow.InstanceRequest, with request.instance_id as its ID")


def declare(value: Any, where: str) -> dict[str, str]:
    table = table_of(value, where, {"worker", "start"})
    return {"worker": reference(table, "worker", where, WORKER_SHAPE),
            "start": reference(table, "start", where, START_SHAPE)}


def check(declaration: Mapping[str, str], where: str, flow: Flow) -> None:
    """The factory's parts and the start function's shape (signals are Temporal's own)."""
    worker = load_worker(declaration["worker"], where)
    if not worker.workflows:
        raise ConfigError(f"{where}: {declaration['worker']!r} returned no workflows")
    start = resolve(declaration["start"], where)
    check_function(start, declaration["start"], where, parameters=2, coroutine=True,
                   shape=START_SHAPE)


def load_worker(ref: str, where: str) -> TemporalWorker:
    """Call the team's worker factory and check what it returns."""
    from temporalio import activity, client, workflow
    from temporalio import worker as temporal_worker

    factory = resolve(ref, where)
    check_function(factory, ref, where, parameters=0, coroutine=False, shape=WORKER_SHAPE)
    try:
        worker = factory()
    except Exception as error:  # the team's factory may fail in any way
        raise ConfigError(f"{where}: {ref}() raised {type(error).__name__}: {error}") from error
    if not isinstance(worker, TemporalWorker):
        raise ConfigError(f"{where}: {ref}() returned a {type(worker).__name__}; it must be "
                          f"{WORKER_SHAPE}")
    if not isinstance(worker.task_queue, str) or not worker.task_queue:
        raise ConfigError(f"{where}: {ref}() returned task_queue {worker.task_queue!r}; give "
                          "the task queue the team's workers poll")
    for item in worker.workflows:
        # The SDK's own reading of @workflow.defn (what Worker(...) would reject).
        if not isinstance(item, type) or workflow._Definition.from_class(item) is None:
            raise ConfigError(f"{where}: {ref}() lists {item!r} among its workflows, but it "
                              "is not a class decorated with @workflow.defn")
    for function in worker.activities:
        if activity._Definition.from_callable(function) is None:
            raise ConfigError(f"{where}: {ref}() lists {function!r} among its activities, but it "
                              "is not a function decorated with @activity.defn")
    for interceptor in worker.interceptors:
        if not isinstance(interceptor, (client.Interceptor, temporal_worker.Interceptor)):
            raise ConfigError(f"{where}: {ref}() lists {interceptor!r} among its interceptors, "
                              "but it is neither a temporalio.client.Interceptor nor a "
                              "temporalio.worker.Interceptor")
    return worker


async def start(declaration: Mapping[str, str], target: TemporalTarget,
                request: InstanceRequest) -> None:
    """Start one instance with the team's start function, on a client that carries
    graduate's correlation to the workflow and its activities."""
    from temporalio.client import Interceptor

    from graduate.adapters.temporal.client import connect
    from graduate.adapters.temporal.instrument import CorrelationInterceptor

    start_function = resolve(declaration["start"], f"start function {declaration['start']}")
    own = load_worker(declaration["worker"], f"worker factory {declaration['worker']}")
    client = await connect(target, interceptors=[CorrelationInterceptor(), *[
        i for i in own.interceptors if isinstance(i, Interceptor)]])
    # The instance's trace is the parent of the app's own spans, when it traces.
    with (propagating(Correlation(request.instance_id, request.correlation_id,
                                  request.trace_id)), trace_parent(request.trace_id)):
        await start_function(client, request)


async def signal(target: TemporalTarget, instance_id: str, name: str,
                 payload: Mapping[str, Any]) -> None:
    """Send signal `name` (a flow's wait: a human decision) to the instance's workflow."""
    from graduate.adapters.temporal.client import connect

    client = await connect(target)
    await client.get_workflow_handle(instance_id).signal(name, dict(payload))
