"""A wait's reminder and escalation on every engine, against real servers and workers.

The contract flow's approval wait gets a short deadline, a reminder a quarter in and
an escalation (its due date) half-way; the timer after it is long enough that an
instance answered at once is still running (and its workers with it) well past both
times, so "no reminder" and "no escalation" are seen, not merely cut off by the end of
the run. One run left open and one answered at once, on each engine, show both sends:
a flow with a reminder alone ran the same two scenarios again for nothing more (six
runs, about 54 s of a CI rehearsal's test time).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.adapters import engine_names
from graduate.adapters.base import InstanceState, InstanceStatus
from graduate.check import judge_reminders
from graduate.config import Settings
from graduate.flow import load_flow
from graduate.ledger import Ledger, Outcome
from graduate.runner import InstanceResult, RunOptions, RunResult, run_flow
from tests.conftest import FlowFactory


@pytest.fixture(params=engine_names())
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(settings: Settings, path: Path, engine: str, **options: object) -> RunResult:
    return run_flow(settings, RunOptions(flow=str(path), engine=engine, timeout=90,
                                         **options))  # type: ignore[arg-type]


def status(settings: Settings, item: InstanceResult) -> InstanceStatus:
    started = Ledger(settings.ledger).instance(item.instance_id).started_at
    return InstanceStatus(item.state, finished_at=None if item.duration is None
                          else started + item.duration)


ESCALATION_DEADLINE = 8.0
REMINDER_AT = ESCALATION_DEADLINE / 4
ESCALATE_AFTER = 4.0  # the due date: the wait stays open past it, until its deadline


def escalated_flow(flow_file: FlowFactory) -> Path:
    """The approval wait with a reminder a quarter in and an escalation half-way."""
    return flow_file(**{
        'deadline = "60s"': f'deadline = "{ESCALATION_DEADLINE:g}s"\n'
                            'reminder = { at = 0.25, effect = "notify.remind" }\n'
                            f'escalation = {{ after = "{ESCALATE_AFTER:g}s", '
                            'effect = "notify.escalate" }',
        'duration = "300ms"': 'duration = "5s"',
    })


def test_a_wait_past_its_reminder_and_due_date_sends_each_once_and_stays_open_until_its_deadline(
        settings: Settings, flow_file: FlowFactory, engine: str) -> None:
    path = escalated_flow(flow_file)
    result = run(settings, path, engine)  # no decision: the due date, then the deadline

    [item] = result.instances
    assert item.state is InstanceState.COMPENSATED
    ledger = Ledger(settings.ledger)
    rows = ledger.effects(instance_id=item.instance_id)
    sends = [(e.step, e.effect, e.kind, e.outcome) for e in rows
             if e.step.startswith("approval.")]
    assert sends == [("approval.reminder", "notify.remind", "effect", Outcome.APPLIED),
                     ("approval.escalation", "notify.escalate", "effect", Outcome.APPLIED)]
    reminder = next(e for e in rows if e.step == "approval.reminder")
    escalation = next(e for e in rows if e.step == "approval.escalation")
    reserved = next(e for e in rows if e.step == "reserve")
    undone = next(e for e in rows if e.kind == "compensation")
    # Each sent once its time had come, while the wait was still open; the wait stayed
    # open until its hard deadline, which the compensation followed.
    assert reminder.started_at - reserved.finished_at >= REMINDER_AT
    assert reminder.finished_at <= undone.started_at
    assert escalation.started_at - reserved.finished_at >= ESCALATE_AFTER
    assert escalation.finished_at <= undone.started_at
    assert undone.started_at - reserved.finished_at >= ESCALATION_DEADLINE
    assert "deadline of approval passed" in item.detail
    request = ledger.instance(item.instance_id).request
    assert reminder.idempotency_key == load_flow(path).key_for("approval.reminder", request)
    assert escalation.idempotency_key == load_flow(path).key_for(
        "approval.escalation", request)
    assert item.duplicates == 0
    verdicts = judge_reminders(load_flow(path), ledger.instance(item.instance_id), rows,
                               status(settings, item))
    assert [(v.kind, v.due, v.applied, v.missing, v.early) for v in verdicts] == [
        ("reminder", True, 1, False, False), ("escalation", True, 1, False, False)]


def test_a_wait_answered_before_its_reminder_sends_no_reminder_nor_escalation(
        settings: Settings, flow_file: FlowFactory, engine: str) -> None:
    path = escalated_flow(flow_file)
    result = run(settings, path, engine, decisions={"approval": "approve"})

    [item] = result.instances
    assert item.state is InstanceState.COMPLETED
    ledger = Ledger(settings.ledger)
    rows = ledger.effects(instance_id=item.instance_id)
    # The run outlived the reminder's time and the due date: the timer after the wait
    # held it open.
    reserved = next(e for e in rows if e.step == "reserve")
    assert rows[-1].started_at - reserved.finished_at > max(REMINDER_AT, ESCALATE_AFTER) + 1
    assert [e.step for e in rows] == ["create_record", "reserve", "activate", "notify"]
    verdicts = judge_reminders(load_flow(path), ledger.instance(item.instance_id), rows,
                               status(settings, item))
    assert [(v.kind, v.due, v.calls, v.missing, v.problem) for v in verdicts] == [
        ("reminder", False, 0, False, False), ("escalation", False, 0, False, False)]
