"""graduate.effect in a team's Temporal app, run by graduate's worker launcher as a real
process on a real server.

The app (apps/temporal_worker.py) is the team's code: a worker factory and a start
function, as its declaration names them. The instance is the workflow ID and the
attempt the activity's, from Temporal's own context.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest

from graduate.adapters.temporal import application
from graduate.check import correlation_breaks
from graduate.flow import InstanceRequest
from graduate.instrument import RunContext
from graduate.ledger import EffectRecord, Ledger, Outcome
from graduate.processes import wait_until
from graduate.services.model import TemporalTarget
from tests.instrument.apps.temporal_worker import Order, start_untraced_order
from tests.instrument.conftest import WAIT, Register, Spawn, wait_for_rows

APP = "tests.instrument.apps.temporal_worker"
DECLARATION = {"worker": f"{APP}:create_worker", "start": f"{APP}:start"}
ROWS_PER_ORDER = 3  # reserve, charge, confirm


@pytest.fixture
def task_queue(monkeypatch: pytest.MonkeyPatch) -> str:
    """The test's own task queue, for the app's workers and for its start function."""
    queue = f"orders-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("ORDERS_TASK_QUEUE", queue)
    return queue


StartWorker = Callable[..., None]


@pytest.fixture
def temporal_worker(start_worker: Spawn, temporal_server: TemporalTarget, task_queue: str,
                    run_context: RunContext) -> StartWorker:
    def start(**env: str) -> None:
        start_worker("graduate.adapters.temporal.app_worker",
                     [DECLARATION["worker"], "{ready}"],
                     {"GRADUATE_TEMPORAL_ADDRESS": temporal_server.address,
                      "ORDERS_TASK_QUEUE": task_queue, **run_context.environ(), **env})

    return start


def start_order(temporal_server: TemporalTarget, request: InstanceRequest) -> None:
    """Start one order as graduate's harness does: the team's start function, on a client
    that carries the correlation."""
    asyncio.run(application.start(DECLARATION, temporal_server, request))


def request_of(run_ledger: Ledger, instance_id: str) -> InstanceRequest:
    return run_ledger.instance(instance_id).request


def confirmed(run_ledger: Ledger, instance_id: str, count: int) -> list[EffectRecord]:
    """The instance's rows once `count` are in and the last is the confirmation."""
    rows = wait_for_rows(run_ledger, count, instance_id=instance_id)
    assert rows[-1].step == "confirm"
    return rows


def test_an_activity_retry_records_each_attempt_of_the_workflow(
        temporal_worker: StartWorker, temporal_server: TemporalTarget,
        run_ledger: Ledger, register: Register) -> None:
    temporal_worker(ORDERS_CHARGE_FAILURES="2")
    correlation = register(f"order-{uuid.uuid4().hex[:6]}")
    start_order(temporal_server, request_of(run_ledger, correlation.instance_id))

    rows = confirmed(run_ledger, correlation.instance_id, ROWS_PER_ORDER + 2)
    assert [(r.step, r.attempt, r.outcome) for r in rows] == [
        ("reserve", 1, Outcome.APPLIED), ("charge", 1, Outcome.ERROR),
        ("charge", 2, Outcome.ERROR), ("charge", 3, Outcome.APPLIED),
        ("confirm", 1, Outcome.APPLIED)]
    assert {(r.instance_id, r.engine) for r in rows} == {(correlation.instance_id, "temporal")}
    assert rows[1].error_type == "RuntimeError"
    assert correlation_breaks(correlation.correlation_id, correlation.trace_id, rows) == ()
    records = run_ledger.audit_records(instance_id=correlation.instance_id)
    assert [r.problems for r in records] == [()] * 5
    assert len({r.envelope["causation_id"] for r in records}) == 3  # one per activity


def test_a_workflow_started_without_the_correlation_header_is_reported(
        temporal_worker: StartWorker, temporal_server: TemporalTarget, task_queue: str,
        run_ledger: Ledger, register: Register) -> None:
    temporal_worker()
    correlation = register(f"order-{uuid.uuid4().hex[:6]}")
    order = Order(correlation.instance_id)
    assert asyncio.run(start_untraced_order(temporal_server.address, task_queue,
                                            order)) == order.order_id

    rows = confirmed(run_ledger, order.order_id, ROWS_PER_ORDER)
    assert {r.instance_id for r in rows} == {order.order_id}  # Temporal still knows it
    breaks = correlation_breaks(correlation.correlation_id, correlation.trace_id, rows)
    assert {(b.step, b.field, b.found) for b in breaks} == {
        (step, field, "") for step in ("reserve", "charge", "confirm")
        for field in ("correlation_id", "trace_id")}


def test_an_async_activity_pauses_at_an_armed_after_effect_point_until_released(
        temporal_worker: StartWorker, temporal_server: TemporalTarget,
        run_ledger: Ledger, register: Register) -> None:
    temporal_worker()
    correlation = register(f"order-{uuid.uuid4().hex[:6]}")
    instance_id = correlation.instance_id
    run_ledger.arm(instance_id, "confirm", "after-effect")
    start_order(temporal_server, request_of(run_ledger, instance_id))

    wait_until(lambda: run_ledger.reached(instance_id, "confirm", "after-effect") is not None,
               timeout=WAIT, what="confirm at its fault point")
    held = run_ledger.effects(instance_id=instance_id)
    assert [r.step for r in held] == ["reserve", "charge", "confirm"]  # the effect landed
    reached = run_ledger.reached(instance_id, "confirm", "after-effect")
    assert reached is not None
    assert reached.pid == held[-1].worker_pid
    run_ledger.release(instance_id, "confirm", "after-effect")

    assert confirmed(run_ledger, instance_id, ROWS_PER_ORDER) == held


TRACED = "tests.instrument.apps.traced_temporal"


def test_an_app_that_traces_carries_the_instances_trace_to_its_effects(
        start_worker: Spawn, temporal_server: TemporalTarget, task_queue: str,
        run_context: RunContext, register: Register, run_ledger: Ledger) -> None:
    # The app's TracingInterceptor goes on its worker and on the client graduate starts
    # it with; graduate makes the instance's trace the parent of the app's spans, so the
    # span the activity runs in (whose trace graduate.effect records) is on that trace.
    declaration = {"worker": f"{TRACED}:create_worker", "start": f"{TRACED}:start"}
    start_worker("graduate.adapters.temporal.app_worker", [declaration["worker"], "{ready}"],
                 {"GRADUATE_TEMPORAL_ADDRESS": temporal_server.address,
                  "ORDERS_TASK_QUEUE": task_queue, **run_context.environ()})
    correlation = register("o-traced")
    request = request_of(run_ledger, correlation.instance_id)

    asyncio.run(application.start(declaration, temporal_server, request))

    [row] = wait_for_rows(run_ledger, 1, instance_id=correlation.instance_id)
    assert (row.step, row.outcome, row.attempt) == ("reserve", Outcome.APPLIED, 1)
    assert row.trace_id == correlation.trace_id
    assert correlation_breaks(correlation.correlation_id, correlation.trace_id, [row]) == ()
