"""The chain's signal task runs the step after its wait (docs/adr/0015, decision 4): a
worker killed while that task runs the step, with several instances in flight, is
judged as Celery behaves, on a real worker whose process group is killed by a real
signal. Late acknowledgement redelivers the signal, whose claim knows its own message
and runs the step again (and the instance is held until then), and loses no instance;
early acknowledgement loses the message and the instance with it, and only it: the
others' messages were queued, or prefetched by the dead worker and held until Redis
gives them back. A killed pool child fails the chain where the step was. At the kill,
holds() and holds_all() say so of each instance.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from graduate.adapters.base import ReadsTogether
from graduate.chaos import harness
from graduate.chaos.faults import FAULT_FIRED, POINT_REACHED
from graduate.chaos.harness import ChaosResult
from graduate.check import InstanceVerdict, Verdict
from graduate.config import Settings
from graduate.ledger import Ledger, Outcome
from graduate.runs.session import RunSession, open_session
from graduate.runs.timeline import HELD_UP, TimelineEvent
from tests.chaos.conftest import chaos_at
from tests.chaos.test_faults import _history, _timeline, applied, chaos, only
from tests.conftest import CRASH_TIMING, FlowFactory
from tests.contract.test_chain_reads_together import _answer, _or_error
from tests.contract.test_engines import FORWARD, NO_TIMER

pytestmark = [pytest.mark.slow, CRASH_TIMING, pytest.mark.usefixtures("no_orphans")]

# Instances in flight together: one worker of one pool child runs one task at a time,
# so while the first to reach the fault point is paused there, the others' messages
# wait in the queue, or prefetched by the worker about to be killed.
IN_FLIGHT = 3

Holds = dict[str, dict[str, Any]]  # "alone" / "together" -> instance -> holds()'s answer


@pytest.fixture
def holds_at_kill(monkeypatch: pytest.MonkeyPatch,
                  ) -> tuple[Holds, Callable[[TimelineEvent], None]]:
    """What holds() (one instance at a time) and holds_all() answered for each instance
    once the worker was killed, before the new worker starts (the fault's event comes
    after the killed group exited): filled by the listener to pass to the run."""
    sessions: list[RunSession] = []

    @contextlib.contextmanager
    def recording(*args: Any, **kwargs: Any) -> Iterator[RunSession]:
        with open_session(*args, **kwargs) as session:
            sessions.append(session)
            yield session

    monkeypatch.setattr(harness, "open_session", recording)
    found: Holds = {}

    def look(event: TimelineEvent) -> None:
        if event.kind != FAULT_FIRED.kind:
            return
        [session] = sessions
        engine, ids = session.engine, session.instance_ids
        assert isinstance(engine, ReadsTogether)
        found["alone"] = {iid: _answer(_or_error(engine.holds, iid)) for iid in ids}
        found["together"] = {iid: _answer(a) for iid, a in engine.holds_all(ids).items()}

    return found, look


def _hit(result: ChaosResult) -> str:
    """The instance paused at the fault point when the worker was killed."""
    assert result.fired, result.reason
    assert len(result.instances) == IN_FLIGHT
    [hit] = {e.instance for e in _timeline(result) if e.kind == POINT_REACHED.kind}
    assert hit is not None
    return hit


def _effects(settings: Settings, instance: InstanceVerdict) -> dict[str, list[Outcome]]:
    return {step: applied(settings, instance, step) for step in FORWARD}


def test_a_signal_redelivered_after_its_claim_runs_the_step_again_and_loses_no_instance(
        settings: Settings, flow_file: FlowFactory,
        holds_at_kill: tuple[Holds, Callable[[TimelineEvent], None]]) -> None:
    """Late acknowledgement (tuned): the worker is killed after the step's effect landed
    in the signal task of one instance, the others in flight; that claim is taken, but
    the signal message comes back after the visibility timeout and, finding its own
    claim, runs the step again (absorbed) and sends the rest. Until then the dead
    worker's unacknowledged signal is what holds that instance: the run does not end
    early judging it lost. Every other instance completes, each effect applied once."""
    found, look = holds_at_kill
    result = chaos_at(settings, flow_file("chaos", **NO_TIMER), "celery-chain",
                      "kill-worker", "activate:after-effect", profile="tuned",
                      instances=IN_FLIGHT, on_event=look)
    hit = _hit(result)

    # Held, each of them: the hit one by its signal message, unacknowledged by the dead
    # worker, whose token is the claim's; the others by their messages.
    ids = [i.instance_id for i in result.instances]
    assert found["alone"] == found["together"] == dict.fromkeys(ids, True)
    for instance in result.instances:
        assert instance.verdict is Verdict.COMPLETED, instance.reason
        once = {step: [Outcome.APPLIED] for step in FORWARD}
        if instance.instance_id == hit:
            once["activate"] = [Outcome.APPLIED, Outcome.ABSORBED]
        assert _effects(settings, instance) == once, instance.instance_id
    [instance] = [i for i in result.instances if i.instance_id == hit]
    first, again = [e for e in Ledger(settings.ledger).effects(instance_id=hit)
                    if e.step == "activate"]
    assert again.started_at - first.started_at >= 10.0  # the visibility timeout
    kinds = {(e.kind, e.detail) for e in _history(result, instance)}
    assert ("task redelivered", "activate: delivery 2 of attempt 1") in kinds
    # The step's result is stored under its own task ID, as its own task stores it.
    assert ("task SUCCESS", "activate") in kinds
    assert not any(e.detail.startswith("ended early") for e in _timeline(result))
    assert instance.resume is not None
    assert instance.resume.reran == ("activate",)


def test_a_signal_acknowledged_early_is_lost_with_its_step_and_only_its_instance(
        settings: Settings, flow_file: FlowFactory,
        holds_at_kill: tuple[Holds, Callable[[TimelineEvent], None]]) -> None:
    """Celery's defaults: the signal message was acknowledged when the worker took it;
    killed before the step's effect, nothing holds that instance any more (the wait is
    claimed), and the run ends early judging it lost. The others were not taken by the
    pool: queued, they complete on the new worker; prefetched by the dead worker, they
    are held until Redis gives them back (an hour by default), judged stuck, never
    lost."""
    found, look = holds_at_kill
    result = chaos_at(settings, flow_file("chaos", **NO_TIMER), "celery-chain",
                      "kill-worker", "activate:before-effect", profile="defaults",
                      instances=IN_FLIGHT, on_event=look)
    hit = _hit(result)

    ids = [i.instance_id for i in result.instances]
    assert found["alone"] == found["together"] == {iid: iid != hit for iid in ids}
    timeline = _timeline(result)
    ended = timeline[-1]
    assert ended.detail.startswith(f"ended early: nothing holds {hit}:")
    held_up = {e.instance: e.detail for e in timeline if e.kind == HELD_UP.kind}
    for instance in result.instances:
        effects = _effects(settings, instance)
        if instance.instance_id == hit:
            assert instance.verdict is Verdict.LOST, instance.reason
            assert effects == {"create_record": [Outcome.APPLIED],
                               "reserve": [Outcome.APPLIED], "activate": [], "notify": []}
            continue
        assert instance.verdict in (Verdict.COMPLETED, Verdict.STUCK), instance.reason
        if instance.verdict is Verdict.COMPLETED:
            assert effects == {step: [Outcome.APPLIED] for step in FORWARD}
            assert instance.instance_id not in held_up
            continue
        # Its next message was prefetched by the dead worker: nothing after it ran.
        assert "the engine still holds it" in instance.reason
        assert "never acknowledged" in held_up[instance.instance_id]
        assert "visibility timeout (3600 s)" in held_up[instance.instance_id]
        assert effects["activate"] == effects["notify"] == []
        assert all(outcomes in ([], [Outcome.APPLIED]) for outcomes in effects.values())


def test_a_pool_child_killed_in_the_signal_task_fails_the_chain_at_the_step(
        settings: Settings, flow_file: FlowFactory) -> None:
    """Only the pool child killed while the signal task runs the step: the worker
    records the signal task failed (WorkerLostError), which is where the step ran, and
    the chain stops there visibly, as it does when the step's own task is killed."""
    instance = only(chaos(settings, flow_file("chaos", **NO_TIMER), "celery-chain",
                          "kill-pool-child", "activate:before-effect", timeout=20))

    assert instance.verdict is Verdict.FAILED, instance.reason
    assert "SIGKILL" in instance.reason or "exited" in instance.reason
    assert "activate" in instance.reason
    assert applied(settings, instance, "activate") == []
