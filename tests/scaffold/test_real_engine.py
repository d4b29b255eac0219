"""The scaffolded package on a real Temporal dev server: its own generated test passes,
`graduate chaos` on it passes kill-worker, restart-server and an operator's rollback, and
a rejection undoes the completed steps in reverse with the flow's idempotency keys; and,
declared beside the hand-written Celery example as one app, `graduate compare` finds
the two equivalent."""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.check import Verdict
from graduate.evidence import EvidenceStore
from graduate.flow import InstanceRequest, load_flow
from graduate.ledger import Ledger, Outcome
from graduate.migrate.scaffold import scaffold
from tests.sample import SAMPLE_FLOW
from tests.scaffold.conftest import ROOT, tool

pytestmark = pytest.mark.slow
APP = "partner_approval_temporal"


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scaffolded") / "partner-approval-temporal"
    scaffold(load_flow(SAMPLE_FLOW), out)
    return out


def test_its_generated_test_passes_against_the_dev_server(package: Path) -> None:
    result = tool(package, ["pytest", "-q", "-p", "no:cacheprovider"], timeout=280)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout


@pytest.mark.parametrize(("fault", "at", "verdicts"), [
    ("kill-worker", "activate:before-effect", [Verdict.COMPLETED] * 2),
    ("restart-server", "activate:before-effect", [Verdict.COMPLETED] * 2),
    # The operator cancels one instance at the approval: the workflow undoes what it did.
    ("rollback-rehearsal", "approval:during-wait", [Verdict.COMPENSATED, Verdict.COMPLETED]),
])
def test_graduate_chaos_passes_on_it(fault: str, at: str, verdicts: list[Verdict],
                                     package: Path, tmp_path: Path) -> None:
    evidence = tmp_path / "evidence"

    result = tool(package, ["graduate", "--ledger-url", str(tmp_path / "ledger.sqlite3"),
                            "chaos", APP, "--engine", "temporal", "--fault", fault,
                            "--at", at, "--instances", "2",
                            "--timeout", "90", "--evidence", str(evidence)], timeout=200)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    store = EvidenceStore(evidence)
    [run_id] = store.runs()
    record = store.load_run(run_id)
    assert record.engine == "temporal-app"
    assert record.fault.fired
    assert record.verdict.passed
    assert sorted(i.verdict for i in record.verdicts) == sorted(verdicts)


def test_a_rejection_undoes_the_completed_steps_in_reverse_with_their_keys(
        package: Path, tmp_path: Path) -> None:
    ledger_url = str(tmp_path / "ledger.sqlite3")

    result = tool(package, ["graduate", "--ledger-url", ledger_url, "run", APP,
                            "--engine", "temporal", "--signal", "approval=reject",
                            "--timeout", "60"], timeout=120)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    ledger = Ledger(ledger_url)
    [instance] = ledger.instances(ledger.effects()[0].run_id)
    effects = ledger.effects(instance_id=instance.instance_id)
    assert [(e.effect, e.outcome) for e in effects] == [
        ("crm.create_draft", Outcome.APPLIED), ("approvals.request", Outcome.APPLIED),
        ("approvals.withdraw", Outcome.APPLIED), ("crm.void_draft", Outcome.APPLIED)]
    flow = load_flow(SAMPLE_FLOW)
    request = InstanceRequest(instance.instance_id, instance.run_id, instance.tenant_id,
                              instance.entity_id, instance.date, instance.correlation_id,
                              instance.trace_id)
    assert [e.idempotency_key for e in effects] == [
        flow.key_for("create_record", request), flow.key_for("request_approval", request),
        flow.key_for("request_approval", request, compensation=True),
        flow.key_for("create_record", request, compensation=True)]


# The team's Celery code, declared beside the scaffolded Temporal code as one app.
CELERY_EXAMPLE = """
[tool.graduate.apps.partner_approval_temporal.celery]
app = "examples.partner_approval_app.celery_app:app"
queues = ["partner-approval"]
beat = true
start = "examples.partner_approval_app.celery_app:start"
signal = "examples.partner_approval_app.celery_app:signal"
outcome = "examples.partner_approval_app.celery_app:outcome"
"""


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_the_scaffolded_code_behaves_as_the_hand_written_celery_code(
        decision: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    project = tmp_path_factory.mktemp("shadow") / "partner-approval"
    scaffold(load_flow(ROOT / "examples" / "partner_approval_app" / "flow.toml"), project)
    with (project / "pyproject.toml").open("a", encoding="utf-8") as pyproject:
        pyproject.write(CELERY_EXAMPLE)

    result = tool(project, ["graduate", "--ledger-url", str(tmp_path / "ledger.sqlite3"),
                            "compare", APP, "--instances", "2",
                            "--signal", f"approval={decision}",
                            "--evidence", str(tmp_path / "evidence")], timeout=240,
                  environ={"PYTHONPATH": str(ROOT),  # the example's Celery package
                           "PARTNER_APPROVAL_DB": str(tmp_path / "approvals.sqlite3")})

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    state = "completed" if decision == "approve" else "compensated"
    assert f"instance 1: Temporal {state}, Celery {state}" in result.stdout
    assert f"instance 2: Temporal {state}, Celery {state}" in result.stdout
    assert result.stdout.rstrip().endswith("equivalent")
