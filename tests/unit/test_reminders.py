"""A wait's reminder: how a flow declares it, how time scales it, and how the checker
judges the ledger's calls of it (hand-built rows: the engines' own tests are in
tests/contract/test_reminders.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from tests.unit.conftest import effect_row, instance_row

from graduate.adapters.base import InstanceState, InstanceStatus
from graduate.check import FaultFacts, judge_instance, judge_rollback, judge_run
from graduate.errors import FlowError
from graduate.flow import (
    Flow,
    InstanceRequest,
    Reminder,
    Step,
    Wait,
    flow_from_dict,
    flow_to_dict,
    load_flow,
)
from graduate.ledger import EffectKind, EffectRecord, InstanceRecord, Outcome
from graduate.timescale import TimeScale

REMINDER = '\nreminder = { at = 0.5, effect = "mail.remind" }'
STARTED = 1000.0
DEADLINE = 3600.0  # the mini flow's wait: "1h"


def reminded(write_flow: Callable[..., Path], line: str = REMINDER) -> Path:
    return write_flow([('deadline = "1h"', f'deadline = "1h"{line}')])


@pytest.fixture
def flow(write_flow: Callable[..., Path]) -> Flow:
    return load_flow(reminded(write_flow))


# ---------------------------------------------------------------------------- the model


def test_a_wait_declares_a_reminder_at_a_fraction_of_its_deadline(flow: Flow) -> None:
    wait = flow.node("approval")

    assert isinstance(wait, Wait)
    assert wait.reminder == Reminder(at=0.5, effect="mail.remind")
    assert wait.reminder_after == DEADLINE / 2
    # The reminder is sent as a step of its own, which engines find by its name.
    assert wait.reminder_step == flow.node("approval.reminder")
    assert isinstance(wait.reminder_step, Step)
    assert wait.reminder_step.effect == "mail.remind"
    # It is no step of the flow: nothing counts it as one to complete or compensate.
    assert [s.name for s in flow.steps] == ["create", "notify"]


def test_the_reminder_has_a_key_of_its_own(flow: Flow) -> None:
    request = InstanceRequest("i1", "r", "t", "e", "20250101", "c", "x")

    key = flow.key_for("approval.reminder", request)

    assert key == "t:mini:e:20250101:approval.reminder"
    assert key not in {flow.key_for(s.name, request) for s in flow.steps}


def test_a_reminder_round_trips_through_json_and_flows_without_one_read_the_same(
        flow: Flow, write_flow: Callable[..., Path]) -> None:
    assert flow_from_dict(json.loads(json.dumps(flow_to_dict(flow)))) == replace(
        flow, source="")
    plain = flow_to_dict(load_flow(write_flow()))
    assert all("reminder" not in node for node in plain["nodes"])


def test_a_time_scale_moves_the_reminder_with_the_deadline(flow: Flow) -> None:
    scaled, _ = TimeScale.parse("1h=10s").apply(flow)

    wait = scaled.node("approval")
    assert isinstance(wait, Wait)
    assert wait.deadline == pytest.approx(10.0)
    assert wait.reminder_after == pytest.approx(5.0)


@pytest.mark.parametrize(("line", "fragments"), [
    ('\nreminder = { at = 1.5, effect = "mail.remind" }',
     ["wait 'approval'", "reminder.at = 1.5", "between 0 and 1", "0.5 for half-way"]),
    ('\nreminder = { at = 0, effect = "mail.remind" }', ["reminder.at = 0", "between 0 and 1"]),
    ('\nreminder = { at = 0.5, effect = "remind" }',
     ["reminder.effect 'remind'", "SYSTEM.OPERATION"]),
    ('\nreminder = { at = 0.5, effect = "sms.remind" }',
     ["system 'sms'", "add [systems.sms]"]),
    ('\nreminder = { effect = "mail.remind" }', ["at is missing", "at = 0.5"]),
    ('\nreminder = { at = 0.5 }', ["effect is missing"]),
    ('\nreminder = { after = "36h", effect = "mail.remind" }',
     ["unknown key(s) ['after']", "fraction of the deadline"]),
    ('\nreminder = "36h"', ["reminder = '36h' must be a table"]),
])
def test_a_bad_reminder_is_refused_saying_what_to_fix(
        write_flow: Callable[..., Path], line: str, fragments: list[str]) -> None:
    path = reminded(write_flow, line)

    with pytest.raises(FlowError) as caught:
        load_flow(path)

    missing = [f for f in fragments if f not in str(caught.value)]
    assert not missing, f"{caught.value} lacks {missing}"


def test_a_bad_reminder_exits_2_on_the_command_line(
        write_flow: Callable[..., Path], tmp_path: Path) -> None:
    """As a user runs it: a real `graduate` process, refused before anything starts."""
    path = reminded(write_flow, '\nreminder = { at = 2, effect = "mail.remind" }')
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADUATE_")}

    done = subprocess.run([sys.executable, "-m", "graduate", "run", str(path), "-e",
                           "temporal", "--timeout", "5"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 2, done.stdout + done.stderr
    assert "reminder.at = 2.0 must be a fraction of the deadline between 0 and 1" in (
        done.stderr)
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------------- the checker


def record() -> InstanceRecord:
    return instance_row("celery-chain", STARTED)

def call(step: str, at: float, *, kind: EffectKind = "effect",
         outcome: Outcome = Outcome.APPLIED) -> EffectRecord:
    effect = "mail.remind" if step.endswith(".reminder") else f"crm.{step}"
    return effect_row(step, STARTED + at, effect=effect, engine="celery-chain",
                      key=f"i1:{step}", kind=kind, outcome=outcome)

COMPLETED = InstanceStatus(InstanceState.COMPLETED, ("create", "approval", "notify"),
                           finished_at=STARTED + DEADLINE)
COMPENSATED = InstanceStatus(InstanceState.COMPENSATED, ("create",),
                             finished_at=STARTED + DEADLINE + 2)


def judged(flow: Flow, effects: list[EffectRecord], status: InstanceStatus = COMPLETED,
           ) -> tuple[list[str], list[tuple[str, int, bool, bool]]]:
    verdict = judge_instance(flow, record(), effects, status, engine_holds=False)
    run = judge_run([verdict], fault=FaultFacts(planned=False, fired=False,
                                                expects_resume=False))
    return list(run.failures), [(r.step, r.applied, r.due, r.missing)
                                for r in verdict.reminders]


def test_a_reminder_sent_twice_is_a_duplicate(flow: Flow) -> None:
    effects = [call("create", 1), call("approval.reminder", 1801),
               call("approval.reminder", 1802), call("notify", 3000)]

    failures, reminders = judged(flow, effects)

    assert reminders == [("approval.reminder", 2, True, False)]
    assert failures == ["i1: approval.reminder (effect) applied 2 times, an unabsorbed "
                        "duplicate (corr)"]


def test_a_repeat_its_key_absorbed_is_no_duplicate(flow: Flow) -> None:
    effects = [call("create", 1), call("approval.reminder", 1801),
               call("approval.reminder", 1802, outcome=Outcome.ABSORBED),
               call("notify", 3000)]

    failures, reminders = judged(flow, effects)

    assert failures == []
    assert reminders == [("approval.reminder", 1, True, False)]


def test_a_reminder_due_but_never_sent_is_missing_and_fails_the_run(flow: Flow) -> None:
    # No answer: the deadline passed an hour in, and the compensation ran.
    effects = [call("create", 1), call("create", DEADLINE + 1, kind="compensation")]

    failures, reminders = judged(flow, effects, COMPENSATED)

    assert reminders == [("approval.reminder", 0, True, True)]
    [failure] = failures
    assert failure.startswith("i1: reminder of approval missing: due 1800s into the wait")


def test_a_wait_answered_before_its_reminder_owes_none(flow: Flow) -> None:
    effects = [call("create", 1), call("notify", 60)]

    failures, reminders = judged(flow, effects)

    assert (failures, reminders) == ([], [("approval.reminder", 0, False, False)])


def test_a_timer_after_the_wait_does_not_count_as_waiting(
        write_flow: Callable[..., Path]) -> None:
    flow = load_flow(write_flow([('deadline = "1h"', f'deadline = "1h"{REMINDER}\n\n'
                                  '[[nodes]]\ntimer = "cool_off"\nduration = "2h"')]))
    # Answered within a minute; the step after the timer called out two hours later.
    effects = [call("create", 1), call("notify", 7260)]

    failures, reminders = judged(flow, effects)

    assert (failures, reminders) == ([], [("approval.reminder", 0, False, False)])


def test_an_instance_that_never_reached_the_wait_has_no_reminder_verdict(flow: Flow) -> None:
    lost = InstanceStatus(InstanceState.RUNNING, ())

    verdict = judge_instance(flow, record(), [], lost, engine_holds=False)

    assert verdict.reminders == ()


def test_a_rollback_does_not_ask_to_compensate_the_reminder(flow: Flow) -> None:
    effects = [call("create", 1), call("approval.reminder", 1801),
               call("create", 1900, kind="compensation")]

    rollback = judge_rollback(flow, effects, COMPENSATED, cancelled_at=STARTED + 1850)

    assert rollback.problems == ()
    assert rollback.applied == ("create",)
