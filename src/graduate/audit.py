"""Audit records: one event envelope per effect call, checked against graduate's schema.

The envelope is the one the execution-fabric policy asks every governed path to emit
(CloudEvents-style: event_id, event_type, spec_version, schema_version, tenant_id,
entity_id, correlation_id, causation_id, source, actor_type, the three classes,
trace_id, a timestamp with its timezone). The schema ships with graduate as
`graduate/schemas/audit-record.schema.json`; a record that breaks it is still stored,
with what is wrong, because a broken record is itself a finding.

A team's own systems keep audit records of their own; `envelope_problems` holds one of
them to the envelope's minimum fields, whatever its event type and data
(`graduate.check.audit_trail` judges the trail they make).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

from graduate.flow import Flow
from graduate.ledger import EffectRecord, InstanceRecord

SPEC_VERSION = "1.0"
SCHEMA_VERSION = "1"
SCHEMA_FILE = "audit-record.schema.json"
# An instrumented task or activity acts for a workflow, not for a person.
ACTOR_TYPE = "automated_workflow"


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema of an audit record, as shipped in the package."""
    text = resources.files("graduate.schemas").joinpath(SCHEMA_FILE).read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)


@cache
def _envelope_validator() -> Draft202012Validator:
    """The envelope alone, as a team's own systems write it: graduate's schema without
    what only graduate's records hold (their event types, the call in `data`)."""
    envelope_schema = copy.deepcopy(schema())
    envelope_schema["properties"]["event_type"] = {"type": "string", "minLength": 1}
    envelope_schema["properties"]["data"] = {"type": "object"}
    envelope_schema["additionalProperties"] = True
    return Draft202012Validator(envelope_schema,
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def problems(envelope: Mapping[str, Any]) -> list[str]:
    """What is wrong with `envelope` by the schema: empty when it is a valid record."""
    return _problems(_validator(), envelope)


def envelope_problems(record: Mapping[str, Any]) -> list[str]:
    """What is wrong with an audit record a team's own system wrote, by the envelope's
    minimum fields (any event type, any data)."""
    return _problems(_envelope_validator(), record)


def _problems(validator: Draft202012Validator, envelope: Mapping[str, Any]) -> list[str]:
    found = []
    for error in sorted(validator.iter_errors(envelope), key=lambda e: list(e.path)):
        where = ".".join(str(part) for part in error.path) or "(record)"
        found.append(f"{where}: {error.message}")
    return found


def envelope(effect: EffectRecord, instance: InstanceRecord | None, flow: Flow, *,
             causation_id: str) -> dict[str, Any]:
    """The audit record of one effect call.

    `instance` is None when the call named no instance (its correlation was lost): the
    tenant and entity are then unknown and the record says so by failing the schema.
    `causation_id` is the engine's ID of the execution that made the call (a Celery
    task ID, a Temporal activity ID).
    """
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": f"graduate.effect.{effect.outcome.value}",
        "spec_version": SPEC_VERSION,
        "schema_version": SCHEMA_VERSION,
        "tenant_id": instance.tenant_id if instance else "",
        "entity_id": instance.entity_id if instance else "",
        "correlation_id": effect.correlation_id,
        "causation_id": causation_id,
        "source": f"/graduate/{effect.engine or 'unknown'}/{effect.flow}/{effect.step}",
        "actor_type": ACTOR_TYPE,
        "approval_class": flow.approval_class.value,
        "reversibility_class": flow.reversibility_class.value,
        "sensitivity_class": flow.sensitivity_class.value,
        "trace_id": effect.trace_id,
        "timestamp": datetime.fromtimestamp(effect.finished_at, UTC).isoformat(),
        "data": {
            "run_id": effect.run_id, "instance_id": effect.instance_id, "flow": effect.flow,
            "step": effect.step, "effect": effect.effect, "kind": effect.kind,
            "attempt": effect.attempt, "idempotency_key": effect.idempotency_key,
            "engine": effect.engine, "worker_pid": effect.worker_pid,
            "outcome": effect.outcome.value, "error_type": effect.error_type,
            "error_message": effect.error_message,
        },
    }
