"""A worker killed while parallel branches are in flight, on every engine, with several
instances: the fault is armed at a step inside a branch (`grant_access`, the portal
branch's second step) and fires once an instance pauses there, before its effect, while
the other branches run beside it.

What each engine does, judged from the ledger and the engine's own record:
- Temporal keeps the workflow in the server: the activity in flight is retried on the
  replacement worker and the join still happens; every step applies once.
- The state machine keeps each branch in its own row: the branch's lease runs out, the
  tick re-sends its advance, and the branch goes on at the step in flight.
- A Celery chain's group is a chord: with Celery's defaults the task in hand is
  acknowledged before it runs, so it dies with its worker, the portal branch never ends,
  and the chord never joins: the instance is lost, its other branches applied and never
  compensated.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.chaos.faults import parse_plan, rollback_rehearsal
from graduate.chaos.harness import ChaosOptions, ChaosResult, run_chaos
from graduate.check import InstanceVerdict, Verdict
from graduate.config import Settings
from graduate.evidence import EvidenceStore
from graduate.flow import load_flow
from graduate.ledger import Ledger, Outcome
from graduate.reports.build import build_report
from graduate.reports.render import render_markdown
from graduate.runner import RunOptions
from tests.conftest import CRASH_TIMING_SPIKES, FlowFactory

# In the second crash lane, for balance (tests/conftest.py).
pytestmark = [pytest.mark.slow, CRASH_TIMING_SPIKES, pytest.mark.usefixtures("no_orphans")]

INSTANCES = 3
AT = "grant_access:before-effect"
BRANCH_STEPS = ("open_portal", "grant_access", "open_account", "welcome")
STEPS = ("create_record", *BRANCH_STEPS, "activate")


@pytest.fixture
def branches(flow_file: FlowFactory) -> Path:
    """The branches flow with short step timeouts (engines recover within a test), and
    every system honouring keys, so that a sibling's call the kill cut short and ran
    again is absorbed, not a duplicate that would hide what the test is about."""
    return flow_file("branches", **{'timeout = "10s"': 'timeout = "3s"',
                                    "honours_idempotency = false": "honours_idempotency = true"})


def chaos(settings: Settings, path: Path, engine: str, *, profile: str = "defaults",
          timeout: float = 60, fault: str = "kill-worker") -> ChaosResult:
    flow = load_flow(path)
    options = ChaosOptions(
        run=RunOptions(flow=str(path), engine=engine, instances=INSTANCES, timeout=timeout),
        plan=parse_plan(fault, AT, flow, restart_delay=0.5), profile=profile)
    result = run_chaos(settings, options, EvidenceStore(settings.project_dir / "evidence"))
    assert result.applicable, result.reason
    assert result.fired, result.reason
    return result


def at_the_point(result: ChaosResult) -> list[InstanceVerdict]:
    """The instances paused at grant_access when the worker was killed (the first to get
    there, and any other that sat there too when the fault fired). Another instance the
    kill caught with a sibling branch's step in hand (`open_account`, say) is affected
    too, but held up or cut short at that step, not at the point: it is not one of them."""
    paused = [i for i in result.instances if i.resume is not None
              and i.resume.affected_as == "at the fault point"]
    assert paused
    assert {i.resume.in_flight for i in paused if i.resume is not None} == {"grant_access"}
    return paused


def assert_reported(settings: Settings, result: ChaosResult) -> None:
    """The report, built from the stored evidence alone, judges the run the same way and
    shows the group with its branches in the flow's order."""
    report = build_report(EvidenceStore(settings.project_dir / "evidence"),
                          run_ids=[result.run_id])
    assert not report.warnings, report.warnings
    assert "provision (open_portal → grant_access ∥ open_account ∥ welcome, joined)" in (
        render_markdown(report))


def landed(settings: Settings, instance_id: str, step: str) -> list[Outcome]:
    return [e.outcome for e in Ledger(settings.ledger).effects(instance_id=instance_id)
            if e.step == step and e.kind == "effect"
            and e.outcome in (Outcome.APPLIED, Outcome.ABSORBED)]


def test_temporal_resumes_the_branch_in_flight_and_joins(settings: Settings,
                                                          branches: Path) -> None:
    result = chaos(settings, branches, "temporal")

    for paused in at_the_point(result):
        assert paused.resume is not None
        assert paused.resume.exact
        assert paused.resume.reran == ()
        assert not paused.resume.continued  # a new attempt, on the replacement worker
        assert landed(settings, paused.instance_id, "grant_access") == [Outcome.APPLIED]
    assert [i.verdict for i in result.instances] == [Verdict.COMPLETED] * INSTANCES
    for instance in result.instances:
        for step in STEPS:
            assert landed(settings, instance.instance_id, step)[:1] == [Outcome.APPLIED]
            assert landed(settings, instance.instance_id, step).count(Outcome.APPLIED) == 1
    assert result.verdict.passed, result.verdict.failures
    assert_reported(settings, result)


def test_state_machine_resumes_the_branch_in_flight_after_its_lease(
        settings: Settings, branches: Path) -> None:
    result = chaos(settings, branches, "celery-state-machine", profile="tuned", timeout=60)

    for paused in at_the_point(result):
        assert paused.resume is not None
        assert paused.resume.exact
        assert paused.resume.time_to_resume is not None
        assert landed(settings, paused.instance_id, "grant_access") == [Outcome.APPLIED]
    assert [i.verdict for i in result.instances] == [Verdict.COMPLETED] * INSTANCES
    for instance in result.instances:
        for step in STEPS:
            assert landed(settings, instance.instance_id, step).count(Outcome.APPLIED) == 1


def test_celery_chain_with_defaults_never_joins_a_branch_lost_with_its_worker(
        settings: Settings, branches: Path) -> None:
    result = chaos(settings, branches, "celery-chain", timeout=10)

    for paused in at_the_point(result):
        assert paused.verdict is Verdict.LOST, paused.reason
        assert landed(settings, paused.instance_id, "grant_access") == []
        assert landed(settings, paused.instance_id, "activate") == [], "the chord joined"
        # What the other branches applied stays applied: nothing compensates a lost chord.
        assert landed(settings, paused.instance_id, "open_portal") == [Outcome.APPLIED]
        assert [e for e in Ledger(settings.ledger).effects(instance_id=paused.instance_id)
                if e.kind == "compensation"] == []
    assert not result.verdict.passed


def test_celery_chain_with_late_ack_joins_once_the_branch_comes_back(
        settings: Settings, branches: Path) -> None:
    """With acks_late (the tuned profile) the broker gives the task back after the Redis
    visibility timeout: the branch ends, and the chord joins."""
    result = chaos(settings, branches, "celery-chain", profile="tuned", timeout=45)

    for paused in at_the_point(result):
        assert paused.verdict is Verdict.COMPLETED, paused.reason
        assert paused.resume is not None
        assert paused.resume.exact
        assert landed(settings, paused.instance_id, "grant_access") == [Outcome.APPLIED]
        assert landed(settings, paused.instance_id, "activate") == [Outcome.APPLIED]


@pytest.mark.parametrize("engine", ["temporal", "celery-state-machine"])
def test_a_rollback_with_branches_in_flight_compensates_what_applied_once(
        settings: Settings, flow_file: FlowFactory, engine: str) -> None:
    """An operator cancels the instance paused inside the portal branch: the branches in
    flight finish their step and start no other, and everything that applied, in every
    branch and before the group, is compensated once, in an order the flow allows."""
    undoable = flow_file("branches", **{
        'open_account = "billing.close_account"':
            'open_account = "billing.close_account"\nwelcome = "notify.retract"'})
    result = chaos(settings, undoable, engine, profile="tuned", timeout=40,
                   fault=rollback_rehearsal.NAME)

    [cancelled] = [i for i in result.instances if i.rollback is not None]
    assert cancelled.rollback is not None
    assert cancelled.rollback.problems == ()
    assert "create_record" in cancelled.rollback.compensated
    assert cancelled.rollback.compensated[-1] == "create_record"
    assert "activate" not in cancelled.rollback.applied
    assert cancelled.verdict is Verdict.COMPENSATED, cancelled.reason
    others = [i for i in result.instances if i is not cancelled]
    assert [i.verdict for i in others] == [Verdict.COMPLETED] * (INSTANCES - 1)
    assert result.verdict.passed, result.verdict.failures
    assert_reported(settings, result)

