"""The flow written directly as a Celery state machine, as a team writes one without
graduate: a row per instance in the application's table (the node it is at, and a
version), and one task, `advance`, that runs the row's step, moves the row one node on
with optimistic concurrency (`WHERE version = ?`, so a duplicate message moves nothing)
and sends itself again for the next step. A wait is a row that stops at it, with its
deadline; the approval handler moves the row past it and sends the advance, and a sweep
that beat runs every second (in the worker) ends the rows whose deadline passed: the
flow's wait expires, so a team's machine needs it too. Celery's defaults but for
results, which nobody reads; no lease, no history, no recovery of lost messages:
nothing of graduate's in between. The baseline of `graduate bench` for the
celery-state-machine engine (see `graduate.adapters.plain`, and docs/adr/0010 and 0016
for why it has a baseline of its own and what it does).

    python -m graduate.adapters.celery.plain_state_machine RUN_DIR   (a PlainSpec on stdin)
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path

from celery import Celery

from graduate.adapters.celery.app import close_app
from graduate.adapters.celery.plain import run_plain_worker
from graduate.adapters.celery.settings import STATE_MACHINE
from graduate.adapters.plain import PlainSpec, insert_effect, start_plain_worker
from graduate.errors import EngineError
from graduate.processes import ManagedProcess

ADVANCE = "plain.sm.advance"
EXPIRE = "plain.sm.expire"
# `deadline`: when the wait the row is at expires (NULL away from a wait); a row whose
# wait expired moves to EXPIRED.
_SCHEMA = ("CREATE TABLE IF NOT EXISTS progress (instance TEXT PRIMARY KEY, "
           "cursor INTEGER NOT NULL, version INTEGER NOT NULL, deadline REAL)",
           "CREATE INDEX IF NOT EXISTS progress_deadline ON progress (deadline)")
EXPIRED = -1
# How often beat sweeps for expired waits: graduate's tick interval.
SWEEP_INTERVAL = STATE_MACHINE["tick_interval"]
# How long an approval handler gives a row to reach its wait, and how often it looks.
ARRIVAL_TIMEOUT, ARRIVAL_POLL = 30.0, 0.001


class _Connections:
    """The process's connections, as a team's pool keeps them: one to the effects (an
    fsync a commit, as `record_effect`'s), one to the application's table, committed as
    graduate's state machine commits its tables (without an fsync). Opened on first use
    in each process: a pool child must not use its parent's."""

    def __init__(self, database: str) -> None:
        self._database = database
        self._pid = 0
        self._effects: sqlite3.Connection | None = None
        self._table: sqlite3.Connection | None = None

    def get(self) -> tuple[sqlite3.Connection, sqlite3.Connection]:
        if self._effects is None or self._table is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._effects = sqlite3.connect(self._database, timeout=30, isolation_level=None)
            self._table = sqlite3.connect(self._database, timeout=30, isolation_level=None)
            self._table.execute("PRAGMA synchronous=NORMAL")
        return self._effects, self._table

    def close(self) -> None:
        for connection in (self._effects, self._table):
            if connection is not None and self._pid == os.getpid():
                connection.close()
        self._effects = self._table = None


def create_plain_app(spec: PlainSpec) -> Celery:
    app = Celery("graduate-plain-state-machine", broker=spec.services["broker_url"],
                 backend=spec.services["result_backend_url"])
    app.conf.task_default_queue = spec.queue

    connections = _Connections(spec.database)

    def advance(instance_id: str) -> None:
        effects, table = connections.get()
        row = table.execute("SELECT cursor, version FROM progress WHERE instance = ?",
                            (instance_id,)).fetchone()
        if row is None or row[0] >= len(spec.nodes) or spec.nodes[row[0]][0] != "step":
            return  # finished, or at a wait: its handler moves it on
        cursor, version = row
        insert_effect(effects, instance_id, spec.nodes[cursor][1])
        after = spec.nodes[cursor + 1] if cursor + 1 < len(spec.nodes) else None
        # Onto a wait: with its deadline, in the same write.
        deadline = (time.time() + spec.deadlines[after[1]]
                    if after is not None and after[0] == "wait"
                    and after[1] in spec.deadlines else None)
        moved = table.execute("UPDATE progress SET cursor = ?, version = ?, deadline = ? "
                              "WHERE instance = ? AND version = ?",
                              (cursor + 1, version + 1, deadline, instance_id,
                               version)).rowcount
        if moved and after is not None and after[0] == "step":
            app.signature(ADVANCE, args=(instance_id,)).apply_async()

    def expire() -> int:
        """End every row whose wait's deadline passed (versioned, as a move is). The
        compensations an expiry starts are not in the baseline: no bench instance
        expires, so neither side ever runs them; the sweep runs all along."""
        _, table = connections.get()
        due = table.execute("SELECT instance, version FROM progress WHERE deadline <= ?",
                            (time.time(),)).fetchall()
        return sum(table.execute("UPDATE progress SET cursor = ?, version = ?, deadline = "
                                 "NULL WHERE instance = ? AND version = ?",
                                 (EXPIRED, version + 1, instance, version)).rowcount
                   for instance, version in due)

    # Its table is the record, as graduate's state machine's is: no result is stored.
    app.task(name=ADVANCE, ignore_result=True, shared=False)(advance)
    app.task(name=EXPIRE, ignore_result=True, shared=False)(expire)
    app.conf.beat_schedule = {
        EXPIRE: {"task": EXPIRE, "schedule": SWEEP_INTERVAL,
                 "options": {"expires": max(10 * SWEEP_INTERVAL, 10.0)}},
    }
    return app


def start_worker(spec: PlainSpec, run_dir: Path) -> ManagedProcess:
    return start_plain_worker(spec, run_dir, __name__, "Celery state machine")


class PlainStateMachineClient:
    """Inserts each instance's row and moves it past each wait, sending the advance
    (`graduate.adapters.plain.PlainClient`)."""

    def __init__(self, spec: PlainSpec) -> None:
        self._spec = spec
        self._app = create_plain_app(spec)
        self._connections = _Connections(spec.database)
        self._table = self._connections.get()[1]
        for statement in _SCHEMA:
            self._table.execute(statement)

    def start(self, instance_id: str) -> None:
        self._table.execute("INSERT INTO progress VALUES (?, 0, 1, NULL)", (instance_id,))
        self._app.signature(ADVANCE, args=(instance_id,)).apply_async()

    def signal(self, instance_id: str, wait: str) -> None:
        """Move the row past `wait` and send its advance. The driver signals once the
        step before the wait landed, which the worker commits just before it moves the
        row onto the wait: the handler waits those few moments for the row."""
        at = next(i for i, (kind, name) in enumerate(self._spec.nodes)
                  if kind == "wait" and name == wait)
        deadline = time.monotonic() + ARRIVAL_TIMEOUT
        while not self._table.execute("UPDATE progress SET cursor = cursor + 1, version = "
                                      "version + 1, deadline = NULL WHERE instance = ? AND "
                                      "cursor = ?", (instance_id, at)).rowcount:
            if time.monotonic() > deadline:
                raise EngineError(f"the plain state machine's {instance_id} never reached "
                                  f"wait {wait!r}")
            time.sleep(ARRIVAL_POLL)
        self._app.signature(ADVANCE, args=(instance_id,)).apply_async()

    def close(self) -> None:
        self._connections.close()
        close_app(self._app)


def open_client(spec: PlainSpec) -> PlainStateMachineClient:
    return PlainStateMachineClient(spec)


def main(run_dir: str) -> None:
    del run_dir  # names the run for `ps` readers; the spec carries everything
    spec = PlainSpec.from_json(sys.stdin.read())
    run_plain_worker(create_plain_app(spec), spec, beat=True)


if __name__ == "__main__":
    main(*sys.argv[1:2])
