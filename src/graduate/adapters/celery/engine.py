"""`CeleryEngine`: the Engine protocol on Celery, with the strategy chosen at construction."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from graduate.adapters.base import (
    HeldUp,
    HistoryEvent,
    InstanceStatus,
    Launched,
    WorkerGroup,
    WorkerSpec,
    launch_worker_process,
    services_for_worker,
)
from graduate.adapters.celery.app import check_strategy, close_app, create_app
from graduate.adapters.celery.broker import BrokerView
from graduate.adapters.celery.chain import ChainStrategy
from graduate.adapters.celery.description import CHAIN, STATE_MACHINE, WORKER_MODULE
from graduate.adapters.celery.resources import ProcessResources
from graduate.adapters.celery.settings import effective_settings
from graduate.adapters.celery.state_machine import StateMachineStrategy
from graduate.errors import ConfigError, EngineError
from graduate.flow import Flow, InstanceRequest
from graduate.processes import ManagedProcess, time_left
from graduate.services.model import Services

DECISIONS = ("approve", "reject")
# How long the first login to the broker may take, at most (the run's deadline may cut it).
LOGIN_TIMEOUT = 5.0


T = TypeVar("T")


def _or_error(read: Callable[[str], T], instance_id: str) -> T | Exception:
    try:
        return read(instance_id)
    except Exception as error:
        return error


class _Strategy(Protocol):
    def start(self, request: InstanceRequest) -> None: ...
    def start_duplicate(self, request: InstanceRequest) -> str | None: ...
    def cancel(self, instance_id: str) -> None: ...
    def signal(self, instance_id: str, name: str, payload: dict[str, Any]) -> None: ...
    def status(self, instance_id: str) -> InstanceStatus: ...
    def statuses(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]: ...
    def history(self, instance_id: str) -> list[HistoryEvent]: ...
    def holds(self, instance_id: str) -> bool: ...
    def held_until(self, instance_id: str) -> HeldUp | None: ...


class CeleryEngine:
    """Runs a flow on Celery as a chain of tasks or as a state machine in the app's tables.

    `settings` overrides Celery's defaults (and the state machine's own knobs); the
    effective values are in `self.settings`, for evidence and for the workers.
    `worker_services`, when given, is what worker and beat processes connect to (a
    network proxy in front of the broker, say), while this engine's own client (start,
    signal, status, holds) keeps using `services`.
    """

    def __init__(self, flow: Flow, services: Services, run_dir: Path, *, strategy: str,
                 settings: dict[str, Any] | None = None,
                 worker_services: Services | None = None, queue: str | None = None) -> None:
        self.strategy = check_strategy(strategy)
        if not services.broker_url or not services.result_backend_url:
            raise ConfigError("the Celery engines need a broker and a Redis result backend; "
                              "give them with --broker-url and --result-backend-url, or let "
                              "graduate start a local Redis")
        self.flow = flow
        self.run_dir = run_dir
        # Its queues are named by the run (its folder), or by the registered workers'.
        self.queue = run_dir.name if queue is None else queue
        self.name = f"celery-{strategy}"
        self.capabilities = (STATE_MACHINE if strategy == "state-machine"
                             else CHAIN).capabilities
        self.settings = effective_settings(strategy, services.broker_url, settings)
        self._services = services_for_worker(services)
        self._worker_services = services_for_worker(worker_services or services)
        self._resources = ProcessResources(self._services)
        self._app = create_app(flow, self._services, self.settings, strategy=strategy,
                               run_id=self.queue,
                               resources=self._resources)
        self._broker = BrokerView(services.broker_url,
                                  self._app.conf.broker_transport_options or {})
        self._broker.check_login(max(time_left(LOGIN_TIMEOUT)[0], 0.1))
        self._impl: _Strategy = (
            ChainStrategy(self._app, flow, self._resources, self._broker)
            if strategy == "chain"
            else StateMachineStrategy(self._app, flow, self._resources, self.settings,
                                      pool=self.queue, broker=self._broker)
        )
        self._launched: dict[str, int] = {}

    def start_workers(self, count: int) -> WorkerGroup:
        """Start `count` workers (and, for the state machine, the beat that ticks it), all
        launched before any is awaited."""
        roles = ["worker"] * count + (["beat"] if self.strategy == "state-machine" else [])
        return WorkerGroup.start_together([functools.partial(self._launch, role)
                                           for role in roles])

    def start_worker(self) -> ManagedProcess:
        """Start one more worker process (never a beat), e.g. to replace a killed one."""
        return self._launch("worker").await_ready()

    def replace(self, process: ManagedProcess) -> ManagedProcess:
        return self._launch("beat" if "-beat-" in process.name else "worker").await_ready()

    def _launch(self, role: str) -> Launched:
        if not self.flow.source:
            raise ConfigError(f"flow {self.flow.name!r} has no source, so worker processes "
                              "cannot load it; load it with graduate.flow.load_flow from a "
                              ".toml file or a module:ATTRIBUTE reference")
        # Numbered per role and never reused, so a restarted worker gets a log of its own.
        self._launched[role] = self._launched.get(role, 0) + 1
        name = f"{self.name}-{role}-{self._launched[role]}"
        # Beat connects as the workers do: it runs beside them, on their side of a cut.
        spec = WorkerSpec(
            engine=self.name, flow_source=self.flow.source, services=self._worker_services,
            ready_file=str(self.run_dir / "ready" / f"{name}.ready"), settings=self.settings,
            run_id=self.queue,
        )
        extra: tuple[str, ...] = (role, name)
        if role == "beat":
            extra = (*extra, str(self.run_dir / f"{name}.schedule"))
        return launch_worker_process(name, WORKER_MODULE, spec, self.run_dir, extra)

    def start(self, request: InstanceRequest) -> None:
        self._impl.start(request)

    def start_all(self, requests: Sequence[InstanceRequest]) -> None:
        """state-machine: the rows inserted in one transaction (`StartsTogether`); chain:
        each chain sent in turn (a send is one publish already)."""
        if isinstance(self._impl, StateMachineStrategy):
            self._impl.start_all(requests)
            return
        for request in requests:
            self._impl.start(request)

    def start_duplicate(self, request: InstanceRequest) -> str | None:
        """chain: nothing records which instances run, so the chain is sent again.
        state-machine: the instance's row already exists, so the start is refused."""
        return self._impl.start_duplicate(request)

    def cancel(self, instance_id: str) -> None:
        """chain: revoke the instance's tasks (nothing compensates). state-machine: a
        cancel request that the next advance turns into compensation."""
        self._impl.cancel(instance_id)

    def signal(self, instance_id: str, name: str, payload: dict[str, Any]) -> None:
        if self.flow.interrupt is not None and name == self.flow.interrupt.signal:
            self._impl.signal(instance_id, name, payload)  # it carries no decision
            return
        signals = [wait.signal for wait in self.flow.waits]
        if name not in signals:
            raise EngineError(f"flow {self.flow.name!r} awaits no signal {name!r}; it awaits: "
                              f"{', '.join(signals) or 'none'}")
        if payload.get("decision") not in DECISIONS:
            raise EngineError(f"signal {name!r} needs a payload of {{\"decision\": \"approve\"}} "
                              f"or {{\"decision\": \"reject\"}}, not {payload!r}")
        self._impl.signal(instance_id, name, payload)

    def status(self, instance_id: str) -> InstanceStatus:
        return self._impl.status(instance_id)

    def statuses(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        """chain: every record in one round trip to Redis; state-machine: every row in
        one query (per chunk of IDs)."""
        return self._impl.statuses(instance_ids)

    def history(self, instance_id: str) -> list[HistoryEvent]:
        return self._impl.history(instance_id)

    def holds(self, instance_id: str) -> bool:
        """Whether anything Celery holds can still move the instance on.

        state-machine: its row exists and is unfinished (the tick recovers it). chain: a
        message for one of its tasks is in the broker, or a live worker has one; on
        RabbitMQ, which shows messages only to consumers, CannotTell when a ready message
        or a silent consumer could be the instance's. See `ChainStrategy.holds`.
        """
        return self._impl.holds(instance_id)

    def statuses_alone(self, instance_ids: Sequence[str],
                       ) -> dict[str, InstanceStatus | Exception]:
        """`ReadsTogether`: chain, each record read afresh, pipelined; state-machine, one
        `status` after another."""
        if isinstance(self._impl, ChainStrategy):
            return self._impl.statuses_alone(instance_ids)
        return {iid: _or_error(self._impl.status, iid) for iid in instance_ids}

    def holds_all(self, instance_ids: Sequence[str]) -> dict[str, bool | Exception]:
        """`ReadsTogether`: chain, the instances looked at together (see
        `ChainStrategy.holds_all`); state-machine, one `holds` after another."""
        if isinstance(self._impl, ChainStrategy):
            return self._impl.holds_all(instance_ids)
        return {iid: _or_error(self._impl.holds, iid) for iid in instance_ids}

    def histories(self, instance_ids: Sequence[str],
                  ) -> dict[str, list[HistoryEvent] | Exception]:
        """`ReadsTogether`: chain, read together (pipelined); state-machine, one
        `history` after another."""
        if isinstance(self._impl, ChainStrategy):
            return self._impl.histories(instance_ids)
        return {iid: _or_error(self._impl.history, iid) for iid in instance_ids}

    def held_until(self, instance_id: str) -> HeldUp | None:
        """chain: when only a dead worker's unacknowledged messages hold it (see
        `ChainStrategy.held_until`); state-machine: when it waits at a wait whose
        decision no message can bring before the wait expires (see
        `StateMachineStrategy.held_until`)."""
        return self._impl.held_until(instance_id)

    def deploy(self, flow: Flow, previous: Flow | None = None) -> None:
        """Workers started from now on load `flow`. Celery has no versioning guard, so
        `previous` cannot be honoured: in-flight tasks meet the new code as it is."""
        if previous is not None:
            raise EngineError("Celery has no versioning guard; deploy without one")
        self.flow = flow

    def server_versions(self) -> dict[str, str]:
        return self._broker.server_versions()

    def close(self) -> None:
        close_app(self._app)
        self._broker.close()
        self._resources.close()
