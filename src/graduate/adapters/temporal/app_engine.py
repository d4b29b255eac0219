"""The Engine protocol on a team's own Temporal app: its workers, its start function, its
workflow's own record on the server.

The team's workers run `graduate.adapters.temporal.app_worker` around the declared
factory, in their own process groups, connected to the frontend given by GRADUATE_TEMPORAL_*
variables. Progress through the flow comes from the ledger (`graduate.effect`); whether
the instance is running, closed or failed comes from the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from graduate.adapters.app_engine import (
    app_environment,
    instance_flow,
    progress,
    start_app_worker,
    wait_ending,
)
from graduate.adapters.base import (
    HISTORIES,
    HeldUp,
    HistoryEvent,
    InstanceState,
    InstanceStatus,
    WorkerGroup,
)
from graduate.adapters.temporal import application
from graduate.adapters.temporal.client import connect
from graduate.adapters.temporal.description import TEMPORAL_APP
from graduate.adapters.temporal.engine import gather_statuses, read_history, read_server_versions
from graduate.apps import App
from graduate.errors import EngineError, ServiceError
from graduate.flow import Flow, InstanceRequest
from graduate.ledger import Ledger
from graduate.processes import ManagedProcess
from graduate.services.model import Services

T = TypeVar("T")
MODULE = "graduate.adapters.temporal.app_worker"


class TemporalAppEngine:
    """Runs a team's declared Temporal app; judged against `flow`, what it implements."""

    name = TEMPORAL_APP.name
    capabilities = TEMPORAL_APP.capabilities

    def __init__(self, app: App, flow: Flow, services: Services, run_dir: Path, *,
                 settings: dict[str, Any] | None = None,
                 worker_services: Services | None = None) -> None:
        if services.temporal is None:
            raise ServiceError("a team's Temporal app needs a Temporal server")
        TEMPORAL_APP.check_settings(settings or {})
        self.app = app
        self.declaration = app.engines["temporal"]
        self.flow = flow
        self.services = services
        self.worker_services = worker_services or services
        self.run_dir = run_dir
        self.settings: dict[str, Any] = {"worker": self.declaration["worker"],
                                         "start": self.declaration["start"]}
        self._loop = asyncio.new_event_loop()
        self._client: Client = self._run(connect(services.temporal))
        self._ledger = Ledger(services.ledger_url)
        self._workers = 0

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coroutine)

    def start_workers(self, count: int) -> WorkerGroup:
        return WorkerGroup.start([self.start_worker] * count)

    def start_worker(self) -> ManagedProcess:
        self._workers += 1
        target = self.worker_services.temporal
        assert target is not None  # checked when the engine opened
        environ = app_environment(self.app, self.flow, self.worker_services,
                                  self.run_dir.name, {
                                      "temporal_address": target.address,
                                      "temporal_namespace": target.namespace,
                                      "temporal_tls_cert": target.tls_cert,
                                      "temporal_tls_key": target.tls_key,
                                      "temporal_tls_ca": target.tls_ca,
                                      "temporal_api_key": target.api_key})
        return start_app_worker(f"{self.app.name}-temporal-worker-{self._workers}", MODULE,
                                [self.declaration["worker"]], self.app, environ, self.run_dir)

    def replace(self, process: ManagedProcess) -> ManagedProcess:
        del process  # every process this engine starts is a worker
        return self.start_worker()

    def deploy(self, flow: Flow, previous: Flow | None = None) -> None:
        raise EngineError(f"graduate cannot deploy a new version of {self.app.name}'s own "
                          "code; deploy it yourself and run again")

    def holds(self, instance_id: str) -> bool:
        """A running workflow execution is held by the server, whatever its workers do."""
        try:
            description = self._run(self._client.get_workflow_handle(instance_id).describe())
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return description.status == WorkflowExecutionStatus.RUNNING

    def held_until(self, instance_id: str) -> HeldUp | None:
        """A running workflow may move whenever a worker polls: never held to a set time."""
        return None

    def start(self, request: InstanceRequest) -> None:
        assert self.services.temporal is not None
        self._run(application.start(self.declaration, self.services.temporal, request))

    def start_duplicate(self, request: InstanceRequest) -> str | None:
        """The team's start function again, for the same business key: the server refuses
        a second workflow with a running one's ID (the start's ID conflict policy)."""
        try:
            self.start(request)
        except WorkflowAlreadyStartedError as error:
            return (f"the Temporal server refused it: workflow {error.workflow_id} is already "
                    "running (WorkflowAlreadyStartedError)")
        return None

    def cancel(self, instance_id: str) -> None:
        """Request cancellation; what the team's workflow undoes is judged from the ledger."""
        try:
            self._run(self._client.get_workflow_handle(instance_id).cancel())
        except RPCError as error:
            raise EngineError(f"cannot cancel {instance_id}: {error.message}") from error

    def signal(self, instance_id: str, name: str, payload: dict[str, Any]) -> None:
        try:
            self._run(self._client.get_workflow_handle(instance_id).signal(name, payload))
        except RPCError as error:
            raise EngineError(f"cannot signal {instance_id}: {error.message}") from error

    def status(self, instance_id: str) -> InstanceStatus:
        return self._run(self._status(instance_id))

    def statuses(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        """Every instance's `status`, the server asked for all of them at once."""
        return self._run(gather_statuses(self._status, instance_ids))

    async def _status(self, instance_id: str) -> InstanceStatus:
        handle = self._client.get_workflow_handle(instance_id)
        try:
            description = await handle.describe()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return InstanceStatus(InstanceState.UNKNOWN)
            raise
        effects = self._ledger.effects(instance_id=instance_id)
        flow = instance_flow(self.flow, self._ledger, instance_id)
        found = progress(flow, effects)
        closed = description.close_time.timestamp() if description.close_time else None
        if description.status == WorkflowExecutionStatus.RUNNING:
            if found.state is InstanceState.WAITING and not (
                    description.raw_description.pending_activities):
                return InstanceStatus(InstanceState.WAITING, found.done)
            return InstanceStatus(InstanceState.RUNNING, found.done)
        if description.status == WorkflowExecutionStatus.COMPLETED:
            # The ledger says whether it completed the flow or undid it: the checker then
            # holds each against the effects.
            state = (InstanceState.COMPENSATED if found.state is InstanceState.COMPENSATED
                     else InstanceState.COMPLETED)
            result = await handle.result()
            # A result that says the instance ended at a wait ("rejected", "expired") is
            # reported in the flow's words: the checker then holds it to that notice.
            ending = wait_ending(flow, effects, result) if isinstance(result, str) else None
            return InstanceStatus(state, found.done, closed,
                                  ending or f"workflow returned {result!r}")
        try:
            await handle.result()
        except WorkflowFailureError as error:
            detail = str(error.cause) if error.cause else str(error)
        else:
            detail = ""
        status_name = description.status.name if description.status else "unknown"
        return InstanceStatus(InstanceState.FAILED, found.done, closed,
                              f"workflow {status_name.lower()}: {detail}".rstrip(": "))

    def history(self, instance_id: str) -> list[HistoryEvent]:
        return self._run(read_history(self._client, instance_id, self.run_dir / HISTORIES))

    def server_versions(self) -> dict[str, str]:
        return self._run(read_server_versions(self._client))

    def close(self) -> None:
        self._ledger.close()
        self._loop.close()
