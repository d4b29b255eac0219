"""The package scaffolded from a flow whose step works long, on a real Temporal dev server:
the step heartbeats through work longer than its heartbeat timeout, and a worker killed
at it is found out by that heartbeat timeout, far sooner than the step's own timeout."""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.check import Verdict
from graduate.evidence import EvidenceStore
from graduate.flow import load_flow
from graduate.migrate.scaffold import WORK_HEARTBEAT_TIMEOUT, scaffold
from tests.conftest import CRASH_TIMING_SPIKES
from tests.scaffold.conftest import tool

pytestmark = [pytest.mark.slow, CRASH_TIMING_SPIKES]
WORK = 15.0  # longer than the heartbeat timeout: only heartbeats keep the attempt alive
STEP_TIMEOUT = 300.0  # far past the run's deadline: only the heartbeat timeout resumes
FLOW = f"""
[flow]
name = "statement_run"
approval_class = "A0"
reversibility_class = "R0"
sensitivity_class = "S1"

[systems.ledger]
honours_idempotency = true

[[nodes]]
step = "open_batch"
effect = "ledger.open_batch"
timeout = "10s"

[[nodes]]
step = "compute"
effect = "ledger.compute_statements"
timeout = "{STEP_TIMEOUT:g}s"
work = "{WORK:g}s"
retry = {{ max_attempts = 3, initial_interval = "1s" }}
"""
# The team fills in the external call; this one takes the flow's work time.
SLOW_CALL = f"""

def ledger_compute_statements(entity_id: str, key: str) -> None:
    import time

    time.sleep({WORK!r})
"""


def test_a_worker_killed_in_a_working_step_is_found_out_by_its_heartbeat_timeout(
        tmp_path: Path) -> None:
    assert WORK > WORK_HEARTBEAT_TIMEOUT
    flow = tmp_path / "statement_run.toml"
    flow.write_text(FLOW, encoding="utf-8")
    package = tmp_path / "statement-run-temporal"
    scaffold(load_flow(flow), package)
    with (package / "statement_run_temporal" / "systems.py").open("a") as systems:
        systems.write(SLOW_CALL)
    evidence = tmp_path / "evidence"

    result = tool(package, ["graduate", "--ledger-url", str(tmp_path / "ledger.sqlite3"),
                            "chaos", "statement_run_temporal", "--engine", "temporal",
                            "--fault", "kill-worker", "--at", "compute:before-effect",
                            "--instances", "2", "--timeout", "100",
                            "--evidence", str(evidence)], timeout=240)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    store = EvidenceStore(evidence)
    [run_id] = store.runs()
    record = store.load_run(run_id)
    assert record.fault.fired
    assert record.verdict.passed
    assert [i.verdict for i in record.verdicts] == [Verdict.COMPLETED] * 2
    for instance in record.verdicts:
        assert {e.step: e.applied + e.absorbed for e in instance.effects
                if e.kind == "effect"} == {"open_batch": 1, "compute": 1}
    resumed = [i.resume for i in record.verdicts if i.resume is not None]
    assert resumed
    for resume in resumed:
        assert resume.exact
        assert resume.time_to_resume is not None
        assert resume.time_to_resume < STEP_TIMEOUT / 4
