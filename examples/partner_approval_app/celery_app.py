"""Partner approval on Celery, written as a careful Celery team writes it.

Celery cannot wait for a human, so the approval's state lives in the team's own table
(`approvals`, in PARTNER_APPROVAL_DB) and tasks move it on:

- `start` sends a chain, validate the partner then draft the approval packet, with
  `link_error` so that a step that fails for good undoes what was done;
- the packet step marks the approval pending and sends `expire` with a countdown of
  the deadline; beat's `expire_overdue` sweep is the safety net for a countdown message
  that was lost;
- the same sweep reminds the approver of each approval still pending past half its
  deadline (`send_reminder`), once: a table records the reminders sent, and the
  notification service absorbs a repeat by its key (two sweeps, a redelivery);
- `signal` (the decision, from the team's API) sends `decide`, which settles the approval
  once (compare-and-set) and sends the approved chain (update the CRM, send the
  e-signature request, confirm) or the compensation;
- compensation undoes the steps the table says were done, in reverse order, then sends
  the notice of a rejection or a passed deadline.

Late acknowledgement and retries with backoff are set, as a careful team sets them.
Each external call is wrapped in `graduate.effect`; graduate runs the workers and
starts instances from the app's declaration.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from celery import Celery, chain

import graduate
from examples.partner_approval_app import clients
from graduate.flow import InstanceRequest
from graduate.instrument import Correlation, propagating

BROKER_URL = os.environ.get("PARTNER_APPROVAL_BROKER_URL", "redis://127.0.0.1:6379/0")
DEADLINE_VARIABLE = "PARTNER_APPROVAL_DEADLINE_SECONDS"
# How often beat sweeps the table (seconds); short in tests, whose deadlines are short.
SWEEP_SECONDS = float(os.environ.get("PARTNER_APPROVAL_SWEEP_SECONDS", "30"))
REMIND_AT = 0.5  # of the deadline: the approver is reminded half-way

app = Celery("partner_approval", broker=BROKER_URL, backend=BROKER_URL,
             set_as_current=False)
app.conf.update(
    task_default_queue=os.environ.get("PARTNER_APPROVAL_QUEUE", "partner-approval"),
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    # Publishing a chain's next step rides out a broker restart. Celery's default (three
    # retries in under a second) fails the step that had just succeeded when the broker
    # is back a moment later, and its link_error would undo an approved partner.
    task_publish_retry_policy={"max_retries": 10, "interval_start": 0.2,
                               "interval_step": 0.5, "interval_max": 2.0},
    beat_schedule={"expire-overdue": {"task": "partner_approval.expire_overdue",
                                      "schedule": SWEEP_SECONDS}},
)
# A call a system turned down (clients.Refused) is not retried: the chain's link_error
# undoes what was done.
RETRIES: dict[str, Any] = {"autoretry_for": (ConnectionError, TimeoutError),
                           "retry_backoff": 0.2, "retry_backoff_max": 2, "max_retries": 4}


# ----------------------------------------------------------------------------- the table


@contextmanager
def approvals() -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(os.environ.get("PARTNER_APPROVAL_DB", "approvals.sqlite3"),
                                 timeout=30, isolation_level=None)
    try:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS approvals (instance_id TEXT PRIMARY KEY, "
            "partner_id TEXT NOT NULL, idempotency_key TEXT NOT NULL, status TEXT NOT NULL, "
            "deadline_seconds REAL NOT NULL, deadline_at REAL, done TEXT NOT NULL, "
            "tenant_id TEXT NOT NULL, correlation_id TEXT NOT NULL, trace_id TEXT NOT NULL)")
        connection.execute("CREATE TABLE IF NOT EXISTS reminders (instance_id TEXT PRIMARY "
                           "KEY, sent_at REAL NOT NULL)")
        yield connection
    finally:
        connection.close()


@dataclass(frozen=True)
class Approval:
    """One row of the team's table."""

    partner_id: str
    key: str  # {tenant_id}:{workflow_type}:{entity_id}:{yyyymmdd}, fixed at start
    status: str
    done: list[str]
    tenant_id: str
    correlation_id: str  # from the API call that started it: every audit record carries
    trace_id: str        # these two


def _row(instance_id: str) -> Approval:
    with approvals() as db:
        partner, key, status, done, tenant, correlation, trace = db.execute(
            "SELECT partner_id, idempotency_key, status, done, tenant_id, correlation_id, "
            "trace_id FROM approvals WHERE instance_id = ?", [instance_id]).fetchone()
    return Approval(partner, key, status, json.loads(done), tenant, correlation, trace)


def _mark_done(instance_id: str, step: str) -> None:
    done = _row(instance_id).done
    if step not in done:
        with approvals() as db:
            db.execute("UPDATE approvals SET done = ? WHERE instance_id = ?",
                       [json.dumps([*done, step]), instance_id])


def _settle(instance_id: str, status: str, *, was: str = "pending") -> bool:
    """Move the approval from `was` (pending: awaiting the decision) to `status`; False
    when it had moved on already (compare-and-set)."""
    with approvals() as db:
        changed = db.execute("UPDATE approvals SET status = ? WHERE instance_id = ? AND "
                             "status = ?", [status, instance_id, was]).rowcount
    return bool(changed)


# ----------------------------------------------------------------------------- the steps


def _call(instance_id: str, effect: str, call: Any, *, keyed: bool) -> None:
    """One call of the approval; a system that honours the key absorbs a repeat (a retry,
    a redelivered task), the notification service sends it again."""
    row = _row(instance_id)
    trail = clients.Trail(row.tenant_id, row.correlation_id, row.trace_id,
                          request_id=f"{row.key}:{effect}")
    with graduate.effect(effect, key=row.key) as recorded:
        if keyed:
            if call(row.partner_id, row.key, trail):
                recorded.absorbed()
        else:
            call(row.partner_id, trail)


@app.task(name="partner_approval.validate_partner", **RETRIES)
def validate_partner(instance_id: str) -> str:
    _call(instance_id, "partners.validate", clients.partners_validate, keyed=True)
    _mark_done(instance_id, "validate_partner")
    return instance_id


@app.task(name="partner_approval.create_packet", **RETRIES)
def create_packet(instance_id: str) -> str:
    _call(instance_id, "crm.create_draft", clients.crm_create_draft, keyed=True)
    _mark_done(instance_id, "create_packet")
    with approvals() as db:
        [deadline] = db.execute("SELECT deadline_seconds FROM approvals WHERE instance_id = ?",
                                [instance_id]).fetchone()
        db.execute("UPDATE approvals SET status = 'pending', deadline_at = ? WHERE "
                   "instance_id = ? AND status = 'drafting'", [time.time() + deadline,
                                                               instance_id])
    expire.apply_async([instance_id], countdown=deadline)
    return instance_id


@app.task(name="partner_approval.update_crm", **RETRIES)
def update_crm(instance_id: str) -> str:
    _call(instance_id, "crm.update_partner", clients.crm_update_partner, keyed=True)
    _mark_done(instance_id, "update_crm")
    return instance_id


@app.task(name="partner_approval.send_esign", **RETRIES)
def send_esign(instance_id: str) -> str:
    _call(instance_id, "esign.send_envelope", clients.esign_send_envelope, keyed=True)
    _mark_done(instance_id, "send_esign")
    return instance_id


@app.task(name="partner_approval.send_confirmation", **RETRIES)
def send_confirmation(instance_id: str) -> str:
    _call(instance_id, "notify.send_confirmation", clients.notify_send_confirmation,
          keyed=False)
    _mark_done(instance_id, "send_confirmation")
    _settle(instance_id, "completed", was="approved")
    return instance_id


# ----------------------------------------------------------------------------- decisions


@app.task(name="partner_approval.decide")
def decide(instance_id: str, decision: str) -> None:
    if decision == "approve" and _settle(instance_id, "approved"):
        chain(update_crm.si(instance_id), send_esign.si(instance_id),
              send_confirmation.si(instance_id)).apply_async(
            link_error=on_failure.s(instance_id=instance_id))
    elif decision != "approve" and _settle(instance_id, "rejected"):
        chain(compensate.si(instance_id), send_notice.si(instance_id)).apply_async()


@app.task(name="partner_approval.expire")
def expire(instance_id: str) -> None:
    if _settle(instance_id, "expired"):
        chain(compensate.si(instance_id), send_notice.si(instance_id)).apply_async()


@app.task(name="partner_approval.expire_overdue")
def expire_overdue() -> None:
    """Beat's sweep: expire what is past its deadline (its countdown may have been lost),
    and remind the approver of what is past half of it."""
    now = time.time()
    with approvals() as db:
        past_half = db.execute(
            "SELECT instance_id, deadline_at < ?, sent_at IS NOT NULL, correlation_id, "
            "trace_id FROM approvals LEFT JOIN reminders USING (instance_id) WHERE "
            "status = 'pending' AND deadline_at - deadline_seconds * ? <= ?",
            [now, 1 - REMIND_AT, now]).fetchall()
    for instance_id, overdue, reminded, correlation_id, trace_id in past_half:
        # Beat's messages belong to no commitment: each one sent for a row carries that
        # row's IDs, so its audit records and graduate's ledger name the commitment.
        with propagating(Correlation(instance_id, correlation_id, trace_id)):
            if overdue:
                expire.delay(instance_id)
            elif not reminded:
                send_reminder.delay(instance_id)


@app.task(name="partner_approval.send_reminder", **RETRIES)
def send_reminder(instance_id: str) -> None:
    """Remind the approver, if the approval is still pending. Two sweeps can both send
    this before either has recorded it, and a worker lost mid-call has it redelivered:
    the key makes the notification service absorb the repeat."""
    if _row(instance_id).status != "pending":
        return
    _call(instance_id, "notify.send_reminder", clients.notify_send_reminder, keyed=True)
    with approvals() as db:
        db.execute("INSERT OR IGNORE INTO reminders (instance_id, sent_at) VALUES (?, ?)",
                   [instance_id, time.time()])


# ----------------------------------------------------------------------------- undoing


# By failure point: whatever of these the table says was done, newest first.
UNDO = {"send_esign": ("esign.void_envelope", clients.esign_void_envelope),
        "update_crm": ("crm.revert_draft", clients.crm_revert_draft),
        "create_packet": ("crm.void_draft", clients.crm_void_draft)}
# The notice of how the approval ended, sent once its drafts are voided.
NOTICES = {"rejected": ("notify.send_rejection", clients.notify_send_rejection),
           "expired": ("notify.send_expiry", clients.notify_send_expiry)}


@app.task(name="partner_approval.compensate", **RETRIES)
def compensate(instance_id: str) -> None:
    """Undo the done steps that can be undone, newest first; each undo is keyed, so a
    retried compensation repeats nothing the systems have not absorbed."""
    done = _row(instance_id).done
    for step in reversed(done):
        if step in UNDO and f"{step}.compensation" not in done:
            effect, call = UNDO[step]
            _call(instance_id, effect, call, keyed=True)
            _mark_done(instance_id, f"{step}.compensation")
    _mark_done(instance_id, "compensated")


@app.task(name="partner_approval.send_notice", **RETRIES)
def send_notice(instance_id: str) -> None:
    """Tell the parties how the approval ended. The notification service takes no key:
    the table skips a notice already sent, and a task redelivered between the send and
    that record sends it again."""
    row = _row(instance_id)
    if row.status in NOTICES and "notice" not in row.done:
        effect, call = NOTICES[row.status]
        _call(instance_id, effect, call, keyed=False)
        _mark_done(instance_id, "notice")


@app.task(name="partner_approval.on_failure")
def on_failure(request: Any, exc: BaseException, traceback: Any, instance_id: str) -> None:
    """The chain's link_error: a step failed for good, so undo what was done."""
    with approvals() as db:
        db.execute("UPDATE approvals SET status = 'failed' WHERE instance_id = ?",
                   [instance_id])
    compensate.delay(instance_id)


# ----------------------------------------------------------------------------- entry points


def start(request: InstanceRequest) -> None:
    """Start one approval for the partner `request.entity_id` (the declared start)."""
    key = f"{request.tenant_id}:partner_approval:{request.entity_id}:{request.date}"
    deadline = float(os.environ.get(DEADLINE_VARIABLE, "259200"))  # 72 h, fixed at start
    with approvals() as db:
        db.execute("INSERT INTO approvals (instance_id, partner_id, idempotency_key, status, "
                   "deadline_seconds, done, tenant_id, correlation_id, trace_id) VALUES "
                   "(?, ?, ?, 'drafting', ?, '[]', ?, ?, ?)",
                   [request.instance_id, request.entity_id, key, deadline,
                    request.tenant_id, request.correlation_id, request.trace_id])
    chain(validate_partner.si(request.instance_id), create_packet.si(request.instance_id)
          ).apply_async(link_error=on_failure.s(instance_id=request.instance_id))


def signal(instance_id: str, name: str, payload: Mapping[str, Any]) -> None:
    """A human decision on the approval (the declared signal; the team's API calls it)."""
    if name == "approval":
        decide.delay(instance_id, str(payload.get("decision", "")))


def outcome(instance_id: str) -> str | None:
    """How the approval ended, as the team's table says (the declared outcome): completed,
    rejected or expired once its notice is sent, failed once undone; None until then."""
    row = _row(instance_id)
    ended = (row.status == "completed"
             or (row.status in NOTICES and "notice" in row.done)
             or (row.status == "failed" and "compensated" in row.done))
    return row.status if ended else None
