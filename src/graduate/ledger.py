"""The ledger: every effect call, and the simulated external systems that make them.

The ledger is the ground truth of graduate. A simulated system records each call
before it answers, whatever the engine does next, so a duplicate stays visible even
when the system's idempotency check absorbs it. It also holds the register of
started instances and the failures a test injects into a system.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from graduate.db import Database, Row, in_dialect
from graduate.errors import ConfigError, PermanentEffectError, TransientEffectError
from graduate.flow import Flow, InstanceInput, InstanceRequest, Step, SystemSpec, declared_name
from graduate.redaction import redact_url

EffectKind = Literal["effect", "compensation"]
FailureMode = Literal["transient", "permanent"]
PausePoint = Literal["before-effect", "after-effect"]
PAUSE_POLL = 0.05
# An armed step never pauses longer than this, so a harness that died cannot wedge a worker.
MAX_PAUSE = 600.0
# How often a working step heartbeats: well inside any heartbeat timeout a profile sets
# (the SDK sends at most one per 80 % of it, so more calls cost nothing).
WORK_HEARTBEAT = 0.2
# Instance IDs a query of `reached_by` (SQLite allows 999 parameters a statement before 3.32).
REACHED_CHUNK = 500


class Outcome(StrEnum):
    """What one call to an external system did."""

    APPLIED = "applied"  # the system changed the world
    ABSORBED = "absorbed"  # a repeat of an applied key that the system ignored
    TRANSIENT_ERROR = "transient_error"  # failed; a retry may succeed
    PERMANENT_ERROR = "permanent_error"  # refused for good
    ERROR = "error"  # an application's own call raised (graduate.effect); see error_type

    @property
    def failed(self) -> bool:
        return self in (Outcome.TRANSIENT_ERROR, Outcome.PERMANENT_ERROR, Outcome.ERROR)


@dataclass(frozen=True)
class InstanceRecord:
    """One started instance, as registered before the engine was asked to start it."""

    instance_id: str
    run_id: str
    flow: str
    flow_source: str
    engine: str
    tenant_id: str
    entity_id: str
    date: str
    correlation_id: str
    trace_id: str
    started_at: float
    # The instance's input (see `InstanceRequest.input`); () for an instance of a flow
    # without inputs, or one registered before inputs (the flow's defaults).
    input: InstanceInput = ()

    @property
    def request(self) -> InstanceRequest:
        return InstanceRequest(
            instance_id=self.instance_id, run_id=self.run_id, tenant_id=self.tenant_id,
            entity_id=self.entity_id, date=self.date, correlation_id=self.correlation_id,
            trace_id=self.trace_id, input=self.input,
        )


@dataclass(frozen=True)
class PointReached:
    """An armed step that reached its fault point: which process holds it, and when.
    (The harness also describes an instance parked at a wait this way: `during-wait`.)"""

    instance_id: str
    step: str
    point: PausePoint | Literal["during-wait"]
    pid: int
    at: float
    # Where that process runs: its host and process group, so that a harness driving
    # workers on other hosts knows which registered worker holds the step.
    host: str = ""
    group: int | None = None
    # The expansion of a `for_each` step that got there (`grant_access[acme]` for a
    # point armed at `grant_access`); '' when the armed step itself did.
    expansion: str = ""


@dataclass(frozen=True)
class EffectCall:
    """Who makes one call to an external system, with which key and which IDs.

    `instance_id` is empty when the caller's engine context named no instance (an
    application's task whose correlation header was lost): the call is still recorded.
    """

    run_id: str
    flow: str
    instance_id: str
    step: str
    effect: str
    kind: EffectKind
    attempt: int
    idempotency_key: str
    correlation_id: str
    trace_id: str
    engine: str


@dataclass(frozen=True)
class EffectRecord:
    """One call to an external system."""

    id: int
    run_id: str
    flow: str
    instance_id: str
    step: str
    effect: str
    kind: EffectKind
    attempt: int
    idempotency_key: str
    correlation_id: str
    trace_id: str
    engine: str
    worker_pid: int
    started_at: float
    finished_at: float
    outcome: Outcome
    error_type: str = ""  # the exception an application's call raised (Outcome.ERROR)
    error_message: str = ""


@dataclass(frozen=True)
class Moved:
    """An effect row as a watching harness reads it (`Ledger.moved_since`): whose step,
    and whether the effect landed (its system applied or absorbed it)."""

    instance_id: str
    step: str
    landed: bool


@dataclass(frozen=True)
class AuditRecord:
    """The audit record of one effect call, and what its schema found wrong with it."""

    effect_id: int
    run_id: str
    instance_id: str
    envelope: dict[str, Any]
    problems: tuple[str, ...]


# A column added to a CREATE statement here needs its _ADDED_COLUMNS entry too: a ledger
# made before lacks it, and `Ledger` refuses a table without every column created here.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS instances (
        instance_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, flow TEXT NOT NULL,
        flow_source TEXT NOT NULL, engine TEXT NOT NULL, tenant_id TEXT NOT NULL,
        entity_id TEXT NOT NULL, date TEXT NOT NULL, correlation_id TEXT NOT NULL,
        trace_id TEXT NOT NULL, started_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS effects (
        id {id}, run_id TEXT NOT NULL, flow TEXT NOT NULL, instance_id TEXT NOT NULL,
        step TEXT NOT NULL, effect TEXT NOT NULL, kind TEXT NOT NULL, attempt INTEGER NOT NULL,
        idempotency_key TEXT NOT NULL, correlation_id TEXT NOT NULL, trace_id TEXT NOT NULL,
        engine TEXT NOT NULL, worker_pid INTEGER NOT NULL,
        started_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION NOT NULL,
        outcome TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS effects_instance ON effects (instance_id)",
    "CREATE INDEX IF NOT EXISTS effects_run ON effects (run_id)",
    # What a system that honours idempotency keys remembers: the keys it applied, per
    # operation, as real APIs scope them (a key is unique per endpoint, not per system),
    # so a key without the step (Dealix's `{tenant_id}:{workflow_type}:{entity_id}:
    # {yyyymmdd}`) tells the instance's calls to different operations apart. (Ledgers
    # written before keep an unused `applied_keys` table, scoped per system.)
    # WITHOUT ROWID on SQLite (docs/adr/0030): the key is the table, one b-tree written
    # a call where a rowid table wrote two (its rows and its key's index). Ledgers made
    # before keep their rowid table: the same rows, keys and lookups.
    """CREATE TABLE IF NOT EXISTS operation_keys (
        system TEXT NOT NULL, operation TEXT NOT NULL, idempotency_key TEXT NOT NULL,
        PRIMARY KEY (system, operation, idempotency_key)){without_rowid}""",
    # Deterministic fault points: an armed step marks the row reached (with its pid) and
    # pauses until the harness, having fired its fault, releases it; a point the harness
    # no longer wants is disarmed before any call reaches it.
    """CREATE TABLE IF NOT EXISTS fault_points (
        instance_id TEXT NOT NULL, step TEXT NOT NULL, point TEXT NOT NULL,
        state TEXT NOT NULL, reached_pid INTEGER, reached_at DOUBLE PRECISION,
        released_at DOUBLE PRECISION, PRIMARY KEY (instance_id, step, point))""",
    """CREATE TABLE IF NOT EXISTS injected_failures (
        instance_id TEXT NOT NULL, step TEXT NOT NULL, mode TEXT NOT NULL,
        remaining INTEGER NOT NULL, PRIMARY KEY (instance_id, step))""",
    # One audit record (a JSON envelope) per effect call of an instrumented application.
    """CREATE TABLE IF NOT EXISTS audit_records (
        effect_id BIGINT PRIMARY KEY, run_id TEXT NOT NULL, instance_id TEXT NOT NULL,
        envelope TEXT NOT NULL, problems TEXT NOT NULL)""",
)
# Columns added after the first release: ledgers written before gain them on open.
_ADDED_COLUMNS = (
    ("effects", "error_type", "TEXT NOT NULL DEFAULT ''"),
    ("effects", "error_message", "TEXT NOT NULL DEFAULT ''"),
    ("fault_points", "reached_host", "TEXT NOT NULL DEFAULT ''"),
    ("fault_points", "reached_group", "INTEGER"),
    # An instance's input, as JSON ([[name, [items]]]); '' before inputs existed.
    ("instances", "input", "TEXT NOT NULL DEFAULT ''"),
    # Which expansion of an armed step reached its point (`grant_access[acme]` for a
    # point armed at `grant_access`); '' when the armed step itself did.
    ("fault_points", "reached_step", "TEXT NOT NULL DEFAULT ''"),
)


@functools.cache
def declared_columns() -> dict[str, tuple[str, ...]]:
    """What a ledger's tables hold at the least (the columns of _ADDED_COLUMNS are
    added): each table _SCHEMA creates and its columns, as SQLite reads them back from a
    scratch database, once a process."""
    scratch = sqlite3.connect(":memory:")
    try:
        for statement in _SCHEMA:
            scratch.execute(in_dialect(statement, postgres=False))
        tables = [name for (name,) in scratch.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]
        return {table: tuple(column[1] for column in scratch.execute(
            f"PRAGMA table_info({table})")) for table in tables}
    finally:
        scratch.close()


_EFFECT_COLUMNS = (
    "id, run_id, flow, instance_id, step, effect, kind, attempt, idempotency_key, "
    "correlation_id, trace_id, engine, worker_pid, started_at, finished_at, outcome, "
    "error_type, error_message"
)
# A call's row, in the order of _EFFECT_COLUMNS after its id (`Ledger.record_call`).
_INSERT_EFFECT = (f"INSERT INTO effects ({_EFFECT_COLUMNS.removeprefix('id, ')}) VALUES "
                  f"({', '.join('?' * (_EFFECT_COLUMNS.count(',')))}) RETURNING id")
_INSTANCE_COLUMNS = (
    "instance_id, run_id, flow, flow_source, engine, tenant_id, entity_id, date, "
    "correlation_id, trace_id, started_at, input"
)
ANY_INSTANCE = "*"


class Ledger:
    """The record of every effect call, in SQLite (a path) or PostgreSQL (a URL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.db = Database(url)
        self._refuse_foreign_tables()
        self.db.script(_SCHEMA)
        with self.db.transaction():  # serialised: workers open the same ledger at once
            for table, column, definition in _ADDED_COLUMNS:
                self.db.add_column(table, column, definition)

    def _refuse_foreign_tables(self) -> None:
        """Refuse a database whose tables of the ledger's names lack the ledger's columns
        (another program's, or another schema's), before anything is written into it."""
        for table, declared in declared_columns().items():
            present = self.db.columns(table)
            if missing := [c for c in declared if present and c not in present]:
                self.db.close()
                raise ConfigError(
                    f"{redact_url(self.url)} is not a graduate ledger: table {table} has no "
                    f"column {', '.join(missing)} (another program's database, or a ledger "
                    "of another schema); give another --ledger-url, or move the file away")

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ instances

    def register(self, flow: Flow, request: InstanceRequest, engine: str) -> InstanceRecord:
        """Record an instance before its engine is asked to start it."""
        return self.register_all(flow, [request], engine)[0]

    def register_all(self, flow: Flow, requests: Sequence[InstanceRequest],
                     engine: str) -> list[InstanceRecord]:
        """`register` each, in one transaction (one commit where each would be one)."""
        records = [InstanceRecord(
            instance_id=request.instance_id, run_id=request.run_id, flow=flow.name,
            flow_source=flow.source, engine=engine, tenant_id=request.tenant_id,
            entity_id=request.entity_id, date=request.date,
            correlation_id=request.correlation_id, trace_id=request.trace_id,
            started_at=time.time(), input=request.input,
        ) for request in requests]
        with self.db.transaction():
            for record in records:
                values = [getattr(record, c.strip()) for c in _INSTANCE_COLUMNS.split(",")]
                values[-1] = json.dumps(record.input) if record.input else ""
                self.db.execute(
                    f"INSERT INTO instances ({_INSTANCE_COLUMNS}) VALUES "
                    "(?,?,?,?,?,?,?,?,?,?,?,?)", values)
        return records

    def instance(self, instance_id: str) -> InstanceRecord:
        record = self.find_instance(instance_id)
        if record is None:
            raise ConfigError(f"no instance {instance_id!r} in the ledger at "
                              f"{redact_url(self.url)}; "
                              "`graduate run` prints the instance IDs it starts")
        return record

    def find_instance(self, instance_id: str) -> InstanceRecord | None:
        rows = self.db.query(
            f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE instance_id = ?", [instance_id]
        )
        return _instance_record(rows[0]) if rows else None

    def instances(self, run_id: str) -> list[InstanceRecord]:
        rows = self.db.query(
            f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE run_id = ? ORDER BY instance_id",
            [run_id],
        )
        return [_instance_record(row) for row in rows]

    # ------------------------------------------------------------------ effects

    def key_recorded(self, system: str, effect: str, key: str) -> bool:
        """Whether `system` recorded a call of `effect` (SYSTEM.OPERATION) under idempotency
        `key`: what an engine may ask the external system itself (its record of keys), as
        opposed to the ledger's record of every call, which only the checker reads. A
        system that honours no key keeps no record: always False."""
        return bool(self.db.query(
            "SELECT 1 FROM operation_keys WHERE system = ? AND operation = ? "
            "AND idempotency_key = ?", [system, effect, key]))

    def effects(self, *, instance_id: str | None = None,
                run_id: str | None = None) -> list[EffectRecord]:
        """Effect calls in the order they were recorded, filtered by instance or run."""
        where, params = [], []
        for column, value in (("instance_id", instance_id), ("run_id", run_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self.db.query(f"SELECT {_EFFECT_COLUMNS} FROM effects{clause} ORDER BY id", params)
        return [_effect_record(row) for row in rows]

    def moved_since(self, run_id: str, after: int) -> tuple[list[Moved], int]:
        """Each effect row of the run (a call of a step or a compensation, whatever its
        outcome) recorded after row `after`, in order, and the last row read (the next
        call's `after`): what a harness that watches thousands of instances asks before
        it asks the engine about them, and what tells it that the step before a wait
        landed. (On PostgreSQL a row may commit after one numbered later, and so be
        passed over: a hint of what moved, never the record of it.)"""
        rows = self.db.query(
            "SELECT id, instance_id, step, kind = 'effect' AND outcome IN (?, ?) "
            "FROM effects WHERE run_id = ? AND id > ? ORDER BY id",
            [Outcome.APPLIED.value, Outcome.ABSORBED.value, run_id, after])
        return ([Moved(str(row[1]), str(row[2]), bool(row[3])) for row in rows],
                max((int(row[0]) for row in rows), default=after))

    def inject_failure(self, instance_id: str, step: str, mode: FailureMode,
                       times: int = 1) -> None:
        """Make the system behind `step` fail: `times` transient failures, or for good.

        `instance_id` may be `ANY_INSTANCE` to affect every instance; its transient
        budget of `times` failures is then shared by all instances, first come first.
        """
        if mode not in ("transient", "permanent"):
            raise ConfigError(f"failure mode {mode!r} is not transient or permanent")
        with self.db.transaction():
            self.db.execute("DELETE FROM injected_failures WHERE instance_id = ? AND step = ?",
                            [instance_id, step])
            self.db.execute(
                "INSERT INTO injected_failures (instance_id, step, mode, remaining) "
                "VALUES (?,?,?,?)", [instance_id, step, mode, times],
            )

    def call(self, flow: Flow, request: InstanceRequest, step: Step, *, attempt: int,
             engine: str, kind: EffectKind = "effect",
             heartbeat: Callable[[], None] | None = None) -> Outcome:
        """Perform `step`'s effect (or its compensation) on its simulated system.

        Records the call, then raises TransientEffectError or PermanentEffectError when
        a failure is injected, so engines retry and compensate as they would for real.
        `heartbeat` is called while the call is paused at a fault point and while the
        step does its work (`Step.work`), so an engine that watches heartbeats sees a
        live step, not a dead one. The call's record spans its work: a redelivery that
        ran while the first delivery still worked shows as two overlapping calls.
        """
        effect = step.effect if kind == "effect" else step.compensation
        if effect is None:
            raise ConfigError(f"step {step.name!r} of flow {flow.name!r} has no compensation")
        system = flow.system(effect.split(".", 1)[0])
        key = flow.key_for(step.name, request, compensation=kind == "compensation")
        call = EffectCall(
            run_id=request.run_id, flow=flow.name, instance_id=request.instance_id,
            step=step.name, effect=effect, kind=kind, attempt=attempt, idempotency_key=key,
            correlation_id=request.correlation_id, trace_id=request.trace_id, engine=engine)
        if kind == "effect":
            self.pause_at(call.instance_id, call.step, "before-effect", heartbeat)
        started = time.time()
        if kind == "effect" and step.work:
            _work(step.work, heartbeat)
        # One transaction: a worker killed midway leaves neither the key claimed nor the
        # row written, never a claimed key without the call that claimed it.
        with self.db.transaction():
            outcome = self._decide(request.instance_id, step.name, kind, system, effect, key)
            self.record_call(call, outcome, started_at=started)
        if kind == "effect" and outcome in (Outcome.APPLIED, Outcome.ABSORBED):
            # The classic duplicate window: the world changed, the engine does not know yet.
            self.pause_at(call.instance_id, call.step, "after-effect", heartbeat)
        if outcome is Outcome.TRANSIENT_ERROR:
            raise TransientEffectError(f"{effect} failed transiently (injected)")
        if outcome is Outcome.PERMANENT_ERROR:
            raise PermanentEffectError(f"{effect} refused the call (injected)")
        return outcome

    def record_call(self, call: EffectCall, outcome: Outcome, *, started_at: float,
                    error: BaseException | None = None) -> EffectRecord:
        """Write one call to an external system, made by this process, as it ended.

        The simulated systems record through here, and so does `graduate.effect` for an
        application's own calls (with the exception the call raised, if any).
        """
        values = [call.run_id, call.flow, call.instance_id, call.step, call.effect, call.kind,
                  call.attempt, call.idempotency_key, call.correlation_id, call.trace_id,
                  call.engine, os.getpid(), started_at, time.time(), outcome.value,
                  "" if error is None else type(error).__qualname__,
                  "" if error is None else str(error)]
        rows = self.db.query(_INSERT_EFFECT, values)
        return _effect_record((int(rows[0][0]), *values))

    def transaction(self) -> AbstractContextManager[None]:
        """One write transaction: a call and its audit record land together or not at all."""
        return self.db.transaction()

    # ------------------------------------------------------------------ audit records

    def record_audit(self, effect: EffectRecord, envelope: Mapping[str, Any],
                     problems: Sequence[str]) -> None:
        """Store the audit record of `effect`, with the schema's findings on it."""
        self.db.execute(
            "INSERT INTO audit_records (effect_id, run_id, instance_id, envelope, problems) "
            "VALUES (?,?,?,?,?)",
            [effect.id, effect.run_id, effect.instance_id, json.dumps(dict(envelope)),
             json.dumps(list(problems))])

    def audit_records(self, *, instance_id: str | None = None,
                      run_id: str | None = None) -> list[AuditRecord]:
        """Audit records in the order their calls were recorded, by instance or run."""
        where, params = [], []
        for column, value in (("instance_id", instance_id), ("run_id", run_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self.db.query("SELECT effect_id, run_id, instance_id, envelope, problems FROM "
                             f"audit_records{clause} ORDER BY effect_id", params)
        return [AuditRecord(int(row[0]), row[1], row[2], json.loads(row[3]),
                            tuple(json.loads(row[4]))) for row in rows]

    # ------------------------------------------------------------------ fault points

    def arm(self, instance_id: str, step: str, point: PausePoint) -> None:
        """Make the next call of `step` for `instance_id` pause at `point`, once."""
        with self.db.transaction():
            self.db.execute("DELETE FROM fault_points WHERE instance_id = ? AND step = ? "
                            "AND point = ?", [instance_id, step, point])
            self.db.execute("INSERT INTO fault_points (instance_id, step, point, state) "
                            "VALUES (?, ?, ?, 'armed')", [instance_id, step, point])

    def reached(self, instance_id: str, step: str, point: PausePoint) -> PointReached | None:
        """The process paused at the point, once it got there (a point disarmed before
        any call reached it was never reached)."""
        return self.reached_by([instance_id], step, point).get(instance_id)

    def reached_by(self, instance_ids: Sequence[str], step: str,
                   point: PausePoint) -> dict[str, PointReached]:
        """`reached` of each instance that got there, a query per REACHED_CHUNK IDs (a
        harness watching thousands of instances would otherwise ask one by one)."""
        found: dict[str, PointReached] = {}
        for first in range(0, len(instance_ids), REACHED_CHUNK):
            chunk = list(instance_ids[first:first + REACHED_CHUNK])
            rows = self.db.query(
                "SELECT instance_id, reached_pid, reached_at, reached_host, reached_group, "
                "reached_step FROM fault_points WHERE step = ? AND point = ? AND reached_at "
                f"IS NOT NULL AND instance_id IN ({', '.join('?' * len(chunk))})",
                [step, point, *chunk])
            for instance_id, pid, at, host, group, expansion in rows:
                found[instance_id] = PointReached(instance_id, step, point, int(pid),
                                                  float(at), host or "",
                                                  None if group is None else int(group),
                                                  expansion or "")
        return found

    def release(self, instance_id: str, step: str, point: PausePoint) -> bool:
        """Let a paused step go on, or disarm a point not reached yet; whether a paused
        step was let go (not one let go before)."""
        with self.db.transaction():
            let_go = self.db.execute(
                "UPDATE fault_points SET state = 'released', released_at = ? "
                "WHERE instance_id = ? AND step = ? AND point = ? AND state = 'reached'",
                [time.time(), instance_id, step, point])
            self.db.execute("UPDATE fault_points SET state = 'disarmed' WHERE "
                            "instance_id = ? AND step = ? AND point = ? AND state = 'armed'",
                            [instance_id, step, point])
        return bool(let_go)

    def pause_at(self, instance_id: str, step: str, point: PausePoint,
                 heartbeat: Callable[[], None] | None = None) -> None:
        """If `point` is armed for this step of this instance, mark it reached by this
        process and wait until the harness releases it (after firing its fault). A point
        armed at a `for_each` step is reached by whichever of its expansions
        (`grant_access[acme]`) gets there first, which it records."""
        armed = declared_name(step)
        # Read first: a read takes no write lock, and almost every call finds no point
        # armed. The UPDATE below still claims the point, so one reaches it only once.
        if not self.db.query("SELECT 1 FROM fault_points WHERE instance_id = ? AND step = ? "
                             "AND point = ? AND state = 'armed'", [instance_id, armed, point]):
            return
        hit = self.db.execute(
            "UPDATE fault_points SET state = 'reached', reached_pid = ?, reached_at = ?, "
            "reached_host = ?, reached_group = ?, reached_step = ? WHERE instance_id = ? "
            "AND step = ? AND point = ? AND state = 'armed'",
            [os.getpid(), time.time(), socket.gethostname(), os.getpgid(0),
             "" if armed == step else step, instance_id, armed, point])
        if not hit:
            return
        step = armed
        deadline = time.monotonic() + MAX_PAUSE
        while time.monotonic() < deadline:
            rows = self.db.query("SELECT state FROM fault_points WHERE instance_id = ? AND "
                                 "step = ? AND point = ?", [instance_id, step, point])
            if not rows or rows[0][0] == "released":
                return
            if heartbeat is not None:
                heartbeat()
            time.sleep(PAUSE_POLL)

    def _decide(self, instance_id: str, step: str, kind: EffectKind, system: SystemSpec,
                operation: str, key: str) -> Outcome:
        """What the external system does with this call (inside the caller's transaction)."""
        failure = self._take_failure(instance_id, step) if kind == "effect" else None
        if failure == "transient":
            return Outcome.TRANSIENT_ERROR
        if failure == "permanent":
            return Outcome.PERMANENT_ERROR
        if not system.honours_idempotency:
            return Outcome.APPLIED
        first = self.db.execute(
            "INSERT INTO operation_keys (system, operation, idempotency_key) "
            "VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [system.name, operation, key],
        )
        return Outcome.APPLIED if first == 1 else Outcome.ABSORBED

    def _take_failure(self, instance_id: str, step: str) -> FailureMode | None:
        # The instance's own failure first, then one for any instance: read in one query.
        modes: dict[str, FailureMode] = dict(self.db.query(
            "SELECT instance_id, mode FROM injected_failures WHERE step = ? "
            "AND instance_id IN (?, ?)", [step, instance_id, ANY_INSTANCE]))
        for target in (instance_id, ANY_INSTANCE):
            if target not in modes:
                continue
            mode = modes[target]
            if mode == "permanent":
                return mode
            taken = self.db.execute(
                "UPDATE injected_failures SET remaining = remaining - 1 "
                "WHERE instance_id = ? AND step = ? AND remaining > 0", [target, step],
            )
            if taken:
                return mode
        return None


def _instance_record(row: Row) -> InstanceRecord:
    raw = row[-1]
    given = json.loads(raw) if raw else ()
    return InstanceRecord(*row[:-1], input=tuple(  # type: ignore[misc]
        (str(name), tuple(items)) for name, items in given))


def _effect_record(row: Row) -> EffectRecord:
    # The outcome is the 16th column; the two after it are the error's type and message.
    return EffectRecord(*row[:15], outcome=Outcome(row[15]),  # type: ignore[misc]
                        error_type=row[16], error_message=row[17])


def applied_counts(effects: list[EffectRecord]) -> Counter[tuple[str, str]]:
    """How often each (step, kind) was applied: more than once is a duplicate."""
    return Counter((e.step, e.kind) for e in effects if e.outcome is Outcome.APPLIED)


def _work(seconds: float, heartbeat: Callable[[], None] | None) -> None:
    """Do a step's work: take `seconds`, heartbeating all along when the engine asks."""
    until = time.monotonic() + seconds
    while (left := until - time.monotonic()) > 0:
        if heartbeat is not None:
            heartbeat()
        time.sleep(min(left, WORK_HEARTBEAT))
