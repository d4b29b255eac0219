"""The Temporal engine: the client side that starts, signals and inspects instances."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from temporalio.api.enums.v1 import EventType, TimeoutType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import ActivityTaskStartedEventAttributes
from temporalio.api.history.v1 import HistoryEvent as ServerEvent
from temporalio.api.workflowservice.v1 import (
    GetSystemInfoRequest,
    SetWorkerDeploymentCurrentVersionRequest,
)
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHistory,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from graduate.adapters.base import (
    HISTORIES,
    HeldUp,
    HistoryEvent,
    InstanceState,
    InstanceStatus,
    Signal,
    WorkerGroup,
    WorkerSpec,
    services_for_worker,
    start_worker_process,
)
from graduate.adapters.temporal.client import connect
from graduate.adapters.temporal.description import TEMPORAL
from graduate.adapters.temporal.messages import (
    WORKFLOW_NAME,
    FlowInput,
    FlowResult,
    build_id,
    deployment_name,
    task_queue,
)
from graduate.adapters.temporal.replay import export_history, replay, workflows_for
from graduate.adapters.temporal.settings import effective_settings
from graduate.errors import EngineError, ServiceError
from graduate.flow import Flow, InstanceRequest
from graduate.migrate.replay import Replayed
from graduate.processes import ManagedProcess
from graduate.services.model import Services

T = TypeVar("T")
R = TypeVar("R")
# How long a new worker deployment version may take to be seen by the server (its first
# poll) before it can become the current version.
VERSION_REGISTERED_TIMEOUT = 30.0
# Reads in flight together when a run looks at its instances (`statuses`) or is judged
# (`ReadsTogether`): one at a time, a thousand histories took longer than the run; all
# at once, thousands of RPCs queue on the server's two cores beside the workers' and
# time out.
READ_TOGETHER = 32
CLOSE_WAIT = 30.0  # seconds closing waits for RPCs still in flight

# Why a workflow task failed when the workflow's own code made it fail: on the same code
# and history, every attempt fails the same way.
_FAILING_IN_CODE = (WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_NON_DETERMINISTIC_ERROR,
                    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_WORKFLOW_WORKER_UNHANDLED_FAILURE)

_OUTCOMES = {
    "completed": InstanceState.COMPLETED,
    "compensated": InstanceState.COMPENSATED,
    "failed": InstanceState.FAILED,
}


def _started_detail(started: ActivityTaskStartedEventAttributes) -> str:
    """The attempt, and for a retry what ended the one before (a heartbeat timeout, say)."""
    detail = f"attempt {started.attempt}"
    if started.attempt == 1 or not started.HasField("last_failure"):
        return detail
    failure = started.last_failure
    if failure.HasField("timeout_failure_info"):
        kind = TimeoutType.Name(failure.timeout_failure_info.timeout_type)
        cause = kind.removeprefix("TIMEOUT_TYPE_").lower().replace("_", "-") + " timeout"
    else:
        cause = failure.message.splitlines()[0] if failure.message else "a failure"
    return f"{detail} after {cause}"


def _held_up(event: ServerEvent) -> bool:
    """A workflow task that waited on a worker's sticky queue until the server gave it
    to another (schedule-to-start): its worker was gone, but it had not begun."""
    return (event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
            and event.workflow_task_timed_out_event_attributes.timeout_type
            == TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_START)


# Where a worker took the workflow's work up. An activity's started event is written
# when the activity closes, with the time its last attempt started.
_TAKEN_UP = (EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
             EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED)


def _cut_short(event: ServerEvent) -> bool:
    """A task the server gave up on: a workflow or activity task that timed out once
    begun (its worker died or was cut off), or an activity attempt started after one
    that did."""
    if event.event_type in (EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
                            EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT):
        return not _held_up(event)
    if event.HasField("activity_task_started_event_attributes"):
        started = event.activity_task_started_event_attributes
        return bool(started.attempt > 1 and started.HasField("last_failure")
                    and started.last_failure.HasField("timeout_failure_info"))
    return False


class TemporalEngine:
    """Runs a flow as the interpreter workflow on a Temporal server."""

    name = "temporal"
    capabilities = TEMPORAL.capabilities

    def __init__(self, flow: Flow, services: Services, run_dir: Path, *,
                 settings: dict[str, Any] | None = None,
                 worker_services: Services | None = None, queue: str | None = None) -> None:
        if services.temporal is None:
            raise ServiceError("the temporal engine needs a Temporal server")
        self.flow = flow
        self.previous: Flow | None = None
        self.services = services
        self.worker_services = worker_services or services
        self.run_dir = run_dir
        # Its task queue is named by the run (its folder), or by the registered workers'.
        self.queue = run_dir.name if queue is None else queue
        # The SDK's defaults (no graceful shutdown wait, no heartbeat timeout), unless a
        # profile says otherwise.
        self.settings = effective_settings(settings)
        self._loop = asyncio.new_event_loop()
        self._client: Client = self._run(connect(services.temporal))
        self._workers = 0
        self._current_version: int | None = None  # under worker versioning
        # What `statuses` last read of each instance: kept for one whose read fails.
        self._last: dict[str, InstanceStatus] = {}

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coroutine)

    def start_workers(self, count: int) -> WorkerGroup:
        return WorkerGroup.start([self.start_worker] * count)

    def start_worker(self) -> ManagedProcess:
        # Numbered and never reused, so a replacement worker gets a log of its own.
        self._workers += 1
        name = f"temporal-worker-{self._workers}"
        spec = WorkerSpec(
            engine=self.name, flow_source=self.flow.source,
            services=services_for_worker(self.worker_services),
            ready_file=str(self.run_dir / "ready" / f"{name}.ready"), settings=self.settings,
            previous_flow_source=self.previous.source if self.previous else None,
            run_id=self.queue,
        )
        process = start_worker_process(name, "graduate.adapters.temporal.worker", spec,
                                       self.run_dir)
        if self.settings.get("worker_versioning"):
            try:
                self._make_current(self.flow.version)
            except BaseException:
                process.stop()
                raise
        return process

    def _make_current(self, version: int) -> None:
        """Route new workflows to the workers of `version` (the instances in flight stay
        pinned to theirs): a rolling deploy under worker versioning."""
        if self._current_version == version:
            return
        self._run(set_current_version(self._client,
                                      deployment_name(self.flow.name, self.queue),
                                      build_id(version)))
        self._current_version = version

    def replace(self, process: ManagedProcess) -> ManagedProcess:
        del process  # every process this engine starts is a worker
        return self.start_worker()

    def deploy(self, flow: Flow, previous: Flow | None = None) -> None:
        self.flow = flow
        self.previous = previous

    def predict_deploy(self, instance_ids: Sequence[str], flow: Flow,
                       previous: Flow | None = None) -> list[Replayed]:
        async def predict() -> list[Replayed]:
            histories = [await self._client.get_workflow_handle(i).fetch_history()
                         for i in instance_ids]
            return await replay(histories, workflows_for(flow, previous))

        return self._run(predict())

    def holds(self, instance_id: str) -> bool:
        """A running workflow execution is held by the server, whatever its workers do."""
        return self._run(self._holds(instance_id))

    async def _holds(self, instance_id: str) -> bool:
        try:
            description = await self._client.get_workflow_handle(instance_id).describe()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return description.status == WorkflowExecutionStatus.RUNNING

    def holds_all(self, instance_ids: Sequence[str]) -> dict[str, bool | Exception]:
        """`holds` of each: one visibility list of the run's task queue (a running
        execution is held), and a describe only for those it does not show yet. The list
        may lag a moment: one shown running that has just closed is read as finished by
        the status read that follows (`RunSession.exact`); it is never taken for lost."""
        return self._run(self._holds_all(instance_ids))

    async def _holds_all(self, instance_ids: Sequence[str]) -> dict[str, bool | Exception]:
        running: dict[str, bool] = {}
        query = f"TaskQueue = '{task_queue(self.flow.name, self.queue)}'"
        try:
            async for execution in self._client.list_workflows(query):
                # A reused ID is held while any of its runs runs.
                held = execution.status == WorkflowExecutionStatus.RUNNING
                running[execution.id] = running.get(execution.id, False) or held
        except RPCError:
            running = {}  # the server is down: each is asked by itself below
        found: dict[str, bool | Exception] = {iid: True for iid in instance_ids
                                              if running.get(iid)}
        found.update(await read_together(self._holds, [iid for iid in instance_ids
                                                         if iid not in found]))
        return found

    def statuses_alone(self, instance_ids: Sequence[str],
                       ) -> dict[str, InstanceStatus | Exception]:
        return self._run(read_together(self._status, instance_ids))

    def histories(self, instance_ids: Sequence[str],
                  ) -> dict[str, list[HistoryEvent] | Exception]:
        return self._run(read_together(self._history, instance_ids))

    def held_until(self, instance_id: str) -> HeldUp | None:
        """A running workflow may move whenever a worker polls, unless its workflow task
        fails again after failing in the workflow's own code (a non-deterministic replay
        after a deploy, an exception): the workers replay the same history on the same
        code at every attempt, so nothing moves it until a deploy (`HeldUp.until` is
        infinite)."""
        return self._run(self._held_until(instance_id))

    async def _held_until(self, instance_id: str) -> HeldUp | None:
        handle = self._client.get_workflow_handle(instance_id)
        description = await handle.describe()
        attempt = description.raw_description.pending_workflow_task.attempt
        if description.status != WorkflowExecutionStatus.RUNNING or attempt < 2:
            return None
        failed = None
        async for event in handle.fetch_history_events():
            if event.HasField("workflow_task_failed_event_attributes"):
                failed = event.workflow_task_failed_event_attributes
        if failed is None or failed.cause not in _FAILING_IN_CODE:
            return None  # failed for a reason of the moment (a command it had not seen)
        message = failed.failure.message.splitlines()[0] if failed.failure.message else ""
        return HeldUp(until=math.inf, why=(
            f"its workflow task failed ({WorkflowTaskFailedCause.Name(failed.cause)}: "
            f"{message}) and is on attempt {attempt}: the workers replay the same history "
            "on the same code at every attempt, so nothing moves it until a deploy"))

    def start(self, request: InstanceRequest) -> None:
        self._run(self._start(request))

    def start_all(self, requests: Sequence[InstanceRequest]) -> None:
        """`start` of each, the calls in flight together on one client; raises what the
        first that failed raised, once every call has returned."""
        async def start_all() -> None:
            outcomes = await asyncio.gather(*(self._start(r) for r in requests),
                                            return_exceptions=True)
            failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
            if failed is not None:
                raise failed

        self._run(start_all())

    async def _start(self, request: InstanceRequest) -> None:
        # The workflow ID is the instance's business identity: the server keeps at most
        # one open execution per ID. The policies are the SDK's defaults, spelled out
        # because a double start depends on them: a start while one runs is refused
        # (conflict policy FAIL); a start after one closed would run again (reuse policy
        # ALLOW_DUPLICATE).
        await self._client.start_workflow(
            WORKFLOW_NAME, FlowInput(flow=self.flow.name, request=request,
                                     heartbeat_timeout=self.settings["heartbeat_timeout"],
                                     memo_once_per_task=True, memo_at_waits=True),
            id=request.instance_id, task_queue=task_queue(self.flow.name, self.queue),
            memo={"done": [], "waiting": None, "correlation_id": request.correlation_id},
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )

    def start_duplicate(self, request: InstanceRequest) -> str | None:
        try:
            self.start(request)
        except WorkflowAlreadyStartedError as error:
            return (f"the Temporal server refused it: workflow {error.workflow_id} is already "
                    "running (WorkflowAlreadyStartedError, ID conflict policy FAIL)")
        return None

    def cancel(self, instance_id: str) -> None:
        """Request cancellation; the workflow compensates what it applied (see
        `workflow.GraduateFlow`)."""
        try:
            self._run(self._client.get_workflow_handle(instance_id).cancel())
        except RPCError as error:
            raise EngineError(f"cannot cancel {instance_id}: {error.message}") from error

    def signal(self, instance_id: str, name: str, payload: dict[str, Any]) -> None:
        error = self._run(self._signal(Signal(instance_id, name, payload)))
        if error is not None:
            raise error

    def signal_all(self, signals: Sequence[Signal]) -> list[Exception | None]:
        """Every signal's RPC in flight together on one client."""
        async def send() -> list[Exception | None]:
            return list(await asyncio.gather(*(self._signal(s) for s in signals)))

        return self._run(send())

    async def _signal(self, signal: Signal) -> EngineError | None:
        try:
            await self._client.get_workflow_handle(signal.instance_id).signal(
                signal.name, signal.payload)
        except RPCError as error:
            return EngineError(f"cannot signal {signal.instance_id}: {error.message}")
        return None

    def status(self, instance_id: str) -> InstanceStatus:
        return self._run(self._status(instance_id))

    def statuses(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        """Every instance's `status`, described together (READ_TOGETHER at a time): the
        server's work follows the instances asked (a run asks only those that may have
        moved, docs/adr/0017), not the instances in flight. (A visibility list of every
        running workflow per look was one long read of the dev server's SQLite file,
        19.6 s at 1,000 instances, during which the history service could not write;
        docs/adr/0019.) A read that fails on a loaded server gives what the last one
        said; with none before it, the look fails."""
        return self._run(self._statuses(instance_ids))

    async def _statuses(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        read = await read_together(self._status, instance_ids)
        failed = next(((i, r) for i, r in read.items()
                       if isinstance(r, Exception) and i not in self._last), None)
        if failed is not None:
            instance_id, error = failed
            raise EngineError(f"cannot read the status of {instance_id}: {error}") from error
        self._last.update({i: r for i, r in read.items() if not isinstance(r, Exception)})
        return {instance_id: self._last[instance_id] for instance_id in instance_ids}

    async def _status(self, instance_id: str) -> InstanceStatus:
        handle = self._client.get_workflow_handle(instance_id, result_type=FlowResult)
        try:
            description = await handle.describe()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return InstanceStatus(InstanceState.UNKNOWN)
            raise
        memo = await description.memo()
        done = tuple(memo.get("done") or ())
        closed = description.close_time.timestamp() if description.close_time else None
        if description.status == WorkflowExecutionStatus.RUNNING:
            pending = description.raw_description.pending_workflow_task
            if pending.attempt > 1:
                # Replay failing (a non-deterministic deploy, say): the server retries the
                # workflow task for ever, and the workflow goes nowhere.
                return InstanceStatus(InstanceState.RUNNING, done, None,
                                      f"workflow task failing: {await self._task_failure(handle)}")
            return running_status(memo)
        if description.status == WorkflowExecutionStatus.COMPLETED:
            result = await handle.result()
            return InstanceStatus(_OUTCOMES[result.outcome], tuple(result.done), closed,
                                  result.reason)
        try:
            await handle.result()
        except WorkflowFailureError as error:
            detail = str(error.cause) if error.cause else str(error)
        else:
            detail = ""
        status_name = description.status.name if description.status else "unknown"
        return InstanceStatus(InstanceState.FAILED, done, closed,
                              f"workflow {status_name.lower()}: {detail}".rstrip(": "))

    async def _task_failure(self, handle: Any) -> str:
        message = "unknown cause"
        async for event in handle.fetch_history_events():
            if event.HasField("workflow_task_failed_event_attributes"):
                message = event.workflow_task_failed_event_attributes.failure.message
        return message.splitlines()[0] if message else "unknown cause"

    def history(self, instance_id: str) -> list[HistoryEvent]:
        return self._run(self._history(instance_id))

    async def _history(self, instance_id: str) -> list[HistoryEvent]:
        return await read_history(self._client, instance_id, self.run_dir / HISTORIES)

    def server_versions(self) -> dict[str, str]:
        return self._run(read_server_versions(self._client))

    def close(self) -> None:
        """Close the loop once nothing the SDK started can answer into it. An SDK call
        answers from the SDK's own threads through `call_soon_threadsafe`: into a closed
        loop it raises there ("Event loop is closed", by the thousand at the end of a
        5,000-instance run that then crashed; a later one died of a segfault in those
        threads while judging, not proven to be this path: issue 16). So
        every task still pending (a read cut off by an exception, a call slower than
        CLOSE_WAIT) is awaited, then cancelled; and if any was still pending, the loop
        and client stay open, referenced for the life of the process (`_STRAGGLERS`): a
        late answer then lands in an open loop that is not running, which is harmless."""
        pending = asyncio.all_tasks(self._loop)
        if pending:
            _, pending = self._loop.run_until_complete(
                asyncio.wait(pending, timeout=CLOSE_WAIT))
        if pending:
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.wait(pending, timeout=CLOSE_WAIT))
            # A cancelled call's answer may still come from the SDK's threads later.
            _STRAGGLERS.append((self._loop, self._client))
            return
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()


# Loops (with their clients) closed while SDK calls were still in flight: kept open and
# referenced so that the SDK's threads never answer into a closed or collected loop.
_STRAGGLERS: list[tuple[asyncio.AbstractEventLoop, Client]] = []


def running_status(memo: Mapping[str, Any]) -> InstanceStatus:
    """A running workflow's status from its memo: waiting for a signal, or running."""
    done = tuple(memo.get("done") or ())
    waiting = memo.get("waiting")
    if waiting:
        return InstanceStatus(InstanceState.WAITING, done, None,
                              f"waiting for signal {waiting!r}")
    return InstanceStatus(InstanceState.RUNNING, done)


async def gather_statuses(status: Callable[[str], Awaitable[InstanceStatus]],
                          instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
    """`status` of each instance, at most READ_TOGETHER calls in flight on one client;
    raises what the first that failed raised, once every call has returned (none is
    left in flight: thousands of describes at once timed out on a loaded server)."""
    found = await read_together(status, instance_ids)
    failed = next((f for f in found.values() if isinstance(f, Exception)), None)
    if failed is not None:
        raise failed
    return {iid: f for iid, f in found.items() if not isinstance(f, Exception)}


async def read_together(read: Callable[[str], Awaitable[R]], instance_ids: Sequence[str],
                        ) -> dict[str, R | Exception]:
    """`read` of each instance, at most READ_TOGETHER calls in flight at once: for each,
    what it returned or raised."""
    bound = asyncio.Semaphore(READ_TOGETHER)

    async def one(instance_id: str) -> R | Exception:
        async with bound:
            try:
                return await read(instance_id)
            except Exception as error:
                return error

    found = await asyncio.gather(*(one(iid) for iid in instance_ids))
    return dict(zip(instance_ids, found, strict=True))


async def read_server_versions(client: Client) -> dict[str, str]:
    """`Engine.server_versions` of a Temporal engine: the server's, as it reports it."""
    try:
        info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
    except RPCError:
        return {}
    return {"temporal_server": info.server_version} if info.server_version else {}


async def set_current_version(client: Client, deployment: str, build: str) -> None:
    """Make `build` the current version of `deployment`. The server knows a version only
    once one of its workers has polled, which a worker's ready file does not wait for."""
    deadline = time.monotonic() + VERSION_REGISTERED_TIMEOUT
    while True:
        try:
            await client.workflow_service.set_worker_deployment_current_version(
                SetWorkerDeploymentCurrentVersionRequest(
                    namespace=client.namespace, deployment_name=deployment, build_id=build,
                    identity="graduate"))
            return
        except RPCError as error:
            if time.monotonic() > deadline:
                raise EngineError(f"the Temporal server did not accept build ID {build} as "
                                  f"the current version of worker deployment {deployment}: "
                                  f"{error.message}") from error
            await asyncio.sleep(0.2)


def _versions(events: Any) -> dict[int, str]:
    """The build ID that completed each workflow task, by event ID (under worker
    versioning; an unversioned worker leaves it empty)."""
    versions = {}
    for event in events:
        if event.HasField("workflow_task_completed_event_attributes"):
            completed = event.workflow_task_completed_event_attributes
            if completed.HasField("deployment_version"):
                versions[event.event_id] = completed.deployment_version.build_id
    return versions


async def read_history(client: Client, instance_id: str,
                       export_to: Path | None = None) -> list[HistoryEvent]:
    """The workflow's history as plain events: what the server recorded, oldest first.
    With `export_to`, also written there as the Temporal CLI exports it, for `graduate
    replay` to gate a later deploy."""
    history = await client.get_workflow_handle(instance_id).fetch_history()
    if export_to is not None:
        export_history(history.to_json(), export_to, instance_id)
    return plain_events(history)


def plain_events(history: WorkflowHistory) -> list[HistoryEvent]:
    """A history as plain events. Each workflow task and each step it scheduled carries
    the build ID that ran it."""
    versions = _versions(history.events)
    events = []
    for event in history.events:
        version = versions.get(event.event_id, "")
        kind = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        detail = ""
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled = event.activity_task_scheduled_event_attributes
            detail = scheduled.activity_type.name
            version = versions.get(scheduled.workflow_task_completed_event_id, "")
        elif event.HasField("workflow_execution_signaled_event_attributes"):
            detail = event.workflow_execution_signaled_event_attributes.signal_name
        elif event.HasField("activity_task_started_event_attributes"):
            detail = _started_detail(event.activity_task_started_event_attributes)
        elif event.HasField("workflow_task_failed_event_attributes"):
            detail = event.workflow_task_failed_event_attributes.failure.message[:300]
        elif event.HasField("marker_recorded_event_attributes"):
            detail = event.marker_recorded_event_attributes.marker_name
        events.append(HistoryEvent(at=event.event_time.ToNanoseconds() / 1e9,
                                   kind=kind.lower(), detail=detail,
                                   cut_short=_cut_short(event), held_up=_held_up(event),
                                   taken_up=event.event_type in _TAKEN_UP, version=version))
    return events
