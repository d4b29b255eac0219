"""How far a team's app got, read from the ledger rows its `graduate.effect` calls wrote
(`graduate.adapters.app_engine.progress`): the state an app engine reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.adapters.app_engine import progress
from graduate.adapters.base import InstanceState
from graduate.flow import Flow, load_flow
from graduate.ledger import EffectKind, EffectRecord, Outcome

# The sample flow partner_approval was before it became the pilot: what these rows name.
PILOT = Path(__file__).resolve().parents[1] / "flows" / "partner_approval_sample.toml"


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
