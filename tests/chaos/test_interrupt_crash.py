"""The flow's interrupt survives the worker that was running the instance when it came.

On every engine (the chain on Redis and on RabbitMQ), under the tuned profile (a dead
worker's step comes back): the harness sends the interrupt while `reserve` is in flight
(its call paused before its effect), lets the call go on, and kills the worker with
SIGKILL once the effect landed, before the task or activity could return. The
interrupt was recorded when the signal was sent (a Redis key, a row, a workflow
signal), so the replacement worker finds it: the step that came back is absorbed, no
later step starts, everything applied is compensated once, and the notice goes out
once.

And with the worker killed while the step is still paused before its effect, once the
interrupt was sent: the step in flight finishes on its retry or redelivery (its effect
lands then), no further step starts, and the same compensations and notice follow; for
several instances at once too, each killed at its own pause after its own interrupt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from graduate.adapters import engine_names
from graduate.chaos.faults import FAULT_FIRED
from graduate.chaos.harness import ChaosResult
from graduate.check import InstanceVerdict, Verdict
from graduate.config import Settings
from graduate.flow import INTERRUPT_NOTICE
from graduate.ledger import Ledger, Outcome
from graduate.runs.timeline import TimelineEvent
from tests.chaos.conftest import calls, chaos_at
from tests.conftest import CRASH_TIMING, FlowFactory

pytestmark = [pytest.mark.slow, CRASH_TIMING, pytest.mark.usefixtures("no_orphans")]

INTERRUPT = '\n[interrupt]\nsignal = "red_flag"\nnotice = "notify.red_flag"\n'
REASON = "interrupted by red_flag"
INSTANCES = 3


@pytest.fixture(params=[*engine_names(), pytest.param(
    "celery-chain-on-rabbitmq", marks=pytest.mark.rabbitmq)])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def broker(request: pytest.FixtureRequest, settings: Settings, engine: str) -> Settings:
    """The chain also on RabbitMQ, which redelivers at once when the killed worker's
    connection drops (Redis waits out its visibility timeout); results stay in Redis."""
    if not engine.endswith("-on-rabbitmq"):
        return settings
    url: str = request.getfixturevalue("rabbitmq_url")
    return replace(settings, broker_url=url, result_backend_url=settings.broker_url)


@pytest.fixture
def interruptible(flow_file: FlowFactory) -> Path:
    """The approval flow with the interrupt (a red flag) and its notice."""
    return flow_file(**{"reserve = \"crm.release\"\n": f"reserve = \"crm.release\"\n{INTERRUPT}"})


def interrupt_then_kill(settings: Settings, path: Path, engine: str,
                        point: str = "after-effect", profile: str = "tuned",
                        on_event: Callable[[TimelineEvent], None] | None = None,
                        instances: int = 1) -> ChaosResult:
    """Several `instances`: the kill hits each at its point, in turn."""
    return chaos_at(settings, path, engine.removesuffix("-on-rabbitmq"), "kill-worker",
                    f"reserve:{point}", instances=instances,
                    hit="all" if instances > 1 else "one", profile=profile,
                    decisions={"red_flag": "interrupt"}, interrupt_at="reserve",
                    on_event=on_event)


def assert_undone_once(settings: Settings, instance: InstanceVerdict,
                       reserve: list[Outcome]) -> None:
    """After the interrupt: reserve's calls came out as `reserve`, no later step applied,
    what applied was compensated once, in reverse, and the notice went out once."""
    forward = calls(settings, instance, "effect")
    assert [o for s, o in forward if s == "reserve"] == reserve, instance.instance_id
    assert [s for s, o in forward if o is Outcome.APPLIED] == [
        "create_record", "reserve", INTERRUPT_NOTICE]
    assert calls(settings, instance, "compensation") == [
        ("reserve", Outcome.APPLIED), ("create_record", Outcome.APPLIED)]
    assert [(n.step, n.expected, n.applied) for n in instance.notices] == [
        (INTERRUPT_NOTICE, True, 1)]


def test_a_worker_killed_after_the_interrupt_leaves_it_to_its_replacement(
        broker: Settings, interruptible: Path, engine: str) -> None:
    result = interrupt_then_kill(broker, interruptible, engine)

    assert result.applicable, result.reason
    assert result.fired, result.reason
    [instance] = result.instances
    assert (instance.verdict, instance.reason) == (Verdict.COMPENSATED, REASON)
    assert instance.interrupt is not None
    assert instance.interrupt.problems == ()
    # The interrupt was sent before the kill: the killed worker could have consumed it.
    assert instance.interrupt.interrupted_at is not None
    reached = Ledger(broker.ledger).reached(instance.instance_id, "reserve", "after-effect")
    assert reached is not None
    assert instance.interrupt.interrupted_at < reached.at
    # The killed call's effect landed; the replacement's repeat of it was absorbed.
    assert_undone_once(broker, instance, [Outcome.APPLIED, Outcome.ABSORBED])
    assert result.verdict.passed, result.verdict.failures


def test_a_worker_killed_before_the_effect_after_the_interrupt_leaves_the_step_to_finish(
        broker: Settings, interruptible: Path, engine: str) -> None:
    fired: list[float] = []  # when the harness recorded each kill, on this clock

    def on_event(event: TimelineEvent) -> None:
        if event.kind == FAULT_FIRED.kind:
            fired.append(time.time())

    result = interrupt_then_kill(broker, interruptible, engine, "before-effect",
                                 on_event=on_event, instances=INSTANCES)

    assert result.applicable, result.reason
    assert result.fired, result.reason
    assert len(result.instances) == INSTANCES
    ledger = Ledger(broker.ledger)
    for instance in result.instances:
        assert instance.interrupt is not None
        # The interrupt was sent while reserve was paused before its effect, then the
        # worker was killed there (by the first kill after it got there): the kill came
        # after the interrupt.
        reached = ledger.reached(instance.instance_id, "reserve", "before-effect")
        assert reached is not None
        killed = next((at for at in fired if at >= reached.at), None)
        assert instance.interrupt.interrupted_at is not None
        assert killed is not None, instance.instance_id
        assert reached.at < instance.interrupt.interrupted_at < killed
        # The killed call never reached its effect; the retry or redelivery applied it once.
        assert_undone_once(broker, instance, [Outcome.APPLIED])
        assert (instance.verdict, instance.reason) == (Verdict.COMPENSATED, REASON)
        assert instance.interrupt.problems == ()
    assert result.verdict.passed, result.verdict.failures


@pytest.mark.parametrize("engine", ["celery-chain"])
def test_under_early_ack_the_chain_loses_the_step_in_hand_with_its_worker(
        broker: Settings, interruptible: Path, engine: str) -> None:
    """Celery's default: a task is acknowledged as the worker takes it, so a worker
    killed with the task in hand loses it, and the chain with it (Celery's documented
    behaviour; `task_acks_late` is the setting that changes it). The interrupt was
    recorded, but no task of the chain is left to act on it, and the interrupt's own
    signal task (prefetched by the dead worker, given back only after Redis's visibility
    timeout) ends only a parked wait: nothing can move the instance. The checker judges
    it lost, with create_record left uncompensated: a failed run, not a pass."""
    result = interrupt_then_kill(broker, interruptible, engine, "before-effect",
                                 profile="defaults")

    assert result.fired, result.reason
    [instance] = result.instances
    rows = Ledger(broker.ledger).effects(instance_id=instance.instance_id)
    assert [(e.step, e.kind, e.outcome) for e in rows] == [
        ("create_record", "effect", Outcome.APPLIED)]
    assert instance.verdict is Verdict.LOST, instance.reason
    assert instance.reason.startswith("nothing holds it any more")
    assert instance.interrupt is not None
    assert instance.interrupt.interrupted_at is not None
    assert instance.interrupt.problems[0] == "create_record applied and was left uncompensated"
    assert not result.verdict.passed
    assert result.verdict.counts["lost"] == 1
