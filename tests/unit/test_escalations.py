"""A wait's escalation: sent once when the wait's due date passes while it is still open,
which stays open until its hard deadline. How a flow declares it, how time scales it, and
how the checker judges the ledger's calls of it (hand-built rows: the engines' own tests
are in tests/contract/test_reminders.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from tests.unit.conftest import effect_row, instance_row

from graduate.adapters.base import InstanceState, InstanceStatus
from graduate.check import FaultFacts, judge_instance, judge_run
from graduate.errors import FlowError
from graduate.flow import (
    Escalation,
    Flow,
    InstanceRequest,
    Wait,
    WhileOpen,
    flow_from_dict,
    flow_to_dict,
    load_flow,
)
from graduate.ledger import EffectKind, EffectRecord, InstanceRecord, Outcome
from graduate.timescale import TimeScale

ESCALATION = '\nescalation = { after = "40m", effect = "mail.escalate" }'
REMINDER = '\nreminder = { at = 0.5, effect = "mail.remind" }'
STARTED = 1000.0
DEADLINE = 3600.0  # the mini flow's wait: "1h"
AFTER = 2400.0  # "40m"


def escalated(write_flow: Callable[..., Path], line: str = ESCALATION) -> Path:
    return write_flow([('deadline = "1h"', f'deadline = "1h"{line}')])


@pytest.fixture
def flow(write_flow: Callable[..., Path]) -> Flow:
    return load_flow(escalated(write_flow))


# ---------------------------------------------------------------------------- the model


def test_a_wait_declares_an_escalation_after_a_duration_and_stays_open(flow: Flow) -> None:
    wait = flow.node("approval")

    assert isinstance(wait, Wait)
    assert wait.escalation == Escalation(after=AFTER, effect="mail.escalate")
    assert wait.deadline == DEADLINE  # the hard deadline is unchanged
    # Sent as a step of its own, which engines find by its name; one attempt.
    step = wait.escalation_step
    assert step is not None
    assert step == flow.node("approval.escalation")
    assert (step.effect, step.retry.max_attempts) == ("mail.escalate", 1)
    assert wait.while_open == (WhileOpen("escalation", step, AFTER),)
    # No step of the flow: nothing counts it as one to complete or compensate.
    assert [s.name for s in flow.steps] == ["create", "notify"]
    assert flow.is_wait_effect("approval.escalation")
    assert "mail.escalate" in flow.operations


def test_a_reminder_and_an_escalation_are_each_sent_while_open_reminder_first(
        write_flow: Callable[..., Path]) -> None:
    flow = load_flow(escalated(write_flow, REMINDER + ESCALATION))
    wait = flow.node("approval")

    assert isinstance(wait, Wait)
    assert [(s.kind, s.step.name, s.after) for s in wait.while_open] == [
        ("reminder", "approval.reminder", DEADLINE / 2),
        ("escalation", "approval.escalation", AFTER)]


def test_weeks_read_as_a_milestone_would_write_them(write_flow: Callable[..., Path]) -> None:
    flow = load_flow(write_flow([('deadline = "1h"', 'deadline = "6w"\nescalation = '
                                  '{ after = "2w", effect = "mail.escalate" }')]))
    wait = flow.node("approval")

    assert isinstance(wait, Wait)
    assert (wait.deadline, wait.escalation) == (
        42 * 86400.0, Escalation(after=14 * 86400.0, effect="mail.escalate"))


def test_the_escalation_has_a_key_of_its_own(flow: Flow) -> None:
    request = InstanceRequest("i1", "r", "t", "e", "20250101", "c", "x")

    key = flow.key_for("approval.escalation", request)

    assert key == "t:mini:e:20250101:approval.escalation"
    assert key not in {flow.key_for(s.name, request) for s in flow.steps}


def test_an_escalation_round_trips_through_json_and_flows_without_one_read_the_same(
        flow: Flow, write_flow: Callable[..., Path]) -> None:
    data = flow_to_dict(flow)

    assert data["nodes"][1]["escalation"] == {"after": AFTER, "effect": "mail.escalate"}
    assert flow_from_dict(json.loads(json.dumps(data))) == replace(flow, source="")
    plain = flow_to_dict(load_flow(write_flow()))
    assert all("escalation" not in node for node in plain["nodes"])


def test_a_time_scale_divides_the_escalation_like_the_deadline(flow: Flow) -> None:
    scaled, record = TimeScale.parse("1h=10s").apply(flow)

    wait = scaled.node("approval")
    assert isinstance(wait, Wait)
    assert wait.escalation is not None
    assert wait.deadline == pytest.approx(10.0)
    assert wait.escalation.after == pytest.approx(AFTER / 360)
    [kept] = [d for d in record.durations if d.name == "escalation.after"]
    assert (kept.item, kept.real, kept.floored) == ("wait approval", AFTER, False)


def test_a_deadline_kept_at_its_floor_keeps_the_escalation_before_it(flow: Flow) -> None:
    scaled, record = TimeScale.parse("1h=1s").apply(flow)  # the deadline: 1 s, floored

    wait = scaled.node("approval")
    assert isinstance(wait, Wait)
    assert wait.escalation is not None
    assert wait.deadline == pytest.approx(5.0)
    # Its share of the deadline, as a reminder's fraction would be: still before it.
    assert wait.escalation.after == pytest.approx(5.0 * AFTER / DEADLINE)
    [kept] = [d for d in record.durations if d.name == "escalation.after"]
    assert kept.floored


def test_a_shortened_wait_moves_its_escalation_with_its_deadline(flow: Flow) -> None:
    """A run's --wait-deadline (and a contract test's short deadline) keeps the
    escalation at its share of the deadline, so the shortened flow still loads."""
    wait = flow.node("approval")
    assert isinstance(wait, Wait)

    shortened = wait.with_deadline(5.0)

    assert shortened.deadline == 5.0
    assert shortened.escalation == Escalation(after=5.0 * AFTER / DEADLINE,
                                              effect="mail.escalate")
    assert replace(wait, escalation=None).with_deadline(5.0).escalation is None


@pytest.mark.parametrize(("line", "fragments"), [
    ('\nescalation = { after = "1h", effect = "mail.escalate" }',
     ["wait 'approval'", "escalation.after = 1h is not before the deadline (1h)",
      "shorter escalation.after", "longer deadline"]),
    ('\nescalation = { after = "2h", effect = "mail.escalate" }',
     ["escalation.after = 2h is not before the deadline (1h)"]),
    ('\nescalation = { after = 0, effect = "mail.escalate" }',
     ["escalation.after must be positive", '"14d"']),
    ('\nescalation = { after = "40m", effect = "escalate" }',
     ["escalation.effect 'escalate'", "SYSTEM.OPERATION"]),
    ('\nescalation = { after = "40m", effect = "office.escalate" }',
     ["escalation.effect 'office.escalate'", "system 'office'", "add [systems.office]"]),
    ('\nescalation = { effect = "mail.escalate" }', ["after is missing", 'after = "14d"']),
    ('\nescalation = { after = "40m" }', ["effect is missing"]),
    ('\nescalation = { after = "two weeks", effect = "mail.escalate" }',
     ["after: 'two weeks' is not a duration", '"2w"']),
    ('\nescalation = { at = 0.5, effect = "mail.escalate" }',
     ["unknown key(s) ['at']", 'after = "14d"', "stays open until its deadline"]),
    ('\nescalation = "14d"', ["escalation = '14d' must be a table"]),
])
def test_a_bad_escalation_is_refused_saying_what_to_fix(
        write_flow: Callable[..., Path], line: str, fragments: list[str]) -> None:
    path = escalated(write_flow, line)

    with pytest.raises(FlowError) as caught:
        load_flow(path)

    missing = [f for f in fragments if f not in str(caught.value)]
    assert not missing, f"{caught.value} lacks {missing}"


def test_a_key_without_step_refuses_an_escalation_to_the_reminder_s_operation(
        write_flow: Callable[..., Path]) -> None:
    path = write_flow([
        ('deadline = "1h"', 'deadline = "1h"\nreminder = { at = 0.5, effect = "mail.nudge" }'
                            '\nescalation = { after = "40m", effect = "mail.nudge" }'),
        ('sensitivity_class = "S1"',
         'sensitivity_class = "S1"\nidempotency_key = "{tenant_id}:{flow}:{entity_id}"')])

    with pytest.raises(FlowError, match=r"calls mail\.nudge from more than one step"):
        load_flow(path)


# ---------------------------------------------------------------------------- the checker


def record() -> InstanceRecord:
    return instance_row("celery-chain", STARTED)

def call(step: str, at: float, *, kind: EffectKind = "effect",
         outcome: Outcome = Outcome.APPLIED) -> EffectRecord:
    effect = "mail.escalate" if step.endswith(".escalation") else f"crm.{step}"
    return effect_row(step, STARTED + at, effect=effect, engine="celery-chain",
                      key=f"i1:{step}", kind=kind, outcome=outcome)

COMPLETED = InstanceStatus(InstanceState.COMPLETED, ("create", "approval", "notify"),
                           finished_at=STARTED + DEADLINE)
COMPENSATED = InstanceStatus(InstanceState.COMPENSATED, ("create",),
                             finished_at=STARTED + DEADLINE + 2)


def judged(flow: Flow, effects: list[EffectRecord], status: InstanceStatus = COMPLETED,
           ) -> tuple[list[str], list[tuple[str, int, bool, bool, bool]]]:
    verdict = judge_instance(flow, record(), effects, status, engine_holds=False)
    run = judge_run([verdict], fault=FaultFacts(planned=False, fired=False,
                                                expects_resume=False))
    return list(run.failures), [(r.step, r.applied, r.due, r.missing, r.early)
                                for r in verdict.reminders]


def test_an_escalation_sent_once_while_the_wait_was_open_passes(flow: Flow) -> None:
    # Escalated at 40 minutes; the wait stayed open and was approved at 50.
    effects = [call("create", 1), call("approval.escalation", AFTER + 1),
               call("notify", 3000)]

    failures, escalations = judged(flow, effects)

    assert failures == []
    assert escalations == [("approval.escalation", 1, True, False, False)]


def test_an_escalation_due_but_never_sent_is_missing_and_fails_the_run(flow: Flow) -> None:
    # No answer: the deadline passed an hour in, and the compensation ran.
    effects = [call("create", 1), call("create", DEADLINE + 1, kind="compensation")]

    failures, escalations = judged(flow, effects, COMPENSATED)

    assert escalations == [("approval.escalation", 0, True, True, False)]
    [failure] = failures
    assert failure.startswith("i1: escalation of approval missing: due 2400s into the wait")


def test_a_wait_answered_before_its_due_date_owes_no_escalation(flow: Flow) -> None:
    effects = [call("create", 1), call("notify", 60)]

    failures, escalations = judged(flow, effects)

    assert (failures, escalations) == ([], [("approval.escalation", 0, False, False, False)])


def test_an_escalation_sent_after_the_wait_ended_fails_the_run(flow: Flow) -> None:
    # Approved within a minute, yet escalated at 40 minutes.
    effects = [call("create", 1), call("notify", 60), call("approval.escalation", AFTER + 1)]

    failures, escalations = judged(flow, effects)

    assert escalations == [("approval.escalation", 1, False, False, True)]
    assert failures == ["i1: escalation of approval sent though the wait ended before its "
                        "time: due 2400s into the wait (the wait lasted 59.0s) (corr)"]


def test_an_escalation_sent_twice_is_a_duplicate(flow: Flow) -> None:
    effects = [call("create", 1), call("approval.escalation", AFTER + 1),
               call("approval.escalation", AFTER + 2), call("notify", 3000)]

    failures, escalations = judged(flow, effects)

    assert escalations == [("approval.escalation", 2, True, False, False)]
    assert failures == ["i1: approval.escalation (effect) applied 2 times, an unabsorbed "
                        "duplicate (corr)"]
