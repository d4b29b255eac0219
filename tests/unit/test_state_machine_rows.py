"""A move of the state machine's row writes every column a move may change, and only
those: what a worker reads back is the row it wrote, with the request it started with."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from graduate.adapters.celery.state_machine import COMPENSATING, Row, Store
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
