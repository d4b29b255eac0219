"""The toy engine's client side: what graduate's harness calls (the `Engine` protocol)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graduate.adapters.base import (
    HeldUp,
    HistoryEvent,
    InstanceState,
    InstanceStatus,
    WorkerGroup,
    WorkerSpec,
    services_for_worker,
    start_worker_process,
)
from graduate.adapters.registry import EngineDescription
from graduate.errors import ConfigError, EngineError
from graduate.flow import Flow, InstanceRequest, Parallel
from graduate.processes import ManagedProcess
from graduate.services.model import Services
from tests.engines.toy.machine import CANCEL, COMPENSATING, FINISHED, RUNNING, Store

_STATES = {RUNNING: InstanceState.RUNNING, COMPENSATING: InstanceState.RUNNING}


class ToyEngine:
    def __init__(self, description: EngineDescription, flow: Flow, services: Services,
                 run_dir: Path, *, settings: dict[str, Any] | None = None) -> None:
        if any(isinstance(n, Parallel) for n in flow.nodes) or any(
                w.while_open for w in flow.waits) or flow.interrupt is not None:
            raise ConfigError(f"flow {flow.name!r}: the toy engine runs no parallel group, "
                              "sends no reminder or escalation and takes no interrupt; "
                              "remove them or choose another engine")
        self.name = description.name
        self.capabilities = description.capabilities
        self.settings = dict(settings or {})
        self.flow = flow
        self.services = services
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(run_dir / "toy.sqlite3")
        self._numbers = itertools.count(1)

    def start_workers(self, count: int) -> WorkerGroup:
        return WorkerGroup.start([self.start_worker] * count)

    def start_worker(self) -> ManagedProcess:
        name = f"toy-worker-{next(self._numbers)}"
        spec = WorkerSpec(engine=self.name, flow_source=self.flow.source,
                          services=services_for_worker(self.services),
                          ready_file=str(self.run_dir / "ready" / name),
                          settings=self.settings, run_id=self.run_dir.name)
        return start_worker_process(name, "tests.engines.toy.worker", spec, self.run_dir)

    def replace(self, process: ManagedProcess) -> ManagedProcess:
        return self.start_worker()

    def deploy(self, flow: Flow, previous: Flow | None = None) -> None:
        if previous is not None:
            raise ConfigError("the toy engine has no versioning guard")
        self.flow = flow

    def holds(self, instance_id: str) -> bool:
        row = self.store.rows([instance_id]).get(instance_id)
        return row is not None and row.state not in FINISHED

    def held_until(self, instance_id: str) -> HeldUp | None:
        return None  # a worker advances every unfinished row on its next look

    def start(self, request: InstanceRequest) -> None:
        if not self.store.insert(request):
            raise EngineError(f"instance {request.instance_id} was already started")

    def start_duplicate(self, request: InstanceRequest) -> str | None:
        if self.store.insert(request):
            return None
        return f"instance {request.instance_id} already exists"

    def cancel(self, instance_id: str) -> None:
        self.store.put_signal(instance_id, CANCEL, {})

    def signal(self, instance_id: str, name: str, payload: dict[str, Any]) -> None:
        self.store.put_signal(instance_id, name, payload)

    def status(self, instance_id: str) -> InstanceStatus:
        return self.statuses([instance_id])[instance_id]

    def statuses(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        rows = self.store.rows(list(instance_ids))
        found = {}
        for instance_id in instance_ids:
            row = rows.get(instance_id)
            if row is None:
                found[instance_id] = InstanceStatus(InstanceState.UNKNOWN)
                continue
            found[instance_id] = InstanceStatus(
                _STATES.get(row.state) or InstanceState(row.state), done=row.done,
                finished_at=row.finished_at, detail=row.reason)
        return found

    def history(self, instance_id: str) -> list[HistoryEvent]:
        return [HistoryEvent(at=at, kind=node, detail=note)
                for at, node, note in self.store.history(instance_id)]

    def server_versions(self) -> dict[str, str]:
        return {}  # no server: the state is a file of the run

    def close(self) -> None:
        self.store.close()
