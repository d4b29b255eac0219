"""The ledger and its simulated systems: what each call records, and what it does."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from graduate.db import Database
from graduate.errors import ConfigError, PermanentEffectError, TransientEffectError
from graduate.flow import Flow, InstanceRequest, Step
from graduate.ledger import (
    _SCHEMA,
    ANY_INSTANCE,
    Ledger,
    Outcome,
    applied_counts,
    declared_columns,
)

MakeRequest = Callable[..., InstanceRequest]


def step(flow: Flow, name: str) -> Step:
    node = flow.node(name)
    assert isinstance(node, Step)
    return node


# ---------------------------------------------------------------------------- the record


def test_a_call_records_who_made_it_and_when(
    ledger: Ledger, mini_flow: Flow, make_request: MakeRequest
) -> None:
    request = make_request()
    before = time.time()

    outcome = ledger.call(mini_flow, request, step(mini_flow, "create"), attempt=1,
                          engine="temporal")

    after = time.time()
    assert outcome is Outcome.APPLIED
    [record] = ledger.effects()
    assert (record.run_id, record.flow, record.instance_id, record.step, record.effect,
            record.kind, record.attempt, record.engine) == (
        "run1", "mini", "run1-inst1", "create", "crm.create", "effect", 1, "temporal")
    assert record.idempotency_key == "tenant1:mini:entity1:20250102:create"
    assert record.idempotency_key == mini_flow.key_for("create", request)
    assert (record.correlation_id, record.trace_id) == ("corr-run1-1", "trace-run1-1")
    assert record.worker_pid == os.getpid()
    assert before <= record.started_at <= record.finished_at <= after
    assert record.outcome is Outcome.APPLIED


def test_a_registered_instance_reads_back_with_its_request(
    ledger: Ledger, mini_flow: Flow, make_request: MakeRequest
) -> None:
    request = make_request(2)

    registered = ledger.register(mini_flow, request, "celery-chain")

    found = ledger.instance(request.instance_id)
    assert found == registered
    assert found.request == request
    assert (found.flow, found.flow_source, found.engine) == (
        "mini", mini_flow.source, "celery-chain")


def test_instances_are_listed_per_run(
    ledger: Ledger, mini_flow: Flow, make_request: MakeRequest
) -> None:
    for number in (2, 1):
        ledger.register(mini_flow, make_request(number), "temporal")
    ledger.register(mini_flow, make_request(1, run_id="run2"), "temporal")

    assert [i.instance_id for i in ledger.instances("run1")] == ["run1-inst1", "run1-inst2"]
    assert [i.instance_id for i in ledger.instances("run2")] == ["run2-inst1"]
    assert ledger.instances("run3") == []


def test_an_unknown_instance_is_named_in_the_error(ledger: Ledger, ledger_path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ledger.instance("ghost-01")
    assert "no instance 'ghost-01'" in str(caught.value)
    assert ledger_path in str(caught.value)
    assert "`graduate run` prints the instance IDs" in str(caught.value)


def test_effects_filter_by_instance_and_by_run(
    ledger: Ledger, mini_flow: Flow, make_request: MakeRequest
) -> None:
    create = step(mini_flow, "create")
    requests = [make_request(1), make_request(2), make_request(1, run_id="run2")]
    for request in requests:
        ledger.call(mini_flow, request, create, attempt=1, engine="temporal")

    assert [e.instance_id for e in ledger.effects(instance_id="run1-inst2")] == ["run1-inst2"]
    assert [e.instance_id for e in ledger.effects(run_id="run1")] == ["run1-inst1", "run1-inst2"]
    assert ledger.effects(run_id="run2", instance_id="run1-inst1") == []
    assert [e.instance_id for e in ledger.effects()] == [r.instance_id for r in requests]


def test_a_reopened_ledger_sees_what_was_recorded(
    ledger_path: str, mini_flow: Flow, make_request: MakeRequest
) -> None:
    first = Ledger(ledger_path)
    request = make_request()
    first.register(mini_flow, request, "temporal")
    first.call(mini_flow, request, step(mini_flow, "create"), attempt=1, engine="temporal")
    recorded = first.effects()
    first.close()

    again = Ledger(ledger_path)
    try:
        assert again.effects() == recorded
        assert again.instance(request.instance_id).request == request
        # The system still remembers the key it applied.
        outcome = again.call(mini_flow, request, step(mini_flow, "create"), attempt=2,
                             engine="temporal")
        assert outcome is Outcome.ABSORBED
    finally:
        again.close()


# ---------------------------------------------------------------------------- idempotency


def test_a_system_that_honours_keys_absorbs_the_repeat_and_records_it(
    ledger: Ledger, mini_flow: Flow, make_request: MakeRequest
) -> None:
    request = make_request()
    create = step(mini_flow, "create")

    outcomes = [ledger.call(mini_flow, request, create, attempt=n, engine="celery-chain")
                for n in (1, 2)]

    assert outcomes == [Outcome.APPLIED, Outcome.ABSORBED]
    records = ledger.effects()
    assert [(r.attempt, r.outcome) for r in records] == [
        (1, Outcome.APPLIED), (2, Outcome.ABSORBED)]
    assert records[0].idempotency_key == records[1].idempotency_key
    assert applied_counts(records) == Counter({("create", "effect"): 1})


def test_a_system_that_ignores_keys_applies_the_repeat_again(
    ledger: Ledger, mini_flow: Flow, make_request: MakeRequest
) -> None:
    request = make_request()
    notify = step(mini_flow, "notify")

    outcomes = [ledger.call(mini_flow, request, notify, attempt=n, engine="celery-chain")
                for n in (1, 2)]

    assert outcomes == [Outcome.APPLIED, Outcome.APPLIED]
    records = ledger.effects()
    assert {r.idempotency_key for r in records} == {"tenant1:mini:entity1:20250102:notify"}
    assert applied_counts(records) == Counter({("notify", "effect"): 2})


def test_the_same_step_of_another_instance_is_not_absorbed(
    ledger: Ledger, mini_flow: Flow, make_request: MakeRequest
) -> None:
    create = step(mini_flow, "create")
    outcomes = [ledger.call(mini_flow, make_request(n), create, attempt=1, engine="temporal")
                for n in (1, 2)]
    assert outcomes == [Outcome.APPLIED, Outcome.APPLIED]


# ---------------------------------------------------------------------------- compensation


def test_a_compensation_is_recorded_under_its_own_key(
    ledger: Ledger, mini_flow: Flow, make_request: MakeRequest
) -> None:
    request = make_request()
    create = step(mini_flow, "create")
    ledger.call(mini_flow, request, create, attempt=1, engine="temporal")

    outcome = ledger.call(mini_flow, request, create, attempt=1, engine="temporal",
                          kind="compensation")

    # Same system, same step: only the key's suffix keeps the undo from being absorbed.
    assert outcome is Outcome.APPLIED
    effect, compensation = ledger.effects()
    assert (compensation.kind, compensation.effect, compensation.step) == (
        "compensation", "crm.delete", "create")
    assert compensation.idempotency_key == mini_flow.key_for("create", request,
                                                             compensation=True)
    assert compensation.idempotency_key != effect.idempotency_key
    assert applied_counts(ledger.effects()) == Counter(
        {("create", "effect"): 1, ("create", "compensation"): 1})


def test_a_repeated_compensation_is_absorbed(
    ledger: Ledger, mini_flow: Flow, make_request: MakeRequest
) -> None:
    request = make_request()
    create = step(mini_flow, "create")
    outcomes = [ledger.call(mini_flow, request, create, attempt=n, engine="temporal",
                            kind="compensation") for n in (1, 2)]
    assert outcomes == [Outcome.APPLIED, Outcome.ABSORBED]


def test_compensating_a_step_without_compensation_is_refused(
    ledger: Ledger, mini_flow: Flow, make_request: MakeRequest
) -> None:
    with pytest.raises(ConfigError) as caught:
        ledger.call(mini_flow, make_request(), step(mini_flow, "notify"), attempt=1,
                    engine="temporal", kind="compensation")
    assert "step 'notify' of flow 'mini' has no compensation" in str(caught.value)
    assert ledger.effects() == []


# ---------------------------------------------------------------------------- injected failures


def test_a_transient_failure_fails_n_times_then_applies(
    ledger: Ledger, mini_flow: Flow, make_request: MakeRequest
) -> None:
    request = make_request()
    create = step(mini_flow, "create")
    ledger.inject_failure(request.instance_id, "create", "transient", times=2)

    for attempt in (1, 2):
        with pytest.raises(TransientEffectError, match=r"crm\.create failed transiently"):
            ledger.call(mini_flow, request, create, attempt=attempt, engine="temporal")
    outcome = ledger.call(mini_flow, request, create, attempt=3, engine="temporal")

    # A failed call never took the key, so the first success is applied, not absorbed.
    assert outcome is Outcome.APPLIED
    assert [(r.attempt, r.outcome) for r in ledger.effects()] == [
        (1, Outcome.TRANSIENT_ERROR), (2, Outcome.TRANSIENT_ERROR), (3, Outcome.APPLIED)]


def test_a_permanent_failure_fails_every_time(
    ledger: Ledger, mini_flow: Flow, make_request: MakeRequest
) -> None:
    request = make_request()
    create = step(mini_flow, "create")
    ledger.inject_failure(request.instance_id, "create", "permanent")

    for attempt in (1, 2, 3):
        with pytest.raises(PermanentEffectError, match=r"crm\.create refused the call"):
            ledger.call(mini_flow, request, create, attempt=attempt, engine="temporal")

    assert [r.outcome for r in ledger.effects()] == [Outcome.PERMANENT_ERROR] * 3
    assert applied_counts(ledger.effects()) == Counter()


def test_an_injected_failure_does_not_block_the_compensation(
    ledger: Ledger, mini_flow: Flow, make_request: MakeRequest
) -> None:
    request = make_request()
    create = step(mini_flow, "create")
    ledger.inject_failure(request.instance_id, "create", "permanent")

    outcome = ledger.call(mini_flow, request, create, attempt=1, engine="temporal",
                          kind="compensation")

    assert outcome is Outcome.APPLIED


def test_a_failure_hits_only_its_instance_and_step(
    ledger: Ledger, mini_flow: Flow, make_request: MakeRequest
) -> None:
    target, other = make_request(1), make_request(2)
    ledger.inject_failure(target.instance_id, "create", "permanent")

    assert ledger.call(mini_flow, other, step(mini_flow, "create"), attempt=1,
                       engine="temporal") is Outcome.APPLIED
    assert ledger.call(mini_flow, target, step(mini_flow, "notify"), attempt=1,
                       engine="temporal") is Outcome.APPLIED


def test_a_failure_for_any_instance_hits_every_instance(
    ledger: Ledger, mini_flow: Flow, make_request: MakeRequest
) -> None:
    ledger.inject_failure(ANY_INSTANCE, "create", "permanent")

    for number in (1, 2, 3):
        with pytest.raises(PermanentEffectError):
            ledger.call(mini_flow, make_request(number), step(mini_flow, "create"), attempt=1,
                        engine="temporal")

    assert {r.instance_id for r in ledger.effects()} == {"run1-inst1", "run1-inst2",
                                                         "run1-inst3"}


def test_an_instances_own_failure_comes_before_one_for_any_instance(
    ledger: Ledger, mini_flow: Flow, make_request: MakeRequest
) -> None:
    """Both are read in one query; the instance's own is taken first, then any instance's."""
    request, other = make_request(1), make_request(2)
    create = step(mini_flow, "create")
    ledger.inject_failure(request.instance_id, "create", "transient", times=1)
    ledger.inject_failure(ANY_INSTANCE, "create", "permanent")

    with pytest.raises(TransientEffectError):  # its own
        ledger.call(mini_flow, request, create, attempt=1, engine="temporal")
    with pytest.raises(PermanentEffectError):  # its own used up: the one for any instance
        ledger.call(mini_flow, request, create, attempt=2, engine="temporal")
    with pytest.raises(PermanentEffectError):
        ledger.call(mini_flow, other, create, attempt=1, engine="temporal")
    assert [(r.instance_id, r.outcome) for r in ledger.effects()] == [
        (request.instance_id, Outcome.TRANSIENT_ERROR),
        (request.instance_id, Outcome.PERMANENT_ERROR),
        (other.instance_id, Outcome.PERMANENT_ERROR)]


def test_injecting_again_replaces_the_earlier_failure(
    ledger: Ledger, mini_flow: Flow, make_request: MakeRequest
) -> None:
    request = make_request()
    create = step(mini_flow, "create")
    ledger.inject_failure(request.instance_id, "create", "permanent")
    ledger.inject_failure(request.instance_id, "create", "transient", times=1)

    with pytest.raises(TransientEffectError):
        ledger.call(mini_flow, request, create, attempt=1, engine="temporal")
    assert ledger.call(mini_flow, request, create, attempt=2, engine="temporal") is (
        Outcome.APPLIED)


def test_an_unknown_failure_mode_is_refused(ledger: Ledger) -> None:
    with pytest.raises(ConfigError, match="failure mode 'flaky' is not transient or permanent"):
        ledger.inject_failure("run1-inst1", "create", "flaky")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- several workers

PROCESSES = 4
CALLS_PER_PROCESS = 25


def _call_repeatedly(path: str, flow: Flow, request: InstanceRequest, start: Barrier) -> None:
    """A worker process: the same honouring effect, again and again, on one shared key."""
    ledger = Ledger(path)
    create = flow.node("create")
    assert isinstance(create, Step)
    start.wait()
    for attempt in range(1, CALLS_PER_PROCESS + 1):
        ledger.call(flow, request, create, attempt=attempt, engine="celery-chain")
    ledger.close()


def test_only_one_of_many_concurrent_workers_applies_a_key(
    ledger: Ledger, ledger_path: str, mini_flow: Flow, make_request: MakeRequest
) -> None:
    # Separate processes (as real workers are), released together to race on one key.
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES)
    workers = [context.Process(target=_call_repeatedly,
                               args=(ledger_path, mini_flow, make_request(), start))
               for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0] * PROCESSES

    records = ledger.effects()
    assert len(records) == PROCESSES * CALLS_PER_PROCESS
    assert Counter(r.outcome for r in records) == Counter(
        {Outcome.APPLIED: 1, Outcome.ABSORBED: PROCESSES * CALLS_PER_PROCESS - 1})
    assert {r.worker_pid for r in records} == {w.pid for w in workers}


# ---------------------------------------------------------------------------- fault points


def test_a_call_paused_at_a_fault_point_heartbeats_until_released(
    ledger: Ledger, ledger_path: str, mini_flow: Flow, make_request: MakeRequest
) -> None:
    """An engine that watches heartbeats (Temporal with a heartbeat timeout) must see a
    paused step alive, or it retries the step while the fault is still being prepared."""
    request = make_request()
    ledger.arm(request.instance_id, "create", "before-effect")
    beats: list[float] = []
    outcomes: list[Outcome] = []
    caller = threading.Thread(target=lambda: outcomes.append(Ledger(ledger_path).call(
        mini_flow, request, step(mini_flow, "create"), attempt=1, engine="temporal",
        heartbeat=lambda: beats.append(time.monotonic()))))
    caller.start()
    deadline = time.monotonic() + 30
    while len(beats) < 3 and time.monotonic() < deadline and caller.is_alive():
        time.sleep(0.01)
    reached = ledger.reached(request.instance_id, "create", "before-effect")
    ledger.release(request.instance_id, "create", "before-effect")
    caller.join(timeout=30)

    assert reached is not None
    assert len(beats) >= 3, "the paused call never heartbeat"
    assert outcomes == [Outcome.APPLIED]
    assert [e.step for e in ledger.effects()] == ["create"]


# The effects table as a ledger of an earlier version made it: AUTOINCREMENT keys, and no
# columns for an effect's error.
EARLIER_EFFECTS_TABLE = """CREATE TABLE effects (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, flow TEXT NOT NULL,
    instance_id TEXT NOT NULL, step TEXT NOT NULL, effect TEXT NOT NULL,
    kind TEXT NOT NULL, attempt INTEGER NOT NULL, idempotency_key TEXT NOT NULL,
    correlation_id TEXT NOT NULL, trace_id TEXT NOT NULL, engine TEXT NOT NULL,
    worker_pid INTEGER NOT NULL, started_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION NOT NULL, outcome TEXT NOT NULL)"""

def test_a_ledger_written_before_effect_errors_were_recorded_gains_their_columns(
    tmp_path: Path, mini_flow: Flow, make_request: MakeRequest
) -> None:
    path = str(tmp_path / "old.sqlite3")
    old = sqlite3.connect(path)
    old.execute(EARLIER_EFFECTS_TABLE)
    old.execute("INSERT INTO effects (run_id, flow, instance_id, step, effect, kind, attempt, "
                "idempotency_key, correlation_id, trace_id, engine, worker_pid, started_at, "
                "finished_at, outcome) VALUES ('r', 'f', 'i', 's', 'e.x', 'effect', 1, 'k', "
                "'c', 't', 'temporal', 1, 1.0, 2.0, 'applied')")
    old.commit()
    old.close()

    ledger = Ledger(path)
    ledger.call(mini_flow, make_request(), step(mini_flow, "create"), attempt=1,
                engine="temporal")

    first, second = ledger.effects()
    assert (first.instance_id, first.error_type, first.error_message) == ("i", "", "")
    assert second.step == "create"
    ledger.close()


def test_a_point_disarmed_before_it_was_reached_is_not_reached_and_does_not_pause(
    ledger: Ledger, mini_flow: Flow, make_request: MakeRequest
) -> None:
    """The harness releases every instance's point once the fault fired; one that no
    call had reached is disarmed, so a later call neither pauses nor counts as hit."""
    request = make_request()
    ledger.arm(request.instance_id, "create", "before-effect")
    ledger.release(request.instance_id, "create", "before-effect")

    outcome = ledger.call(mini_flow, request, step(mini_flow, "create"), attempt=1,
                          engine="temporal")

    assert outcome is Outcome.APPLIED
    assert ledger.reached(request.instance_id, "create", "before-effect") is None


def test_many_instances_registered_together_read_back_as_registered_one_by_one(
    ledger: Ledger, mini_flow: Flow, make_request: MakeRequest
) -> None:
    requests = [make_request(number) for number in (1, 2, 3)]

    registered = ledger.register_all(mini_flow, requests, "celery-state-machine")

    assert [ledger.instance(r.instance_id) for r in requests] == registered
    assert [i.request for i in ledger.instances("run1")] == requests


def test_which_instances_reached_a_point_is_read_for_many_at_once(
    ledger: Ledger, ledger_path: str, mini_flow: Flow, make_request: MakeRequest
) -> None:
    """Beyond one query's worth of IDs too: the harness asks it of every instance."""
    requests = [make_request(number) for number in (1, 2, 3)]
    for request in requests:
        ledger.arm(request.instance_id, "create", "before-effect")
    callers = [threading.Thread(target=lambda r=r: Ledger(ledger_path).call(
        mini_flow, r, step(mini_flow, "create"), attempt=1, engine="temporal"))
        for r in (requests[0], requests[2])]
    for caller in callers:
        caller.start()
    asked = [f"other-{n}" for n in range(700)] + [r.instance_id for r in requests]
    deadline = time.monotonic() + 30
    while len(ledger.reached_by(asked, "create", "before-effect")) < 2:
        assert time.monotonic() < deadline, "the paused calls never reached their point"
        time.sleep(0.01)

    reached = ledger.reached_by(asked, "create", "before-effect")
    for request in requests:
        ledger.release(request.instance_id, "create", "before-effect")
    for caller in callers:
        caller.join(timeout=30)

    assert sorted(reached) == ["run1-inst1", "run1-inst3"]
    assert all(r.pid == os.getpid() and r.step == "create" for r in reached.values())
    assert reached["run1-inst1"] == ledger.reached("run1-inst1", "create", "before-effect")


@pytest.mark.parametrize("earlier_version", [False, True])
def test_the_watch_reads_each_effect_row_once_its_cursor_only_growing(
    tmp_path: Path, mini_flow: Flow, make_request: MakeRequest, earlier_version: bool
) -> None:
    """Effect rows are numbered by their key (INTEGER PRIMARY KEY, no AUTOINCREMENT, on
    a new ledger; AUTOINCREMENT on one an earlier version made): rows are never deleted,
    so each new row is numbered past every row before it, and a harness that reads
    "since row N" misses none and reads none twice."""
    path = str(tmp_path / "l.sqlite3")
    if earlier_version:
        old = sqlite3.connect(path)
        old.execute(EARLIER_EFFECTS_TABLE)
        old.close()
    ledger = Ledger(path)
    create = step(mini_flow, "create")
    for number in (1, 2):
        ledger.call(mini_flow, make_request(number), create, attempt=1, engine="temporal")
    moved, mark = ledger.moved_since("run1", 0)
    assert [m.instance_id for m in moved] == ["run1-inst1", "run1-inst2"]
    ledger.inject_failure("run1-inst3", "create", "transient")
    with pytest.raises(TransientEffectError):
        ledger.call(mini_flow, make_request(3), create, attempt=1, engine="temporal")
    ledger.call(mini_flow, make_request(3), create, attempt=2, engine="temporal")
    later, last = ledger.moved_since("run1", mark)
    assert [(m.instance_id, m.landed) for m in later] == [("run1-inst3", False),
                                                          ("run1-inst3", True)]
    assert last > mark
    assert ledger.moved_since("run1", last) == ([], last)
    ids = [e.id for e in ledger.effects()]
    assert ids == sorted(set(ids))
    # A new ledger keeps no sqlite_sequence: no write to it beside each recorded call.
    tables = {row[0] for row in ledger.db.query("SELECT name FROM sqlite_master")}
    assert ("sqlite_sequence" in tables) == earlier_version
    ledger.close()


@pytest.mark.parametrize("earlier_version", [False, True])
def test_keys_are_remembered_alike_in_a_new_ledger_and_one_made_before(
    tmp_path: Path, mini_flow: Flow, make_request: MakeRequest, earlier_version: bool
) -> None:
    """A new ledger keeps the keys a system applied in a WITHOUT ROWID table (one b-tree
    written a call, docs/adr/0030); one an earlier version made keeps its rowid table.
    Either absorbs a repeat, tells instances apart, and answers `key_recorded`."""
    path = str(tmp_path / "l.sqlite3")
    if earlier_version:
        old = sqlite3.connect(path)
        old.execute("""CREATE TABLE operation_keys (
            system TEXT NOT NULL, operation TEXT NOT NULL, idempotency_key TEXT NOT NULL,
            PRIMARY KEY (system, operation, idempotency_key))""")
        old.close()
    ledger = Ledger(path)
    create = step(mini_flow, "create")
    first, second = make_request(1), make_request(2)
    outcomes = [ledger.call(mini_flow, request, create, attempt=attempt, engine="temporal")
                for request, attempt in ((first, 1), (first, 2), (second, 1))]
    assert outcomes == [Outcome.APPLIED, Outcome.ABSORBED, Outcome.APPLIED]
    assert create.effect is not None
    system, _ = create.effect.split(".", 1)
    for request in (first, second):
        assert ledger.key_recorded(system, create.effect, mini_flow.key_for("create", request))
    assert not ledger.key_recorded(system, create.effect,
                                   mini_flow.key_for("create", make_request(3)))
    (sql,) = ledger.db.query("SELECT sql FROM sqlite_master WHERE name = 'operation_keys'")[0]
    assert ("WITHOUT ROWID" in sql) != earlier_version
    ledger.close()


@pytest.mark.parametrize("table", ["instances", "effects", "operation_keys", "fault_points",
                                   "injected_failures", "audit_records"])
def test_a_table_of_the_ledgers_name_without_its_columns_is_refused(
        tmp_path: Path, table: str) -> None:
    """Every table of the ledger is checked, WITHOUT ROWID or not, before anything is
    written into another program's database."""
    path = tmp_path / "foreign.sqlite3"
    with sqlite3.connect(path) as foreign:
        foreign.execute(f"CREATE TABLE {table} (something TEXT)")
    with pytest.raises(ConfigError, match=f"is not a graduate ledger: table {table} has no"):
        Ledger(str(path))
    with sqlite3.connect(path) as foreign:
        tables = {row[0] for row in foreign.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {table}


def test_the_refused_database_is_closed(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "foreign.sqlite3"
    with sqlite3.connect(path) as foreign:
        foreign.execute("CREATE TABLE effects (something TEXT)")
    closed: list[str] = []
    close = Database.close

    def recording(self: Database) -> None:
        closed.append(self.url)
        close(self)

    monkeypatch.setattr(Database, "close", recording)
    with pytest.raises(ConfigError, match="is not a graduate ledger"):
        Ledger(str(path))
    assert closed == [str(path)]


def test_the_columns_a_ledger_must_hold_are_those_its_schema_creates() -> None:
    """Read back from SQLite, not parsed: a type with a comma (NUMERIC(10, 2)), a default
    or a CHECK with one, and a table-level key name no column."""
    assert declared_columns() == {
        "instances": ("instance_id", "run_id", "flow", "flow_source", "engine", "tenant_id",
                      "entity_id", "date", "correlation_id", "trace_id", "started_at"),
        "effects": ("id", "run_id", "flow", "instance_id", "step", "effect", "kind",
                    "attempt", "idempotency_key", "correlation_id", "trace_id", "engine",
                    "worker_pid", "started_at", "finished_at", "outcome"),
        "operation_keys": ("system", "operation", "idempotency_key"),
        "fault_points": ("instance_id", "step", "point", "state", "reached_pid",
                         "reached_at", "released_at"),
        "injected_failures": ("instance_id", "step", "mode", "remaining"),
        "audit_records": ("effect_id", "run_id", "instance_id", "envelope", "problems"),
    }
    schema = (*_SCHEMA, """CREATE TABLE IF NOT EXISTS tricky (
        amount NUMERIC(10, 2), label TEXT DEFAULT 'a,b', flag INTEGER CHECK (flag IN (1, 2)),
        PRIMARY KEY (amount, label))""")
    declared_columns.cache_clear()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("graduate.ledger._SCHEMA", schema)
            assert declared_columns()["tricky"] == ("amount", "label", "flag")
    finally:
        declared_columns.cache_clear()
