"""Double start and rollback rehearsal on every engine, against the real servers.

Three instances are in flight in every scenario; the fault hits the first to reach its
point, or with its `all` option every instance parked at the approval wait. The
assertions read the verdicts, which come from the ledger and the engines' own records,
and the ledger rows themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from graduate.chaos.faults import double_start, parse_plan, rollback_rehearsal
from graduate.chaos.harness import ChaosOptions, ChaosResult, run_chaos
from graduate.check import InstanceVerdict, Verdict
from graduate.config import Settings
from graduate.evidence import EvidenceStore
from graduate.flow import load_flow
from graduate.ledger import Ledger, Outcome
from graduate.reports.build import build_report
from graduate.reports.model import Report
from graduate.reports.render import render_markdown
from graduate.runner import RunOptions, approve_all
from tests.conftest import FlowFactory

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_orphans")]

INSTANCES = 3


def chaos(settings: Settings, path: Path, engine: str, fault: str, at: str, *,
          timeout: float = 40, workers: int = 1, **options: bool) -> ChaosResult:
    flow = load_flow(path)
    result = run_chaos(settings, ChaosOptions(
        run=RunOptions(flow=str(path), engine=engine, instances=INSTANCES, workers=workers,
                       timeout=timeout, decisions=approve_all(flow)),
        plan=parse_plan(fault, at, flow, restart_delay=0.5, options=options),
        profile="tuned"), EvidenceStore(settings.project_dir / "evidence"))
    assert result.applicable, result.reason
    assert result.fired, result.reason
    return result


def hit(result: ChaosResult, attribute: str) -> list[InstanceVerdict]:
    return [i for i in result.instances if getattr(i, attribute) is not None]


def untouched_completed(result: ChaosResult, attribute: str) -> None:
    others = [i for i in result.instances if getattr(i, attribute) is None]
    assert others
    assert all(i.verdict is Verdict.COMPLETED for i in others), others


def traces(settings: Settings, instance: InstanceVerdict) -> set[str]:
    return {e.trace_id for e in Ledger(settings.ledger).effects(instance_id=instance.instance_id)
            if e.outcome in (Outcome.APPLIED, Outcome.ABSORBED)}


# ---------------------------------------------------------------------------- double start


@pytest.mark.parametrize("crash", [False, True], ids=["at-once", "after-crash"])
def test_temporal_refuses_a_second_start_of_a_running_workflow(
        settings: Settings, flow_file: FlowFactory, crash: bool) -> None:
    """Temporal keeps one open execution per workflow ID: the second start is refused
    (conflict policy FAIL), and the first instance, resumed after a crash, is the only
    one to act."""
    result = chaos(settings, flow_file("chaos"), "temporal", double_start.NAME,
                   "reserve:after-effect", crash=crash)

    [instance] = hit(result, "starts")
    assert instance.starts is not None
    assert instance.starts.refused
    assert "WorkflowAlreadyStartedError" in instance.starts.refused[0]
    assert len(instance.starts.effect_sets) == 1
    assert instance.verdict is Verdict.COMPLETED
    assert traces(settings, instance) == {instance.trace_id}
    untouched_completed(result, "starts")
    assert result.verdict.passed, result.verdict.failures


def test_temporal_refuses_a_second_start_of_every_instance_in_flight(
        settings: Settings, flow_file: FlowFactory) -> None:
    result = chaos(settings, flow_file("chaos"), "temporal", double_start.NAME,
                   "approval:during-wait", all=True)

    assert len(hit(result, "starts")) == INSTANCES
    assert all(i.starts is not None and i.starts.refused and i.starts.passed
               for i in result.instances)
    assert result.verdict.passed, result.verdict.failures


def test_celery_chain_runs_a_second_start_again_even_when_every_repeat_is_absorbed(
        settings: Settings, flow_file: FlowFactory) -> None:
    """Nothing in a chain knows the instance runs: the second start is accepted and the
    flow runs twice. The crm system absorbs its repeats by idempotency key, the notify
    system does not; either way a second set of effects is a duplicate commitment."""
    result = chaos(settings, flow_file("chaos"), "celery-chain", double_start.NAME,
                   "reserve:after-effect")

    [instance] = hit(result, "starts")
    assert instance.starts is not None
    assert instance.starts.refused == ()
    assert len(instance.starts.effect_sets) == 2
    assert len(traces(settings, instance)) == 2
    assert not result.verdict.passed
    assert any("duplicate commitment" in f and instance.instance_id in f
               for f in result.verdict.failures)
    report = reported(settings, result)
    assert [(p.kind, p.instance_id) for p in report.problems
            if p.kind == "double-start"] == [("double-start", instance.instance_id)]
    assert "the same business key started again: accepted" in render_markdown(report)


def test_celery_chain_second_start_after_a_crash_is_a_second_set_of_effects(
        settings: Settings, flow_file: FlowFactory) -> None:
    """With late acknowledgement the killed worker's task comes back, and the second
    start runs beside it: two sets of effects for one business key."""
    result = chaos(settings, flow_file("chaos"), "celery-chain", double_start.NAME,
                   "create_record:after-effect", crash=True)

    [instance] = hit(result, "starts")
    assert instance.starts is not None
    assert not instance.starts.passed
    assert any(e["kind"] == "fault-fired" and "SIGKILL" in e["detail"]
               for e in _timeline(result))
    assert not result.verdict.passed


@pytest.mark.parametrize("crash", [False, True], ids=["at-once", "after-crash"])
def test_state_machine_table_refuses_a_second_start(settings: Settings,
                                                    flow_file: FlowFactory,
                                                    crash: bool) -> None:
    result = chaos(settings, flow_file("chaos"), "celery-state-machine", double_start.NAME,
                   "reserve:after-effect", crash=crash)

    [instance] = hit(result, "starts")
    assert instance.starts is not None
    assert instance.starts.refused
    assert "sm_instances" in instance.starts.refused[0]
    assert instance.verdict is Verdict.COMPLETED
    assert traces(settings, instance) == {instance.trace_id}
    untouched_completed(result, "starts")
    assert result.verdict.passed, result.verdict.failures


# ---------------------------------------------------------------------------- rollback


def compensated_in_reverse(instance: InstanceVerdict, applied: tuple[str, ...]) -> None:
    assert instance.rollback is not None
    assert instance.rollback.applied == applied
    assert instance.rollback.compensated == tuple(reversed(applied))
    assert instance.rollback.passed, instance.rollback.problems
    assert instance.verdict is Verdict.COMPENSATED


@pytest.mark.parametrize("point", ["before-effect", "after-effect"])
@pytest.mark.parametrize("engine", ["temporal", "celery-state-machine"])
def test_a_rollback_compensates_the_step_in_flight_and_those_before_it(
        settings: Settings, flow_file: FlowFactory, engine: str, point: str) -> None:
    """Cancelled while reserve was in flight (its effect about to land, or landed but not
    yet known to the engine): the step finishes, then reserve is compensated too, then
    create_record, once each."""
    result = chaos(settings, flow_file("chaos"), engine, rollback_rehearsal.NAME,
                   f"reserve:{point}")

    [instance] = hit(result, "rollback")
    compensated_in_reverse(instance, ("create_record", "reserve"))
    untouched_completed(result, "rollback")
    assert result.verdict.passed, result.verdict.failures


# Where each engine's own record shows that an instance got a wait's answer.
ANSWER_RECORDED: dict[str, Callable[[dict[str, Any], str], bool]] = {
    "temporal": lambda event, signal: (event["kind"] == "workflow_execution_signaled"
                                       and event["detail"] == signal),
    "celery-state-machine": lambda event, signal: f"signal {signal} stored" in event["detail"],
}


def never_answered(settings: Settings, result: ChaosResult, instance: InstanceVerdict,
                   signal: str, after: tuple[str, ...]) -> None:
    """An instance cancelled at the wait of `signal` never got its answer: none was sent,
    the engine's own record has none, and no step after the wait ever began."""
    assert not [e for e in _timeline(result) if e["kind"] == "signal-sent"
                and e.get("instance") == instance.instance_id], instance.instance_id
    answered = ANSWER_RECORDED.get(result.engine)
    history = next(i["history"] for i in _instances(result)
                   if i["instance_id"] == instance.instance_id)
    assert history, instance.instance_id  # the engine's record was read
    assert answered is None or not [e for e in history if answered(e, signal)], history
    begun = {e.step for e in Ledger(settings.ledger).effects(
        instance_id=instance.instance_id)}
    assert not begun & set(after), (instance.instance_id, begun)


@pytest.mark.parametrize("engine", ["temporal", "celery-state-machine"])
def test_a_rollback_of_every_instance_waiting_for_approval(
        settings: Settings, flow_file: FlowFactory, engine: str) -> None:
    """Every instance in flight is cancelled while it waits for approval: none of them
    ever gets the approval (sent after the cancel it would race it, and on Temporal a
    signal and a cancel in one activation ran activate before the compensation), and
    each is compensated in reverse."""
    result = chaos(settings, flow_file("chaos"), engine, rollback_rehearsal.NAME,
                   "approval:during-wait", all=True)

    assert len(hit(result, "rollback")) == INSTANCES
    for instance in result.instances:
        never_answered(settings, result, instance, "approval", ("activate", "notify"))
        compensated_in_reverse(instance, ("create_record", "reserve"))
    assert result.verdict.passed, result.verdict.failures


def test_celery_chain_rollback_leaves_what_applied_uncompensated(
        settings: Settings, flow_file: FlowFactory) -> None:
    """Revoking a chain stops it; nothing sends the compensations, and the evidence
    names each step left applied."""
    result = chaos(settings, flow_file("chaos"), "celery-chain", rollback_rehearsal.NAME,
                   "approval:during-wait", all=True)

    assert len(hit(result, "rollback")) == INSTANCES
    for instance in result.instances:
        never_answered(settings, result, instance, "approval", ("activate", "notify"))
        assert instance.rollback is not None
        assert instance.rollback.compensated == ()
        assert any("reserve applied and uncompensated" in p
                   for p in instance.rollback.problems)
        assert any("create_record applied and uncompensated" in p
                   for p in instance.rollback.problems)
        assert instance.verdict is Verdict.FAILED
    assert not result.verdict.passed
    report = reported(settings, result)
    assert {p.instance_id for p in report.problems if p.kind == "rollback"} == {
        i.instance_id for i in result.instances}
    assert "rollback incomplete" in render_markdown(report)


def reported(settings: Settings, result: ChaosResult) -> Report:
    """The report built from the run's stored evidence alone, judged again."""
    report = build_report(EvidenceStore(settings.project_dir / "evidence"),
                          run_ids=[result.run_id])
    assert not report.warnings, report.warnings  # the stored verdict reads back the same
    return report


def _timeline(result: ChaosResult) -> list[dict[str, str]]:
    return list(_evidence(result)["timeline"])


def _instances(result: ChaosResult) -> list[dict[str, Any]]:
    return list(_evidence(result)["instances"])


def _evidence(result: ChaosResult) -> dict[str, Any]:
    assert result.evidence is not None
    return dict(json.loads(result.evidence.read_text(encoding="utf-8")))
