"""The partner approval pilot's external systems, as the team's code calls them.

In the team's repository these are HTTP clients of the partner data service, the CRM,
the e-signature provider and the notification service. Every call carries the commitment's
`Trail` as headers (X-Tenant-ID, X-Correlation-ID, traceparent, X-Request-ID), and each
system persists an audit record of what it did, in the event envelope the execution
fabric's policy asks for. Here the systems only keep that audit log (an SQLite file,
PARTNER_APPROVAL_AUDIT_DB), so the example runs anywhere; `audit_records` reads it back,
as the team's audit query would, and the app declares it (`audit = ...`) so graduate
can check that every commitment left a record carrying its correlation and trace IDs.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

AUDIT_DB_VARIABLE = "PARTNER_APPROVAL_AUDIT_DB"
# The commitment's classes, as the approval policy sets them for partner approval.
CLASSES = {"approval_class": "A2", "reversibility_class": "R2", "sensitivity_class": "S2"}
Call = Callable[..., None]


class Refused(Exception):
    """The system turned the call down (an HTTP 4xx: an invalid signatory, a partner the
    CRM will not take): asking again cannot help, so callers do not retry it."""


@dataclass(frozen=True)
class Trail:
    """What travels with every call of one commitment, as request headers."""

    tenant_id: str
    correlation_id: str
    trace_id: str
    request_id: str  # this call's own ID: the causation of what the system records


def _audited(system: str, operation: str) -> Callable[[Call], Call]:
    """The system at the other end of a client call keeps its audit record of the call."""

    def wrap(call: Call) -> Call:
        @functools.wraps(call)
        def audited(partner_id: str, *args: Any) -> None:
            _unless_refused(operation, partner_id)
            call(partner_id, *args)
            _audit(system, operation, partner_id, args[-1])

        return cast(Call, audited)

    return wrap


def _audited_once(system: str, operation: str) -> Callable[[Call], Callable[..., bool]]:
    """A system that honours the call's key (the argument before the trail): it acts on
    a key once per operation, as real APIs scope keys, and ignores a repeat. The client
    returns True when it was ignored."""

    def wrap(call: Call) -> Callable[..., bool]:
        @functools.wraps(call)
        def once(partner_id: str, key: str, trail: Trail) -> bool:
            _unless_refused(operation, partner_id)
            with _audit_log() as db:
                repeated = not db.execute("INSERT OR IGNORE INTO operation_keys (operation, "
                                          "key) VALUES (?, ?)", [operation, key]).rowcount
            if not repeated:
                call(partner_id, key, trail)
                _audit(system, operation, partner_id, trail)
            return repeated

        return once

    return wrap


@_audited_once("partners", "partners.validate")
def partners_validate(partner_id: str, key: str, trail: Trail) -> None:
    """POST /partners/{partner_id}/validations with Idempotency-Key: key: the partner data
    service checks the partner's registration, sanctions and banking data. It reads
    only; the key spares it a second check of the same request."""


@_audited_once("crm", "crm.create_draft")
def crm_create_draft(partner_id: str, key: str, trail: Trail) -> None:
    """POST /partners/drafts with Idempotency-Key: key: the approval packet, a draft
    partner record with status pending."""


@_audited_once("crm", "crm.void_draft")
def crm_void_draft(partner_id: str, key: str, trail: Trail) -> None:
    """DELETE /partners/drafts/{partner_id} with Idempotency-Key: key."""


@_audited_once("crm", "crm.update_partner")
def crm_update_partner(partner_id: str, key: str, trail: Trail) -> None:
    """PATCH /partners/{partner_id} (status approved) with Idempotency-Key: key."""


@_audited_once("crm", "crm.revert_draft")
def crm_revert_draft(partner_id: str, key: str, trail: Trail) -> None:
    """POST /partners/{partner_id}/revert with Idempotency-Key: key: the record goes back
    to the pending draft it was before the update."""


@_audited_once("esign", "esign.send_envelope")
def esign_send_envelope(partner_id: str, key: str, trail: Trail) -> None:
    """POST /envelopes (the partnership agreement, to the partner's signatory) with
    Idempotency-Key: key: the provider sends one envelope per key."""


@_audited_once("esign", "esign.void_envelope")
def esign_void_envelope(partner_id: str, key: str, trail: Trail) -> None:
    """POST /envelopes/{partner_id}/void with Idempotency-Key: key: an envelope sent and
    not yet signed can no longer be signed."""


@_audited("notify", "notify.send_confirmation")
def notify_send_confirmation(partner_id: str, trail: Trail) -> None:
    """POST /notifications/confirmation: the notification service takes no key, so a
    second call is a second email."""


@_audited("notify", "notify.send_rejection")
def notify_send_rejection(partner_id: str, trail: Trail) -> None:
    """POST /notifications/rejection: no key either."""


@_audited("notify", "notify.send_expiry")
def notify_send_expiry(partner_id: str, trail: Trail) -> None:
    """POST /notifications/expiry, to every party of the packet: no key either."""


@_audited_once("notify", "notify.send_reminder")
def notify_send_reminder(partner_id: str, key: str, trail: Trail) -> None:
    """POST /notifications/reminder with Idempotency-Key: key: the approver is reminded
    of a pending approval. Unlike the other notifications, the reminder is keyed (the
    service's newer endpoint), so a second sweep or a redelivered task reminds nobody
    twice."""


def refuse(partner_id: str, operation: str) -> None:
    """From now on the system turns down `operation` for the partner (how a test makes a
    step fail for good, as the real system would with a 4xx)."""
    with _audit_log() as db:
        db.execute("INSERT OR IGNORE INTO refusals (entity_id, operation) VALUES (?, ?)",
                   [partner_id, operation])


def _unless_refused(operation: str, partner_id: str) -> None:
    with _audit_log() as db:
        refused = db.execute("SELECT 1 FROM refusals WHERE entity_id = ? AND operation = ?",
                             [partner_id, operation]).fetchone()
    if refused:
        raise Refused(f"{operation} refused for partner {partner_id}")


def audit_records(tenant_id: str, entity_id: str) -> list[dict[str, Any]]:
    """Every audit record the systems kept about one partner (the declared reader)."""
    with _audit_log() as db:
        rows = db.execute("SELECT envelope FROM audit_log WHERE tenant_id = ? AND "
                          "entity_id = ? ORDER BY rowid", [tenant_id, entity_id]).fetchall()
    return [json.loads(envelope) for (envelope,) in rows]


def _audit(system: str, operation: str, partner_id: str, trail: Trail) -> None:
    envelope = {
        "event_id": str(uuid.uuid4()), "event_type": operation, "spec_version": "1.0",
        "schema_version": "1", "tenant_id": trail.tenant_id, "entity_id": partner_id,
        "correlation_id": trail.correlation_id, "causation_id": trail.request_id,
        "source": f"/{system}", "actor_type": "executor_system", **CLASSES,
        "trace_id": trail.trace_id, "timestamp": datetime.now(UTC).isoformat(),
        "data": {"partner_id": partner_id},
    }
    with _audit_log() as db:
        db.execute("INSERT INTO audit_log (tenant_id, entity_id, envelope) VALUES (?, ?, ?)",
                   [trail.tenant_id, partner_id, json.dumps(envelope)])


@contextmanager
def _audit_log() -> Iterator[sqlite3.Connection]:
    path = os.environ.get(AUDIT_DB_VARIABLE) or os.path.join(
        tempfile.gettempdir(), "partner_approval_audit.sqlite3")
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS audit_log (tenant_id TEXT NOT NULL, "
                           "entity_id TEXT NOT NULL, envelope TEXT NOT NULL)")
        # The keys a system that honours them has acted on, per operation (`_audited_once`).
        connection.execute("CREATE TABLE IF NOT EXISTS operation_keys (operation TEXT NOT "
                           "NULL, key TEXT NOT NULL, PRIMARY KEY (operation, key))")
        # The calls a system turns down (`refuse`).
        connection.execute("CREATE TABLE IF NOT EXISTS refusals (entity_id TEXT NOT NULL, "
                           "operation TEXT NOT NULL, PRIMARY KEY (entity_id, operation))")
        yield connection
    finally:
        connection.close()
