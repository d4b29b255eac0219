"""The state machine decides a dead worker's step before it moves past it.

A worker killed (SIGKILL, its whole process group) after a step's effect landed, before
it could record the step: once the lease runs out, the tick's advance finds an attempt
that began and never reported. On the step's last attempt it must not fail the step
and compensate without it (its effect would stay applied); when an operator cancelled
in between, the compensation must not begin before the step in flight is decided and
counted. Real workers, beat and tick; the ledger says what happened to each effect.
Several instances, each hit at its point in turn: one worker runs one step at a time, so
the kill catches none of them elsewhere.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from graduate.chaos.faults import POINT_REACHED
from graduate.chaos.harness import ChaosResult
from graduate.check import InstanceVerdict, Verdict
from graduate.config import Settings
from graduate.ledger import Ledger, Outcome
from graduate.runs.timeline import TimelineEvent
from tests.chaos.conftest import calls, chaos_at
from tests.conftest import CRASH_TIMING, FlowFactory

pytestmark = [pytest.mark.slow, CRASH_TIMING, pytest.mark.usefixtures("no_orphans")]

ENGINE = "celery-state-machine"
INSTANCES = 3
RESERVE = 'step = "reserve"\neffect = "crm.reserve"\ntimeout = "10s"\nretry = { max_attempts = 3'


def reserve_with(flow_file: FlowFactory, max_attempts: int) -> Path:
    # A short timeout: the dead worker's lease (timeout, hard-limit slack, margin) runs
    # out sooner.
    return flow_file(**{RESERVE: RESERVE.replace('"10s"', '"2s"').replace(
        "max_attempts = 3", f"max_attempts = {max_attempts}")})


def chaos(settings: Settings, path: Path, fault: str,
          on_event: Callable[[TimelineEvent], None] | None = None) -> ChaosResult:
    return chaos_at(settings, path, ENGINE, fault, "reserve:after-effect",
                    instances=INSTANCES, hit="all", on_event=on_event)


def hit_at_the_point(result: ChaosResult) -> list[InstanceVerdict]:
    """Every instance, once each was caught at the armed point."""
    assert len(result.instances) == INSTANCES
    for instance in result.instances:
        assert instance.resume is not None, instance.instance_id
        assert (instance.resume.in_flight, instance.resume.affected_as) == (
            "reserve", "at the fault point"), instance.instance_id
    return list(result.instances)


def test_a_worker_lost_on_the_last_attempt_after_the_effect_leaves_the_step_applied(
        settings: Settings, flow_file: FlowFactory) -> None:
    result = chaos(settings, reserve_with(flow_file, 1), "kill-worker")

    assert result.fired, result.reason
    for instance in hit_at_the_point(result):
        # The only attempt landed: the step is done, not failed, and not run a second time.
        assert [o for s, o in calls(settings, instance, "effect") if s == "reserve"] == [
            Outcome.APPLIED]
        assert calls(settings, instance, "compensation") == []
        assert instance.verdict is Verdict.COMPLETED, instance.reason
    assert result.verdict.passed, result.verdict.failures


class KillAtThePoint:
    """SIGKILL to the process group of the worker paused at the fault point, the moment
    the harness sees it there: before the operator's cancel (the rollback) fires."""

    def __init__(self, settings: Settings) -> None:
        self.ledger = Ledger(settings.ledger)
        self.killed: list[int] = []

    def __call__(self, event: TimelineEvent) -> None:
        if event.kind != POINT_REACHED.kind or event.instance is None:
            return
        reached = self.ledger.reached(event.instance, "reserve", "after-effect")
        assert reached is not None
        assert reached.group is not None
        os.killpg(reached.group, signal.SIGKILL)
        self.killed.append(reached.group)


@pytest.mark.parametrize("max_attempts", [3, 1])
def test_a_cancel_after_the_worker_died_in_flight_compensates_its_step_too(
        settings: Settings, flow_file: FlowFactory, max_attempts: int) -> None:
    kill = KillAtThePoint(settings)
    result = chaos(settings, reserve_with(flow_file, max_attempts), "rollback-rehearsal",
                   on_event=kill)

    assert result.fired, result.reason
    assert len(kill.killed) == INSTANCES, "a worker in flight was not killed"
    assert len(result.instances) == INSTANCES
    for instance in result.instances:
        forward = [o for s, o in calls(settings, instance, "effect") if s == "reserve"]
        # With attempts left the step runs again under its key (absorbed); on its last
        # attempt the system's record of the key decides it, without a further call.
        assert forward == ([Outcome.APPLIED, Outcome.ABSORBED] if max_attempts > 1
                           else [Outcome.APPLIED]), instance.instance_id
        assert calls(settings, instance, "compensation") == [
            ("reserve", Outcome.APPLIED), ("create_record", Outcome.APPLIED)]
        assert instance.rollback is not None
        assert instance.rollback.problems == ()
        assert instance.verdict is Verdict.COMPENSATED, instance.reason
    assert result.verdict.passed, result.verdict.failures
