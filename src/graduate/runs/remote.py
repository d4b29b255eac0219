"""Registered workers on other hosts, driven through the fleet ledger (`--workers external`).

`graduate worker` registers each worker, with its host, process group, pool and settings,
in the PostgreSQL ledger, and its agent takes fault commands from there. A run on
registered workers waits, within its one deadline, for enough of them to be alive for
its engine and flow (or app); each act of a fault is a command, and the timeline gets
what the agent recorded of it, at the time the agent did it. graduate never stops these
workers: it did not start them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from graduate.adapters import describe
from graduate.db import is_postgres
from graduate.errors import ConfigError, ServiceError
from graduate.fleet import FLEET_EVENTS, CommandKind, CommandResult, CommandState, FleetLedger
from graduate.fleet.ledger import RegisteredWorker
from graduate.flow import flow_to_dict
from graduate.redaction import redact_url
from graduate.runs.supervisor import WORKER_EXITED, WORKER_FORCED, WORKER_STARTED
from graduate.runs.timeline import Timeline
from graduate.runs.workers import ActNotCarriedOut, Worker

if TYPE_CHECKING:
    from graduate.config import Settings
    from graduate.flow import Flow
    from graduate.ledger import PointReached
    from graduate.runner import RunOptions

REMOTE_EVENTS = FLEET_EVENTS
# How often the registry is read while the run waits for its workers.
REGISTRY_POLL = 0.5
# A command not taken by then expires: its worker's agent is dead or busy.
COMMAND_EXPIRY = 30.0


def check_external(settings: Settings, options: RunOptions) -> None:
    """Refuse, before anything starts, a run on registered workers that cannot reach
    them: the ledger must be the PostgreSQL database they share, and every service the
    engine needs must be named (the workers connect to those, not to one graduate
    would start here)."""
    ledger = settings.ledger
    if not is_postgres(ledger):
        raise ConfigError(f"--workers external needs the ledger on the PostgreSQL database "
                          f"the registered workers use, not {redact_url(ledger)!r}: give "
                          "--ledger-url postgresql://user@host/db (or GRADUATE_LEDGER_URL, or "
                          "ledger_url in [tool.graduate])")
    engine = describe(options.engine)
    missing = []
    if engine.needs_server and not settings.temporal_address:
        missing.append("the Temporal address (--temporal-address or "
                       "GRADUATE_TEMPORAL_ADDRESS)")
    if engine.needs_broker:
        if not settings.broker_url:
            missing.append("the broker URL (--broker-url or GRADUATE_BROKER_URL)")
        elif not settings.broker_url.startswith(("redis://", "rediss://")) and not (
                settings.result_backend_url):
            missing.append("the Redis result backend (--result-backend-url or "
                           "GRADUATE_RESULT_BACKEND_URL)")
    if engine.keeps_app_tables and not (settings.app_db_url
                                        and is_postgres(settings.app_db_url)):
        missing.append(f"the PostgreSQL database of {engine.name}'s own tables, which the "
                       "workers write and the harness reads (--app-db-url "
                       "postgresql://... or GRADUATE_APP_DB_URL)")
    if missing:
        raise ConfigError("--workers external runs against the services the registered "
                          f"workers use; name {' and '.join(missing)}")
    if not options.time_scale.real_time:
        raise ConfigError(f"--time-scale {options.time_scale.label}: registered workers run "
                          "the flow they were started with; leave --time-scale out with "
                          "--workers external")


class RegisteredWorkers:
    """The registered workers of one run's engine and flow (or app), acted on through
    fault commands in the fleet ledger. Implements `graduate.runs.workers.WorkerControl`."""

    owned = False

    def __init__(self, fleet: FleetLedger, registered: list[RegisteredWorker], *,
                 run_id: str, timeline: Timeline, deadline: float) -> None:
        self.fleet = fleet
        self.registered = {w.worker_id: w for w in registered}
        self.run_id = run_id
        self.timeline = timeline
        self.deadline = deadline
        self._sequence: Counter[tuple[str, CommandKind]] = Counter()
        self._events_seen = 0
        self._stopped: set[str] = set()  # awaited after a stop: their exit is recorded
        self._carried_out = 0  # commands of the run its agents carried out

    @classmethod
    def await_registered(cls, url: str, *, engine: str, target: str, count: int,
                         run_id: str, timeline: Timeline, deadline: float,
                         ) -> RegisteredWorkers:
        """Wait until `count` workers of `engine` running `target` are alive in one pool
        (a ServiceError, saying how many there are, when the run's deadline passes)."""
        fleet = FleetLedger(url)
        try:
            while True:
                alive = fleet.workers(engine=engine, target=target)
                pools = Counter(w.pool for w in alive)
                pool, found = pools.most_common(1)[0] if pools else ("", 0)
                if found >= count:
                    chosen = [w for w in alive if w.pool == pool]
                    return cls(fleet, chosen, run_id=run_id, timeline=timeline,
                               deadline=deadline)
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"{found} registered worker(s) of {engine} for {target!r} are alive "
                        f"in one pool, and the run needs {count}; start more with `graduate "
                        f"worker {target} --engine {engine}` against the ledger at "
                        f"{redact_url(url)} (the run waited until its deadline)")
                time.sleep(REGISTRY_POLL)
        except BaseException:
            fleet.close()
            raise

    @property
    def pool(self) -> str:
        """The name their queues are named by: the run's engine sends work there."""
        return next(iter(self.registered.values())).pool

    @property
    def settings(self) -> Mapping[str, Any]:
        """The engine settings the workers run with (every one registered the same, or
        a ConfigError: a run is judged under one set of settings)."""
        seen = {repr(sorted(w.settings.items())): w for w in self.registered.values()}
        if len(seen) > 1:
            ids = ", ".join(f"{w.worker_id}: {dict(w.settings)}" for w in seen.values())
            raise ConfigError(f"the registered workers run with different settings ({ids}); "
                              "start them all with the same --profile")
        return dict(next(iter(self.registered.values())).settings)

    # ------------------------------------------------------------------ WorkerControl

    def current(self) -> list[Worker]:
        return [_worker(w) for w in self._refreshed()]

    def holding(self, reached: PointReached | None) -> Worker:
        workers = self._refreshed()
        if reached is not None:
            for worker in workers:
                if reached.group is not None and (worker.host, worker.group_pid) == (
                        reached.host, reached.group):
                    return _worker(worker)
            for worker in workers:
                if worker.pid == reached.pid and worker.host in ("", reached.host):
                    return _worker(worker)
        return _worker(workers[0])

    def kill(self, worker: Worker) -> float:
        return self._act(worker, CommandKind.KILL_GROUP).at or time.time()

    def stop(self, worker: Worker, *, cold: bool) -> float:
        kind = CommandKind.STOP_COLD if cold else CommandKind.STOP_WARM
        return self._act(worker, kind).at or time.time()

    def kill_child(self, worker: Worker, pid: int) -> float | None:
        if pid == worker.pid:
            return None  # the worker runs its steps in its main process
        result = self._act(worker, CommandKind.KILL_POOL_CHILD, {"pid": pid})
        return result.at if result.observed.get("killed") else None

    def await_exit(self, worker: Worker) -> None:
        # The agent waits for the exit before it restarts the worker, and says how it
        # went (`replace`): the harness holds no process here to wait for.
        self._stopped.add(worker.name)

    def replace(self, worker: Worker, delay: float) -> Worker:
        result = self._act(worker, CommandKind.RESTART_AFTER, {"seconds": delay})
        return self._restarted(worker, result)

    def redeploy(self, flow: Flow, previous: Flow | None, delay: float) -> None:
        for worker in self.current():
            self._stopped.add(worker.name)
            result = self._act(worker, CommandKind.DEPLOY, {
                "flow": flow_to_dict(flow),
                "previous": flow_to_dict(previous) if previous is not None else None,
                "seconds": delay})
            self._restarted(worker, result, version=flow.version)

    def start(self, count: int) -> list[Worker]:
        raise ConfigError("graduate starts no workers beside registered workers it did not "
                          "start; start more with `graduate worker`")

    def revive(self, delay: float) -> None:
        return None  # each worker's agent is its supervisor; graduate did not start it

    def stop_all(self) -> None:
        self._sync_events()
        self.fleet.close()

    # ------------------------------------------------------------------ commands

    def _act(self, worker: Worker, kind: CommandKind,
             args: Mapping[str, object] | None = None) -> CommandResult:
        """Issue one command to `worker`'s agent and wait for what became of it;
        ActNotCarriedOut when it failed or expired (the timeline says why)."""
        key = (worker.name, kind)
        self._sequence[key] += 1
        command = self.fleet.issue(worker.name, kind, run_id=self.run_id, args=args,
                                   expires_in=COMMAND_EXPIRY, sequence=self._sequence[key])
        result = self.fleet.await_command(command.command_id, self.deadline)
        self._sync_events()
        if result.state is not CommandState.DONE:
            raise ActNotCarriedOut(f"the agent of worker {worker.name} did not carry out "
                                   f"{kind} ({result.state}): "
                                   f"{result.detail or 'it did not answer in time'}",
                                   after=self._carried_out)
        self._carried_out += 1
        return result

    def _restarted(self, worker: Worker, result: CommandResult,
                   version: int | None = None) -> Worker:
        seen = result.observed
        if worker.name in self._stopped:
            self._stopped.discard(worker.name)
            exited_at = _number(seen.get("exited_at")) or result.at
            if seen.get("forced"):
                self.timeline.add(WORKER_FORCED, f"{worker.name} still ran after SIGTERM: "
                                                 "SIGKILL, by its agent", at=exited_at)
            else:
                self.timeline.add(WORKER_EXITED, f"{worker.name} with code "
                                                 f"{seen.get('exit_code')}", at=exited_at)
        on = "" if version is None else f" on v{version}"
        self.timeline.add(WORKER_STARTED, f"{worker.name} (pid {seen.get('pid')}) replaces "
                                          f"pid {worker.pid}{on}, started by its agent",
                          at=_number(seen.get("started_at")) or result.at)
        fresh = self.fleet.worker(worker.name)
        if fresh is not None:
            self.registered[fresh.worker_id] = fresh
            return _worker(fresh)
        return worker

    def _refreshed(self) -> list[RegisteredWorker]:
        for worker_id in list(self.registered):
            fresh = self.fleet.worker(worker_id)
            if fresh is not None:
                self.registered[worker_id] = fresh
        return list(self.registered.values())

    def _sync_events(self) -> None:
        """The commands' own events (issued, taken, done, expired), as the fleet ledger
        recorded them, into the run's timeline."""
        events = self.fleet.events(self.run_id)
        for event in events[self._events_seen:]:
            self.timeline.add(event.kind, event.detail, at=event.at)
        self._events_seen = len(events)


def _worker(registered: RegisteredWorker) -> Worker:
    return Worker(registered.worker_id, registered.pid, registered.group_pid, registered.host)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
