"""Strategy "state-machine": each instance a row in the application's own tables.

This is what a careful Celery team builds when it cannot afford a lost chain. The row
holds where the instance is (cursor, state, attempt, a lease on the step in hand); a
task, `advance`, moves it one node forward and writes with optimistic concurrency
(`WHERE version = ?`), so duplicate or late advance messages do nothing. A periodic
`tick` from celery beat re-sends advance for passed deadlines, due timers, expired
leases and rows whose advance message was lost: progress is durable in the database,
while every effect stays at-least-once (a step whose lease expires runs again). A step
whose last attempt's lease expired is decided by the external system's record of its
idempotency key: its worker may have died after the effect landed, and then the step is
done, not failed (failing it would leave its effect applied and uncompensated).

A parallel group gets a row per branch (`sm_branches`), each moved by its own task,
`advance_branch`, with the same lease and optimistic concurrency. The instance's row
stays at the group: its advance creates the branch rows, re-sends advance_branch for a
branch whose lease ran out (the tick nudges it like any idle row), and joins once every
branch has ended. After a branch fails (or an operator cancels), the others start no
further step, and the join compensates every step that applied.

The flow's interrupt is a signal row like the others, stored by whoever sends it before
the send returns, and so is an operator's cancel. The next advance of a running or
waiting row (after the lease of a step in hand, and once a step whose attempt began has
applied: its worker may have died after its effect landed) compensates instead of moving
on; a branch halts likewise; the join compensates.

The tables live in `services.app_db_url`, apart from the ledger, as an application's
tables would.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded

from graduate.adapters.base import HeldUp, HistoryEvent, InstanceState, InstanceStatus
from graduate.adapters.celery.broker import BrokerView
from graduate.adapters.celery.chain import task_id
from graduate.adapters.celery.receipts import (
    REDIS_HANDOVER,
    consumers_holding,
    proven_dead,
    received_key,
    still_holds,
    taker_of,
    unacknowledged,
)
from graduate.adapters.celery.resources import ProcessResources
from graduate.adapters.celery.settings import STATE_MACHINE
from graduate.db import Database
from graduate.errors import EngineError, PermanentEffectError, TransientEffectError
from graduate.flow import Flow, InstanceRequest, Parallel, Step, Timer, Wait, WhileOpen

ENGINE = "celery-state-machine"

ADVANCE = "graduate.sm.advance"
ADVANCE_BRANCH = "graduate.sm.advance_branch"
SIGNAL = "graduate.sm.signal"
TICK = "graduate.sm.tick"
# An operator's cancel request, stored with the signals: the next advance compensates.
CANCEL = "graduate.cancel"

HARD_LIMIT_SLACK = 5.0
# IDs a query of `Store.load_many` (SQLite allows 999 parameters a statement before 3.32).
LOAD_CHUNK = 500

RUNNING, WAITING, COMPENSATING = "running", "waiting", "compensating"
COMPLETED, COMPENSATED, FAILED = "completed", "compensated", "failed"
FINISHED = (COMPLETED, COMPENSATED, FAILED)
# A branch ends applied (every step done), failed, or halted (it started no further step
# after another branch failed or an operator cancelled).
APPLIED, HALTED = "applied", "halted"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sm_instances (
        instance_id TEXT PRIMARY KEY, flow TEXT NOT NULL, request TEXT NOT NULL,
        cursor INTEGER NOT NULL, state TEXT NOT NULL, done TEXT NOT NULL,
        compensated TEXT NOT NULL, attempt INTEGER NOT NULL,
        wait_deadline DOUBLE PRECISION, timer_until DOUBLE PRECISION,
        lease_until DOUBLE PRECISION, nudged_at DOUBLE PRECISION, version INTEGER NOT NULL,
        started_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION, reason TEXT NOT NULL, pool {pool})""",
    "CREATE INDEX IF NOT EXISTS sm_instances_flow_state ON sm_instances (flow, state)",
    # Signals wait in a table of their own: storing one must not change the instance's
    # version, or a step in flight would lose its write and run again after its lease.
    """CREATE TABLE IF NOT EXISTS sm_signals (
        instance_id TEXT NOT NULL, name TEXT NOT NULL, payload TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL, PRIMARY KEY (instance_id, name))""",
    """CREATE TABLE IF NOT EXISTS sm_transitions (
        id {id}, instance_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
        from_state TEXT NOT NULL, to_state TEXT NOT NULL, node TEXT NOT NULL,
        note TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS sm_transitions_instance ON sm_transitions (instance_id)",
    """CREATE TABLE IF NOT EXISTS sm_branches (
        instance_id TEXT NOT NULL, grp TEXT NOT NULL, branch TEXT NOT NULL,
        cursor INTEGER NOT NULL, state TEXT NOT NULL, done TEXT NOT NULL,
        attempt INTEGER NOT NULL, lease_until DOUBLE PRECISION, version INTEGER NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL,
        PRIMARY KEY (instance_id, grp, branch))""",
)

# The queue an instance's advance messages go to, so the tick of the workers on that
# queue (and of no others) looks after it: a run's own, or registered workers' pool.
_POOL = "TEXT NOT NULL DEFAULT ''"
_COLUMNS = (
    "instance_id, flow, request, cursor, state, done, compensated, attempt, "
    "wait_deadline, timer_until, lease_until, nudged_at, version, started_at, updated_at, "
    "finished_at, reason, pool"
)
# What a move may change; instance_id, flow, request, started_at and pool never change, and
# nudged_at belongs to the tick alone.
_MOVED = ("cursor", "state", "done", "compensated", "attempt", "wait_deadline",
          "timer_until", "lease_until", "version", "updated_at", "finished_at", "reason")
_UPDATE_MOVED = (f"UPDATE sm_instances SET {', '.join(f'{c} = ?' for c in _MOVED)} "
                 "WHERE instance_id = ? AND version = ?")
# A signal stored again replaces the earlier one.
_STORE_SIGNAL = ("INSERT INTO sm_signals (instance_id, name, payload, at) VALUES (?, ?, ?, ?) "
                 "ON CONFLICT (instance_id, name) DO UPDATE SET payload = excluded.payload, "
                 "at = excluded.at")
_JOINED_COLUMNS = ", ".join(f"i.{column.strip()}" for column in _COLUMNS.split(","))
_TRANSITION_COLUMNS = "instance_id, at, from_state, to_state, node, note"
# PostgreSQL's `Store.update` in one statement (docs/adr/0025; SQLite has no UPDATE or
# DELETE in a WITH): the versioned move, the signal it uses up (with it, `True`), and its
# transition, which is written only when the move was (its row count is the move's).
_MOVE_IN_ONE = {
    consumes: f"WITH moved AS ({_UPDATE_MOVED} RETURNING instance_id)"
    + (", used AS (DELETE FROM sm_signals WHERE instance_id IN (SELECT instance_id FROM "
       "moved) AND name = ?)" if consumes else "")
    + f" INSERT INTO sm_transitions ({_TRANSITION_COLUMNS}) "
    "SELECT instance_id, ?, ?, ?, ?, ? FROM moved"
    for consumes in (False, True)
}
# A move and the one that follows it written as one (`Store.update`'s `then`, docs/adr/
# 0030): only while no signal is stored for the instance, the condition under which the
# task would make the second move right after the first; then both transitions, in order.
_UPDATE_FOLDED = (f"{_UPDATE_MOVED} AND NOT EXISTS (SELECT 1 FROM sm_signals AS s "
                  "WHERE s.instance_id = ?)")
_FOLDED_IN_ONE = (f"WITH moved AS ({_UPDATE_FOLDED} RETURNING instance_id) "
                  f"INSERT INTO sm_transitions ({_TRANSITION_COLUMNS}) "
                  "SELECT m.instance_id, t.at, t.from_state, t.to_state, t.node, t.note "
                  "FROM moved AS m CROSS JOIN (VALUES (1, ?, ?, ?, ?, ?), (2, ?, ?, ?, ?, ?)) "
                  "AS t (nth, at, from_state, to_state, node, note) ORDER BY t.nth")
# PostgreSQL's `Store.put_signal` in one statement: the signal and its transition.
_SIGNAL_IN_ONE = (f"WITH stored AS ({_STORE_SIGNAL} RETURNING instance_id) INSERT INTO "
                  f"sm_transitions ({_TRANSITION_COLUMNS}) SELECT instance_id, ?, ?, ?, ?, ? "
                  "FROM stored")


# A pool child reads an instance's row (its request, its lists of node names) several
# times a task, and every instance of a flow passes through the same lists: each text is
# decoded or encoded once. Values are immutable (a frozen request, tuples of names), so a
# cached one is the value itself; the caches hold the instances in flight, and the
# prefixes of the flow's node lists.
_CACHED = 4096


@functools.lru_cache(maxsize=_CACHED)
def _request(text: str) -> InstanceRequest:
    return InstanceRequest(**json.loads(text))


@functools.lru_cache(maxsize=_CACHED)
def _names(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


@functools.lru_cache(maxsize=_CACHED)
def _names_json(names: tuple[str, ...]) -> str:
    return json.dumps(list(names))


@dataclass(frozen=True)
class Row:
    """One instance as the application's table holds it.

    `cursor` is the index of the node in hand; `compensated` lists the compensations
    done so far (in state "compensating" the next is the first of
    `flow.compensations_for(done)` not yet in it). `attempt` counts the attempts begun
    on the current step or compensation, so an attempt cut short by a crash counts too.
    """

    instance_id: str
    flow: str
    request: InstanceRequest
    cursor: int = 0
    state: str = RUNNING
    done: tuple[str, ...] = ()
    compensated: tuple[str, ...] = ()
    attempt: int = 0
    wait_deadline: float | None = None
    timer_until: float | None = None
    lease_until: float | None = None
    nudged_at: float | None = None
    version: int = 1
    started_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None
    reason: str = ""
    pool: str = ""  # the queue its advance messages go to ("": started before pools)

    def columns(self) -> dict[str, Any]:
        """The row as column values, in the order of `_COLUMNS`."""
        return {
            "instance_id": self.instance_id, "flow": self.flow,
            "request": json.dumps(asdict(self.request)), "cursor": self.cursor,
            "state": self.state, "done": _names_json(self.done),
            "compensated": _names_json(self.compensated), "attempt": self.attempt,
            "wait_deadline": self.wait_deadline,
            "timer_until": self.timer_until, "lease_until": self.lease_until,
            "nudged_at": self.nudged_at, "version": self.version,
            "started_at": self.started_at, "updated_at": self.updated_at,
            "finished_at": self.finished_at, "reason": self.reason, "pool": self.pool,
        }

    def moved_values(self) -> list[Any]:
        """The values of the columns a move writes, in the order of `_MOVED`: without
        encoding the request, which a move never writes (a fifth of a step's CPU in the
        worker, graduate bench)."""
        return [self.cursor, self.state, _names_json(self.done),
                _names_json(self.compensated), self.attempt, self.wait_deadline,
                self.timer_until, self.lease_until, self.version, self.updated_at,
                self.finished_at, self.reason]

    @classmethod
    def from_db(cls, row: tuple[Any, ...]) -> Row:
        (instance_id, flow, request, cursor, state, done, compensated, attempt,
         wait_deadline, timer_until, lease_until, nudged_at, version, started_at, updated_at,
         finished_at, reason, pool) = row
        return cls(
            instance_id=instance_id, flow=flow, request=_request(request),
            cursor=int(cursor), state=state, done=_names(done),
            compensated=_names(compensated), attempt=int(attempt),
            wait_deadline=wait_deadline, timer_until=timer_until,
            lease_until=lease_until, nudged_at=nudged_at, version=int(version),
            started_at=started_at, updated_at=updated_at, finished_at=finished_at,
            reason=reason, pool=pool or "",
        )


@dataclass(frozen=True)
class Then:
    """A move that follows another in the same task with nothing in between to decide but
    the stored signals (see `Store.update`): the row it writes, and its transition."""

    row: Row
    node: str
    note: str


def _finished(row: Row, state: str, reason: str, node: str) -> Then:
    """The move that finishes the instance in `state`: written alone (`Machine._finish`)
    or folded with the step's move before it (`Machine._then`), one row and note for both."""
    return Then(replace(row, state=state, reason=reason, lease_until=None, attempt=0,
                        finished_at=time.time()), node, state)


def _waiting(row: Row, wait: Wait, now: float) -> Then:
    """The move that enters `wait`: written alone (`Machine._wait`) or folded with the
    step's move before it (`Machine._then`), one row and note for both."""
    return Then(replace(row, state=WAITING, wait_deadline=now + wait.deadline), wait.name,
                f"awaiting signal {wait.signal}")


@dataclass(frozen=True)
class BranchRow:
    """One branch of a parallel group of one instance: where it is, as `Row` is for the
    instance (`cursor` indexes the branch's steps)."""

    instance_id: str
    group: str
    branch: str
    cursor: int = 0
    state: str = RUNNING
    done: tuple[str, ...] = ()
    attempt: int = 0
    lease_until: float | None = None
    version: int = 1
    updated_at: float = 0.0
    reason: str = ""


_BRANCH_COLUMNS = ("instance_id, grp, branch, cursor, state, done, attempt, lease_until, "
                   "version, updated_at, reason")


def _branch_from_db(row: tuple[Any, ...]) -> BranchRow:
    (instance_id, group, branch, cursor, state, done, attempt, lease_until, version,
     updated_at, reason) = row
    return BranchRow(instance_id, group, branch, int(cursor), state, tuple(json.loads(done)),
                     int(attempt), lease_until, int(version), updated_at, reason)


class Store:
    """The application's tables: rows written with optimistic concurrency, and transitions."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create_tables(self) -> None:
        self.db.script([s.replace("{pool}", _POOL) for s in SCHEMA])
        self.db.add_column("sm_instances", "pool", _POOL)  # tables of an earlier version

    def load(self, instance_id: str) -> Row | None:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM sm_instances WHERE instance_id = ?",
                             [instance_id])
        return Row.from_db(rows[0]) if rows else None

    def load_with_signals(self, instance_id: str) -> tuple[Row | None, dict[str, dict[str, Any]]]:
        """`load` and `signals` in one query (a row of the join per stored signal): what a
        task reads first. Read together, they are one snapshot of the instance."""
        rows = self.db.query(f"SELECT {_JOINED_COLUMNS}, s.name, s.payload FROM sm_instances AS i "
                             "LEFT JOIN sm_signals AS s ON s.instance_id = i.instance_id "
                             "WHERE i.instance_id = ?", [instance_id])
        if not rows:
            return None, {}
        return Row.from_db(rows[0][:-2]), {str(found[-2]): dict(json.loads(found[-1]))
                                           for found in rows if found[-2] is not None}

    def load_many(self, instance_ids: Sequence[str]) -> dict[str, Row]:
        """The rows of those of `instance_ids` that exist, a query per LOAD_CHUNK IDs
        (where `load` is a query each)."""
        rows: dict[str, Row] = {}
        for first in range(0, len(instance_ids), LOAD_CHUNK):
            chunk = instance_ids[first:first + LOAD_CHUNK]
            for found in self.db.query(f"SELECT {_COLUMNS} FROM sm_instances WHERE "
                                       f"instance_id IN ({', '.join('?' * len(chunk))})",
                                       chunk):
                row = Row.from_db(found)
                rows[row.instance_id] = row
        return rows

    def insert_all(self, rows: Sequence[Row]) -> None:
        """Insert the rows and their first transitions in one transaction."""
        with self.db.transaction():
            for row in rows:
                values = list(row.columns().values())
                self.db.execute(f"INSERT INTO sm_instances ({_COLUMNS}) VALUES "
                                f"({', '.join('?' * len(values))})", values)
                self._transition(row.instance_id, row.started_at, "", row.state, "",
                                 "started")

    def update(self, old: Row, new: Row, node: str, note: str,
               consume: str | None = None, then: Then | None = None) -> Row | None:
        """Write `new` if the row is still at `old`'s version; None if another writer won.

        `consume` names a signal that the move uses up, deleted in the same transaction.
        `then` is the move that follows `new` when no signal is stored for the instance
        (docs/adr/0030): written instead of `new`, in the same statement, with both
        transitions; with a signal stored, `new` alone is written, as without `then`.
        """
        now = time.time()
        if then is not None and consume is None:
            folded = self._update_folded(old, new, node, note, then, now)
            if folded is not None:
                return folded
        written = replace(new, version=old.version + 1, updated_at=now)
        moved = [*written.moved_values(), old.instance_id, old.version]
        transition = [now, old.state, new.state, node, note]
        if self.db.postgres:
            # One statement, one round trip (a transaction of four or five otherwise): the
            # move, its transition and the signal it uses up commit together or not at all.
            changed = self.db.execute(_MOVE_IN_ONE[consume is not None], [
                *moved, *([consume] if consume is not None else []), *transition])
            return written if changed else None
        with self.db.transaction():
            changed = self.db.execute(_UPDATE_MOVED, moved)
            if changed:
                self._transition(old.instance_id, now, old.state, new.state, node, note)
                if consume is not None:
                    self.db.execute("DELETE FROM sm_signals WHERE instance_id = ? AND name = ?",
                                    [old.instance_id, consume])
        return written if changed else None

    def _update_folded(self, old: Row, new: Row, node: str, note: str, then: Then,
                       now: float) -> Row | None:
        """`then.row` written over `old` if the row is still at `old`'s version and no
        signal is stored for the instance, with the transitions to `new` and on to
        `then.row`; None if it was not (the caller then writes `new` alone, or loses)."""
        written = replace(then.row, version=old.version + 1, updated_at=now)
        moved = [*written.moved_values(), old.instance_id, old.version, old.instance_id]
        first = (now, old.state, new.state, node, note)
        second = (now, new.state, then.row.state, then.node, then.note)
        if self.db.postgres:
            changed = self.db.execute(_FOLDED_IN_ONE, [*moved, *first, *second])
            return written if changed else None
        with self.db.transaction():
            changed = self.db.execute(_UPDATE_FOLDED, moved)
            if changed:
                self._transition(old.instance_id, *first)
                self._transition(old.instance_id, *second)
        return written if changed else None

    def branches(self, instance_id: str, group: str) -> list[BranchRow]:
        rows = self.db.query(f"SELECT {_BRANCH_COLUMNS} FROM sm_branches WHERE instance_id = ? "
                             "AND grp = ? ORDER BY branch", [instance_id, group])
        return [_branch_from_db(row) for row in rows]

    def open_branches(self, rows: list[BranchRow]) -> None:
        """Insert the branch rows of a group; a concurrent advance that did so first wins."""
        with self.db.transaction():
            for row in rows:
                self.db.execute(
                    f"INSERT INTO sm_branches ({_BRANCH_COLUMNS}) VALUES "
                    "(?, ?, ?, 0, ?, '[]', 0, NULL, 1, ?, '') "
                    "ON CONFLICT (instance_id, grp, branch) DO NOTHING",
                    [row.instance_id, row.group, row.branch, row.state, row.updated_at])

    def update_branch(self, old: BranchRow, new: BranchRow, node: str,
                      note: str) -> BranchRow | None:
        """Write `new` if the branch row is still at `old`'s version; None if another
        writer won. The move is a transition of the instance, named after the branch."""
        now = time.time()
        written = replace(new, version=old.version + 1, updated_at=now)
        with self.db.transaction():
            changed = self.db.execute(
                "UPDATE sm_branches SET cursor = ?, state = ?, done = ?, attempt = ?, "
                "lease_until = ?, version = ?, updated_at = ?, reason = ? "
                "WHERE instance_id = ? AND grp = ? AND branch = ? AND version = ?",
                [written.cursor, written.state, json.dumps(list(written.done)),
                 written.attempt, written.lease_until, written.version, now, written.reason,
                 old.instance_id, old.group, old.branch, old.version])
            if changed:
                self._transition(old.instance_id, now, f"branch {old.branch} {old.state}",
                                 f"branch {old.branch} {new.state}", node, note)
        return written if changed else None

    def signals(self, instance_id: str) -> dict[str, dict[str, Any]]:
        """Every signal stored for the instance, by name: one query where a move asks
        about the cancel, the interrupt and its wait's decision."""
        rows = self.db.query("SELECT name, payload FROM sm_signals WHERE instance_id = ?",
                             [instance_id])
        return {str(name): dict(json.loads(payload)) for name, payload in rows}

    def put_signal(self, row: Row, name: str, payload: dict[str, Any]) -> None:
        """Store a signal for the instance (a repeat replaces the earlier one)."""
        now = time.time()
        encoded = json.dumps(payload)
        stored = [row.instance_id, name, encoded, now]
        note = f"signal {name} stored: {encoded}"
        if self.db.postgres:
            # One round trip: the signal and its transition.
            self.db.execute(_SIGNAL_IN_ONE, [*stored, now, row.state, row.state, name, note])
            return
        with self.db.transaction():
            self.db.execute(_STORE_SIGNAL, stored)
            self._transition(row.instance_id, now, row.state, row.state, name, note)

    def _transition(self, instance_id: str, at: float, from_state: str, to_state: str,
                    node: str, note: str) -> None:
        self.db.execute(f"INSERT INTO sm_transitions ({_TRANSITION_COLUMNS}) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        [instance_id, at, from_state, to_state, node, note])

    def due(self, flow: str, now: float, idle_grace: float) -> list[Row]:
        """Rows of `flow` that need an advance nobody may have sent, not nudged lately."""
        # A waiting row with a signal stored a while ago lost the advance the signal sent;
        # without this it would sit until its deadline (hours or days) despite the answer.
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM sm_instances WHERE flow = ? "
            "AND state IN (?, ?, ?) AND (nudged_at IS NULL OR nudged_at <= ?) AND ("
            " (state = ? AND wait_deadline <= ?)"
            " OR (state = ? AND EXISTS (SELECT 1 FROM sm_signals AS s"
            "     WHERE s.instance_id = sm_instances.instance_id AND s.at <= ?))"
            " OR (timer_until IS NOT NULL AND timer_until <= ?)"
            " OR (state <> ? AND timer_until IS NULL"
            "     AND COALESCE(lease_until, updated_at + ?) <= ?))",
            [flow, RUNNING, WAITING, COMPENSATING, now - idle_grace, WAITING, now,
             WAITING, now - idle_grace, now, WAITING, idle_grace, now],
        )
        return [Row.from_db(row) for row in rows]

    def waiting(self, flow: str) -> list[Row]:
        """Rows of `flow` waiting for a signal."""
        rows = self.db.query(f"SELECT {_COLUMNS} FROM sm_instances WHERE flow = ? AND "
                             "state = ?", [flow, WAITING])
        return [Row.from_db(row) for row in rows]

    def reminded(self, instance_id: str, step: str) -> bool:
        """Whether the reminder or escalation `step` (`<wait>.reminder`,
        `<wait>.escalation`) was recorded as sent."""
        return bool(self.db.query("SELECT 1 FROM sm_transitions WHERE instance_id = ? AND "
                                  "node = ?", [instance_id, step]))

    def record_reminder(self, row: Row, send: WhileOpen, outcome: str) -> None:
        # A transition that leaves the state as it is: the row's version does not move,
        # so an advance in flight still wins.
        self._transition(row.instance_id, time.time(), row.state, row.state, send.step.name,
                         f"{send.kind} sent ({outcome})")

    def nudge(self, row: Row, now: float, idle_grace: float) -> bool:
        """Claim the nudge of `row`: False when another tick (a second beat beside
        another registered worker) nudged it within `idle_grace`, so that one sends it."""
        # Not a transition and no version change: an advance in flight must still win.
        return self.db.execute(
            "UPDATE sm_instances SET nudged_at = ? WHERE instance_id = ? "
            "AND (nudged_at IS NULL OR nudged_at <= ?)",
            [now, row.instance_id, now - idle_grace]) == 1

    @contextlib.contextmanager
    def only_one(self, name: str) -> Iterator[bool]:
        """True for the one holder of the lock `name` among the processes sharing the
        tables (a PostgreSQL advisory lock, let go if the holder dies); always True on
        SQLite, which only a run's own single beat uses."""
        if not self.db.postgres:
            yield True
            return
        held = bool(self.db.query("SELECT pg_try_advisory_lock(hashtext(?))", [name])[0][0])
        try:
            yield held
        finally:
            if held:
                self.db.query("SELECT pg_advisory_unlock(hashtext(?))", [name])

    def transitions(self, instance_id: str) -> list[HistoryEvent]:
        rows = self.db.query(
            "SELECT at, from_state, to_state, node, note FROM sm_transitions "
            "WHERE instance_id = ? ORDER BY id", [instance_id],
        )
        return [
            HistoryEvent(at=at, kind=f"{before} -> {after}" if before else after,
                         detail=f"{node}: {note}" if node else note)
            for at, before, after, node, note in rows
        ]


def _in_flight(step: Step | None, attempt: int) -> bool:
    """Whether an attempt of `step` began and never reported (its worker died, or it
    backs off before a retry), with attempts left: the step was in flight when the
    interrupt came, and its effect may have landed. It finishes first, as a step in
    flight does (a repeat is absorbed or applies once), and counts as done; compensating
    the steps done without it would leave an effect that landed uncompensated."""
    return step is not None and 0 < attempt < step.retry.max_attempts


def _last_attempt_lost(step: Step, attempt: int) -> bool:
    """Whether the last attempt `step` may make began and never reported (its lease ran
    out): its worker died, before or after its effect landed."""
    return attempt >= step.retry.max_attempts


def decision_id(instance_id: str, signal: str) -> str:
    """The task ID of a decision's signal task: the chain's naming."""
    return task_id(instance_id, "signal", signal)


def _limits(step: Step | None) -> dict[str, Any]:
    """The time limits of a message that runs `step`'s effect (none without a step)."""
    if step is None:
        return {}
    return {"soft_time_limit": step.timeout, "time_limit": step.timeout + HARD_LIMIT_SLACK}


def _describe(error: BaseException, step: Step) -> str:
    if isinstance(error, SoftTimeLimitExceeded):
        return f"timed out after {step.timeout:g}s"
    return str(error) or type(error).__name__


class Machine:
    """Moves rows forward: the body of the advance, signal and tick tasks."""

    def __init__(self, app: Celery, flow: Flow, resources: ProcessResources,
                 settings: Mapping[str, Any]) -> None:
        self.app = app
        self.flow = flow
        self.resources = resources
        self.lease_margin = float(settings.get("lease_margin", STATE_MACHINE["lease_margin"]))
        self.idle_grace = float(settings.get("idle_grace", STATE_MACHINE["idle_grace"]))
        # The queue whose rows the tick looks after ("" = every row): the run's own, or
        # the pool of registered workers, whose harness runs under another run ID.
        self.pool = ""
        # The step whose time limits the task in hand was sent with, until its effect
        # begins: the one effect this task may run (see `advance`). A pool child runs
        # one task at a time.
        self._carries: str | None = None

    def flow_of(self, row: Row) -> Flow:
        """The row's instance's flow: its `for_each` steps expanded for its input (see
        `Flow.for_instance`). A node's index, the row's cursor, is the same in both."""
        return self.flow.for_instance(row.request)

    @property
    def store(self) -> Store:
        return Store(self.resources.app_db())

    # ------------------------------------------------------------------ sending

    def current_step(self, row: Row) -> Step | None:
        """The step (or the compensation's step, or the notice that follows the
        compensations) the row is at, if it is at one."""
        if row.state == COMPENSATING:
            pending = self.pending_compensations(row)
            return pending[0] if pending else self.pending_notice(row)
        if row.state == RUNNING and row.cursor < len(self.flow_of(row).nodes):
            node = self.flow_of(row).nodes[row.cursor]
            return node if isinstance(node, Step) else None
        return None

    def pending_compensations(self, row: Row) -> list[Step]:
        return [s for s in self.flow_of(row).compensations_for(row.done)
                if s.name not in row.compensated]

    def pending_notice(self, row: Row) -> Step | None:
        """The notice the row's ending owes (a wait rejected or expired), until it is sent:
        a sent notice joins the row's done nodes."""
        notice = self.flow.notice_for(row.reason)
        return None if notice is None or notice.name in row.done else notice

    def step_after(self, row: Row, signal: str) -> Step | None:
        """The step that follows the wait for `signal`, which an approval leads to."""
        nodes = self.flow_of(row).nodes
        at = next((i for i, n in enumerate(nodes) if isinstance(n, Wait) and n.signal == signal
                   and i >= row.cursor), None)
        follows = nodes[at + 1] if at is not None and at + 1 < len(nodes) else None
        return follows if isinstance(follows, Step) else None

    def send_advance(self, row: Row, countdown: float | None = None) -> None:
        step = self.current_step(row)
        options = _limits(step)
        if countdown:
            options["countdown"] = countdown
        self.app.signature(ADVANCE, args=(row.instance_id, step.name if step else None),
                           **options).apply_async()

    # ------------------------------------------------------------------ tasks

    def advance(self, instance_id: str, carries: str | None = None) -> str:
        """Move the instance forward; return what was done (its transitions record it).

        One message runs at most one effect (a step, a compensation or a notice), the
        one named by `carries`, whose time limits the message was sent with; moves that
        run none (entering or passing a wait, finishing, beginning to compensate) go on
        in the same task, where each once sent a message of its own. An effect that the
        message does not carry gets a message of its own, with its limits.
        """
        self._carries = carries
        try:
            store = self.store
            row, signals = store.load_with_signals(instance_id)
            if row is None or row.flow != self.flow.name:
                return "no such instance of this flow"
            return self._advance(store, row, signals)
        finally:
            self._carries = None

    def _advance(self, store: Store, row: Row,
                 signals: Mapping[str, dict[str, Any]] | None = None) -> str:
        """`advance` from `row`, with the instance's stored `signals` when they were read
        with it (else they are read here, after the row)."""
        instance_id = row.instance_id
        if row.state in FINISHED:
            return f"already {row.state}"
        now = time.time()
        if row.lease_until is not None and row.lease_until > now:
            return "leased: a step is in hand or backing off"
        if row.state == RUNNING and row.cursor < len(self.flow_of(row).nodes) and isinstance(
                group := self.flow_of(row).nodes[row.cursor], Parallel):
            return self._group(store, row, group, now)  # it takes a cancel request itself
        step = self.current_step(row)
        if (row.state == RUNNING and step is not None and _last_attempt_lost(step, row.attempt)
                and self._landed(row.request, step)):
            return self._settle_landed(store, row, step)
        if signals is None:
            # Read again at each move of the task: a cancel stored meanwhile is taken then.
            signals = store.signals(instance_id) if row.state in (RUNNING, WAITING) else {}
        if (row.state in (RUNNING, WAITING) and CANCEL in signals
                and not _in_flight(step, row.attempt)):
            # After the lease, and once a step whose attempt began has applied (its
            # worker may have died after its effect landed): it counts as done first.
            nodes = self.flow_of(row).nodes
            at = nodes[min(row.cursor, len(nodes) - 1)].name
            return self._begin_compensation(store, row, "cancelled by an operator", at,
                                            consume=CANCEL)
        if (row.state in (RUNNING, WAITING) and (reason := self._interrupted(signals))
                and not _in_flight(self.current_step(row), row.attempt)):
            at = self.flow_of(row).nodes[min(row.cursor, len(self.flow_of(row).nodes) - 1)].name
            return self._begin_compensation(store, row, reason, at)
        if step is not None and step.name != self._carries:
            self.send_advance(row)
            return f"{step.name}: sent with its own time limits"
        if row.state == COMPENSATING:
            return self._compensate_next(store, row)
        if row.cursor >= len(self.flow_of(row).nodes):
            return self._finish(store, row, COMPLETED, row.reason, "flow")
        node = self.flow_of(row).nodes[row.cursor]
        if isinstance(node, Step):
            return self._step(store, row, node)
        if isinstance(node, Wait):
            return self._wait(store, row, node, now, signals)
        if isinstance(node, Parallel):  # only a waiting row gets here, and none waits there
            return f"{node.name}: not running ({row.state})"
        return self._timer(store, row, node, now)

    def advance_branch(self, instance_id: str, group_name: str, branch_name: str) -> str:
        """Move one branch of a parallel group one step forward."""
        store = self.store
        row = store.load(instance_id)
        if (row is None or row.state != RUNNING or row.cursor >= len(self.flow_of(row).nodes)
                or self.flow_of(row).nodes[row.cursor].name != group_name):
            return "the instance is not at this group"
        group = self.flow_of(row).nodes[row.cursor]
        assert isinstance(group, Parallel)
        spec = next(b for b in group.branches if b.name == branch_name)
        branches = store.branches(instance_id, group_name)
        branch = next((b for b in branches if b.branch == branch_name), None)
        if branch is None or branch.state != RUNNING:
            return f"branch {branch_name}: {branch.state if branch else 'not opened'}"
        if branch.lease_until is not None and branch.lease_until > time.time():
            return f"branch {branch_name}: leased: a step is in hand or backing off"
        in_hand = spec.steps[branch.cursor] if branch.cursor < len(spec.steps) else None
        if (in_hand is not None and _last_attempt_lost(in_hand, branch.attempt)
                and self._landed(row.request, in_hand)):
            return self._pass_branch(store, row, branch, in_hand, "applied, as the system's "
                                     "record of its key says: its worker was lost after")
        failed = next((b for b in branches if b.state == FAILED), None)
        signals = {} if failed else store.signals(instance_id)
        why = (f"branch {failed.branch} failed" if failed else "an operator cancelled"
               if CANCEL in signals else self._interrupted(signals))
        # A step in flight finishes first, as the instance's does.
        if why and not _in_flight(in_hand, branch.attempt):
            return self._end_branch(store, row, branch, HALTED, f"halted: {why}")
        if branch.cursor >= len(spec.steps):
            return self._end_branch(store, row, branch, APPLIED, "every step applied")
        step = spec.steps[branch.cursor]
        if branch.attempt >= step.retry.max_attempts:
            return self._end_branch(
                store, row, branch, FAILED,
                f"step {step.name} failed after {branch.attempt} attempts: the last one never "
                "finished (worker lost or timed out)")
        leased = store.update_branch(
            branch, replace(branch, attempt=branch.attempt + 1,
                            lease_until=time.time() + step.timeout + HARD_LIMIT_SLACK
                            + self.lease_margin),
            step.name, f"branch {branch_name}: attempt {branch.attempt + 1} begins")
        if leased is None:
            return f"{step.name}: another worker took the step"
        try:
            with self.resources.interruptible():
                self.resources.ledger().call(self.flow_of(row), row.request, step,
                                             attempt=leased.attempt, engine=ENGINE)
        except (TransientEffectError, SoftTimeLimitExceeded) as error:
            if leased.attempt >= step.retry.max_attempts:
                return self._end_branch(
                    store, row, leased, FAILED,
                    f"step {step.name} failed after {leased.attempt} attempts: "
                    f"{_describe(error, step)}")
            delay = step.retry.delay_after(leased.attempt)
            backing_off = store.update_branch(
                leased, replace(leased, lease_until=time.time() + delay), step.name,
                f"attempt {leased.attempt} failed ({_describe(error, step)}); retry in "
                f"{delay:g}s")
            if backing_off is not None:
                self.send_branch(row, backing_off, countdown=delay)
            return f"{step.name}: retry in {delay:g}s"
        except PermanentEffectError as error:
            return self._end_branch(store, row, leased, FAILED,
                                    f"step {step.name} failed: {error}")
        return self._pass_branch(store, row, leased, step, "applied")

    def _pass_branch(self, store: Store, row: Row, branch: BranchRow, step: Step,
                     how: str) -> str:
        passed = store.update_branch(
            branch, replace(branch, cursor=branch.cursor + 1, done=(*branch.done, step.name),
                            attempt=0, lease_until=None),
            step.name, f"branch {branch.branch}: attempt {branch.attempt} {how}")
        if passed is None:
            return f"{step.name}: another writer moved the branch first"
        self.send_branch(row, passed)
        return f"{step.name}: applied"

    def send_branch(self, row: Row, branch: BranchRow,
                    countdown: float | None = None) -> None:
        group = self.flow_of(row).node(branch.group)
        assert isinstance(group, Parallel)
        steps = next(b.steps for b in group.branches if b.name == branch.branch)
        options = _limits(steps[branch.cursor] if branch.cursor < len(steps) else None)
        if countdown:
            options["countdown"] = countdown
        self.app.signature(ADVANCE_BRANCH,
                           args=(branch.instance_id, branch.group, branch.branch),
                           **options).apply_async()

    def _end_branch(self, store: Store, row: Row, branch: BranchRow, state: str,
                    reason: str) -> str:
        ended = store.update_branch(
            branch, replace(branch, state=state, reason=reason, lease_until=None, attempt=0),
            branch.group, f"branch {branch.branch}: {reason}")
        if ended is None:
            return f"branch {branch.branch}: another writer moved the branch first"
        self.send_advance(row)  # the join
        return f"branch {branch.branch}: {reason}"

    def _group(self, store: Store, row: Row, group: Parallel, now: float) -> str:
        """Open the group's branches, look after them, and join once every one ended."""
        branches = store.branches(row.instance_id, group.name)
        if not branches:
            store.open_branches([BranchRow(row.instance_id, group.name, b.name,
                                           updated_at=now) for b in group.branches])
            branches = store.branches(row.instance_id, group.name)
        running = [b for b in branches if b.state == RUNNING]
        if running:
            # A branch whose advance was lost, or whose lease ran out with its worker.
            for branch in running:
                if branch.lease_until is None or branch.lease_until <= now:
                    self.send_branch(row, branch)
            return f"{group.name}: {len(running)} branch(es) running"
        done = (*row.done, *(name for b in branches for name in b.done))
        failed = next((b for b in branches if b.state == FAILED), None)
        if failed is not None:
            return self._begin_compensation(store, row, failed.reason, group.name, done=done)
        signals = store.signals(row.instance_id)
        if CANCEL in signals:
            return self._begin_compensation(store, row, "cancelled by an operator",
                                            group.name, consume=CANCEL, done=done)
        if reason := self._interrupted(signals):
            return self._begin_compensation(store, row, reason, group.name, done=done)
        joined = replace(row, cursor=row.cursor + 1, done=(*done, group.name), attempt=0)
        return self._move(store, row, joined, group.name, "every branch applied: joined")

    def _interrupted(self, signals: Mapping[str, Any]) -> str:
        """The interrupt's reason once its signal is among the row's stored `signals`;
        else empty. It is not consumed: the stored row says when it arrived."""
        interrupt = self.flow.interrupt
        if interrupt is None or interrupt.signal not in signals:
            return ""
        return interrupt.reason

    def signal(self, instance_id: str, name: str, payload: dict[str, Any],
               carries: str | None = None) -> str:
        """Store the signal, then advance the row in the same task: sent with the time
        limits of the step after its wait (`carries`), it passes the wait and runs that
        step, as an advance would."""
        store = self.store
        row = store.load(instance_id)
        if row is None or row.state in FINISHED:
            return "no running instance"
        store.put_signal(row, name, payload)
        return f"stored; {self.advance(instance_id, carries)}"

    def tick(self) -> int:
        """Send advance for every row whose next move no message may be carrying."""
        store = self.store
        now = time.time()
        due = [row for row in store.due(self.flow.name, now, self.idle_grace)
               if self.looks_after(row)]
        # Every beat of a pool ticks; each row is nudged by the one tick that claims it.
        nudged = [row for row in due if store.nudge(row, now, self.idle_grace)]
        for row in nudged:
            self.send_advance(row)
        self._remind(store, now)
        return len(nudged)

    def looks_after(self, row: Row) -> bool:
        """Only rows started on this queue: an earlier run's leftovers belong to that
        run's workers. A row from before pools were recorded is its run's."""
        return not self.pool or row.pool == self.pool or (
            not row.pool and row.request.run_id == self.pool)

    def _remind(self, store: Store, now: float) -> None:
        """Send each due reminder and escalation of a wait still open, through the
        ledger, then record it; the wait stays open. A tick killed between the two sends
        it again on the next tick, with the same idempotency key, for the system to
        absorb: at least once, never lost."""
        if not any(wait.while_open for wait in self.flow.waits):
            return
        # One tick of a pool at a time: two beats must not both send a reminder that
        # neither has recorded yet.
        with store.only_one(f"graduate.sm.remind.{self.flow.name}.{self.pool}") as mine:
            if mine:
                self._send_reminders(store, now)

    def _send_reminders(self, store: Store, now: float) -> None:
        for row in store.waiting(self.flow.name):
            if not self.looks_after(row):
                continue
            nodes = self.flow_of(row).nodes
            wait = nodes[row.cursor] if row.cursor < len(nodes) else None
            if not isinstance(wait, Wait) or row.wait_deadline is None:
                continue
            began = row.wait_deadline - wait.deadline
            for send in wait.while_open:
                if began + send.after <= now and not store.reminded(row.instance_id,
                                                                    send.step.name):
                    self._send_while_open(store, row, send)

    def _send_while_open(self, store: Store, row: Row, send: WhileOpen) -> None:
        try:
            outcome = self.resources.ledger().call(self.flow_of(row), row.request, send.step,
                                                   attempt=1, engine=ENGINE)
        except (TransientEffectError, PermanentEffectError) as error:
            outcome_text = f"failed: {error}"
        else:
            outcome_text = outcome.value
        store.record_reminder(row, send, outcome_text)

    # ------------------------------------------------------------------ moves

    def _move(self, store: Store, old: Row, new: Row, node: str, note: str,
              countdown: float | None = None, consume: str | None = None,
              then: Then | None = None) -> str:
        written = store.update(old, new, node, note, consume, then)
        if written is None:
            return f"{node}: another writer moved the row first"
        if then is not None and written.state == then.row.state:
            folded = f"{node}: {note}; {then.node}: {then.note}"
            # A signal committed while the folded write ran is not in its guard on
            # PostgreSQL (the statement's snapshot), and the signal's own task found the
            # row leased: read once more, as the unfolded path did after its first move.
            if written.state == WAITING and (signals := store.signals(written.instance_id)):
                return f"{folded}; {self._advance(store, written, signals)}"
            return folded
        if written.state in FINISHED or written.state == WAITING:
            return f"{node}: {note}"
        if countdown:
            self.send_advance(written, countdown)
            return f"{node}: {note}"
        # The next move goes on in this task (see `advance`).
        return f"{node}: {note}; {self._advance(store, written)}"

    def _finish(self, store: Store, row: Row, state: str, reason: str, node: str,
                consume: str | None = None) -> str:
        finished = _finished(row, state, reason, node)
        return self._move(store, row, finished.row, finished.node, finished.note,
                          consume=consume)

    def _begin_compensation(self, store: Store, row: Row, reason: str, node: str,
                            consume: str | None = None,
                            done: tuple[str, ...] | None = None) -> str:
        """`done`: the steps to compensate, when the row does not list them all yet (a
        group's branches joined)."""
        compensating = replace(row, state=COMPENSATING, reason=reason, attempt=0,
                               lease_until=None, wait_deadline=None, timer_until=None,
                               done=row.done if done is None else done)
        return self._move(store, row, compensating, node, f"compensating: {reason}",
                          consume=consume)

    def _landed(self, request: InstanceRequest, step: Step) -> bool:
        """Whether the step's effect landed, as the external system's record of its
        idempotency key says: asked when the worker of its last attempt was lost, which
        may have died after the effect and before it could record the step. A system
        that honours no key keeps no such record: the step then fails, as it must."""
        return self.resources.ledger().key_recorded(
            step.system, step.effect, self.flow.key_for(step.name, request))

    def _settle_landed(self, store: Store, row: Row, step: Step) -> str:
        """The step of a lost last attempt whose effect landed is done, not failed: failing
        it would compensate the steps before it and leave its own effect applied."""
        passed = replace(row, cursor=row.cursor + 1, done=(*row.done, step.name), attempt=0,
                         lease_until=None)
        return self._move(store, row, passed, step.name,
                          f"attempt {row.attempt} applied, as the system's record of its key "
                          "says: its worker was lost after the effect")

    def _take_lease(self, store: Store, row: Row, step: Step) -> Row | None:
        self._carries = None  # the task's one effect begins: any other gets its own message
        leased = replace(row, attempt=row.attempt + 1,
                         lease_until=time.time() + step.timeout + HARD_LIMIT_SLACK
                         + self.lease_margin)
        return store.update(row, leased, step.name, f"attempt {leased.attempt} begins")

    def _step(self, store: Store, row: Row, step: Step) -> str:
        if row.attempt >= step.retry.max_attempts:
            # The last attempt began, never reported, and its effect never landed (the
            # advance settles one that did): its worker was lost.
            reason = (f"step {step.name} failed after {row.attempt} attempts: the last one "
                      "never finished (worker lost or timed out)")
            return self._begin_compensation(store, row, reason, step.name)
        leased = self._take_lease(store, row, step)
        if leased is None:
            return f"{step.name}: another worker took the step"
        try:
            with self.resources.interruptible():
                self.resources.ledger().call(self.flow_of(row), row.request, step,
                                             attempt=leased.attempt, engine=ENGINE)
        except (TransientEffectError, SoftTimeLimitExceeded) as error:
            return self._retry_or(store, leased, step, error, self._begin_compensation)
        except PermanentEffectError as error:
            return self._begin_compensation(store, leased, f"step {step.name} failed: {error}",
                                            step.name)
        passed = replace(leased, cursor=leased.cursor + 1, done=(*leased.done, step.name),
                         attempt=0, lease_until=None)
        return self._move(store, leased, passed, step.name, f"attempt {leased.attempt} applied",
                          then=self._then(passed))

    def _then(self, passed: Row) -> Then | None:
        """The move the task makes right after a step's `passed` one when no signal is
        stored for the instance (`_advance` then reads no cancel, no interrupt and no
        decision): the flow's completion after its last step, or entering the wait that
        follows the step. Written with it, in one transaction (docs/adr/0030)."""
        nodes = self.flow_of(passed).nodes
        if passed.cursor >= len(nodes):
            return _finished(passed, COMPLETED, passed.reason, "flow")
        wait = nodes[passed.cursor]
        if isinstance(wait, Wait):
            return _waiting(passed, wait, time.time())
        return None

    def _retry_or(self, store: Store, leased: Row, step: Step, error: BaseException,
                  give_up: Callable[[Store, Row, str, str], str]) -> str:
        what = ("step " if leased.state == RUNNING else
                "" if self.flow.is_wait_effect(step.name) else "compensation of ")
        if leased.attempt >= step.retry.max_attempts:
            reason = (f"{what}{step.name} failed after {leased.attempt} attempts: "
                      f"{_describe(error, step)}")
            return give_up(store, leased, reason, step.name)
        delay = step.retry.delay_after(leased.attempt)
        # The lease now guards the back-off: an early duplicate advance leaves the row be,
        # and if the delayed advance is lost the tick sends one when the lease expires.
        backing_off = replace(leased, lease_until=time.time() + delay)
        note = f"attempt {leased.attempt} failed ({_describe(error, step)}); retry in {delay:g}s"
        return self._move(store, leased, backing_off, step.name, note, countdown=delay)

    def _wait(self, store: Store, row: Row, wait: Wait, now: float,
              signals: Mapping[str, dict[str, Any]]) -> str:
        payload = signals.get(wait.signal)
        if payload is not None:
            used = wait.signal
            if payload.get("decision") == "approve":
                return self._pass(store, row, wait.name, "approved", consume=used)
            reason = wait.reason("rejected")
            if wait.on_reject == "compensate":
                return self._begin_compensation(store, row, reason, wait.name, consume=used)
            return self._finish(store, row, FAILED, reason, wait.name, consume=used)
        if row.state == WAITING:
            if row.wait_deadline is None or row.wait_deadline > now:
                return f"{wait.name}: still waiting"
            reason = wait.reason("expired")
            if wait.on_timeout == "continue":
                return self._pass(store, row, wait.name, reason)
            if wait.on_timeout == "compensate":
                return self._begin_compensation(store, row, reason, wait.name)
            return self._finish(store, row, FAILED, reason, wait.name)
        waiting = _waiting(row, wait, now)
        return self._move(store, row, waiting.row, waiting.node, waiting.note)

    def _pass(self, store: Store, row: Row, node: str, note: str,
              consume: str | None = None) -> str:
        passed = replace(row, state=RUNNING, cursor=row.cursor + 1, done=(*row.done, node),
                         wait_deadline=None, timer_until=None, attempt=0)
        return self._move(store, row, passed, node, note, consume=consume)

    def _timer(self, store: Store, row: Row, timer: Timer, now: float) -> str:
        if row.timer_until is None:
            started = replace(row, timer_until=now + timer.duration)
            return self._move(store, row, started, timer.name,
                              f"timer of {timer.duration:g}s started", countdown=timer.duration)
        if row.timer_until > now:
            return f"{timer.name}: not due yet"
        return self._pass(store, row, timer.name, "timer due")

    def _compensate_next(self, store: Store, row: Row) -> str:
        pending = self.pending_compensations(row)
        if not pending:
            if (notice := self.pending_notice(row)) is not None:
                return self._notify(store, row, notice)
            return self._finish(store, row, COMPENSATED, row.reason, "compensation")
        step = pending[0]
        if row.attempt >= step.retry.max_attempts:
            reason = (f"{row.reason}; compensation of {step.name} failed after {row.attempt} "
                      "attempts: the last one never finished (worker lost or timed out)")
            return self._finish(store, row, FAILED, reason, step.name)
        leased = self._take_lease(store, row, step)
        if leased is None:
            return f"{step.name}: another worker took the compensation"
        try:
            with self.resources.interruptible():
                self.resources.ledger().call(self.flow_of(row), row.request, step,
                                             attempt=leased.attempt, engine=ENGINE,
                                             kind="compensation")
        except (TransientEffectError, SoftTimeLimitExceeded) as error:
            return self._retry_or(store, leased, step, error, self._fail_compensation)
        except PermanentEffectError as error:
            return self._fail_compensation(
                store, leased, f"compensation of {step.name} failed: {error}", step.name)
        compensated = replace(leased, compensated=(*leased.compensated, step.name), attempt=0,
                              lease_until=None)
        return self._move(store, leased, compensated, step.name,
                          f"compensation attempt {leased.attempt} applied")

    def _fail_compensation(self, store: Store, row: Row, reason: str, node: str) -> str:
        return self._finish(store, row, FAILED, f"{row.reason}; {reason}", node)

    def _notify(self, store: Store, row: Row, notice: Step) -> str:
        """Send the notice of how the wait ended, the compensations done; leased and
        retried like a step. A notice that never lands ends the row failed, saying so."""
        if row.attempt >= notice.retry.max_attempts:
            return self._fail_compensation(
                store, row, f"{notice.name} failed after {row.attempt} attempts: the last "
                "one never finished (worker lost or timed out)", notice.name)
        leased = self._take_lease(store, row, notice)
        if leased is None:
            return f"{notice.name}: another worker took the notice"
        try:
            with self.resources.interruptible():
                self.resources.ledger().call(self.flow_of(row), row.request, notice,
                                             attempt=leased.attempt, engine=ENGINE)
        except (TransientEffectError, SoftTimeLimitExceeded) as error:
            return self._retry_or(store, leased, notice, error, self._fail_compensation)
        except PermanentEffectError as error:
            return self._fail_compensation(store, leased, f"{notice.name} failed: {error}",
                                           notice.name)
        sent = replace(leased, done=(*leased.done, notice.name), attempt=0, lease_until=None)
        return self._move(store, leased, sent, notice.name,
                          f"notice attempt {leased.attempt} applied")


def register(app: Celery, flow: Flow, resources: ProcessResources,
             settings: Mapping[str, Any], run_id: str) -> None:
    """Register advance, signal and tick on `app`, and the tick's beat schedule."""
    machine = Machine(app, flow, resources, settings)
    machine.pool = run_id

    # Plain functions, not bound methods: Celery checks a task's arguments against the
    # function's signature, and takes the first parameter of a method for `self`. Not
    # shared: a shared task is added to every Celery app the process creates later, so a
    # second engine would run the first engine's closures.
    def advance(instance_id: str, carries: str | None = None) -> str:
        with resources.interruptible():
            return machine.advance(instance_id, carries)

    def signal(instance_id: str, name: str, payload: dict[str, Any],
               carries: str | None = None) -> str:
        with resources.interruptible():
            return machine.signal(instance_id, name, payload, carries)

    def tick() -> int:
        with resources.interruptible():
            return machine.tick()

    def advance_branch(instance_id: str, group: str, branch: str) -> str:
        with resources.interruptible():
            return machine.advance_branch(instance_id, group, branch)

    # No task stores a result: the rows and their transitions are the record (what a
    # task returns says the same, for a caller or a worker logging at INFO; graduate's
    # workers log warnings only, docs/adr/0028). A stored result (and a started state)
    # cost the backend three writes a task, and each send a subscription to the result.
    for name, task in ((ADVANCE, advance), (ADVANCE_BRANCH, advance_branch),
                       (SIGNAL, signal), (TICK, tick)):
        app.task(name=name, ignore_result=True, shared=False)(task)
    interval = float(settings.get("tick_interval", STATE_MACHINE["tick_interval"]))
    app.conf.beat_schedule = {
        TICK: {"task": TICK, "schedule": interval,
               # Ticks queued while no worker runs are stale; the next one will do.
               "options": {"expires": max(10 * interval, 10.0)}},
    }


# ---------------------------------------------------------------------------- engine side

_STATES = {RUNNING: InstanceState.RUNNING, COMPENSATING: InstanceState.RUNNING,
           WAITING: InstanceState.WAITING, COMPLETED: InstanceState.COMPLETED,
           COMPENSATED: InstanceState.COMPENSATED, FAILED: InstanceState.FAILED}


class StateMachineStrategy:
    """Starts, signals and reads instances of the state machine from the client side."""

    def __init__(self, app: Celery, flow: Flow, resources: ProcessResources,
                 settings: Mapping[str, Any], pool: str, broker: BrokerView) -> None:
        self.machine = Machine(app, flow, resources, settings)
        self.machine.pool = pool  # where its rows' advance messages go
        self.app = app
        self.flow = flow
        self.resources = resources
        self.broker = broker  # where held_until looks for a decision's message
        self.machine.store.create_tables()

    def start(self, request: InstanceRequest) -> None:
        self.start_all([request])

    def start_all(self, requests: Sequence[InstanceRequest]) -> None:
        """`start` of each: their rows looked up and inserted together (one query, one
        transaction), then an advance sent for each."""
        store = self.machine.store
        taken = store.load_many([r.instance_id for r in requests])
        if taken:
            raise EngineError(f"instance(s) {', '.join(sorted(taken))} already exist in "
                              "sm_instances; give every instance its own ID")
        now = time.time()
        rows = [Row(instance_id=r.instance_id, flow=self.flow.name, request=r,
                    started_at=now, updated_at=now, pool=self.machine.pool) for r in requests]
        store.insert_all(rows)
        for row in rows:
            self.machine.send_advance(row)

    def start_duplicate(self, request: InstanceRequest) -> str | None:
        row = self.machine.store.load(request.instance_id)
        if row is not None:
            return (f"the application's table refused it: sm_instances already holds "
                    f"{request.instance_id} ({row.state})")
        self.start(request)
        return None

    def signal(self, instance_id: str, name: str, payload: dict[str, Any]) -> None:
        row = self._unfinished(instance_id, "signals")
        if self.flow.interrupt is not None and name == self.flow.interrupt.signal:
            # Stored here, as a cancel request is: a worker lost with the signal task
            # (acked early) must not lose the interrupt; the tick's advance sees it.
            self.machine.store.put_signal(row, name, payload)
            self.machine.send_advance(row)
            return
        # Sent with the time limits of the step an approval leads to: the signal task
        # runs it (`Machine.signal`).
        after = self.machine.step_after(row, name)
        # Its ID names the instance and the signal, so that `held_until` finds it in the
        # broker and in a worker's hands, as the chain's tasks are found.
        self.app.signature(SIGNAL, args=(instance_id, name, payload,
                                         after.name if after else None),
                           task_id=decision_id(instance_id, name),
                           **_limits(after)).apply_async()

    def cancel(self, instance_id: str) -> None:
        """Store a cancel request; the next advance (this one, or the tick's) begins the
        compensation of the steps done, once the step in hand has finished."""
        row = self._unfinished(instance_id, "cancellations")
        self.machine.store.put_signal(row, CANCEL, {})
        self.machine.send_advance(row)

    def _unfinished(self, instance_id: str, what: str) -> Row:
        row = self.machine.store.load(instance_id)
        if row is None:
            raise EngineError(f"no instance {instance_id!r} in sm_instances; check the ID "
                              "(`graduate run` prints the IDs it starts)")
        if row.state in FINISHED:
            raise EngineError(f"instance {instance_id!r} has finished ({row.state}); it takes "
                              f"no more {what}")
        return row

    def status(self, instance_id: str) -> InstanceStatus:
        return self._status(instance_id, self.machine.store.load(instance_id))

    def statuses(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        """Every instance's `status`, their rows read together (`Store.load_many`): the
        harness asks this of every instance it watches, on the same cores as the workers."""
        rows = self.machine.store.load_many(instance_ids)
        return {iid: self._status(iid, rows.get(iid)) for iid in instance_ids}

    def _status(self, instance_id: str, row: Row | None) -> InstanceStatus:
        if row is None:
            return InstanceStatus(InstanceState.UNKNOWN,
                                  detail=f"no row for {instance_id!r} in sm_instances")
        nodes = self.machine.flow_of(row).nodes
        if row.state == WAITING:
            wait = nodes[row.cursor]
            detail = wait.signal if isinstance(wait, Wait) else ""
        elif row.state == COMPENSATING:
            detail = f"compensating: {row.reason}"
        elif row.state == RUNNING:
            where = nodes[row.cursor].name if row.cursor < len(nodes) else "finish"
            detail = f"at {where}" + (f" (attempt {row.attempt})" if row.attempt else "")
            if row.cursor < len(nodes) and isinstance(nodes[row.cursor], Parallel):
                branches = self.machine.store.branches(instance_id, where)
                done = (*row.done, *(name for b in branches for name in b.done))
                states = ", ".join(f"{b.branch} {b.state}" for b in branches)
                return InstanceStatus(_STATES[row.state], done, None,
                                      f"{detail}: {states or 'branches not opened yet'}")
        else:
            detail = row.reason
        return InstanceStatus(_STATES[row.state], row.done, row.finished_at, detail)

    def holds(self, instance_id: str) -> bool:
        """An unfinished row is held whatever happened to its messages: the tick re-sends
        advance for it once its lease or idle grace runs out (while beat runs)."""
        row = self.machine.store.load(instance_id)
        return row is not None and row.state not in FINISHED

    def held_until(self, instance_id: str) -> HeldUp | None:
        """When a row waits at a wait whose decision no message can bring any more:
        nothing but the wait's own expiry (which the tick acts on) moves it before then,
        or, on Redis, a dead worker's unacknowledged message of the decision, given back
        after the visibility timeout. None when something may move it sooner: a row that
        does not wait (the tick re-sends its advance), a decision, cancel or interrupt
        stored for it (the tick's advance takes it), the decision's message queued or in
        a live worker's hands, or a broker that cannot show where it is (RabbitMQ with
        ready messages or a consumer that does not answer). A decision sent after this
        look is the sender's to know: the harness knows which answers it still owes.

        Read in the order a decision moves (the broker's queue, its unacked hash, a
        worker's hands, the row's stored signal), so that one moving while it is read
        is seen at one place or the next; the row is read again last, and must not
        have moved."""
        store = self.machine.store
        row = store.load(instance_id)
        wait = self._waiting_at(row)
        if row is None or wait is None or self._stored(instance_id, wait):
            return None
        back = self._decision_back(decision_id(instance_id, wait.signal))
        if back is None or store.load(instance_id) != row or self._stored(instance_id, wait):
            return None
        assert row.wait_deadline is not None  # a waiting row's, see `_waiting_at`
        if back[0] < row.wait_deadline:
            return HeldUp(back[0], back[1])
        return HeldUp(row.wait_deadline, f"it waits at {wait.name} until the wait expires, "
                      f"and {back[1]}")

    def _waiting_at(self, row: Row | None) -> Wait | None:
        """The wait the row waits at (with a deadline), if it waits."""
        if row is None or row.state != WAITING or row.wait_deadline is None:
            return None
        nodes = self.machine.flow_of(row).nodes
        node = nodes[row.cursor] if row.cursor < len(nodes) else None
        return node if isinstance(node, Wait) else None

    def _stored(self, instance_id: str, wait: Wait) -> bool:
        """Whether a signal that the next advance takes is stored for the instance."""
        interrupt = self.flow.interrupt
        names = [wait.signal, CANCEL, *([interrupt.signal] if interrupt else [])]
        return not self.machine.store.signals(instance_id).keys().isdisjoint(names)

    def _decision_back(self, tid: str) -> tuple[float, str] | None:
        """No sooner than when (epoch seconds; infinite: never) the decision's message
        `tid` can reach a worker, and why; None when it may any time, or the broker and
        the workers cannot show that it cannot."""
        queue = self.app.conf.task_default_queue
        if not self.broker.peekable:
            counts = self.broker.queue_counts(queue)
            if counts.ready:
                return None  # RabbitMQ shows a queue's messages only to its consumers
            held, answered = consumers_holding(self.app, [tid], counts.consumers)
            if held or answered < counts.consumers:
                return None
            return math.inf, "its decision is in no queue and no worker's hands"
        for look in range(2):
            queued = {t for t in self.broker.task_ids(queue, tid) or set() if t == tid}
            taken = {t: at for t, at in (self.broker.taken_at(tid) or {}).items() if t == tid}
            if queued - taken.keys():
                return None  # a worker takes it any time
            taker = self._taker(tid, taken.get(tid))
            if taker is None:
                return None
            if tid in taken:
                until = taken[tid] + self.broker.visibility_timeout
                return until, "its decision is held only by " + unacknowledged(
                    "a message", taker, self.broker.visibility_timeout)
            if look == 0:
                # kombu moves a message from the queue to the unacked hash in two commands:
                # one between them is in neither (see receipts.REDIS_HANDOVER).
                time.sleep(REDIS_HANDOVER)
        return math.inf, ("its decision is in no queue, no unacknowledged message and no "
                          "live worker's hands")

    def _taker(self, tid: str, taken: float | None) -> str | None:
        """The worker that received the decision `tid` last, now without it in hand: dead,
        or alive and saying it does not hold it (a worker whose broker connection broke
        drops what it had reserved); "" when none received it. None when it may still be
        in a worker's hands: its receiver holds it, or does not answer but may (its
        process runs, or it runs on another host), or the message was `taken` (epoch
        seconds) and its taker has not marked it yet."""
        client = self.resources.redis()
        if taken is None:
            mark = client.get(received_key(tid))
            if mark is None:
                return ""
            worker = mark.decode() if isinstance(mark, bytes) else str(mark)
        else:
            found = taker_of(client, tid, taken)
            if found is None:
                return None  # not yet marked by this taker
            worker = found
        if proven_dead(worker):
            return f"{worker}, now dead,"
        # No answer: busy, or on a host whose processes cannot be seen: cannot tell.
        held = still_holds(self.app, worker, [tid])
        return None if held is not False else f"{worker}, which no longer holds it,"

    def history(self, instance_id: str) -> list[HistoryEvent]:
        return self.machine.store.transitions(instance_id)
