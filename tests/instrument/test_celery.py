"""graduate.effect in a team's Celery app, run by real workers on a real Redis broker.

The app (apps/celery_app.py) is the team's code as it is; graduate's worker launcher
adds the correlation handlers. The test process plays the harness: it registers an
instance, starts it inside `propagating` and reads the ledger.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from graduate.adapters.celery import application
from graduate.adapters.celery.instrument import install
from graduate.check import correlation_breaks
from graduate.instrument import Correlation, RunContext, propagating
from graduate.ledger import EffectRecord, Ledger, Outcome
from graduate.processes import ManagedProcess, wait_until
from tests.instrument.conftest import WAIT, Register, Spawn, wait_for_rows

APP = "tests.instrument.apps.celery_app"


@pytest.fixture
def queue() -> str:
    return f"orders-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def orders_app(broker: str, queue: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The team's app in this process, as the harness's client: sends to the test's queue."""
    monkeypatch.setenv("ORDERS_BROKER_URL", broker)
    monkeypatch.setenv("ORDERS_QUEUE", queue)
    sys.modules.pop(APP, None)  # the app reads its settings as it imports, as a team's does
    module = importlib.import_module(APP)
    install()
    return module


StartCelery = Callable[..., ManagedProcess]


@pytest.fixture
def celery_worker(start_worker: Spawn, broker: str, queue: str) -> StartCelery:
    def start(run: RunContext | None) -> ManagedProcess:
        env = {"ORDERS_BROKER_URL": broker, "ORDERS_QUEUE": queue,
               **(run.environ() if run is not None else {})}
        return start_worker("graduate.adapters.celery.app_worker", [
            f"{APP}:app", "{ready}", "--pool", "prefork", "--concurrency", "1",
            "--without-mingle", "--without-gossip", "--without-heartbeat", "-Q", queue,
            "-n", f"{queue}@%h", "--loglevel", "INFO"], env)

    return start


def get(result: Any) -> Any:
    return result.get(timeout=WAIT, propagate=True)


def assert_of(correlation: Correlation, rows: list[EffectRecord]) -> None:
    """Every row is the instance's, recorded by a Celery worker, with its IDs."""
    for row in rows:
        assert row.instance_id == correlation.instance_id
        assert row.engine == "celery"
    assert correlation_breaks(correlation.correlation_id, correlation.trace_id, rows) == ()


def test_a_retried_task_records_each_attempt_of_its_instance(
        orders_app: ModuleType, celery_worker: StartCelery, run_context: RunContext,
        run_ledger: Ledger, register: Register) -> None:
    celery_worker(run_context)
    correlation = register("retry-1")
    with propagating(correlation):
        result = orders_app.charge.apply_async(["retry-1"], {"fail_times": 2})
    assert get(result) == "retry-1"

    rows = run_ledger.effects(run_id=run_context.run_id)
    assert [(r.step, r.attempt, r.outcome) for r in rows] == [
        ("charge", 1, Outcome.ERROR), ("charge", 2, Outcome.ERROR),
        ("charge", 3, Outcome.APPLIED)]
    assert rows[0].error_type == "GatewayTimeout"
    assert rows[0].error_message == "payment gateway timed out"
    assert_of(correlation, rows)


def test_a_chain_carries_its_instance_to_every_task(
        orders_app: ModuleType, celery_worker: StartCelery, run_context: RunContext,
        run_ledger: Ledger, register: Register) -> None:
    celery_worker(run_context)
    correlation = register("chain-1")
    chain = (orders_app.reserve.s("chain-1") | orders_app.charge.s(fail_times=1)
             | orders_app.confirm.s())
    with propagating(correlation):
        result = chain.apply_async()
    assert get(result) == "chain-1"

    rows = run_ledger.effects(run_id=run_context.run_id)
    assert [(r.step, r.attempt, r.outcome) for r in rows] == [
        ("reserve", 1, Outcome.APPLIED), ("charge", 1, Outcome.ERROR),
        ("charge", 2, Outcome.APPLIED), ("confirm", 1, Outcome.APPLIED)]
    assert_of(correlation, rows)
    records = run_ledger.audit_records(instance_id="chain-1")
    assert [r.effect_id for r in records] == [r.id for r in rows]
    assert all(r.problems == () for r in records)
    assert len({r.envelope["causation_id"] for r in records}) == 3  # one per task


def test_the_declared_start_function_starts_an_instance_graduate_can_follow(
        orders_app: ModuleType, celery_worker: StartCelery, run_context: RunContext,
        run_ledger: Ledger, register: Register, queue: str) -> None:
    celery_worker(run_context)
    correlation = register("declared-1")
    declaration = {"app": f"{APP}:app", "queues": [queue], "beat": False,
                   "start": f"{APP}:start"}

    application.start(declaration, run_ledger.instance("declared-1").request)

    rows = wait_for_rows(run_ledger, 3, instance_id="declared-1")
    assert [r.step for r in rows] == ["reserve", "charge", "confirm"]
    assert_of(correlation, rows)


def test_a_chord_carries_its_instance_to_its_members_and_its_body(
        orders_app: ModuleType, celery_worker: StartCelery, run_context: RunContext,
        run_ledger: Ledger, register: Register) -> None:
    celery_worker(run_context)
    correlation = register("chord-1")
    with propagating(correlation):
        result = orders_app.reserve_all_then_confirm("chord-1", ["desk", "chair", "lamp"])
    assert get(result) == "chord-1"

    rows = run_ledger.effects(run_id=run_context.run_id)
    assert sorted(r.idempotency_key for r in rows if r.step == "reserve") == [
        "chord-1:reserve:chair", "chord-1:reserve:desk", "chord-1:reserve:lamp"]
    assert [r.step for r in rows][-1] == "confirm"
    assert len(rows) == 4
    assert_of(correlation, rows)


def test_a_group_sent_from_a_task_carries_its_instance_to_every_member(
        orders_app: ModuleType, celery_worker: StartCelery, run_context: RunContext,
        run_ledger: Ledger, register: Register) -> None:
    celery_worker(run_context)
    correlation = register("group-1")
    with propagating(correlation):
        assert get(orders_app.reserve_each.apply_async(["group-1", ["desk", "lamp"]])) == (
            "group-1")
    rows = wait_for_rows(run_ledger, 2, run_id=run_context.run_id)

    assert sorted(r.idempotency_key for r in rows) == [
        "group-1:reserve:desk", "group-1:reserve:lamp"]
    assert_of(correlation, rows)


@pytest.mark.parametrize("task", ["confirm_from_thread", "confirm_with_own_headers"])
def test_a_lost_correlation_is_reported_by_the_checker(
        orders_app: ModuleType, celery_worker: StartCelery, run_context: RunContext,
        run_ledger: Ledger, register: Register, task: str) -> None:
    celery_worker(run_context)
    correlation = register("lost-1")
    chain = orders_app.reserve.s("lost-1") | getattr(orders_app, task).s()
    with propagating(correlation):
        assert get(chain.apply_async()) == "lost-1"
    rows = wait_for_rows(run_ledger, 2, run_id=run_context.run_id)

    [reserved, confirmed] = rows
    assert (reserved.step, reserved.instance_id) == ("reserve", "lost-1")
    assert (confirmed.step, confirmed.instance_id, confirmed.correlation_id) == (
        "confirm", "", "")
    breaks = correlation_breaks(correlation.correlation_id, correlation.trace_id, rows)
    assert {(b.effect_id, b.field) for b in breaks} == {
        (confirmed.id, "correlation_id"), (confirmed.id, "trace_id")}
    [audit] = run_ledger.audit_records(instance_id="")
    assert any(p.startswith("tenant_id:") for p in audit.problems)


def test_a_task_pauses_at_an_armed_before_effect_point_until_released(
        orders_app: ModuleType, celery_worker: StartCelery, run_context: RunContext,
        run_ledger: Ledger, register: Register) -> None:
    worker = celery_worker(run_context)
    correlation = register("pause-1")
    run_ledger.arm("pause-1", "charge", "before-effect")
    with propagating(correlation):
        result = orders_app.charge.apply_async(["pause-1"])

    wait_until(lambda: run_ledger.reached("pause-1", "charge", "before-effect") is not None,
               timeout=WAIT, what="the charge at its fault point")
    reached = run_ledger.reached("pause-1", "charge", "before-effect")
    assert reached is not None
    assert reached.pid != worker.pid  # the pool child holds it, not the worker's main
    assert run_ledger.effects(instance_id="pause-1") == []
    assert not result.ready()
    released = time.time()
    run_ledger.release("pause-1", "charge", "before-effect")

    assert get(result) == "pause-1"
    [row] = run_ledger.effects(instance_id="pause-1")
    assert row.started_at >= released
    assert row.worker_pid == reached.pid


def test_outside_a_run_the_app_runs_and_nothing_is_recorded(
        orders_app: ModuleType, celery_worker: StartCelery, run_context: RunContext,
        tmp_path: Path) -> None:
    celery_worker(None)
    chain = (orders_app.reserve.s("plain-1") | orders_app.charge.s(fail_times=1)
             | orders_app.confirm.s())
    assert get(chain.apply_async()) == "plain-1"

    assert not Path(run_context.ledger_url).exists()


TRACED = "tests.instrument.apps.traced_celery"


@pytest.fixture
def traced_worker(start_worker: Spawn, broker: str, queue: str, run_context: RunContext,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ManagedProcess]]:
    """A worker of the app that traces with opentelemetry-instrumentation-celery, under
    the run; this process imports the app as graduate's harness does to start it."""
    monkeypatch.setenv("ORDERS_BROKER_URL", broker)
    monkeypatch.setenv("ORDERS_QUEUE", queue)
    sys.modules.pop(TRACED, None)

    def start(**env: str) -> ManagedProcess:
        return start_worker("graduate.adapters.celery.app_worker", [
            f"{TRACED}:app", "{ready}", "--pool", "prefork", "--concurrency", "1",
            "--without-mingle", "--without-gossip", "--without-heartbeat", "-Q", queue,
            "-n", f"{queue}@%h", "--loglevel", "INFO"],
            {"ORDERS_BROKER_URL": broker, "ORDERS_QUEUE": queue, **run_context.environ(),
             **env})

    yield start
    sys.modules.pop(TRACED, None)


def start_traced(run_ledger: Ledger, queue: str, instance_id: str) -> list[EffectRecord]:
    """Start the instance as graduate's harness does (the declared start function, under
    the instance's correlation and trace); its rows once the chain confirmed."""
    declaration = {"app": f"{TRACED}:app", "queues": [queue], "beat": False,
                   "start": f"{TRACED}:start"}
    application.start(declaration, run_ledger.instance(instance_id).request)
    rows = wait_for_rows(run_ledger, 4, instance_id=instance_id)
    assert [(r.step, r.attempt, r.outcome) for r in rows] == [
        ("reserve", 1, Outcome.APPLIED), ("charge", 1, Outcome.ERROR),
        ("charge", 2, Outcome.APPLIED), ("confirm", 1, Outcome.APPLIED)]
    return rows


def test_an_app_traced_by_the_celery_instrumentation_keeps_the_instances_trace(
        traced_worker: Callable[..., ManagedProcess], run_ledger: Ledger,
        register: Register, queue: str) -> None:
    # Only the worker traces: the instance's trace reaches its first task in the message
    # graduate sends (W3C traceparent), and CeleryInstrumentor carries it on through the
    # chain and the retry. Each task runs in the instrumentation's own span.
    traced_worker()
    correlation = register("traced-1")

    rows = start_traced(run_ledger, queue, "traced-1")
    assert {r.trace_id for r in rows} == {correlation.trace_id}
    assert_of(correlation, rows)


def test_an_instrumentation_that_starts_a_trace_per_task_is_reported_as_a_trace_break(
        traced_worker: Callable[..., ManagedProcess], run_ledger: Ledger,
        register: Register, queue: str) -> None:
    # use_span_links: every task starts a trace of its own, linked to its sender's.
    traced_worker(ORDERS_SPAN_LINKS="1")
    correlation = register("linked-1")

    rows = start_traced(run_ledger, queue, "linked-1")
    breaks = correlation_breaks(correlation.correlation_id, correlation.trace_id, rows)
    assert [(b.effect_id, b.field) for b in breaks] == [(r.id, "trace_id") for r in rows]
    assert len({r.trace_id for r in rows}) == 4  # one trace per task run: the retry too


def test_a_decision_delivered_to_a_traced_app_keeps_the_instances_trace(
        traced_worker: Callable[..., ManagedProcess], run_ledger: Ledger,
        register: Register, queue: str) -> None:
    traced_worker()
    correlation = register("decided-1")
    declaration = {"app": f"{TRACED}:app", "queues": [queue], "beat": False,
                   "start": f"{TRACED}:start", "signal": f"{TRACED}:signal"}

    application.signal(declaration, run_ledger.instance("decided-1").request, "approval",
                       {"decision": "approved"})
    [row] = wait_for_rows(run_ledger, 1, instance_id="decided-1")
    assert row.step == "confirm"
    assert_of(correlation, [row])


def test_a_redelivered_task_of_a_traced_app_keeps_the_instances_trace(
        traced_worker: Callable[..., ManagedProcess], run_ledger: Ledger,
        register: Register, queue: str) -> None:
    # The pool process dies (SIGKILL) just after the charge landed; the worker requeues
    # its message, and the charge runs again from it in a new pool process.
    traced_worker()
    correlation = register("redelivered-1")
    run_ledger.arm("redelivered-1", "charge", "after-effect")
    declaration = {"app": f"{TRACED}:app", "queues": [queue], "beat": False,
                   "start": f"{TRACED}:start"}
    application.start(declaration, run_ledger.instance("redelivered-1").request)
    wait_until(lambda: run_ledger.reached("redelivered-1", "charge", "after-effect")
               is not None, timeout=WAIT, what="the charge at its fault point")
    reached = run_ledger.reached("redelivered-1", "charge", "after-effect")
    assert reached is not None
    os.kill(reached.pid, signal.SIGKILL)

    rows = wait_for_rows(run_ledger, 5, instance_id="redelivered-1")
    assert [(r.step, r.attempt, r.outcome) for r in rows] == [
        ("reserve", 1, Outcome.APPLIED), ("charge", 1, Outcome.ERROR),
        ("charge", 2, Outcome.APPLIED), ("charge", 2, Outcome.APPLIED),
        ("confirm", 1, Outcome.APPLIED)]
    assert rows[2].worker_pid == reached.pid != rows[3].worker_pid
    assert_of(correlation, rows)
