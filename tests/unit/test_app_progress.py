"""How far a team's app got, read from the ledger rows its `graduate.effect` calls wrote
(`graduate.adapters.app_engine.progress`): the state an app engine reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.adapters.app_engine import owes_notice, progress, wait_ending
from graduate.adapters.base import InstanceState
from graduate.flow import Flow, load_flow
from graduate.ledger import EffectKind, EffectRecord, Outcome

# The sample flow partner_approval was before it became the pilot: what these rows name.
PILOT = Path(__file__).resolve().parents[1] / "flows" / "partner_approval_sample.toml"
# The pilot as the example app implements it: its approval wait sends notices.
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "partner_approval_app" / "flow.toml"


@pytest.fixture(scope="module")
def pilot() -> Flow:
    return load_flow(PILOT)


def rows(*calls: tuple[str, EffectKind, Outcome]) -> list[EffectRecord]:
    return [EffectRecord(id=n, run_id="r", flow="partner_approval", instance_id="i", step=step,
                         effect=f"x.{step}", kind=kind, attempt=1, idempotency_key="k",
                         correlation_id="c", trace_id="t", engine="celery", worker_pid=1,
                         started_at=float(n), finished_at=n + 0.5, outcome=outcome)
            for n, (step, kind, outcome) in enumerate(calls, start=1)]


APPLIED = Outcome.APPLIED


def test_nothing_recorded_is_running(pilot: Flow) -> None:
    assert progress(pilot, []).state is InstanceState.RUNNING


def test_the_steps_before_a_wait_done_is_waiting(pilot: Flow) -> None:
    found = progress(pilot, rows(("create_record", "effect", APPLIED),
                                 ("request_approval", "effect", Outcome.ABSORBED)))

    assert found.state is InstanceState.WAITING
    assert found.done == ("create_record", "request_approval")
    assert found.last_effect_at is None  # not finished


def test_a_step_that_failed_is_not_done(pilot: Flow) -> None:
    found = progress(pilot, rows(("create_record", "effect", APPLIED),
                                 ("request_approval", "effect", Outcome.ERROR)))

    assert found.state is InstanceState.RUNNING
    assert found.done == ("create_record",)


def test_every_step_done_is_completed_and_the_wait_passed(pilot: Flow) -> None:
    found = progress(pilot, rows(*((s, "effect", APPLIED) for s in (
        "create_record", "request_approval", "activate", "notify"))))

    assert found.state is InstanceState.COMPLETED
    assert found.done == ("create_record", "request_approval", "approval", "activate",
                          "notify")
    assert found.last_effect_at == 4.5


def test_compensated_only_once_every_done_step_is_undone(pilot: Flow) -> None:
    forward: tuple[tuple[str, EffectKind, Outcome], ...] = (
        ("create_record", "effect", APPLIED), ("request_approval", "effect", APPLIED))
    halfway = progress(pilot, rows(*forward, ("request_approval", "compensation", APPLIED)))
    undone = progress(pilot, rows(*forward, ("request_approval", "compensation", APPLIED),
                                  ("create_record", "compensation", APPLIED)))

    assert halfway.state is InstanceState.RUNNING
    assert undone.state is InstanceState.COMPENSATED
    assert "approval" in undone.done


@pytest.fixture(scope="module")
def example() -> Flow:
    return load_flow(EXAMPLE)


DRAFTED: tuple[tuple[str, EffectKind, Outcome], ...] = (
    ("validate_partner", "effect", APPLIED), ("create_packet", "effect", APPLIED),
    ("create_packet", "compensation", APPLIED))


@pytest.mark.parametrize(("said", "reason"), [
    ("rejected", "rejected at approval"),
    ("expired", "deadline of approval passed"),
    ("rejected at approval", "rejected at approval"),
    ("deadline of approval passed: compensated", "deadline of approval passed"),
    ("approved", None),
    ("failed", None),
])
def test_an_apps_word_for_its_ending_is_read_in_the_flows_words(
        example: Flow, said: str, reason: str | None) -> None:
    assert wait_ending(example, rows(*DRAFTED), said) == reason


def test_an_ending_said_of_no_wait_the_instance_reached_is_none(example: Flow) -> None:
    # The CRM was updated: the instance passed the approval, so it cannot have been
    # rejected there (a step failed for good after it).
    passed = rows(*DRAFTED[:2], ("update_crm", "effect", APPLIED),
                  ("update_crm", "compensation", APPLIED), DRAFTED[2])

    assert wait_ending(example, passed, "rejected") is None


def test_an_instance_ended_at_a_wait_owes_its_notice_until_it_lands(example: Flow) -> None:
    reason = "rejected at approval"
    sent = rows(*DRAFTED, ("approval.rejected_notice", "effect", APPLIED))
    failed = rows(*DRAFTED, ("approval.rejected_notice", "effect", Outcome.ERROR))

    assert owes_notice(example, rows(*DRAFTED), reason)
    assert owes_notice(example, failed, reason)
    assert not owes_notice(example, sent, reason)
    assert not owes_notice(example, rows(*DRAFTED), "")  # ended at no wait: owes none
