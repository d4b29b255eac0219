"""The toy engine's record (one SQLite file per run) and the move that advances an
instance by one node, which its worker processes make under a lease."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from graduate.errors import PermanentEffectError, TransientEffectError
from graduate.flow import Flow, InstanceRequest, Step, Timer, Wait
from graduate.ledger import Ledger

RUNNING, WAITING, COMPENSATING = "running", "waiting", "compensating"
COMPLETED, COMPENSATED, FAILED = "completed", "compensated", "failed"
FINISHED = (COMPLETED, COMPENSATED, FAILED)
CANCEL = "toy.cancel"  # an operator's cancel, stored with the signals
CLAIM_LEASE = 5.0  # how long a worker may hold an instance between two writes

SCHEMA = (
    # `until`: when the open wait's deadline or the running timer is due.
    """CREATE TABLE IF NOT EXISTS toy_instances (
        instance_id TEXT PRIMARY KEY, request TEXT NOT NULL, cursor INTEGER NOT NULL,
        state TEXT NOT NULL, done TEXT NOT NULL, undone INTEGER NOT NULL,
        attempt INTEGER NOT NULL, until REAL, reason TEXT NOT NULL, finished_at REAL,
        due_at REAL NOT NULL, lease_until REAL)""",
    """CREATE TABLE IF NOT EXISTS toy_signals (instance_id TEXT NOT NULL, name TEXT NOT NULL,
        payload TEXT NOT NULL, PRIMARY KEY (instance_id, name))""",
    """CREATE TABLE IF NOT EXISTS toy_history (instance_id TEXT NOT NULL, at REAL NOT NULL,
        node TEXT NOT NULL, note TEXT NOT NULL)""",
)
_FIELDS = "instance_id, request, cursor, state, done, undone, attempt, until, reason, finished_at"


@dataclass(frozen=True)
class Row:
    instance_id: str
    request: InstanceRequest
    cursor: int = 0  # index of the flow's node the instance is on
    state: str = RUNNING
    done: tuple[str, ...] = ()  # nodes passed, in order
    undone: int = 0  # compensations applied
    attempt: int = 0  # attempts of the current step (or compensation) begun
    until: float | None = None
    reason: str = ""
    finished_at: float | None = None


class Store:
    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        for statement in SCHEMA:
            self.db.execute(statement)

    def insert(self, request: InstanceRequest) -> bool:
        """Record a new instance, due now; False if its ID is taken."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO toy_instances VALUES (?, ?, 0, ?, '[]', 0, 0, NULL, '', "
            "NULL, ?, NULL)",
            (request.instance_id, json.dumps(asdict(request)), RUNNING, time.time()))
        return cursor.rowcount == 1

    def rows(self, instance_ids: list[str]) -> dict[str, Row]:
        marks = ", ".join("?" * len(instance_ids))
        found = self.db.execute(f"SELECT {_FIELDS} FROM toy_instances "
                                f"WHERE instance_id IN ({marks})", instance_ids)
        return {r[0]: Row(r[0], InstanceRequest(**json.loads(r[1])), r[2], r[3],
                          tuple(json.loads(r[4])), *r[5:]) for r in found}

    def claim(self, now: float) -> Row | None:
        """Lease one unfinished instance that is due and that no live worker holds."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            found = self.db.execute(
                "SELECT instance_id FROM toy_instances WHERE due_at <= ? AND state NOT IN "
                "(?, ?, ?) AND (lease_until IS NULL OR lease_until < ?) ORDER BY due_at "
                "LIMIT 1", (now, *FINISHED, now)).fetchone()
            if found is not None:
                self.db.execute("UPDATE toy_instances SET lease_until = ? WHERE instance_id = ?",
                                (now + CLAIM_LEASE, found[0]))
        finally:
            self.db.execute("COMMIT")
        return None if found is None else self.rows([found[0]])[found[0]]

    def save(self, row: Row, node: str, note: str, *, due_at: float | None = None,
             lease_until: float | None = None, consume: str | None = None) -> None:
        """Write `row` (due again at `due_at`, by default now), its history line, and the
        removal of the signal it consumed, in one transaction."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "UPDATE toy_instances SET cursor = ?, state = ?, done = ?, undone = ?, "
                "attempt = ?, until = ?, reason = ?, finished_at = ?, due_at = ?, "
                "lease_until = ? WHERE instance_id = ?",
                (row.cursor, row.state, json.dumps(row.done), row.undone, row.attempt,
                 row.until, row.reason, row.finished_at, now if due_at is None else due_at,
                 lease_until, row.instance_id))
            self.db.execute("INSERT INTO toy_history VALUES (?, ?, ?, ?)",
                            (row.instance_id, now, node, note))
            if consume is not None:
                self.db.execute("DELETE FROM toy_signals WHERE instance_id = ? AND name = ?",
                                (row.instance_id, consume))

    def put_signal(self, instance_id: str, name: str, payload: dict[str, Any]) -> None:
        """Store a signal and make its instance due, so a worker reads it now."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT OR REPLACE INTO toy_signals VALUES (?, ?, ?)",
                            (instance_id, name, json.dumps(payload)))
            self.db.execute("UPDATE toy_instances SET due_at = MIN(due_at, ?) "
                            "WHERE instance_id = ?", (time.time(), instance_id))

    def signal(self, instance_id: str, name: str) -> dict[str, Any] | None:
        found = self.db.execute("SELECT payload FROM toy_signals WHERE instance_id = ? AND "
                                "name = ?", (instance_id, name)).fetchone()
        return None if found is None else dict(json.loads(found[0]))

    def history(self, instance_id: str) -> list[tuple[float, str, str]]:
        return list(self.db.execute("SELECT at, node, note FROM toy_history WHERE "
                                    "instance_id = ? ORDER BY rowid", (instance_id,)))

    def close(self) -> None:
        self.db.close()


class Machine:
    """What a worker does with the instance it leased: one node, then write it down."""

    def __init__(self, engine: str, flow: Flow, store: Store, ledger: Ledger) -> None:
        self.engine, self.flow, self.store, self.ledger = engine, flow, store, ledger

    def advance(self, row: Row, now: float) -> None:
        if row.state in (RUNNING, WAITING) and self.store.signal(row.instance_id, CANCEL):
            return self._compensate(row, "cancelled by an operator", "cancel", consume=CANCEL)
        if row.state == COMPENSATING:
            return self._undo_next(row)
        if row.cursor == len(self.flow.nodes):
            return self._finish(row, COMPLETED, "", "end")
        node = self.flow.nodes[row.cursor]
        if isinstance(node, Step):
            return self._step(row, node)
        if isinstance(node, Wait):
            return self._wait(row, node, now)
        if isinstance(node, Timer):
            return self._timer(row, node, now)
        raise AssertionError(f"the toy engine was opened on a flow with {node!r}")

    def _attempt(self, row: Row, step: Step, kind: str) -> tuple[Row, Exception | None]:
        """Record that an attempt begins (a worker lost midway leaves it counted), then
        make the call through the ledger."""
        begun = replace(row, attempt=row.attempt + 1)
        self.store.save(begun, step.name, f"{kind} attempt {begun.attempt} begins",
                        lease_until=time.time() + step.timeout + CLAIM_LEASE)
        try:
            self.ledger.call(self.flow, row.request, step, attempt=begun.attempt,
                             engine=self.engine,
                             kind="effect" if kind == "step" else "compensation")
        except (TransientEffectError, PermanentEffectError) as error:
            return begun, error
        return begun, None

    def _step(self, row: Row, step: Step) -> None:
        begun, error = self._attempt(row, step, "step")
        if error is None:
            passed = replace(begun, cursor=begun.cursor + 1, done=(*begun.done, step.name),
                             attempt=0)
            return self.store.save(passed, step.name, f"attempt {begun.attempt} applied")
        if isinstance(error, TransientEffectError) and begun.attempt < step.retry.max_attempts:
            delay = step.retry.delay_after(begun.attempt)
            return self.store.save(begun, step.name, f"{error}; retry in {delay:g}s",
                                   due_at=time.time() + delay)
        if isinstance(error, TransientEffectError):
            reason = f"step {step.name} failed after {begun.attempt} attempts: {error}"
        else:
            reason = f"step {step.name} failed: {error}"
        return self._compensate(begun, reason, step.name)

    def _wait(self, row: Row, wait: Wait, now: float) -> None:
        payload = self.store.signal(row.instance_id, wait.signal)
        if payload is not None:
            if payload.get("decision") == "approve":
                return self._pass(row, wait.name, "approved", consume=wait.signal)
            return self._end_wait(row, wait.on_reject, f"rejected at {wait.name}", wait.name,
                                  consume=wait.signal)
        if row.state != WAITING:
            waiting = replace(row, state=WAITING, until=now + wait.deadline)
            return self.store.save(waiting, wait.name, f"awaiting signal {wait.signal}",
                                   due_at=waiting.until)
        assert row.until is not None
        if now < row.until:  # woken by a signal for another wait: wait on
            return self.store.save(row, wait.name, "still waiting", due_at=row.until)
        return self._end_wait(row, wait.on_timeout, f"deadline of {wait.name} passed",
                              wait.name)

    def _end_wait(self, row: Row, action: str, reason: str, node: str,
                  consume: str | None = None) -> None:
        if action == "continue":
            return self._pass(row, node, reason, consume=consume)
        if action == "compensate":
            return self._compensate(row, reason, node, consume=consume)
        return self._finish(row, FAILED, reason, node, consume=consume)

    def _timer(self, row: Row, timer: Timer, now: float) -> None:
        if row.until is None:
            started = replace(row, until=now + timer.duration)
            return self.store.save(started, timer.name, f"timer of {timer.duration:g}s",
                                   due_at=started.until)
        if now < row.until:
            return self.store.save(row, timer.name, "not due yet", due_at=row.until)
        return self._pass(row, timer.name, "timer due")

    def _pass(self, row: Row, node: str, note: str, consume: str | None = None) -> None:
        passed = replace(row, state=RUNNING, cursor=row.cursor + 1, done=(*row.done, node),
                         until=None, attempt=0)
        self.store.save(passed, node, note, consume=consume)

    def _compensate(self, row: Row, reason: str, node: str,
                    consume: str | None = None) -> None:
        undoing = replace(row, state=COMPENSATING, reason=reason, attempt=0, until=None)
        self.store.save(undoing, node, f"compensating: {reason}", consume=consume)

    def _undo_next(self, row: Row) -> None:
        """Compensate the applied steps in reverse order, one per move."""
        pending = self.flow.compensations_for(row.done)[row.undone:]
        if not pending:
            return self._finish(row, COMPENSATED, row.reason, "compensation")
        step = pending[0]
        begun, error = self._attempt(row, step, "compensation")
        if error is None:
            undone = replace(begun, undone=begun.undone + 1, attempt=0)
            return self.store.save(undone, step.name, "compensation applied")
        if isinstance(error, TransientEffectError) and begun.attempt < step.retry.max_attempts:
            delay = step.retry.delay_after(begun.attempt)
            return self.store.save(begun, step.name, f"{error}; retry in {delay:g}s",
                                   due_at=time.time() + delay)
        return self._finish(begun, FAILED, f"{row.reason}; compensation of {step.name} "
                            f"failed: {error}", step.name)

    def _finish(self, row: Row, state: str, reason: str, node: str,
                consume: str | None = None) -> None:
        ended = replace(row, state=state, reason=reason, finished_at=time.time())
        self.store.save(ended, node, state if not reason else f"{state}: {reason}",
                        consume=consume)
