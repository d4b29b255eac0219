"""graduate.effect in a team's Temporal worker, run as a real process on a real server.

The worker (apps/temporal_worker.py) is the team's code plus graduate's interceptor; the
instance is the workflow ID and the attempt the activity's, from Temporal's own context.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from graduate.check import correlation_breaks
from graduate.instrument import Correlation, RunContext
from graduate.ledger import Ledger, Outcome
from graduate.processes import wait_until
from graduate.services.model import TemporalTarget
from tests.instrument.apps.temporal_worker import Order, start_order, start_untraced_order
from tests.instrument.conftest import WAIT, Register, Spawn


@pytest.fixture
def task_queue() -> str:
    return f"orders-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def temporal_worker(start_worker: Spawn, temporal_server: TemporalTarget, task_queue: str,
                    run_context: RunContext) -> None:
    start_worker("tests.instrument.apps.temporal_worker", ["{ready}"], {
        "TEMPORAL_ADDRESS": temporal_server.address, "ORDERS_TASK_QUEUE": task_queue,
        **run_context.environ()})


def start(temporal_server: TemporalTarget, task_queue: str, correlation: Correlation,
          order: Order) -> str:
    return asyncio.run(start_order(temporal_server.address, task_queue, correlation, order))


@pytest.mark.usefixtures("temporal_worker")
def test_an_activity_retry_records_each_attempt_of_the_workflow(
        temporal_server: TemporalTarget, task_queue: str, run_context: RunContext,
        run_ledger: Ledger, register: Register) -> None:
    correlation = register(f"order-{uuid.uuid4().hex[:6]}")
    order = Order(correlation.instance_id, fail_times=2)
    assert start(temporal_server, task_queue, correlation, order) == order.order_id

    rows = run_ledger.effects(run_id=run_context.run_id)
    assert [(r.step, r.attempt, r.outcome) for r in rows] == [
        ("reserve", 1, Outcome.APPLIED), ("charge", 1, Outcome.ERROR),
        ("charge", 2, Outcome.ERROR), ("charge", 3, Outcome.APPLIED),
        ("confirm", 1, Outcome.APPLIED)]
    assert {(r.instance_id, r.engine) for r in rows} == {(order.order_id, "temporal")}
    assert rows[1].error_type == "RuntimeError"
    assert correlation_breaks(correlation.correlation_id, correlation.trace_id, rows) == ()
    records = run_ledger.audit_records(instance_id=order.order_id)
    assert [r.problems for r in records] == [()] * 5
    assert len({r.envelope["causation_id"] for r in records}) == 3  # one per activity


@pytest.mark.usefixtures("temporal_worker")
def test_a_workflow_started_without_the_correlation_header_is_reported(
        temporal_server: TemporalTarget, task_queue: str, run_context: RunContext,
        run_ledger: Ledger, register: Register) -> None:
    correlation = register(f"order-{uuid.uuid4().hex[:6]}")
    order = Order(correlation.instance_id)
    assert asyncio.run(start_untraced_order(temporal_server.address, task_queue,
                                            order)) == order.order_id

    rows = run_ledger.effects(run_id=run_context.run_id)
    assert {r.instance_id for r in rows} == {order.order_id}  # Temporal still knows it
    breaks = correlation_breaks(correlation.correlation_id, correlation.trace_id, rows)
    assert {(b.step, b.field, b.found) for b in breaks} == {
        (step, field, "") for step in ("reserve", "charge", "confirm")
        for field in ("correlation_id", "trace_id")}


@pytest.mark.usefixtures("temporal_worker")
def test_an_async_activity_pauses_at_an_armed_after_effect_point_until_released(
        temporal_server: TemporalTarget, task_queue: str, run_context: RunContext,
        run_ledger: Ledger, register: Register) -> None:
    correlation = register(f"order-{uuid.uuid4().hex[:6]}")
    order = Order(correlation.instance_id)
    run_ledger.arm(order.order_id, "confirm", "after-effect")

    async def scenario() -> str:
        run = asyncio.create_task(start_order(temporal_server.address, task_queue,
                                              correlation, order))
        await asyncio.to_thread(wait_until, lambda: run_ledger.reached(
            order.order_id, "confirm", "after-effect") is not None, timeout=WAIT,
            what="confirm at its fault point")
        # The effect landed; the workflow cannot have finished while the call is held.
        assert [r.step for r in run_ledger.effects(instance_id=order.order_id)][-1] == "confirm"
        assert not run.done()
        run_ledger.release(order.order_id, "confirm", "after-effect")
        return await run

    assert asyncio.run(scenario()) == order.order_id
