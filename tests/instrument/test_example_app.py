"""The partner approval example (examples/partner_approval_app/), as the repository
declares it, on a real Temporal server: its declaration checks, and each path records
what the flow expects."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from graduate.adapters.temporal import application
from graduate.apps import App, check_app, find_app
from graduate.check import correlation_breaks
from graduate.flow import InstanceRequest
from graduate.instrument import RunContext
from graduate.ledger import EffectRecord, Ledger, Outcome
from graduate.services.model import TemporalTarget
from tests.instrument.conftest import ROOT, Spawn, wait_for_rows

FORWARD = ["create_record", "request_approval", "activate", "notify"]


@pytest.fixture(scope="module")
def app() -> App:
    return find_app(ROOT, "partner_approval_app")


@pytest.fixture
def run_context(tmp_path: Path, app: App) -> RunContext:
    """The run, on the flow the example implements (not the instrumentation tests')."""
    return RunContext(ledger_url=str(tmp_path / "ledger.sqlite3"),
                      run_id=f"run-{uuid.uuid4().hex[:8]}", flow_source=app.flow.source)


Start = Callable[[], InstanceRequest]


@pytest.fixture
def start_instance(app: App, start_worker: Spawn, temporal_server: TemporalTarget,
                   run_context: RunContext, run_ledger: Ledger,
                   monkeypatch: pytest.MonkeyPatch) -> Start:
    """The app's worker under the run, and a function that starts one instance of it."""
    queue = f"partners-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PARTNER_APPROVAL_TASK_QUEUE", queue)
    start_worker("graduate.adapters.temporal.app_worker", [app.engines["temporal"]["worker"],
                                                            "{ready}"], {
        "GRADUATE_TEMPORAL_ADDRESS": temporal_server.address,
        "PARTNER_APPROVAL_TASK_QUEUE": queue, **run_context.environ()})

    def start() -> InstanceRequest:
        instance_id = f"partner-{uuid.uuid4().hex[:6]}"
        request = run_ledger.register(app.flow, InstanceRequest(
            instance_id=instance_id, run_id=run_context.run_id, tenant_id="dealix",
            entity_id=f"p-{instance_id}", date="20261129",
            correlation_id=str(uuid.uuid4()), trace_id=uuid.uuid4().hex), engine="app").request
        asyncio.run(application.start(app.engines["temporal"], temporal_server, request))
        return request

    return start


def decide(temporal_server: TemporalTarget, request: InstanceRequest, decision: str) -> None:
    asyncio.run(application.signal(temporal_server, request.instance_id, "approval",
                                   {"decision": decision}))


def traced(request: InstanceRequest, rows: list[EffectRecord]) -> list[EffectRecord]:
    assert correlation_breaks(request.correlation_id, request.trace_id, rows) == ()
    return rows


def test_the_declared_app_passes_its_checks(app: App) -> None:
    check_app(app)


def test_an_approved_partner_is_activated_then_welcomed(
        start_instance: Start, temporal_server: TemporalTarget, run_ledger: Ledger,
        app: App) -> None:
    request = start_instance()
    wait_for_rows(run_ledger, 2, instance_id=request.instance_id)
    decide(temporal_server, request, "approve")

    rows = traced(request, wait_for_rows(run_ledger, 4, instance_id=request.instance_id))
    assert [(r.step, r.kind, r.outcome) for r in rows] == [
        (step, "effect", Outcome.APPLIED) for step in FORWARD]
    assert [r.idempotency_key for r in rows] == [
        app.flow.key_for(step, request) for step in FORWARD]


def test_a_rejection_undoes_the_draft_and_the_approval_request_in_reverse(
        start_instance: Start, temporal_server: TemporalTarget, run_ledger: Ledger,
        app: App) -> None:
    request = start_instance()
    wait_for_rows(run_ledger, 2, instance_id=request.instance_id)
    decide(temporal_server, request, "reject")

    rows = traced(request, wait_for_rows(run_ledger, 4, instance_id=request.instance_id))
    assert [(r.step, r.kind) for r in rows] == [
        ("create_record", "effect"), ("request_approval", "effect"),
        ("request_approval", "compensation"), ("create_record", "compensation")]
    assert [r.idempotency_key for r in rows[2:]] == [
        app.flow.key_for(step, request, compensation=True)
        for step in ("request_approval", "create_record")]


def test_an_unanswered_approval_expires_and_is_undone(
        start_instance: Start, run_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTNER_APPROVAL_DEADLINE_SECONDS", "1")
    request = start_instance()

    rows = traced(request, wait_for_rows(run_ledger, 4, instance_id=request.instance_id))
    assert [(r.step, r.kind) for r in rows] == [
        ("create_record", "effect"), ("request_approval", "effect"),
        ("request_approval", "compensation"), ("create_record", "compensation")]
