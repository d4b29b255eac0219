"""A move of the state machine's row writes every column a move may change, and only
those: what a worker reads back is the row it wrote, with the request it started with."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from graduate.adapters.celery import state_machine
from graduate.adapters.celery.resources import ProcessResources
from graduate.adapters.celery.settings import STATE_MACHINE
from graduate.adapters.celery.state_machine import (
    ADVANCE,
    CANCEL,
    COMPENSATED,
    COMPENSATING,
    COMPLETED,
    RUNNING,
    WAITING,
    Machine,
    Row,
    Store,
    Then,
)
from graduate.db import Database
from graduate.flow import Flow, InstanceRequest, Step
from graduate.ledger import Outcome


def test_a_moved_row_reads_back_as_written_and_keeps_its_request(tmp_path: Path) -> None:
    store = Store(Database(str(tmp_path / "app.sqlite3"), fsync_each_commit=False))
    store.create_tables()
    request = InstanceRequest(instance_id="i-1", run_id="r", tenant_id="t", entity_id="e",
                              date="20261130", correlation_id="c", trace_id="x",
                              input=(("partners", ("acme", "globex")),))
    first = Row(instance_id="i-1", flow="f", request=request, started_at=1.0,
                updated_at=1.0, pool="q")
    store.insert_all([first])
    moved = replace(first, cursor=3, state=COMPENSATING, done=("a", "b"), compensated=("b",),
                    attempt=2, wait_deadline=5.0, timer_until=6.0, lease_until=7.0,
                    finished_at=8.0, reason="cancelled")
    written = store.update(first, moved, "b", "compensating")
    assert written is not None
    assert store.load("i-1") == written
    assert written.request == request
    assert written.version == first.version + 1
    # A second writer from the same version loses, and the row stays as the first wrote it.
    assert store.update(first, replace(first, cursor=1), "a", "late") is None
    assert store.load("i-1") == written
    assert json.loads(store.db.query("SELECT request FROM sm_instances")[0][0])["input"] \
        == [["partners", ["acme", "globex"]]]


def check_a_move_uses_up_its_signal_and_writes_its_transition_only_when_it_wins(
        db: Database) -> None:
    """What `Store.update` commits together (in one statement on PostgreSQL): the move,
    its transition, and the signal it uses up; a writer that lost writes none of them."""
    store = Store(db)
    store.create_tables()
    request = InstanceRequest(instance_id="i-1", run_id="r", tenant_id="t", entity_id="e",
                              date="20261130", correlation_id="c", trace_id="x")
    first = Row(instance_id="i-1", flow="f", request=request, started_at=1.0,
                updated_at=1.0, state=WAITING)
    store.insert_all([first])
    # What a task reads first: the row and its stored signals, in one query.
    assert store.load_with_signals("i-1") == (first, {})
    assert store.load_with_signals("i-2") == (None, {})
    store.put_signal(first, "approval", {"decision": "reject"})
    # A repeat replaces the earlier signal, and is a transition of its own.
    store.put_signal(first, "approval", {"decision": "approve"})
    store.put_signal(first, CANCEL, {})
    assert store.signals("i-1") == {"approval": {"decision": "approve"}, CANCEL: {}}
    assert store.load_with_signals("i-1") == (first, store.signals("i-1"))

    passed = store.update(first, replace(first, state=RUNNING, cursor=1), "approval",
                          "approved", consume="approval")
    assert passed is not None
    assert store.signals("i-1") == {CANCEL: {}}  # only the one it used up is gone
    assert [(e.kind, e.detail) for e in store.transitions("i-1")] == [
        (WAITING, "started"),
        (f"{WAITING} -> {WAITING}", "approval: signal approval stored: "
         '{"decision": "reject"}'),
        (f"{WAITING} -> {WAITING}", "approval: signal approval stored: "
         '{"decision": "approve"}'),
        (f"{WAITING} -> {WAITING}", f"{CANCEL}: signal {CANCEL} stored: {{}}"),
        (f"{WAITING} -> {RUNNING}", "approval: approved"),
    ]
    # A writer from the version before loses: no transition, and its signal stays.
    assert store.update(first, replace(first, state=COMPENSATING), "x", "late",
                        consume=CANCEL) is None
    assert store.update(first, replace(first, state=COMPENSATING), "x", "late") is None
    assert store.signals("i-1") == {CANCEL: {}}
    assert len(store.transitions("i-1")) == 5
    assert store.load("i-1") == passed
    # The winner's next move, without a signal to use up.
    assert store.update(passed, replace(passed, cursor=2), "step", "applied") is not None
    assert store.transitions("i-1")[-1].detail == "step: applied"
    assert store.signals("i-1") == {CANCEL: {}}


def test_a_move_uses_up_its_signal_and_writes_its_transition_only_when_it_wins(
        tmp_path: Path) -> None:
    check_a_move_uses_up_its_signal_and_writes_its_transition_only_when_it_wins(
        Database(str(tmp_path / "app.sqlite3"), fsync_each_commit=False))


def check_a_folded_move_writes_both_moves_only_while_no_signal_is_stored(
        db: Database) -> None:
    """`Store.update` with `then` (docs/adr/0030): a step's move and the completion that
    follows it, as one write with both transitions, while no signal is stored; with one
    stored (a cancel the task must take between the two), the step's move alone; a
    writer that lost the version writes neither."""
    store = Store(db)
    store.create_tables()
    rows = {}
    for instance_id in ("i-1", "i-2"):
        request = InstanceRequest(instance_id=instance_id, run_id="r", tenant_id="t",
                                  entity_id="e", date="20261130", correlation_id="c",
                                  trace_id="x")
        rows[instance_id] = Row(instance_id=instance_id, flow="f", request=request,
                                started_at=1.0, updated_at=1.0, attempt=1, lease_until=9.0)
    store.insert_all(list(rows.values()))
    store.put_signal(rows["i-2"], CANCEL, {})

    def moves(row: Row) -> tuple[Row, Then]:
        passed = replace(row, cursor=1, done=("s",), attempt=0, lease_until=None)
        return passed, Then(replace(passed, state=COMPLETED, finished_at=5.0), "flow",
                            COMPLETED)

    passed, then = moves(rows["i-1"])
    written = store.update(rows["i-1"], passed, "s", "attempt 1 applied", then=then)
    assert written is not None
    assert (written.state, written.cursor, written.done, written.finished_at) == (
        COMPLETED, 1, ("s",), 5.0)
    assert written.version == rows["i-1"].version + 1
    assert store.load("i-1") == written
    assert [(e.kind, e.detail) for e in store.transitions("i-1")] == [
        (RUNNING, "started"), (f"{RUNNING} -> {RUNNING}", "s: attempt 1 applied"),
        (f"{RUNNING} -> {COMPLETED}", f"flow: {COMPLETED}")]
    # Lost: from the version it moved from, neither move is written again.
    assert store.update(rows["i-1"], passed, "s", "late", then=then) is None
    assert store.load("i-1") == written
    assert len(store.transitions("i-1")) == 3

    passed, then = moves(rows["i-2"])
    written = store.update(rows["i-2"], passed, "s", "attempt 1 applied", then=then)
    assert written is not None
    assert (written.state, written.cursor, written.finished_at) == (RUNNING, 1, None)
    assert store.load("i-2") == written
    assert [e.detail for e in store.transitions("i-2")][-1] == "s: attempt 1 applied"
    assert store.signals("i-2") == {CANCEL: {}}  # for the next move to take


def test_a_folded_move_writes_both_moves_only_while_no_signal_is_stored(
        tmp_path: Path) -> None:
    check_a_folded_move_writes_both_moves_only_while_no_signal_is_stored(
        Database(str(tmp_path / "app.sqlite3"), fsync_each_commit=False))


@pytest.mark.parametrize("earlier_version", [False, True])
def test_transitions_read_back_in_the_order_written_on_old_and_new_tables(
        tmp_path: Path, earlier_version: bool) -> None:
    """`sm_transitions` is numbered by INTEGER PRIMARY KEY (no AUTOINCREMENT, whose
    sqlite_sequence costs a page a transaction); tables an earlier version made keep
    AUTOINCREMENT. Transitions are never deleted, so either numbers them in order."""
    path = tmp_path / "app.sqlite3"
    if earlier_version:
        old = sqlite3.connect(path)
        old.execute("""CREATE TABLE sm_transitions (
            id INTEGER PRIMARY KEY AUTOINCREMENT, instance_id TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL,
            node TEXT NOT NULL, note TEXT NOT NULL)""")
        old.close()
    store = Store(Database(str(path), fsync_each_commit=False))
    store.create_tables()
    request = InstanceRequest(instance_id="i-1", run_id="r", tenant_id="t", entity_id="e",
                              date="20261130", correlation_id="c", trace_id="x")
    row = Row(instance_id="i-1", flow="f", request=request, started_at=1.0, updated_at=1.0)
    store.insert_all([row])
    for cursor in (1, 2, 3):
        moved = store.update(row, replace(row, cursor=cursor), f"s{cursor}", "applied")
        assert moved is not None
        row = moved
    assert [e.detail for e in store.transitions("i-1")] == [
        "started", "s1: applied", "s2: applied", "s3: applied"]
    tables = {found[0] for found in store.db.query("SELECT name FROM sqlite_master")}
    assert ("sqlite_sequence" in tables) == earlier_version


class _Sends:
    """A Celery app's `signature(...).apply_async()` recorded in a queue, for a test to
    run the tasks in order in its own process."""

    def __init__(self) -> None:
        self.queue: deque[tuple[str, tuple[Any, ...]]] = deque()

    def signature(self, name: str, args: tuple[Any, ...] = (), **_: Any) -> _Sends:
        self.queue.append((name, args))
        return self

    def apply_async(self) -> None:
        pass


class _InProcess:
    """A Machine on a fresh ledger and tables whose sends are queued, and run in order
    here: the worker's task bodies without Celery."""

    def __init__(self, flow: Flow, tmp_path: Path) -> None:
        self.flow = flow
        self.resources = ProcessResources({"ledger_url": str(tmp_path / "ledger.sqlite3"),
                                           "app_db_url": str(tmp_path / "app.sqlite3")})
        self.sends = _Sends()
        self.machine = Machine(cast(Any, self.sends), flow, self.resources, STATE_MACHINE)
        self.store = self.machine.store
        self.store.create_tables()

    def start(self, *numbers: int) -> list[Row]:
        rows = [Row(instance_id=f"i-{n}", flow=self.flow.name, request=InstanceRequest(
            instance_id=f"i-{n}", run_id="r", tenant_id="t", entity_id=f"e{n}",
            date="20261130", correlation_id="c", trace_id="x"), started_at=1.0,
            updated_at=1.0) for n in numbers]
        self.store.insert_all(rows)
        for row in rows:
            self.machine.send_advance(row)
        return rows

    def run_sent(self) -> None:
        while self.sends.queue:
            name, args = self.sends.queue.popleft()
            assert name == ADVANCE
            self.machine.advance(*args)

    def approve_waiting(self) -> list[Row]:
        """Approve every waiting row, as its signal task does; the rows as they waited."""
        waiting = self.store.waiting(self.flow.name)
        for row in waiting:
            self.machine.signal(row.instance_id, "approval", {"decision": "approve"},
                                "activate")
        return waiting

    def notes(self, instance_id: str) -> list[str]:
        return [e.detail for e in self.store.transitions(instance_id)]


def test_a_signal_stored_while_a_step_runs_is_taken_at_the_next_move_as_before(
        sample_flow: Flow, tmp_path: Path) -> None:
    """docs/adr/0030: a step's move takes the completion or the wait entry after it into
    its own transaction only while no signal is stored. A cancel stored while the last
    step runs still compensates the flow, and a decision stored while the step before
    the wait runs still passes the wait, in the same task; undisturbed, the flow ends
    with the same transitions as before, two writes fewer."""
    run = _InProcess(sample_flow, tmp_path)
    store = run.store
    stored_during = {"i-2": ("notify", CANCEL, {}),
                     "i-3": ("request_approval", "approval", {"decision": "approve"})}
    ledger = run.resources.ledger()
    call = ledger.call

    def call_storing(flow: Flow, request: InstanceRequest, step: Step,
                     **options: Any) -> Outcome:
        during = stored_during.get(request.instance_id)
        if during is not None and during[0] == step.name:
            row = store.load(request.instance_id)
            assert row is not None
            store.put_signal(row, during[1], during[2])
        return call(flow, request, step, **options)

    ledger.call = call_storing  # type: ignore[method-assign]
    run.start(1, 2, 3)
    for _ in range(2):  # up to the wait, then from the approval on
        run.run_sent()
        run.approve_waiting()
    notes = run.notes

    assert {r.instance_id: r.state for r in store.load_many(["i-1", "i-2", "i-3"]).values()} \
        == {"i-1": COMPLETED, "i-2": COMPENSATED, "i-3": COMPLETED}
    assert notes("i-1")[-2:] == ["notify: attempt 1 applied", "flow: completed"]
    assert "approval: awaiting signal approval" in notes("i-1")
    # Every move is a transition and a version, but for the two written with the one
    # before them (a stored signal is a transition, and no move).
    moves = [n for n in notes("i-1")[1:] if "stored" not in n]
    ended = store.load("i-1")
    assert ended is not None
    assert ended.version == 1 + len(moves) - 2
    cancelled = notes("i-2")
    at = cancelled.index("notify: attempt 1 applied")
    assert cancelled[at + 1] == "notify: compensating: cancelled by an operator"
    assert "flow: completed" not in cancelled
    decided_early = notes("i-3")
    assert "approval: awaiting signal approval" not in decided_early
    assert decided_early[decided_early.index("request_approval: attempt 1 applied") + 1] \
        == "approval: approved"
    run.resources.close()


def test_a_decision_committed_while_the_folded_write_ran_is_taken_by_the_same_task(
        sample_flow: Flow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/adr/0030, review: on PostgreSQL the fold's guard sees the signals committed
    when its statement began, and the decision's own task finds the row leased and leaves
    it. A decision committed just after the guard (stored here right after the folded
    write, as that race leaves it) is read after the commit and passes the wait at once,
    not at the tick's next look."""
    run = _InProcess(sample_flow, tmp_path)
    folded = Store._update_folded

    def folded_then_decided(self: Store, old: Row, new: Row, node: str, note: str,
                            then: Then, now: float) -> Row | None:
        written = folded(self, old, new, node, note, then, now)
        if written is not None and written.state == WAITING:
            self.put_signal(written, "approval", {"decision": "approve"})
        return written

    monkeypatch.setattr(Store, "_update_folded", folded_then_decided)
    run.start(1)
    run.run_sent()

    ended = run.store.load("i-1")
    assert ended is not None
    assert ended.state == COMPLETED
    notes = run.notes("i-1")
    waited = notes.index("approval: awaiting signal approval")
    assert notes[waited + 1:waited + 3] == [
        'approval: signal approval stored: {"decision": "approve"}',
        "approval: approved"]
    run.resources.close()


def _run_to_the_end(flow: Flow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    fold: bool) -> tuple[list[Row], list[tuple[str, str]]]:
    """One instance of `flow` run in-process on a clock that stands still: its row when
    it waits, its row when it ends, and its transitions (kind, note)."""
    monkeypatch.setattr(state_machine, "time", SimpleNamespace(time=lambda: 1000.0,
                                                               sleep=time.sleep))
    if not fold:  # the moves then go one by one, as with a signal stored
        monkeypatch.setattr(Machine, "_then", lambda self, passed: None)
    run = _InProcess(flow, tmp_path)
    run.start(1)
    seen = []
    for _ in range(2):  # up to the wait, then from the approval on
        run.run_sent()
        seen += run.approve_waiting()
    ended = run.store.load("i-1")
    assert ended is not None
    transitions = [(e.kind, e.detail) for e in run.store.transitions("i-1")]
    run.resources.close()
    return [*seen, ended], transitions


def test_a_folded_move_writes_the_rows_and_transitions_of_the_moves_one_by_one(
        sample_flow: Flow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/adr/0030, review: the wait entry and the completion folded with the step's
    move write what `_wait` and `_finish` write on their own, but for the versions the
    fold saves."""
    with monkeypatch.context() as patch:
        folded_rows, folded = _run_to_the_end(sample_flow, tmp_path / "folded", patch, True)
    one_by_one_rows, one_by_one = _run_to_the_end(sample_flow, tmp_path / "unfolded",
                                                  monkeypatch, False)
    assert [r.state for r in folded_rows] == [WAITING, COMPLETED]
    assert folded == one_by_one
    assert "approval: awaiting signal approval" in [note for _, note in folded]
    assert [replace(r, version=0) for r in folded_rows] \
        == [replace(r, version=0) for r in one_by_one_rows]
    assert [r.version for r in folded_rows] \
        == [r.version - saved for r, saved in zip(one_by_one_rows, (1, 2), strict=True)]
