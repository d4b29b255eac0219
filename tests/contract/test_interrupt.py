"""The flow's interrupt on every engine and strategy, against real servers and workers.

The contract flows get an `[interrupt]` table; the run's harness places the interrupt
(`interrupt_at`): while a step is in flight (its call pauses before its effect, which a
ledger row shows, until the interrupt is sent), or while the instance waits at a wait
(as the engine reports). The ledger is then the judge: no step started after the
interrupt was recorded, the step in flight finished, every step that applied was
compensated once, in reverse, and the notice went last.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.adapters import engine_names
from graduate.adapters.base import InstanceState, InstanceStatus
from graduate.check import judge_instance
from graduate.config import Settings
from graduate.flow import INTERRUPT_NOTICE, load_flow
from graduate.ledger import EffectRecord, Ledger, Outcome
from graduate.runner import InstanceResult, RunOptions, RunResult, run_flow
from tests.conftest import FlowFactory

INTERRUPT = '\n[interrupt]\nsignal = "red_flag"\nnotice = "notify.red_flag"\n'
REASON = "interrupted by red_flag"


@pytest.fixture(params=engine_names())
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(settings: Settings, path: Path, engine: str, at: str) -> RunResult:
    return run_flow(settings, RunOptions(
        flow=str(path), engine=engine, timeout=90, decisions={"red_flag": "interrupt"},
        interrupt_at=at))


def rows(settings: Settings, instance_id: str, kind: str = "effect") -> list[EffectRecord]:
    return [e for e in Ledger(settings.ledger).effects(instance_id=instance_id)
            if e.kind == kind]


def landed(effects: list[EffectRecord]) -> list[str]:
    return [e.step for e in effects if e.outcome in (Outcome.APPLIED, Outcome.ABSORBED)]


def assert_judged_interrupted(settings: Settings, path: Path, item: InstanceResult) -> None:
    """The checker's verdict, given when the harness sent the interrupt: a pass."""
    ledger = Ledger(settings.ledger)
    assert item.interrupted_at is not None
    status = InstanceStatus(item.state, detail=item.detail, finished_at=None)
    verdict = judge_instance(load_flow(path), ledger.instance(item.instance_id),
                             ledger.effects(instance_id=item.instance_id), status,
                             engine_holds=False, interrupted_at=item.interrupted_at)
    assert verdict.interrupt is not None
    assert verdict.interrupt.problems == ()
    assert (verdict.verdict.value, verdict.reason) == ("compensated", REASON)
    assert [(n.step, n.expected, n.applied) for n in verdict.notices] == [
        (INTERRUPT_NOTICE, True, 1)]


def assert_in_flight(settings: Settings, item: InstanceResult, step: str) -> None:
    """The interrupt came while `step`'s call was under way, and the call landed."""
    reached = Ledger(settings.ledger).reached(item.instance_id, step, "before-effect")
    assert reached is not None
    assert item.interrupted_at is not None
    assert reached.at < item.interrupted_at
    [call] = [e for e in rows(settings, item.instance_id) if e.step == step]
    assert call.outcome is Outcome.APPLIED


def assert_noticed_last(settings: Settings, item: InstanceResult) -> None:
    forward = rows(settings, item.instance_id)
    [notice] = [e for e in forward if e.step == INTERRUPT_NOTICE]
    assert notice.outcome is Outcome.APPLIED
    undone = rows(settings, item.instance_id, "compensation")
    assert notice.started_at >= max(e.finished_at for e in undone)


def test_an_interrupt_at_a_wait_ends_it_and_compensates_what_applied(
        settings: Settings, flow_file: FlowFactory, engine: str) -> None:
    """No answer is given: the approval wait would hold the instance for a minute."""
    path = flow_file(**{"reserve = \"crm.release\"\n": f"reserve = \"crm.release\"\n{INTERRUPT}"})
    result = run(settings, path, engine, at="approval")

    [item] = result.instances
    assert (item.state, item.detail) == (InstanceState.COMPENSATED, REASON)
    assert landed(rows(settings, item.instance_id)) == ["create_record", "reserve",
                                                        INTERRUPT_NOTICE]
    assert [(e.step, e.outcome) for e in rows(settings, item.instance_id, "compensation")] == [
        ("reserve", Outcome.APPLIED), ("create_record", Outcome.APPLIED)]
    assert item.duration is not None
    assert item.duration < 30, "the wait ran on to its deadline: the interrupt did not end it"
    assert_noticed_last(settings, item)
    assert_judged_interrupted(settings, path, item)


def test_a_step_in_flight_finishes_and_no_further_step_starts(
        settings: Settings, flow_file: FlowFactory, engine: str) -> None:
    path = flow_file(**{"reserve = \"crm.release\"\n": f"reserve = \"crm.release\"\n{INTERRUPT}"})
    result = run(settings, path, engine, at="reserve")

    [item] = result.instances
    assert (item.state, item.detail) == (InstanceState.COMPENSATED, REASON)
    assert_in_flight(settings, item, "reserve")
    forward = rows(settings, item.instance_id)
    assert landed(forward) == ["create_record", "reserve", INTERRUPT_NOTICE]
    assert [e.step for e in rows(settings, item.instance_id, "compensation")] == [
        "reserve", "create_record"]
    assert_noticed_last(settings, item)
    assert_judged_interrupted(settings, path, item)


def test_an_interrupt_halts_every_parallel_branch_then_compensates_them_all(
        settings: Settings, flow_file: FlowFactory, engine: str) -> None:
    path = flow_file("branches", **{'open_account = "billing.close_account"':
                                    f'open_account = "billing.close_account"\n{INTERRUPT}'})
    result = run(settings, path, engine, at="open_portal")

    [item] = result.instances
    assert (item.state, item.detail) == (InstanceState.COMPENSATED, REASON)
    assert_in_flight(settings, item, "open_portal")
    forward = rows(settings, item.instance_id)
    # The other branches' steps ran before the interrupt, or were in flight, or (on a
    # worker busy with open_portal) never started; the portal branch started no second
    # step, and the step after the group never ran.
    applied = set(landed(forward)) - {INTERRUPT_NOTICE}
    assert {"create_record", "open_portal"} <= applied
    assert applied <= {"create_record", "open_portal", "open_account", "welcome"}
    assert not {"grant_access", "activate"} & {e.step for e in forward}
    undone = [e.step for e in rows(settings, item.instance_id, "compensation")]
    assert sorted(undone) == sorted(applied - {"welcome"})  # welcome has no compensation
    assert undone[-1] == "create_record"  # before the group: undone last
    assert_noticed_last(settings, item)
    assert_judged_interrupted(settings, path, item)
