"""The package scaffolded from a flow with parallel groups (the pmi_milestones spike), on a
real Temporal dev server: its own generated test passes, and `graduate chaos` passes a
worker killed at a step inside a branch, on several instances at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.check import Verdict
from graduate.evidence import EvidenceStore
from graduate.flow import Parallel, load_flow
from graduate.migrate.scaffold import scaffold
from tests.conftest import CRASH_TIMING_SPIKES
from tests.scaffold.conftest import ROOT, tool

pytestmark = [pytest.mark.slow, CRASH_TIMING_SPIKES]
APP = "pmi_milestones_temporal"
PMI = ROOT / "spikes" / "pmi_milestones.toml"


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scaffolded") / "pmi-milestones-temporal"
    scaffold(load_flow(PMI), out)
    return out


def test_its_generated_test_passes_against_the_dev_server(package: Path) -> None:
    result = tool(package, ["pytest", "-q", "-p", "no:cacheprovider"], timeout=280)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout


def test_a_worker_killed_at_a_step_in_a_branch_resumes_it_on_every_instance(
        package: Path, tmp_path: Path) -> None:
    evidence = tmp_path / "evidence"

    result = tool(package, ["graduate", "--ledger-url", str(tmp_path / "ledger.sqlite3"),
                            "chaos", APP, "--engine", "temporal", "--fault", "kill-worker",
                            "--at", "migrate_plans:before-effect", "--instances", "3",
                            "--timeout", "150", "--evidence", str(evidence)], timeout=280)

    # The kill also cuts short whatever sibling branch step is in flight; one whose
    # effect had landed runs again (a real duplicate, seen in CI under load), which fails
    # the run. Anything else doubled or lost is a defect of the generated code.
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-2000:]
    store = EvidenceStore(evidence)
    [run_id] = store.runs()
    record = store.load_run(run_id)
    assert record.engine == "temporal-app"
    assert record.fault.fired
    assert [i.verdict for i in record.verdicts] == [Verdict.COMPLETED] * 3
    resumed = [i.resume for i in record.verdicts if i.resume is not None]
    assert "migrate_plans" in {r.in_flight for r in resumed}
    flow = load_flow(PMI)
    siblings = {s.name for group in flow.nodes if isinstance(group, Parallel)
                if "migrate_plans" in {t.name for t in group.steps} for s in group.steps}
    doubled = set()
    for instance in record.verdicts:
        calls = {e.step: e.applied + e.absorbed for e in instance.effects if e.kind == "effect"}
        assert set(calls) == {s.name for s in flow.steps}, "a milestone was lost"
        doubled |= {step for step, count in calls.items() if count > 1}
    assert doubled <= siblings - {"migrate_plans"}, doubled
    assert record.verdict.passed == (not doubled), record.verdict.failures
