"""The audit trail a team's own systems keep, checked on a real run of the partner
approval example: every commitment needs a record of its own that carries the instance's
correlation and trace IDs in the policy's envelope. A system that keeps no record, a
record on another trace and a record short of the envelope's fields each fail the run,
in its verdict and in the report."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import graduate
from graduate.check import audit_trail
from graduate.config import Settings
from graduate.evidence import EvidenceStore
from graduate.ledger import EffectRecord, InstanceRecord, Outcome
from graduate.reports.build import build_report
from tests.instrument.conftest import ROOT

APP = "partner_approval_app"
OTHER_TRACE = "0" * 32

# The team's audit query, over systems that keep their trail unevenly: the notification
# service keeps none, the CRM records the trace of its own request handler, and the
# e-signature provider leaves out the tenant.
UNEVEN_SYSTEMS = '''
from examples.partner_approval_app import clients


def records(tenant_id, entity_id):
    kept = []
    for record in clients.audit_records(tenant_id, entity_id):
        if record["source"] == "/notify":
            continue
        if record["source"] == "/crm":
            record = {**record, "trace_id": "OTHER_TRACE"}
        if record["source"] == "/esign":
            record = {k: v for k, v in record.items() if k != "tenant_id"}
        kept.append(record)
    return kept
'''


def declare(project: Path, audit: str) -> None:
    (project / "pyproject.toml").write_text(textwrap.dedent(f"""
        [tool.graduate.apps.{APP}]
        flow = "{ROOT / 'examples' / 'partner_approval_app' / 'flow.toml'}"
        audit = "{audit}"

        [tool.graduate.apps.{APP}.temporal]
        worker = "examples.partner_approval_app.temporal_app:create_worker"
        start = "examples.partner_approval_app.temporal_app:start"
        """))


@pytest.fixture
def project(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's folder as a team's project that runs the example (its code importable
    by graduate's workers), with the systems' audit log and a task queue of its own."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("PARTNER_APPROVAL_AUDIT_DB", str(tmp_path / "audit.sqlite3"))
    monkeypatch.setenv("PARTNER_APPROVAL_TASK_QUEUE", f"partners-{tmp_path.name}")
    return settings.project_dir


def run(settings: Settings, project: Path) -> graduate.ChaosResult:
    return graduate.chaos(APP, engine="temporal", instances=2, timeout=90,
                          settings=settings, evidence=project / "evidence",
                          project_dir=project)


def test_the_examples_systems_keep_a_whole_trail(settings: Settings, project: Path) -> None:
    declare(project, "examples.partner_approval_app.clients:audit_records")

    result = run(settings, project)

    assert result.verdict.passed, result.verdict.failures
    for instance in result.instances:
        assert instance.audit_gaps == ()


def test_a_missing_or_broken_audit_trail_fails_the_run_and_the_report_names_it(
        settings: Settings, project: Path) -> None:
    (project / "uneven_systems.py").write_text(UNEVEN_SYSTEMS.replace("OTHER_TRACE",
                                                                      OTHER_TRACE))
    declare(project, "uneven_systems:records")

    result = run(settings, project)

    assert not result.verdict.passed
    for instance in result.instances:
        assert instance.verdict is graduate.Verdict.COMPLETED
        drafted, updated, esign, missing = instance.audit_gaps
        for gap, effect in ((drafted, "crm.create_draft"), (updated, "crm.update_partner")):
            assert gap.endswith(f"of {effect} carries trace_id {OTHER_TRACE}, not the "
                                f"instance's {instance.trace_id}")
        assert "of esign.send_envelope breaks the envelope: (record): 'tenant_id' is a " \
               "required property" in esign
        assert missing == ("notify.send_confirmation applied 1 time(s) but its system kept 0 "
                           "audit record(s): 1 missing")
    report = build_report(EvidenceStore(project / "evidence"), run_ids=[result.run_id])
    audit = [p for p in report.problems if p.kind == "audit"]
    assert len(audit) == 4 * len(result.instances)
    assert {p.instance_id for p in audit} == {i.instance_id for i in result.instances}


def test_a_repeated_commitment_needs_a_record_for_each_time_it_applied() -> None:
    instance = InstanceRecord(
        instance_id="p-1", run_id="r", flow="partner_approval", flow_source="f.toml",
        engine="temporal-app", tenant_id="t", entity_id="e", date="20261129",
        correlation_id="c-1", trace_id="a" * 32, started_at=0.0)

    def call(number: int, outcome: Outcome) -> EffectRecord:
        return EffectRecord(
            id=number, run_id="r", flow="partner_approval", instance_id="p-1",
            step="send_confirmation", effect="notify.send_confirmation", kind="effect",
            attempt=number, idempotency_key="k", correlation_id="c-1", trace_id="a" * 32,
            engine="temporal-app", worker_pid=1, started_at=0.0, finished_at=1.0,
            outcome=outcome)

    record = {"event_id": "ev-1", "event_type": "notify.send_confirmation",
              "spec_version": "1.0", "schema_version": "1", "tenant_id": "t",
              "entity_id": "e", "correlation_id": "c-1", "causation_id": "k",
              "source": "/notify", "actor_type": "executor_system",
              "approval_class": "A2", "reversibility_class": "R2",
              "sensitivity_class": "S2", "trace_id": "a" * 32,
              "timestamp": "2026-11-29T10:00:00+00:00", "data": {}}
    # Applied twice (a retry after the worker died), audited once; a call the system
    # refused changed nothing and needs no record.
    calls = [call(1, Outcome.APPLIED), call(2, Outcome.APPLIED), call(3, Outcome.ERROR)]

    assert audit_trail(instance, calls, [record]) == (
        "notify.send_confirmation applied 2 time(s) but its system kept 1 audit record(s): "
        "1 missing",)
    assert audit_trail(instance, calls, [record, {**record, "event_id": "ev-2"}]) == ()
