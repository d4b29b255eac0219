"""An ADR's runbooks written from runs on the real engines: a double start and a rollback
rehearsal on Temporal and on a Celery chain, attached to the flow's ADR."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from graduate.adr import attach, find_document, new_adr
from graduate.adr.gates import GatePolicy
from graduate.chaos.faults import double_start, parse_plan, rollback_rehearsal
from graduate.chaos.harness import ChaosOptions, ChaosResult, run_chaos
from graduate.config import Settings
from graduate.evidence import EvidenceStore
from graduate.flow import load_flow
from graduate.runner import RunOptions, approve_all
from tests.conftest import FlowFactory, processes_mentioning

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def no_orphans(tmp_path: Path) -> Iterator[None]:
    yield
    assert processes_mentioning(str(tmp_path)) == [], "the harness left processes behind"


def chaos(settings: Settings, path: Path, engine: str, fault: str, at: str,
          **options: bool) -> ChaosResult:
    flow = load_flow(path)
    result = run_chaos(settings, ChaosOptions(
        run=RunOptions(flow=str(path), engine=engine, instances=3, timeout=40,
                       decisions=approve_all(flow)),
        plan=parse_plan(fault, at, flow, restart_delay=0.5, options=options),
        profile="tuned"), EvidenceStore(settings.project_dir / "evidence"))
    assert result.fired, result.reason
    return result


def test_the_runbooks_say_what_the_engines_did_with_a_double_start_and_a_rollback(
        settings: Settings, flow_file: FlowFactory) -> None:
    path = flow_file("chaos")
    flow = load_flow(path)
    refused = chaos(settings, path, "temporal", double_start.NAME, "reserve:after-effect")
    ran_twice = chaos(settings, path, "celery-chain", double_start.NAME,
                      "reserve:after-effect")
    rolled_back = chaos(settings, path, "temporal", rollback_rehearsal.NAME,
                        "approval:during-wait", all=True)
    left_applied = chaos(settings, path, "celery-chain", rollback_rehearsal.NAME,
                         "approval:during-wait", all=True)
    assert refused.verdict.passed
    assert rolled_back.verdict.passed
    assert not ran_twice.verdict.passed
    assert not left_applied.verdict.passed

    project, policy = settings.project_dir, GatePolicy()
    adr = new_adr(project, str(path), spikes_dir=project, who="ana", policy=policy)
    before = adr.section("Runbooks") or ""
    assert "No run is attached yet" in before
    attach(project, str(adr.record.number), [refused.run_id, ran_twice.run_id],
           EvidenceStore(project / "evidence"), policy=policy)
    attach(project, str(adr.record.number), [rolled_back.run_id, left_applied.run_id],
           EvidenceStore(project / "evidence"), policy=policy)

    document = find_document(project, str(adr.record.number))
    runbooks = document.section("Runbooks") or ""
    assert document.body.count("## Runbooks") == 1
    double = runbooks[runbooks.index("### Double start"):]
    assert "On Temporal a second start is refused (the Temporal server refused it" in double
    assert "WorkflowAlreadyStartedError" in double
    assert f"run `{refused.run_id}`" in double
    assert (f"On a Celery chain a second start ran the flow again (run "
            f"`{ran_twice.run_id}`)") in double
    assert "No attached double start on Temporal yet" not in double
    rollback = runbooks[runbooks.index("### Rollback"):runbooks.index("### Double start")]
    assert f"Verify as the rehearsal did on Temporal (run `{rolled_back.run_id}`)" in rollback
    assert "`reserve` applied → `crm.release`" in rollback
    assert rollback.index("`reserve` applied") < rollback.index("`create_record` applied")
    # Each instance's compensations, as the rehearsal saw them, newest first.
    row = next(line for line in rollback.splitlines()
               if line.startswith(f"| `{rolled_back.run_id}`"))
    assert "3 compensated" in row
    assert "compensated reserve, create_record" in row
    chain_row = next(line for line in rollback.splitlines()
                     if line.startswith(f"| `{left_applied.run_id}`"))
    assert "| failed |" in chain_row
    assert "reserve applied and uncompensated" in chain_row
    assert f"graduate chaos {flow.name} -e temporal --fault double-start+crash" in double
