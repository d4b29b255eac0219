"""The fleet's record in the ledger database: which workers run where, and the fault
commands the harness sends them.

Workers on other hosts share nothing with the harness but the services, so the registry
and the commands live in the PostgreSQL ledger. Times come from the database's clock,
the one clock every host sees.

A command goes `pending` -> `taken` -> `done` or `failed`; or `pending` -> `expired`
when no agent took it in time (its worker died, or the harness stopped waiting). Each
state change is one conditional UPDATE, so two parties never both win it:
- An agent registers under a worker ID with a new *epoch*; every write an agent makes
  names its epoch, and one from an older epoch changes nothing (`Fenced`). A command an
  older epoch took but never finished is marked failed when the new epoch registers: it
  may have half happened, so it is never run again.
- A command is issued once per (run, worker, kind, sequence): issuing it again returns
  the same command, so a harness that retries does not fire a fault twice.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from graduate.db import Database, Row
from graduate.errors import ConfigError, GraduateError
from graduate.redaction import redact_url, redact_value
from graduate.runs.timeline import EventKind

# How often `await_command` looks at the command.
POLL_INTERVAL = 0.1
# How often an agent sends its heartbeat; one silent for DEAD_AFTER is taken for dead.
HEARTBEAT_INTERVAL = 1.0
DEAD_AFTER = 3 * HEARTBEAT_INTERVAL
# By default the harness offers only workers heard from this recently.
ALIVE_WITHIN = 10.0
_NOW = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"


class CommandKind(StrEnum):
    """What the harness asks an agent to do to its worker."""

    KILL_GROUP = "kill-group"  # SIGKILL to the worker's whole process group
    KILL_POOL_CHILD = "kill-pool-child"  # SIGKILL to one pool child (args: pid, optional)
    STOP_WARM = "stop-warm"  # SIGTERM: the worker finishes what it holds, then exits
    # SIGQUIT: Celery's cold shutdown does not wait for what it holds (lost when
    # acknowledged early, given back to the broker at once when acknowledged late)
    STOP_COLD = "stop-cold"
    RESTART_AFTER = "restart-after"  # start the worker again (args: seconds to wait first)
    DEPLOY = "deploy"  # replace the worker by a changed version (args: change, versioned)


class CommandState(StrEnum):
    PENDING = "pending"  # written by the harness, no agent has taken it
    TAKEN = "taken"  # an agent is carrying it out
    DONE = "done"  # carried out; `observed` says what the agent saw
    FAILED = "failed"  # the agent could not carry it out, or was stopped while it did
    EXPIRED = "expired"  # never taken: its worker was gone or the harness gave up

    @property
    def finished(self) -> bool:
        return self in (CommandState.DONE, CommandState.FAILED, CommandState.EXPIRED)


class Fenced(GraduateError):
    """An agent wrote with an epoch that a newer agent of the same worker has replaced."""


@dataclass(frozen=True)
class RegisteredWorker:
    """One worker as its agent registered it. `pid` and `group_pid` are the worker
    process's (they change when the agent restarts it); `agent_pid` is `graduate worker`'s."""

    worker_id: str
    engine: str
    target: str  # the flow or app it runs
    host: str
    pid: int
    group_pid: int
    code_version: str
    epoch: int
    started_at: float  # epoch seconds, the database's clock
    heartbeat_at: float
    agent_pid: int = 0
    # The run ID its queues are named by (`graduate worker --pool`): a harness reaches
    # these workers through an engine client opened with the same run ID.
    pool: str = ""
    flow_version: int = 0  # the version of the flow its worker loaded
    settings: Mapping[str, object] = field(default_factory=dict)  # the engine's, effective
    stopped_at: float | None = None


@dataclass(frozen=True)
class Command:
    command_id: str
    worker_id: str
    kind: CommandKind
    run_id: str
    sequence: int
    args: Mapping[str, object]
    issued_at: float
    expires_at: float


@dataclass(frozen=True)
class CommandResult:
    """Where a command stands. `at` is when it reached that state (epoch seconds, the
    database's clock; None while pending); `observed` is what the agent saw (exit signal
    or code, old and new pid)."""

    command_id: str
    worker_id: str
    kind: CommandKind
    state: CommandState
    at: float | None
    observed: Mapping[str, object] = field(default_factory=dict)
    detail: str = ""
    taken_by: str = ""  # host, agent pid and epoch of the agent that took it


@dataclass(frozen=True)
class FleetEvent:
    """One step of a command's life, ready for a run's timeline:
    `timeline.add(event.kind, event.detail, at=event.at)`."""

    at: float  # epoch seconds
    kind: EventKind
    detail: str


COMMAND_ISSUED = EventKind("fleet-command-issued", "fault command written to the ledger",
                           "info")
COMMAND_TAKEN = EventKind("fleet-command-taken", "fault command taken by the worker's agent",
                          "info")
COMMAND_DONE = EventKind("fleet-command-done", "fault carried out by the worker's agent",
                         "fault")
COMMAND_FAILED = EventKind("fleet-command-failed", "fault command failed", "info")
COMMAND_EXPIRED = EventKind("fleet-command-expired", "fault command expired, never run",
                            "info")
FLEET_EVENTS = (COMMAND_ISSUED, COMMAND_TAKEN, COMMAND_DONE, COMMAND_FAILED, COMMAND_EXPIRED)
_FINAL_EVENTS = {CommandState.DONE: COMMAND_DONE, CommandState.FAILED: COMMAND_FAILED,
                 CommandState.EXPIRED: COMMAND_EXPIRED}

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS graduate_fleet_workers (
        worker_id TEXT PRIMARY KEY, engine TEXT NOT NULL, target TEXT NOT NULL,
        host TEXT NOT NULL, pid BIGINT NOT NULL, group_pid BIGINT NOT NULL,
        agent_pid BIGINT NOT NULL, code_version TEXT NOT NULL, pool TEXT NOT NULL,
        flow_version INTEGER NOT NULL, settings TEXT NOT NULL, epoch BIGINT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL, heartbeat_at DOUBLE PRECISION NOT NULL,
        stopped_at DOUBLE PRECISION)""",
    """CREATE TABLE IF NOT EXISTS graduate_fleet_commands (
        command_id TEXT PRIMARY KEY,
        worker_id TEXT NOT NULL REFERENCES graduate_fleet_workers (worker_id),
        kind TEXT NOT NULL, run_id TEXT NOT NULL, sequence INTEGER NOT NULL,
        args TEXT NOT NULL, state TEXT NOT NULL, issued_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL, taken_at DOUBLE PRECISION,
        taken_epoch BIGINT, taken_by TEXT NOT NULL DEFAULT '',
        finished_at DOUBLE PRECISION, observed TEXT NOT NULL DEFAULT '{}',
        detail TEXT NOT NULL DEFAULT '',
        UNIQUE (run_id, worker_id, kind, sequence))""",
    """CREATE INDEX IF NOT EXISTS graduate_fleet_commands_worker
        ON graduate_fleet_commands (worker_id, state)""",
    """CREATE INDEX IF NOT EXISTS graduate_fleet_commands_run
        ON graduate_fleet_commands (run_id)""",
)
_WORKER_COLUMNS = ("worker_id, engine, target, host, pid, group_pid, code_version, epoch, "
                   "started_at, heartbeat_at, agent_pid, pool, flow_version, settings, stopped_at")
_COMMAND_COLUMNS = "command_id, worker_id, kind, run_id, sequence, args, issued_at, expires_at"
_RESULT_COLUMNS = ("command_id, worker_id, kind, state, issued_at, taken_at, finished_at, "
                   "observed, detail, taken_by")


class FleetLedger:
    """The registry of workers and their fault commands, in a PostgreSQL ledger."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.db = Database(url)
        if not self.db.postgres:
            raise ConfigError(
                f"the fleet needs the ledger on PostgreSQL, not {redact_url(url)!r}: workers "
                "on other hosts share it. Give --ledger-url postgresql://user@host/db (or "
                "GRADUATE_LEDGER_URL, or ledger_url in [tool.graduate])")
        self.db.script(_SCHEMA)  # serialised: agents that start together create them

    def close(self) -> None:
        """Close this thread's connection; the next call opens a new one."""
        self.db.close()

    @staticmethod
    def connection_errors() -> tuple[type[Exception], ...]:
        """What a call raises when the database went away under an open connection (a
        restart, a network cut): worth a new connection and another try."""
        import psycopg

        return (GraduateError, psycopg.OperationalError, psycopg.InterfaceError)

    def now(self) -> float:
        """The database's clock, in epoch seconds."""
        return float(self.db.query(f"SELECT {_NOW}")[0][0])

    # ------------------------------------------------------------------ the agent's side

    def register(self, engine: str, target: str, host: str, pid: int, code_version: str,
                 group_pid: int, *, worker_id: str | None = None, agent_pid: int = 0,
                 pool: str = "", flow_version: int = 0,
                 settings: Mapping[str, object] | None = None) -> RegisteredWorker:
        """Register a worker (again) under `worker_id` (by default host/engine/target)
        with a new epoch. A command an earlier epoch took and never finished is marked
        failed: it may have half happened, so no agent runs it again."""
        worker_id = worker_id or f"{host}/{engine}/{target}"
        with self.db.transaction():
            rows = self.db.query(
                f"INSERT INTO graduate_fleet_workers ({_WORKER_COLUMNS}) "
                f"VALUES (?,?,?,?,?,?,?,1,{_NOW},{_NOW},?,?,?,?,NULL) "
                "ON CONFLICT (worker_id) DO UPDATE SET engine = EXCLUDED.engine, "
                "target = EXCLUDED.target, host = EXCLUDED.host, pid = EXCLUDED.pid, "
                "group_pid = EXCLUDED.group_pid, code_version = EXCLUDED.code_version, "
                "epoch = graduate_fleet_workers.epoch + 1, started_at = EXCLUDED.started_at, "
                "heartbeat_at = EXCLUDED.heartbeat_at, agent_pid = EXCLUDED.agent_pid, "
                "pool = EXCLUDED.pool, flow_version = EXCLUDED.flow_version, "
                "settings = EXCLUDED.settings, stopped_at = NULL "
                f"RETURNING {_WORKER_COLUMNS}",
                [worker_id, engine, target, host, pid, group_pid, code_version, agent_pid,
                 pool, flow_version, json.dumps(redact_value(dict(settings or {})))])
            worker = _worker(rows[0])
            self.db.execute(
                f"UPDATE graduate_fleet_commands SET state = ?, finished_at = {_NOW}, "
                "detail = 'the agent that took it (' || taken_by || ') stopped before it "
                "reported; not run again, since it may have half happened' "
                "WHERE worker_id = ? AND state = ? AND taken_epoch < ?",
                [CommandState.FAILED, worker_id, CommandState.TAKEN, worker.epoch])
        return worker

    def heartbeat(self, worker_id: str, *, epoch: int | None = None) -> None:
        """The worker's agent is alive. With `epoch`, Fenced if a newer agent registered."""
        fence, params = ("", [worker_id]) if epoch is None else (" AND epoch = ?",
                                                                 [worker_id, epoch])
        changed = self.db.execute(f"UPDATE graduate_fleet_workers SET heartbeat_at = {_NOW} "
                                  f"WHERE worker_id = ?{fence}", params)
        if not changed:
            self._fenced(worker_id, epoch)

    def update_process(self, worker: RegisteredWorker, pid: int, group_pid: int,
                       code_version: str | None = None,
                       flow_version: int | None = None) -> RegisteredWorker:
        """The agent started its worker again (after a kill, a stop, a deploy)."""
        rows = self.db.query(
            "UPDATE graduate_fleet_workers SET pid = ?, group_pid = ?, "
            "code_version = COALESCE(?, code_version), "
            f"flow_version = COALESCE(?, flow_version), heartbeat_at = {_NOW} "
            f"WHERE worker_id = ? AND epoch = ? RETURNING {_WORKER_COLUMNS}",
            [pid, group_pid, code_version, flow_version, worker.worker_id, worker.epoch])
        if not rows:
            self._fenced(worker.worker_id, worker.epoch)
        return _worker(rows[0])

    def deregister(self, worker: RegisteredWorker) -> None:
        """The worker stopped for good (its agent exits): it is no longer offered."""
        self.db.execute(f"UPDATE graduate_fleet_workers SET stopped_at = {_NOW} "
                        "WHERE worker_id = ? AND epoch = ?", [worker.worker_id, worker.epoch])

    def take(self, worker: RegisteredWorker) -> Command | None:
        """The oldest pending command for `worker`, now taken by this agent's epoch; None
        when there is none. Commands past their expiry are marked expired, never taken."""
        self.expire_due(worker.worker_id)
        taken_by = f"{worker.host} agent pid {worker.agent_pid} epoch {worker.epoch}"
        rows = self.db.query(
            f"UPDATE graduate_fleet_commands SET state = ?, taken_at = {_NOW}, "
            "taken_epoch = ?, taken_by = ? WHERE command_id = ("
            "  SELECT c.command_id FROM graduate_fleet_commands c "
            "  JOIN graduate_fleet_workers w ON w.worker_id = c.worker_id "
            f"  WHERE c.worker_id = ? AND c.state = ? AND c.expires_at > {_NOW} "
            "  AND w.epoch = ? ORDER BY c.issued_at, c.command_id LIMIT 1 "
            "  FOR UPDATE OF c SKIP LOCKED) "
            f"AND state = ? RETURNING {_COMMAND_COLUMNS}",
            [CommandState.TAKEN, worker.epoch, taken_by, worker.worker_id,
             CommandState.PENDING, worker.epoch, CommandState.PENDING])
        if not rows:
            self.heartbeat(worker.worker_id, epoch=worker.epoch)  # Fenced if replaced
            return None
        return _command(rows[0])

    def finish(self, worker: RegisteredWorker, command: Command, state: CommandState,
               observed: Mapping[str, object], detail: str) -> None:
        """Record what became of a command this agent took; Fenced if a newer agent
        registered meanwhile (its registration has already marked the command failed)."""
        if state not in (CommandState.DONE, CommandState.FAILED):
            raise ValueError(f"an agent finishes a command as done or failed, not {state}")
        changed = self.db.execute(
            f"UPDATE graduate_fleet_commands SET state = ?, finished_at = {_NOW}, "
            "observed = ?, detail = ? WHERE command_id = ? AND state = ? AND taken_epoch = ? "
            "AND EXISTS (SELECT 1 FROM graduate_fleet_workers WHERE worker_id = ? "
            "AND epoch = ?)",
            [state, json.dumps(redact_value(dict(observed))), detail, command.command_id,
             CommandState.TAKEN, worker.epoch, worker.worker_id, worker.epoch])
        # Unchanged but recorded: a retry after the database had taken the first try.
        if not changed and not self.db.query(
                "SELECT 1 FROM graduate_fleet_commands WHERE command_id = ? AND state = ? "
                "AND taken_epoch = ?", [command.command_id, state, worker.epoch]):
            self._fenced(worker.worker_id, worker.epoch)

    def _fenced(self, worker_id: str, epoch: int | None) -> None:
        current = self.worker(worker_id)
        if current is None:
            raise ConfigError(f"no worker {worker_id!r} is registered in the ledger at "
                              f"{redact_url(self.url)}")
        raise Fenced(f"worker {worker_id!r} was registered again (epoch {current.epoch}, "
                     f"agent pid {current.agent_pid} on {current.host}) after this agent's "
                     f"epoch {epoch}: this agent stops, the newer one carries on")

    # ------------------------------------------------------------------ the harness's side

    def worker(self, worker_id: str) -> RegisteredWorker | None:
        rows = self.db.query(f"SELECT {_WORKER_COLUMNS} FROM graduate_fleet_workers "
                             "WHERE worker_id = ?", [worker_id])
        return _worker(rows[0]) if rows else None

    def workers(self, *, engine: str | None = None, target: str | None = None,
                alive_within: float = ALIVE_WITHIN) -> list[RegisteredWorker]:
        """Registered workers whose agent sent a heartbeat in the last `alive_within`
        seconds and has not stopped, optionally of one engine and flow or app."""
        where = [f"stopped_at IS NULL AND heartbeat_at >= {_NOW} - ?"]
        params: list[Any] = [alive_within]
        for column, value in (("engine", engine), ("target", target)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        rows = self.db.query(f"SELECT {_WORKER_COLUMNS} FROM graduate_fleet_workers WHERE "
                             f"{' AND '.join(where)} ORDER BY worker_id", params)
        return [_worker(row) for row in rows]

    def issue(self, worker_id: str, kind: CommandKind, *, run_id: str,
              args: Mapping[str, object] | None = None, expires_in: float = 30.0,
              sequence: int = 0) -> Command:
        """Write a command for `worker_id`'s agent, to be taken within `expires_in`
        seconds. Issuing the same (run, worker, kind, sequence) again returns the command
        already written: a retrying harness fires a fault once."""
        if self.worker(worker_id) is None:
            raise ConfigError(f"no worker {worker_id!r} is registered in the ledger at "
                              f"{redact_url(self.url)}; start one with `graduate worker`")
        if expires_in <= 0:
            raise ConfigError(f"a command's expires_in must be positive, not {expires_in}")
        self.db.execute(
            f"INSERT INTO graduate_fleet_commands ({_COMMAND_COLUMNS}, state) "
            f"VALUES (?,?,?,?,?,?,{_NOW},{_NOW} + ?,?) "
            "ON CONFLICT (run_id, worker_id, kind, sequence) DO NOTHING",
            [uuid.uuid4().hex, worker_id, CommandKind(kind), run_id, sequence,
             json.dumps(dict(args or {})), expires_in, CommandState.PENDING])
        rows = self.db.query(
            f"SELECT {_COMMAND_COLUMNS} FROM graduate_fleet_commands WHERE run_id = ? AND "
            "worker_id = ? AND kind = ? AND sequence = ?", [run_id, worker_id, kind, sequence])
        return _command(rows[0])

    def command(self, command_id: str) -> CommandResult:
        rows = self.db.query(f"SELECT {_RESULT_COLUMNS} FROM graduate_fleet_commands "
                             "WHERE command_id = ?", [command_id])
        if not rows:
            raise ConfigError(f"no fleet command {command_id!r} in the ledger at "
                              f"{redact_url(self.url)}")
        return _result(rows[0])

    def await_command(self, command_id: str, deadline: float) -> CommandResult:
        """Wait until the command is done, failed or expired, or `deadline` passes
        (`time.monotonic()`, as every deadline in graduate). A command still pending
        then is expired, so that no agent carries it out after the harness moved on; one
        taken is returned as taken (its agent is still at it)."""
        while True:
            self.expire_due(worker_id=None, command_id=command_id)
            result = self.command(command_id)
            if result.state.finished:
                return result
            if time.monotonic() >= deadline:
                if result.state is CommandState.PENDING:
                    self._expire(command_id, "the harness stopped waiting for it (its "
                                             "deadline passed) before any agent took it")
                    result = self.command(command_id)
                return result
            time.sleep(POLL_INTERVAL)

    def expire_due(self, worker_id: str | None, *, command_id: str | None = None) -> None:
        """Mark expired every pending command (of a worker, or one command) whose
        expiry passed, saying why: its worker died, stopped, or its agent was busy."""
        column, value = ("command_id", command_id) if command_id else ("worker_id", worker_id)
        rows = self.db.query(
            f"SELECT c.command_id, c.expires_at, w.heartbeat_at, w.stopped_at, {_NOW} "
            "FROM graduate_fleet_commands c JOIN graduate_fleet_workers w "
            f"ON w.worker_id = c.worker_id WHERE c.{column} = ? AND c.state = ? "
            f"AND c.expires_at <= {_NOW}", [value, CommandState.PENDING])
        for found, expires_at, heartbeat_at, stopped_at, now in rows:
            silent = expires_at - heartbeat_at
            if stopped_at is not None and stopped_at <= expires_at:
                why = "its worker had stopped (its agent exited) before the command expired"
            elif silent > DEAD_AFTER:
                why = (f"its worker was dead: its agent's last heartbeat came {silent:.1f}s "
                       "before the command expired")
            else:
                why = ("its worker's agent was alive but busy (carrying out an earlier "
                       "command) until it expired")
            self._expire(found, f"not taken within its expiry; {why}; "
                                f"{now - expires_at:.1f}s past expiry when seen")

    def _expire(self, command_id: str, detail: str) -> None:
        self.db.execute(f"UPDATE graduate_fleet_commands SET state = ?, finished_at = {_NOW}, "
                        "detail = ? WHERE command_id = ? AND state = ?",
                        [CommandState.EXPIRED, detail, command_id, CommandState.PENDING])

    def results(self, run_id: str) -> list[CommandResult]:
        """Every command of a run, in the order issued."""
        rows = self.db.query(f"SELECT {_RESULT_COLUMNS} FROM graduate_fleet_commands "
                             "WHERE run_id = ? ORDER BY issued_at, command_id", [run_id])
        return [_result(row) for row in rows]

    def events(self, run_id: str) -> list[FleetEvent]:
        """Each command of a run as timeline events: issued, taken, and how it ended
        (done with what the agent saw, failed, or expired with why), in time order."""
        events: list[FleetEvent] = []
        rows = self.db.query(f"SELECT {_RESULT_COLUMNS} FROM graduate_fleet_commands "
                             "WHERE run_id = ? ORDER BY issued_at, command_id", [run_id])
        for row in rows:
            result = _result(row)
            what = f"{result.kind} to worker {result.worker_id}"
            issued_at, taken_at = float(row[4]), row[5]
            events.append(FleetEvent(issued_at, COMMAND_ISSUED, what))
            if taken_at is not None:
                events.append(FleetEvent(float(taken_at), COMMAND_TAKEN,
                                         f"{what}, by {result.taken_by}"))
            if result.state.finished and result.at is not None:
                events.append(FleetEvent(result.at, _FINAL_EVENTS[result.state],
                                         f"{what}: {result.detail}{_observed(result)}"))
        return sorted(events, key=lambda event: event.at)


def _observed(result: CommandResult) -> str:
    if not result.observed:
        return ""
    seen = ", ".join(f"{key} {value}" for key, value in result.observed.items())
    return f" (observed: {seen})"


def _worker(row: Row) -> RegisteredWorker:
    (worker_id, engine, target, host, pid, group_pid, code_version, epoch, started_at,
     heartbeat_at, agent_pid, pool, flow_version, settings, stopped_at) = row
    return RegisteredWorker(
        worker_id=worker_id, engine=engine, target=target, host=host, pid=int(pid),
        group_pid=int(group_pid), code_version=code_version, epoch=int(epoch),
        started_at=float(started_at), heartbeat_at=float(heartbeat_at),
        agent_pid=int(agent_pid), pool=pool, flow_version=int(flow_version),
        settings=json.loads(settings),
        stopped_at=None if stopped_at is None else float(stopped_at))


def _command(row: Row) -> Command:
    command_id, worker_id, kind, run_id, sequence, args, issued_at, expires_at = row
    return Command(command_id=command_id, worker_id=worker_id, kind=CommandKind(kind),
                   run_id=run_id, sequence=int(sequence), args=json.loads(args),
                   issued_at=float(issued_at), expires_at=float(expires_at))


def _result(row: Sequence[Any]) -> CommandResult:
    (command_id, worker_id, kind, state, _issued_at, taken_at, finished_at, observed, detail,
     taken_by) = row
    state = CommandState(state)
    at = finished_at if state.finished else taken_at
    return CommandResult(command_id=command_id, worker_id=worker_id, kind=CommandKind(kind),
                         state=state, at=None if at is None else float(at),
                         observed=json.loads(observed), detail=detail, taken_by=taken_by)
