"""Audit records: the envelope of one effect call, against the schema graduate ships."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from graduate import audit
from graduate.flow import Flow
from graduate.ledger import EffectRecord, InstanceRecord, Outcome

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def instance() -> InstanceRecord:
    return InstanceRecord(
        instance_id="o-1", run_id="run-1", flow="orders", flow_source="orders.toml",
        engine="app", tenant_id="acme", entity_id="order-1", date="20261129",
        correlation_id="c-1", trace_id=TRACE, started_at=1.0)


def charge(outcome: Outcome = Outcome.APPLIED, **changes: object) -> EffectRecord:
    fields: dict[str, object] = {
        "id": 7, "run_id": "run-1", "flow": "orders", "instance_id": "o-1", "step": "charge",
        "effect": "payments.charge", "kind": "effect", "attempt": 2,
        "idempotency_key": "o-1:charge", "correlation_id": "c-1", "trace_id": TRACE,
        "engine": "celery", "worker_pid": 4242, "started_at": 1_800_000_000.0,
        "finished_at": 1_800_000_000.5, "outcome": outcome}
    fields.update(changes)
    return EffectRecord(**fields)  # type: ignore[arg-type]


def test_the_schema_ships_with_the_package() -> None:
    text = resources.files("graduate.schemas").joinpath(audit.SCHEMA_FILE).read_text("utf-8")
    assert json.loads(text) == audit.schema()


def test_an_effect_call_yields_a_valid_envelope(instance: InstanceRecord,
                                                orders: Flow) -> None:
    record = audit.envelope(charge(Outcome.ERROR, error_type="GatewayTimeout",
                                   error_message="timed out"), instance, orders,
                            causation_id="task-9")

    assert audit.problems(record) == []
    assert record["event_type"] == "graduate.effect.error"
    assert (record["tenant_id"], record["entity_id"], record["correlation_id"]) == (
        "acme", "order-1", "c-1")
    assert (record["approval_class"], record["reversibility_class"],
            record["sensitivity_class"]) == ("A1", "R1", "S2")
    assert record["timestamp"].endswith("+00:00")
    assert record["data"]["error_type"] == "GatewayTimeout"


def test_an_envelope_that_breaks_the_schema_is_named_field_by_field(
        instance: InstanceRecord, orders: Flow) -> None:
    record = audit.envelope(charge(), instance, orders, causation_id="task-9")
    record["timestamp"] = "2026-11-29T10:00:00"  # no timezone
    record["trace_id"] = "not-a-trace"
    record["actor_type"] = "robot"
    del record["tenant_id"]

    found = audit.problems(record)

    assert any(p.startswith("timestamp:") for p in found)
    assert any(p.startswith("trace_id:") for p in found)
    assert any(p.startswith("actor_type:") for p in found)
    assert any("'tenant_id' is a required property" in p for p in found)


def test_a_call_without_an_instance_yields_a_record_that_fails_the_schema(
        orders: Flow) -> None:
    record = audit.envelope(charge(instance_id="", correlation_id="", trace_id=""), None,
                            orders, causation_id="task-9")

    fields = {p.split(":", 1)[0] for p in audit.problems(record)}
    assert {"tenant_id", "entity_id", "correlation_id", "trace_id",
            "data.instance_id"} <= fields
