"""The contract every engine and strategy passes, against real servers and real workers.

Each test runs the contract flow through `run_flow` (workers as separate processes)
and then reads the ledger: which effects ran, how often, with which keys and IDs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from graduate.adapters import engine_names
from graduate.adapters.base import InstanceState
from graduate.adapters.celery.receipts import received_key
from graduate.config import Settings
from graduate.flow import Flow, load_flow
from graduate.ledger import EffectRecord, Ledger, Outcome
from graduate.runner import Failure, InstanceResult, RunOptions, RunResult, run_flow
from tests.conftest import FlowFactory

FORWARD = ["create_record", "reserve", "activate", "notify"]
# The contract flow with its timer taken out: the step `activate` follows the wait (on
# the chain, the wait's signal task runs it, docs/adr/0015, decision 4).
NO_TIMER = {'[[nodes]]\ntimer = "cool_off"\nduration = "300ms"\n\n': ""}
# Where the step that fails stands: after the timer that follows the wait, or right
# after the wait.
AFTER_THE_WAIT = {"after a timer": {}, "right after the wait": NO_TIMER}


@pytest.fixture(params=engine_names())
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(settings: Settings, path: Path, engine: str, **options: object) -> RunResult:
    return run_flow(settings, RunOptions(flow=str(path), engine=engine, timeout=90,
                                         **options))  # type: ignore[arg-type]


def effects(settings: Settings, instance_id: str, kind: str = "effect") -> list[EffectRecord]:
    return [e for e in Ledger(settings.ledger).effects(instance_id=instance_id) if e.kind == kind]


def assert_traced(settings: Settings, flow: Flow, result: RunResult, engine: str) -> None:
    """Every ledger row carries its instance's key, correlation ID, trace ID and engine."""
    ledger = Ledger(settings.ledger)
    for item in result.instances:
        request = ledger.instance(item.instance_id).request
        for effect in ledger.effects(instance_id=item.instance_id):
            assert effect.correlation_id == request.correlation_id
            assert effect.trace_id == request.trace_id
            assert len(effect.trace_id) == 32
            assert effect.engine == engine
            assert effect.idempotency_key == flow.key_for(
                effect.step, request, compensation=effect.kind == "compensation")
            assert effect.worker_pid > 0
            assert effect.started_at <= effect.finished_at


def test_happy_path_applies_each_effect_once_in_order(
        settings: Settings, flow_file: FlowFactory, engine: str) -> None:
    path = flow_file()
    result = run(settings, path, engine, decisions={"approval": "approve"})

    [item] = result.instances
    assert item.state is InstanceState.COMPLETED, item.detail
    rows = effects(settings, item.instance_id)
    assert [(e.step, e.outcome) for e in rows] == [(s, Outcome.APPLIED) for s in FORWARD]
    assert effects(settings, item.instance_id, "compensation") == []
    assert item.steps_done == 4
    assert item.duplicates == 0
    assert_traced(settings, load_flow(path), result, engine)
    if engine == "celery-chain":
        received_before_it_runs(settings, item)


@pytest.mark.parametrize("where", AFTER_THE_WAIT)
def test_transient_failure_is_retried_to_success(
        settings: Settings, flow_file: FlowFactory, engine: str, where: str) -> None:
    """Retried, each attempt counted, then the rest of the flow follows. Right after the
    wait, on the chain, each retry of the signal task finds the claim its own (the token
    it carries) and runs the step again, counted as the step's next attempt."""
    result = run(settings, flow_file(**AFTER_THE_WAIT[where]), engine,
                 decisions={"approval": "approve"},
                 failures=[Failure("activate", "transient", 2)])

    [item] = result.instances
    assert item.state is InstanceState.COMPLETED, item.detail
    activate = [e for e in effects(settings, item.instance_id) if e.step == "activate"]
    assert [(e.attempt, e.outcome) for e in activate] == [
        (1, Outcome.TRANSIENT_ERROR), (2, Outcome.TRANSIENT_ERROR), (3, Outcome.APPLIED)]
    assert item.effects_applied == 4
    assert [e.step for e in effects(settings, item.instance_id)][-1] == "notify"


def test_permanent_failure_compensates_in_reverse(
        settings: Settings, flow_file: FlowFactory, engine: str) -> None:
    result = run(settings, flow_file(), engine, decisions={"approval": "approve"},
                 failures=[Failure("activate", "permanent")])

    [item] = result.instances
    assert item.state is InstanceState.COMPENSATED, item.detail
    assert "activate" in item.detail
    forward = effects(settings, item.instance_id)
    assert [(e.step, e.outcome) for e in forward] == [
        ("create_record", Outcome.APPLIED), ("reserve", Outcome.APPLIED),
        ("activate", Outcome.PERMANENT_ERROR)]
    undo = effects(settings, item.instance_id, "compensation")
    assert [(e.step, e.effect, e.outcome) for e in undo] == [
        ("reserve", "crm.release", Outcome.APPLIED),
        ("create_record", "crm.void_record", Outcome.APPLIED)]


def test_signal_releases_the_wait(settings: Settings, flow_file: FlowFactory,
                                  engine: str) -> None:
    """A reject releases the wait into the compensation of what ran before it (an
    approve releases it in the happy path's run, judged there)."""
    rejected = run(settings, flow_file(), engine, decisions={"approval": "reject"})

    [item] = rejected.instances
    assert item.state is InstanceState.COMPENSATED
    assert "rejected" in item.detail
    assert [e.step for e in effects(settings, item.instance_id)] == ["create_record", "reserve"]
    assert [e.step for e in effects(settings, item.instance_id, "compensation")] == [
        "reserve", "create_record"]


def test_wait_past_its_deadline_takes_the_timeout_action(
        settings: Settings, flow_file: FlowFactory, engine: str) -> None:
    result = run(settings, flow_file(**{'deadline = "60s"': 'deadline = "2s"'}), engine)

    [item] = result.instances
    assert item.state is InstanceState.COMPENSATED
    assert "deadline" in item.detail
    ledger = Ledger(settings.ledger)
    undo = effects(settings, item.instance_id, "compensation")
    assert [e.step for e in undo] == ["reserve", "create_record"]
    waited = undo[0].started_at - ledger.instance(item.instance_id).started_at
    assert waited >= 2.0, "compensation ran before the deadline passed"
    assert "activate" not in {e.step for e in effects(settings, item.instance_id)}


def test_many_instances_at_once(settings: Settings, flow_file: FlowFactory,
                                engine: str) -> None:
    """Eight instances share two workers: they are in flight together, and each one's
    effects land once each, in its own order, under its own IDs, judged completed."""
    result = run(settings, flow_file(), engine, instances=8, workers=2,
                 decisions={"approval": "approve"})

    assert [i.state for i in result.instances] == [InstanceState.COMPLETED] * 8
    ledger = Ledger(settings.ledger)
    spans = []
    for item in result.instances:
        rows = ledger.effects(instance_id=item.instance_id)
        assert [(e.step, e.outcome, e.attempt) for e in rows] == [
            (s, Outcome.APPLIED, 1) for s in FORWARD]
        assert {(e.correlation_id, e.trace_id) for e in rows} == {
            (item.correlation_id, item.trace_id)}
        assert (item.steps_done, item.effects_applied, item.duplicates) == (4, 4, 0)
        spans.append((rows[0].started_at, rows[-1].finished_at))
    assert len({item.correlation_id for item in result.instances}) == 8
    # Several instances were in flight at once: one began before others had ended.
    most = max(sum(1 for begin, end in spans if begin <= moment <= end)
               for moment, _ in spans)
    assert most >= 4, f"at most {most} of 8 instances were in flight at the same time"
    # Their calls came from the workers, not from the process that started them.
    pids = {e.worker_pid for e in ledger.effects(run_id=result.run_id)}
    assert pids
    assert os.getpid() not in pids


def received_before_it_runs(settings: Settings, item: InstanceResult) -> None:
    """Celery's `task_received`, in the worker's main process, marked each task of the
    chain's instance with the worker that had it, before an early acknowledgement took
    it out of the broker: what holds() reads where neither the broker nor a STARTED
    state shows the task yet."""
    assert settings.broker_url is not None
    client = redis.Redis.from_url(settings.broker_url, decode_responses=True)
    for step in FORWARD:
        received = client.get(received_key(f"{item.instance_id}:{step}"))
        assert received is not None, f"no worker marked {step} as received"
        assert str(received).startswith("celery-chain-worker-1-"), received
    [row] = effects(settings, item.instance_id)[:1]
    assert row.worker_pid != os.getpid()
