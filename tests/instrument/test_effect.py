"""graduate.effect in one process: what it records under a run, and that outside a run
it only calls through. (What the engines tell it is in test_celery and test_temporal.)"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from graduate import instrument
from graduate.check import correlation_breaks
from graduate.errors import ConfigError
from graduate.flow import Flow, InstanceRequest
from graduate.instrument import Correlation, RunContext, effect, propagating
from graduate.ledger import Ledger, Outcome
from graduate.processes import wait_until
from tests.instrument.conftest import ORDERS, WAIT, Register


@pytest.fixture
def active(run_context: RunContext) -> Iterator[RunContext]:
    instrument.activate(run_context)
    yield run_context
    instrument.activate(None)


def test_outside_a_run_effect_only_calls_through() -> None:
    assert instrument.RunContext.from_environ(os.environ) is None

    def send(order: str) -> str:
        return f"sent {order}"

    assert effect("mail.send", key="k") is effect("payments.charge", key="other")
    assert effect("mail.send", key=lambda order: order)(send) is send
    with effect("mail.send", key="k") as call:
        call.absorbed()
    with pytest.raises(ValueError, match="declined"), effect("payments.charge", key="k"):
        raise ValueError("declined")


async def test_outside_a_run_async_with_only_calls_through() -> None:
    async with effect("mail.send", key="k") as call:
        call.absorbed()


def test_a_partial_run_environment_is_refused() -> None:
    with pytest.raises(ConfigError, match="GRADUATE_RUN_FLOW"):
        RunContext.from_environ({"GRADUATE_RUN_LEDGER_URL": "x.db", "GRADUATE_RUN_ID": "r"})


def test_under_a_run_a_call_is_recorded_with_its_instance_step_key_and_ids(
        active: RunContext, run_ledger: Ledger, register: Register) -> None:
    correlation = register("o-1")
    with propagating(correlation):
        with effect("stock.reserve", key="o-1:reserve"):
            pass
        with effect("payments.charge", key="o-1:charge") as call:
            call.absorbed()
        with pytest.raises(ValueError, match="declined"), effect("payments.refund", key="r"):
            raise ValueError("card declined")

    rows = run_ledger.effects(run_id=active.run_id)
    assert [(r.step, r.kind, r.outcome, r.idempotency_key) for r in rows] == [
        ("reserve", "effect", Outcome.APPLIED, "o-1:reserve"),
        ("charge", "effect", Outcome.ABSORBED, "o-1:charge"),
        ("charge", "compensation", Outcome.ERROR, "r")]
    for row in rows:
        assert (row.instance_id, row.correlation_id, row.trace_id) == (
            correlation.instance_id, correlation.correlation_id, correlation.trace_id)
        assert row.worker_pid == os.getpid()
        assert row.attempt == 1
    assert (rows[2].error_type, rows[2].error_message) == ("ValueError", "card declined")
    assert correlation_breaks(correlation.correlation_id, correlation.trace_id, rows) == ()


async def test_async_with_and_decorators_record_each_call(
        active: RunContext, run_ledger: Ledger, register: Register) -> None:
    correlation = register("o-2")

    @effect("stock.reserve", key=lambda order, item: f"{order}:{item}")
    def reserve(order: str, item: str) -> str:
        return item

    @effect("mail.send", key=lambda order: f"{order}:mail")
    async def send(order: str) -> str:
        return order

    with propagating(correlation):
        assert reserve("o-2", item="chair") == "chair"
        assert await send("o-2") == "o-2"
        async with effect("payments.charge", key="o-2:charge"):
            pass

    rows = run_ledger.effects(instance_id="o-2")
    assert [(r.step, r.idempotency_key) for r in rows] == [
        ("reserve", "o-2:chair"), ("confirm", "o-2:mail"), ("charge", "o-2:charge")]


def test_an_effect_the_flow_does_not_name_is_refused_and_not_recorded(
        active: RunContext, run_ledger: Ledger) -> None:
    unknown = r"no step whose effect or compensation is 'crm\.update'.*mail\.send, payments"
    with pytest.raises(ConfigError, match=unknown), effect("crm.update", key="k"):
        pass
    with pytest.raises(ConfigError, match="has no step 'ship'"), effect(
            "mail.send", key="k", step="ship"):
        pass
    assert run_ledger.effects(run_id=active.run_id) == []


def test_the_active_opentelemetry_span_gives_the_trace_id(
        active: RunContext, run_ledger: Ledger, register: Register) -> None:
    correlation = register("o-3")
    tracer = TracerProvider().get_tracer("orders")
    with (propagating(correlation), tracer.start_as_current_span("charge") as span,
          effect("payments.charge", key="o-3:charge")):
        pass

    [row] = run_ledger.effects(instance_id="o-3")
    assert row.trace_id == format(span.get_span_context().trace_id, "032x")
    [broken] = correlation_breaks(correlation.correlation_id, correlation.trace_id, [row])
    assert (broken.field, broken.expected, broken.found) == (
        "trace_id", correlation.trace_id, row.trace_id)


def test_a_message_sent_under_the_instances_trace_carries_it_unless_it_has_one() -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with instrument.trace_parent(trace_id):
        headers: dict[str, Any] = {}
        instrument.inject_trace(headers)
        own = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        instrument.inject_trace(own)
    untraced: dict[str, Any] = {}
    instrument.inject_trace(untraced)

    assert headers["traceparent"].split("-")[1] == trace_id
    assert own == {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    assert untraced == {}


def test_a_call_pauses_at_an_armed_before_effect_point_until_released(
        active: RunContext, run_ledger: Ledger, register: Register) -> None:
    correlation = register("o-4")
    run_ledger.arm("o-4", "charge", "before-effect")

    def call() -> None:
        with propagating(correlation), effect("payments.charge", key="o-4:charge"):
            pass

    caller = threading.Thread(target=call)
    caller.start()
    wait_until(lambda: run_ledger.reached("o-4", "charge", "before-effect") is not None,
               timeout=WAIT, what="the call at its fault point")
    assert run_ledger.effects(instance_id="o-4") == []
    released = time.time()
    run_ledger.release("o-4", "charge", "before-effect")
    caller.join(WAIT)

    [row] = run_ledger.effects(instance_id="o-4")
    assert row.started_at >= released


@pytest.mark.postgres
def test_calls_and_their_audit_records_on_postgres(postgres_url: str, orders: Flow) -> None:
    context = RunContext(ledger_url=postgres_url, run_id="run-pg", flow_source=str(ORDERS))
    ledger = Ledger(postgres_url)
    record = ledger.register(orders, InstanceRequest(
        instance_id="pg-1", run_id="run-pg", tenant_id="acme", entity_id="order-pg",
        date="20261129", correlation_id="c-pg", trace_id="a" * 32), engine="app")
    instrument.activate(context)
    try:
        correlation = Correlation(record.instance_id, record.correlation_id, record.trace_id)
        with (propagating(correlation), pytest.raises(ValueError, match="declined"),
              effect("payments.charge", key="pg-1:charge")):
            raise ValueError("card declined")
    finally:
        instrument.activate(None)

    [row] = ledger.effects(instance_id="pg-1")
    assert (row.outcome, row.error_type, row.error_message) == (
        Outcome.ERROR, "ValueError", "card declined")
    [audit] = ledger.audit_records(instance_id="pg-1")
    assert audit.effect_id == row.id
    assert audit.envelope["data"]["outcome"] == "error"
    assert audit.problems == ("causation_id: '' should be non-empty",)  # no engine here
    ledger.close()
