"""The partner approval example (examples/partner_approval_app/), as the repository
declares it, on real engines through graduate's worker launchers: its declaration
checks, and on each engine each path records what the flow expects."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from examples.partner_approval_app import clients

from graduate.adapters.celery import application as celery_application
from graduate.adapters.temporal import application as temporal_application
from graduate.apps import App, check_app, find_app
from graduate.check import audit_trail, correlation_breaks
from graduate.flow import InstanceRequest, Step
from graduate.instrument import RunContext
from graduate.ledger import EffectRecord, Ledger, Outcome
from graduate.processes import ManagedProcess, wait_until
from graduate.services.model import TemporalTarget
from tests.instrument.conftest import ROOT, Spawn, wait_for_rows

FORWARD = ["validate_partner", "create_packet", "update_crm", "send_esign",
           "send_confirmation"]
DRAFTED = [("validate_partner", "effect"), ("create_packet", "effect")]
VOIDED = ("create_packet", "compensation")
REJECTED = [*DRAFTED, VOIDED, ("approval.rejected_notice", "effect")]
EXPIRED = [*DRAFTED, VOIDED, ("approval.expired_notice", "effect")]
CELERY_APP = "examples.partner_approval_app.celery_app"
REMINDED = ("approval.reminder", "effect")


@pytest.fixture(scope="module")
def app() -> App:
    return find_app(ROOT, "partner_approval_app")


@pytest.fixture
def run_context(tmp_path: Path, app: App) -> RunContext:
    """The run, on the flow the example implements (not the instrumentation tests')."""
    return RunContext(ledger_url=str(tmp_path / "ledger.sqlite3"),
                      run_id=f"run-{uuid.uuid4().hex[:8]}", flow_source=app.flow.source)


@dataclass
class Pilot:
    """One engine's version of the pilot, running under the test's run."""

    start: Callable[[InstanceRequest], None]
    decide: Callable[[InstanceRequest, str], None]
    # Whether it reminds the approver without beat: the Temporal workflow's timer does;
    # the Celery version's reminder comes from beat, which these pilots do not run.
    reminds: bool
    restart_worker: Callable[[], None]  # SIGKILL to the worker's group, then a new one


@pytest.fixture(autouse=True)
def audit_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's systems keep their audit log in the test's folder (workers inherit it)."""
    monkeypatch.setenv("PARTNER_APPROVAL_AUDIT_DB", str(tmp_path / "audit.sqlite3"))


@pytest.fixture
def temporal_pilot(app: App, start_worker: Spawn, temporal_server: TemporalTarget,
                   run_context: RunContext, monkeypatch: pytest.MonkeyPatch) -> Pilot:
    queue = f"partners-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PARTNER_APPROVAL_TASK_QUEUE", queue)
    declaration = app.engines["temporal"]

    def worker() -> ManagedProcess:
        return start_worker("graduate.adapters.temporal.app_worker", [
            declaration["worker"], "{ready}"], {
            "GRADUATE_TEMPORAL_ADDRESS": temporal_server.address,
            "PARTNER_APPROVAL_TASK_QUEUE": queue, **run_context.environ()})

    workers = [worker()]

    def restart() -> None:
        workers[-1].kill()
        workers.append(worker())

    return Pilot(reminds=True, restart_worker=restart,
        start=lambda request: asyncio.run(
            temporal_application.start(declaration, temporal_server, request)),
        decide=lambda request, decision: asyncio.run(temporal_application.signal(
            temporal_server, request.instance_id, "approval", {"decision": decision})))


@pytest.fixture
def celery_pilot(app: App, start_worker: Spawn, broker: str, run_context: RunContext,
                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pilot]:
    queue = f"partners-{uuid.uuid4().hex[:8]}"
    env = {"PARTNER_APPROVAL_BROKER_URL": broker, "PARTNER_APPROVAL_QUEUE": queue,
           "PARTNER_APPROVAL_DB": str(tmp_path / "approvals.sqlite3")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # The app reads its settings as it imports: import it afresh under this test's
    # settings, and drop that import afterwards so no later test sends to this queue.
    sys.modules.pop(CELERY_APP, None)
    declaration = app.engines["celery"]
    start_worker("graduate.adapters.celery.app_worker", [
        declaration["app"], "{ready}", "--pool", "prefork", "--concurrency", "1",
        "--without-mingle", "--without-gossip", "--without-heartbeat", "-Q", queue,
        "-n", f"{queue}@%h", "--loglevel", "INFO"], {**env, **run_context.environ()})
    yield Pilot(
        reminds=False, restart_worker=lambda: pytest.fail("not needed on Celery"),
        start=lambda request: celery_application.start(declaration, request),
        decide=lambda request, decision: celery_application.signal(
            declaration, request, "approval", {"decision": decision}))
    sys.modules.pop(CELERY_APP, None)


@pytest.fixture(params=["temporal", "celery"])
def pilot(request: pytest.FixtureRequest) -> Pilot:
    found: Pilot = request.getfixturevalue(f"{request.param}_pilot")
    return found


@pytest.fixture
def new_instance(app: App, run_context: RunContext, run_ledger: Ledger) -> Callable[
        [], InstanceRequest]:
    def make() -> InstanceRequest:
        instance_id = f"partner-{uuid.uuid4().hex[:6]}"
        return run_ledger.register(app.flow, InstanceRequest(
            instance_id=instance_id, run_id=run_context.run_id, tenant_id="dealix",
            entity_id=f"p-{instance_id}", date="20261129",
            correlation_id=str(uuid.uuid4()), trace_id=uuid.uuid4().hex), engine="app").request

    return make


def traced(request: InstanceRequest, rows: list[EffectRecord], ledger: Ledger,
           app: App) -> list[EffectRecord]:
    """`rows`, once checked: each carries the instance's IDs, and each has its record in
    the audit log of the system it changed, carrying them too."""
    assert correlation_breaks(request.correlation_id, request.trace_id, rows) == ()
    kept = app.audit_records(request.tenant_id, request.entity_id)
    assert audit_trail(ledger.instance(request.instance_id), rows, kept) == ()
    assert [r["event_type"] for r in kept] == [row.effect for row in rows]
    return rows


def test_the_declared_app_passes_its_checks(app: App) -> None:
    check_app(app)


def test_an_approved_partner_is_updated_sent_the_envelope_then_confirmed(
        pilot: Pilot, new_instance: Callable[[], InstanceRequest], run_ledger: Ledger,
        app: App) -> None:
    request = new_instance()
    pilot.start(request)
    wait_for_rows(run_ledger, 2, instance_id=request.instance_id)
    pilot.decide(request, "approve")

    rows = traced(request, wait_for_rows(run_ledger, 5, instance_id=request.instance_id),
                  run_ledger, app)
    assert [(r.step, r.kind, r.outcome) for r in rows] == [
        (step, "effect", Outcome.APPLIED) for step in FORWARD]
    assert [r.idempotency_key for r in rows] == [
        app.flow.key_for(step, request) for step in FORWARD]


def test_a_rejection_voids_the_draft_then_sends_the_rejection_notice(
        pilot: Pilot, new_instance: Callable[[], InstanceRequest], run_ledger: Ledger,
        app: App) -> None:
    request = new_instance()
    pilot.start(request)
    wait_for_rows(run_ledger, 2, instance_id=request.instance_id)
    pilot.decide(request, "reject")

    rows = traced(request, wait_for_rows(run_ledger, 4, instance_id=request.instance_id),
                  run_ledger, app)
    assert [(r.step, r.kind) for r in rows] == REJECTED
    assert [r.effect for r in rows[2:]] == ["crm.void_draft", "notify.send_rejection"]
    assert [r.idempotency_key for r in rows[2:]] == [
        app.flow.key_for("create_packet", request, compensation=True),
        app.flow.key_for("approval.rejected_notice", request)]


def test_an_unanswered_approval_expires_voids_the_draft_and_sends_the_expiry_notice(
        pilot: Pilot, new_instance: Callable[[], InstanceRequest], run_ledger: Ledger,
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTNER_APPROVAL_DEADLINE_SECONDS", "1")
    request = new_instance()
    pilot.start(request)

    expected = [*EXPIRED[:2], *[REMINDED] * pilot.reminds, *EXPIRED[2:]]
    rows = traced(request, wait_for_rows(run_ledger, len(expected),
                                         instance_id=request.instance_id), run_ledger, app)
    assert [(r.step, r.kind) for r in rows] == expected


@pytest.mark.parametrize(("refused", "undone"), [
    # After the CRM update, before the e-signature request: revert it, void the draft.
    ("send_esign", ["crm.revert_draft", "crm.void_draft"]),
    # After the envelope is sent, before it is signed: void it too, first.
    ("send_confirmation", ["esign.void_envelope", "crm.revert_draft", "crm.void_draft"]),
])
def test_a_step_that_fails_for_good_is_compensated_by_its_failure_point(
        pilot: Pilot, new_instance: Callable[[], InstanceRequest], run_ledger: Ledger,
        app: App, refused: str, undone: list[str]) -> None:
    """The system turns the step's call down (a 4xx, not retried): what was done is undone
    newest first, as the spike's compensation by failure point says; no notice, since
    the approval neither was rejected nor expired."""
    request = new_instance()
    step = app.flow.node(refused)
    assert isinstance(step, Step)
    clients.refuse(request.entity_id, step.effect)
    pilot.start(request)
    wait_for_rows(run_ledger, 2, instance_id=request.instance_id)
    pilot.decide(request, "approve")

    done = FORWARD[:FORWARD.index(refused)]
    rows = wait_for_rows(run_ledger, len(done) + 1 + len(undone),
                         instance_id=request.instance_id)
    assert [(r.step, r.kind, r.outcome) for r in rows] == [
        *((s, "effect", Outcome.APPLIED) for s in done), (refused, "effect", Outcome.ERROR),
        # validate_partner only read: nothing of it to undo.
        *((s, "compensation", Outcome.APPLIED) for s in reversed(done[1:]))]
    assert [r.effect for r in rows if r.kind == "compensation"] == undone
    assert correlation_breaks(request.correlation_id, request.trace_id, rows) == ()
    landed = [r for r in rows if r.outcome is Outcome.APPLIED]
    kept = app.audit_records(request.tenant_id, request.entity_id)
    assert audit_trail(run_ledger.instance(request.instance_id), landed, kept) == ()
    assert [r["event_type"] for r in kept] == [r.effect for r in landed]


def test_temporal_an_approval_answered_in_time_sends_no_reminder(
        temporal_pilot: Pilot, new_instance: Callable[[], InstanceRequest],
        run_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTNER_APPROVAL_DEADLINE_SECONDS", "4")
    request = new_instance()
    temporal_pilot.start(request)
    wait_for_rows(run_ledger, 2, instance_id=request.instance_id)
    temporal_pilot.decide(request, "approve")

    # The workflow reminds only while it waits, and it waits no more once it updates the
    # CRM: a reminder would be among the rows before the confirmation.
    rows = wait_for_rows(run_ledger, 5, instance_id=request.instance_id)
    assert [r.step for r in rows] == FORWARD


def undoing(ledger: Ledger, request: InstanceRequest) -> list[EffectRecord]:
    return [r for r in ledger.effects(instance_id=request.instance_id)
            if r.kind == "compensation"]


def test_celery_beat_reminds_a_pending_approval_once_past_half_its_deadline(
        celery_pilot: Pilot, start_worker: Spawn, app: App, run_context: RunContext,
        new_instance: Callable[[], InstanceRequest], run_ledger: Ledger, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Beat's sweep, every 0.2 s, finds the approval past half its 4 s deadline and
    sends the reminder; the sweeps after it find it recorded (or, racing the record, see
    the notification service absorb the repeat by its key)."""
    monkeypatch.setenv("PARTNER_APPROVAL_DEADLINE_SECONDS", "4")
    env = {"PARTNER_APPROVAL_SWEEP_SECONDS": "0.2", **run_context.environ()}
    start_worker("graduate.adapters.celery.app_worker", [
        app.engines["celery"]["app"], "{ready}", "beat", str(tmp_path / "beat.schedule")],
        env)
    request = new_instance()
    celery_pilot.start(request)

    wait_until(lambda: any(r.step == "approval.expired_notice"
                           for r in run_ledger.effects(instance_id=request.instance_id)),
               timeout=60, what="the expired approval undone and its notice sent")
    rows = run_ledger.effects(instance_id=request.instance_id)
    reminders = [r for r in rows if r.step == "approval.reminder"]
    assert [r.outcome for r in reminders][:1] == [Outcome.APPLIED]
    assert {r.outcome for r in reminders[1:]} <= {Outcome.ABSORBED}
    assert reminders[0].idempotency_key == app.flow.key_for("approval.reminder", request)
    requested = next(r for r in rows if r.step == "create_packet")
    undone = undoing(run_ledger, request)
    # After half the deadline, before it passed and the approval was undone.
    assert reminders[0].started_at - requested.finished_at >= 2.0
    assert all(r.finished_at <= undone[0].started_at for r in reminders)
    assert [(r.step, r.kind) for r in rows if r.step != "approval.reminder"] == EXPIRED
    kept = app.audit_records(request.tenant_id, request.entity_id)
    assert [r["event_type"] for r in kept].count("notify.send_reminder") == 1


def test_temporal_a_worker_killed_while_reminding_still_reminds_once(
        temporal_pilot: Pilot, new_instance: Callable[[], InstanceRequest],
        run_ledger: Ledger, app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker dies (SIGKILL) just after the notification service took the reminder,
    before Temporal heard the activity complete: the activity runs again on a new worker
    after its start-to-close timeout, and the service absorbs the repeat by its key."""
    monkeypatch.setenv("PARTNER_APPROVAL_DEADLINE_SECONDS", "30")
    request = new_instance()
    run_ledger.arm(request.instance_id, "approval.reminder", "after-effect")
    temporal_pilot.start(request)
    wait_until(lambda: run_ledger.reached(request.instance_id, "approval.reminder",
                                          "after-effect") is not None,
               timeout=60, what="the reminder's call past its effect")
    temporal_pilot.restart_worker()

    rows = wait_for_rows(run_ledger, 6, instance_id=request.instance_id)
    assert [(r.step, r.kind, r.outcome) for r in rows] == [
        ("validate_partner", "effect", Outcome.APPLIED),
        ("create_packet", "effect", Outcome.APPLIED),
        ("approval.reminder", "effect", Outcome.APPLIED),
        ("approval.reminder", "effect", Outcome.ABSORBED),
        ("create_packet", "compensation", Outcome.APPLIED),
        ("approval.expired_notice", "effect", Outcome.APPLIED)]
    assert rows[2].worker_pid != rows[3].worker_pid
    assert rows[3].attempt == 2
