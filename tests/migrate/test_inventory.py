"""`graduate inventory` on the test application in fixtures/acme: every finding, skip,
hazard and flow, exactly, with its file and line."""

from __future__ import annotations

import pytest

from graduate.migrate.inventory import FindingKind, Inventory, Recommendation, inventory
from tests.migrate.conftest import ACME

EXPECTED_FINDINGS = {
    ("app", "app", "acme/celery.py:7"),
    ("setting", "autodiscover_tasks", "acme/celery.py:9"),
    ("setting", "task_default_queue", "acme/celery.py:10"),
    ("task", "debug_task", "acme/celery.py:14"),
    ("setting", "broker_url", "acme/settings.py:7"),
    ("setting", "broker_transport_options", "acme/settings.py:8"),
    ("setting", "task_soft_time_limit", "acme/settings.py:9"),
    ("setting", "imports", "acme/settings.py:10"),
    ("setting", "beat_schedule", "acme/settings.py:11"),
    ("beat", "expire-stale-approvals", "acme/settings.py:12"),
    ("state-model", "PartnerApproval.status", "approvals/models.py:6"),
    ("task", "create_crm_draft", "approvals/tasks.py:11"),
    ("status-write", "create_crm_draft", "approvals/tasks.py:14"),
    ("task", "expire_stale_approvals", "approvals/tasks.py:19"),
    ("state-sweep", "expire_stale_approvals", "approvals/tasks.py:21"),
    ("call", "void_crm_draft", "approvals/tasks.py:23"),
    ("status-write", "expire_stale_approvals", "approvals/tasks.py:24"),
    ("task", "activate_in_crm", "approvals/tasks.py:28"),
    ("status-write", "activate_in_crm", "approvals/tasks.py:31"),
    ("task", "send_envelope", "approvals/tasks.py:36"),
    ("compensation", "crm.revert_draft", "approvals/tasks.py:40"),
    ("task", "confirm_partner", "approvals/tasks.py:45"),
    ("task", "void_crm_draft", "approvals/tasks.py:50"),
    ("compensation", "crm.void_draft", "approvals/tasks.py:51"),
    ("canvas", "chain", "approvals/tasks.py:55"),
    ("call", "create_crm_draft", "approvals/views.py:8"),
    ("compensation", "payments.refund", "billing/tasks.py:13"),
    ("task", "charge_invoice", "billing/tasks.py:17"),
    ("call", "send_receipt", "billing/tasks.py:19"),
    ("task", "send_receipt", "billing/tasks.py:23"),
    ("task", "schedule_renewal", "billing/tasks.py:28"),
    ("call", "charge_invoice", "billing/tasks.py:30"),
    ("task", "fan_out", "notifications/batch.py:7"),
    ("call", "send_welcome", "notifications/events.py:8"),
    ("call", "send_welcome", "notifications/events.py:12"),
    ("call", "send_welcome", "legacy/star.py:5"),  # brought by a star import
    ("call", "send_sms", "notifications/events.py:12"),
    ("call", "send_sms", "notifications/events.py:17"),
    ("task", "send_welcome", "notifications/tasks.py:7"),
    ("task", "send_sms", "notifications/tasks.py:12"),
    ("task-table", "HANDLERS", "notifications/tasks.py:16"),
    ("task", "render_section", "reports/tasks.py:10"),
    ("task", "assemble_report", "reports/tasks.py:15"),
    ("task", "nightly_report", "reports/tasks.py:20"),
    ("canvas", "chord", "reports/tasks.py:21"),
    ("beat", "nightly report", "reports/tasks.py:26"),
    ("workflow", "send_envelope_activity", "workflows/activities.py:7"),
}

EXPECTED_HAZARDS = [
    ("late-ack-without-idempotency", "send_envelope", "approvals/tasks.py:36"),
    ("two-sources-of-truth", "send_envelope", "approvals/tasks.py:38"),
    ("reject-on-worker-lost-loop", "charge_invoice", "billing/tasks.py:8"),
    ("late-ack-without-idempotency", "charge_invoice", "billing/tasks.py:17"),
    ("late-ack-without-idempotency", "schedule_renewal", "billing/tasks.py:28"),
    ("eta-beyond-visibility-timeout", "charge_invoice", "billing/tasks.py:30"),
]


@pytest.fixture(scope="module")
def acme() -> Inventory:
    return inventory(ACME)


def test_every_finding_is_found_where_it_is_written(acme: Inventory) -> None:
    found = {(f.kind.value, f.name, str(f.location)) for f in acme.findings}
    assert found == EXPECTED_FINDINGS
    assert len(acme.findings) == len(EXPECTED_FINDINGS)  # nothing reported twice


def test_tasks_keep_their_options_however_declared(acme: Inventory) -> None:
    details = {f.name: f.detail for f in acme.of_kind(FindingKind.TASK)}
    assert details["create_crm_draft"] == (
        "approvals.tasks.create_crm_draft; @shared_task; bind=True, "
        "autoretry_for=[ConnectionError], retry_backoff=True, max_retries=5")
    # class-based base (BillingTask) options merged under the decorator's own
    assert details["charge_invoice"] == (
        "billing.tasks.charge_invoice; @app.task; acks_late=True, reject_on_worker_lost=True, "
        "base=BillingTask, bind=True, time_limit=900")
    # the project's own decorator wrapping shared_task(acks_late=True, **options)
    assert details["schedule_renewal"] == (
        "billing.tasks.schedule_renewal; @tenant_task; acks_late=True, queue='billing'")
    assert details["render_section"].endswith("rate_limit='10/m'")


def test_calls_name_how_a_task_is_started(acme: Inventory) -> None:
    calls = {(f.name, str(f.location)): f.detail for f in acme.findings if f.kind == "call"}
    assert calls[("create_crm_draft", "approvals/views.py:8")] == (
        "through dispatch(...) from submit()")
    assert calls[("send_welcome", "notifications/events.py:8")] == (
        "through call_event(...) from on_signup()")
    assert calls[("send_sms", "notifications/events.py:12")] == (
        "looked up in HANDLERS from notify_user()")
    assert calls[("send_sms", "notifications/events.py:17")] == (
        "send_task from forward(); countdown=30")
    assert calls[("charge_invoice", "billing/tasks.py:30")] == (
        ".apply_async from task schedule_renewal; eta in 259200 s")


def test_canvas_beat_state_and_compensation_details(acme: Inventory) -> None:
    details = {(f.kind.value, str(f.location)): f.detail for f in acme.findings}
    assert details[("canvas", "approvals/tasks.py:55")] == (
        "chain(activate_in_crm -> send_envelope -> confirm_partner); "
        "link_error -> void_crm_draft")
    assert details[("canvas", "reports/tasks.py:21")] == (
        "chord(group(render_section)) then assemble_report")
    assert details[("beat", "acme/settings.py:12")] == (
        'task expire_stale_approvals; schedule crontab(minute="*/15")')
    assert details[("beat", "reports/tasks.py:26")] == (
        "task nightly_report; schedule crontab(hour=2, minute=0)")
    assert details[("state-sweep", "approvals/tasks.py:21")] == (
        'periodic query of rows with status = "awaiting_approval"')
    assert details[("compensation", "approvals/tasks.py:40")] == (
        "in the except block of task send_envelope")
    assert details[("compensation", "billing/tasks.py:13")] == (
        "in the on_failure of task charge_invoice")
    assert details[("compensation", "approvals/tasks.py:51")] == (
        "in task void_crm_draft, a link_error handler")


def test_what_it_cannot_read_is_skipped_with_the_reason(acme: Inventory) -> None:
    skipped = {str(s.location): s.reason for s in acme.skipped}
    assert set(skipped) == {"acme/settings.py:10", "legacy/broken.py:6",
                            "notifications/events.py:16"}
    assert skipped["legacy/broken.py:6"].startswith("syntax error")
    assert "'legacy.gone'" in skipped["acme/settings.py:10"]
    assert skipped["notifications/events.py:16"].startswith("send_task with a dynamic task name")
    assert acme.files == 27


def test_hazards_with_place_and_reason(acme: Inventory) -> None:
    assert [(h.rule, h.task, str(h.location)) for h in acme.hazards] == EXPECTED_HAZARDS
    by_rule = {h.rule: h for h in acme.hazards}
    eta = by_rule["eta-beyond-visibility-timeout"]
    assert "259200 s" in eta.why
    assert "7200 s, set at acme/settings.py:8" in eta.why
    assert "up to 37 copies" in eta.why
    loop = by_rule["reject-on-worker-lost-loop"]
    assert "hard time limit of 900 s (set at billing/tasks.py:16)" in loop.why
    two = by_rule["two-sources-of-truth"]
    assert two.why.startswith("integrations.esign.send_envelope is called from Celery task "
                              "send_envelope (approvals/tasks.py:38) and from Temporal "
                              "activity send_envelope_activity (workflows/activities.py:8)")
    late = next(h for h in acme.hazards if h.task == "schedule_renewal")
    assert "set at acme/decorators.py:8" in late.why  # where the project decorator sets it


def test_flows_are_ranked_with_reasons(acme: Inventory) -> None:
    ranked = [(f.name, f.recommendation, f.classification, f.workflow_criteria)
              for f in acme.flows]
    assert ranked == [
        ("create_crm_draft", Recommendation.GRADUATE, "long-lived-durable", 4),
        ("schedule_renewal", Recommendation.GRADUATE, "long-lived-durable", 3),
        ("debug_task", Recommendation.KEEP, "short-lived-local", 0),
        ("fan_out", Recommendation.KEEP, "short-lived-local", 0),
        ("nightly_report", Recommendation.KEEP, "short-lived-local", 0),
        ("send_sms", Recommendation.KEEP, "short-lived-local", 0),
        ("send_welcome", Recommendation.KEEP, "short-lived-local", 0),
    ]
    approval = acme.flows[0]
    assert [s.task for s in approval.steps] == [
        "create_crm_draft", "expire_stale_approvals", "activate_in_crm", "send_envelope",
        "confirm_partner", "void_crm_draft"]
    assert [s.role for s in approval.steps] == [
        "step", "sweep", "step", "step", "step", "compensation"]
    assert approval.systems == ("crm", "esign", "notify")
    assert approval.estimated_seconds is None  # advanced by a periodic sweep
    assert approval.wait_after == "create_crm_draft"
    assert approval.reasons == ("open-ended duration", "crosses 3 services",
                                "needs compensation", "4 of 4 criteria lean to a workflow engine")
    renewal = acme.flows[1]
    assert [s.task for s in renewal.steps] == ["schedule_renewal", "charge_invoice",
                                               "send_receipt"]
    assert renewal.estimated_seconds == 259200 + 10 + 300 + 900 + 300
    assert {h.rule for h in renewal.hazards} == {
        "late-ack-without-idempotency", "reject-on-worker-lost-loop",
        "eta-beyond-visibility-timeout"}
    assert any("visibility_timeout" in item for item in renewal.hardening)
    report = next(f for f in acme.flows if f.name == "nightly_report")
    assert [s.task for s in report.steps] == ["nightly_report", "render_section",
                                              "assemble_report"]


def test_every_score_cites_its_evidence(acme: Inventory) -> None:
    approval = acme.flows[0]
    evidence = {score.criterion: {str(e.location) for e in score.evidence}
                for score in approval.scores}
    assert evidence["state"] == {"approvals/tasks.py:14", "approvals/tasks.py:24",
                                 "approvals/tasks.py:31", "approvals/tasks.py:21"}
    assert evidence["compensation"] == {"approvals/tasks.py:40", "approvals/tasks.py:50",
                                        "approvals/tasks.py:51"}
    assert "approvals/tasks.py:21" in evidence["duration"]
    assert evidence["failure domain"] >= {"approvals/tasks.py:13", "approvals/tasks.py:38",
                                          "approvals/tasks.py:46"}
    for flow in acme.flows:
        for score in flow.scores:
            if score.leans == "workflow":
                assert score.evidence, f"{flow.name} {score.criterion} leans without evidence"
