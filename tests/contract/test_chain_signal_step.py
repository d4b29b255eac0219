"""The chain's signal task runs the step after its wait (docs/adr/0015, decision 4),
against real Redis and real workers: the step is retried, fails, compensates and
records its result as its own task does, and the rest of the flow follows it. (Its
retries: the contract's transient failure, right after the wait.)"""

from __future__ import annotations

import pytest

from graduate.adapters.base import InstanceState
from graduate.config import Settings
from graduate.ledger import Outcome
from graduate.runner import Failure
from tests.conftest import FlowFactory
from tests.contract.test_engines import FORWARD, NO_TIMER, effects, run

ENGINE = "celery-chain"


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_the_signal_runs_the_step_after_the_wait_and_the_rest_follows(
        settings: Settings, flow_file: FlowFactory, decision: str) -> None:
    result = run(settings, flow_file(**NO_TIMER), ENGINE, decisions={"approval": decision})

    [item] = result.instances
    rows = effects(settings, item.instance_id)
    if decision == "approve":
        assert item.state is InstanceState.COMPLETED, item.detail
        assert [(e.step, e.outcome) for e in rows] == [(s, Outcome.APPLIED) for s in FORWARD]
        assert item.steps_done == 4
    else:
        assert item.state is InstanceState.COMPENSATED, item.detail
        assert [e.step for e in rows] == ["create_record", "reserve"]


def test_a_permanent_failure_of_the_step_compensates_and_says_where(
        settings: Settings, flow_file: FlowFactory) -> None:
    result = run(settings, flow_file(**NO_TIMER), ENGINE, decisions={"approval": "approve"},
                 failures=[Failure("activate", "permanent")])

    [item] = result.instances
    assert item.state is InstanceState.COMPENSATED, item.detail
    assert "activate" in item.detail
    assert [(e.step, e.outcome) for e in effects(settings, item.instance_id)] == [
        ("create_record", Outcome.APPLIED), ("reserve", Outcome.APPLIED),
        ("activate", Outcome.PERMANENT_ERROR)]
    assert [e.step for e in effects(settings, item.instance_id, "compensation")] == [
        "reserve", "create_record"]
