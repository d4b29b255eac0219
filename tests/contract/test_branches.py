"""The contract of parallel branches with a join, on every engine and strategy, with
several instances in flight, against real servers and real workers.

The ledger is the judge: every step of every branch applied once, the step after the
group began only once every branch had finished (the join), the order inside a branch
kept; and when one branch fails, every step that applied (in the other branches and
before the group) compensated once, the compensations in an order the flow allows.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from graduate.adapters import engine_names
from graduate.adapters.base import InstanceState
from graduate.check import compensation_order
from graduate.config import Settings
from graduate.flow import load_flow
from graduate.ledger import EffectRecord, Ledger, Outcome
from graduate.runner import Failure, RunOptions, RunResult, run_flow
from tests.conftest import FlowFactory

BRANCH_STEPS = ["open_portal", "grant_access", "open_account", "welcome"]
ALL_STEPS = ["create_record", *BRANCH_STEPS, "activate"]
INSTANCES = 3


@pytest.fixture(params=engine_names())
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(settings: Settings, path: Path, engine: str, **options: object) -> RunResult:
    return run_flow(settings, RunOptions(flow=str(path), engine=engine, timeout=90,
                                         instances=INSTANCES, workers=2,
                                         **options))  # type: ignore[arg-type]


def rows(settings: Settings, instance_id: str, kind: str = "effect") -> list[EffectRecord]:
    return [e for e in Ledger(settings.ledger).effects(instance_id=instance_id)
            if e.kind == kind]


def landed(effects: list[EffectRecord]) -> list[str]:
    return [e.step for e in effects if e.outcome in (Outcome.APPLIED, Outcome.ABSORBED)]


def test_every_branch_applies_once_and_the_join_waits_for_all(
        settings: Settings, flow_file: FlowFactory, engine: str) -> None:
    result = run(settings, flow_file("branches"), engine)

    assert len(result.instances) == INSTANCES
    for item in result.instances:
        assert item.state is InstanceState.COMPLETED, item.detail
        forward = rows(settings, item.instance_id)
        assert sorted((e.step, e.outcome) for e in forward) == sorted(
            (step, Outcome.APPLIED) for step in ALL_STEPS)
        at = {e.step: e for e in forward}
        assert at["create_record"].finished_at <= min(at[s].started_at for s in BRANCH_STEPS)
        assert at["open_portal"].finished_at <= at["grant_access"].started_at
        assert at["activate"].started_at >= max(at[s].finished_at for s in BRANCH_STEPS), (
            "the step after the group began before every branch had finished")
        assert rows(settings, item.instance_id, "compensation") == []
        assert item.steps_done == len(ALL_STEPS)
        assert item.duplicates == 0


def test_a_failed_branch_compensates_every_step_that_applied_once(
        settings: Settings, flow_file: FlowFactory, engine: str) -> None:
    path = flow_file("branches")
    flow = load_flow(path)
    result = run(settings, path, engine, failures=[Failure("grant_access", "permanent")])

    for item in result.instances:
        assert item.state is InstanceState.COMPENSATED, item.detail
        assert "grant_access" in item.detail
        forward = rows(settings, item.instance_id)
        applied = landed(forward)
        assert "activate" not in {e.step for e in forward}, "the flow went on past the join"
        assert "grant_access" not in applied
        assert {"create_record", "open_portal"} <= set(applied)
        undo = rows(settings, item.instance_id, "compensation")
        assert sorted(landed(undo)) == sorted(
            s for s in applied if flow.node(s).compensation), "not once each"  # type: ignore[union-attr]
        assert all(e.outcome is Outcome.APPLIED for e in undo)
        assert landed(undo)[-1] == "create_record", "the step before the group came back last"
        assert compensation_order(flow, applied, landed(undo)) == []
        began = min(e.started_at for e in undo)
        assert all(e.started_at < began for e in forward), (
            "a branch step ran after the compensation began")


@pytest.mark.rabbitmq
@pytest.mark.parametrize("strategy", ["celery-chain", "celery-state-machine"])
def test_branches_join_and_compensate_with_the_broker_on_rabbitmq(
        settings: Settings, flow_file: FlowFactory, strategy: str, rabbitmq_url: str) -> None:
    """A chord needs a result backend that joins it: with the broker on RabbitMQ the
    results stay in Redis, whose backend joins a chord natively (no chord_unlock task
    polling); the state machine's branch rows do not care which broker carries them."""
    on_rabbitmq = replace(settings, broker_url=rabbitmq_url,
                          result_backend_url=settings.broker_url)

    joined = run(on_rabbitmq, flow_file("branches"), strategy)
    failed = run(on_rabbitmq, flow_file("branches"), strategy,
                 failures=[Failure("open_account", "permanent")])

    assert [i.state for i in joined.instances] == [InstanceState.COMPLETED] * INSTANCES
    for item in failed.instances:
        assert item.state is InstanceState.COMPENSATED, item.detail
        applied = landed(rows(on_rabbitmq, item.instance_id))
        undo = landed(rows(on_rabbitmq, item.instance_id, "compensation"))
        assert sorted(undo) == sorted({"create_record", "open_portal", "grant_access"}
                                      & set(applied))
        assert undo[-1] == "create_record"

