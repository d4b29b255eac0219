"""A move of the state machine's row writes every column a move may change, and only
those: what a worker reads back is the row it wrote, with the request it started with."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from graduate.adapters.celery.state_machine import (
    CANCEL,
    COMPENSATING,
    RUNNING,
    WAITING,
    Row,
    Store,
)
from graduate.db import Database
from graduate.flow import InstanceRequest


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
