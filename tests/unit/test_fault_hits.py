"""Which instances a firing hit, when the fault is to hit every instance: those paused
at the point when it fired and those its release let go, so that the fault fires again
only for an instance that reached the point after an earlier firing's release.

The instances' calls pause at the point in threads of this process, through the same
ledger rows a worker's call uses; no engine runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import pytest

from graduate.adapters.base import InstanceState, InstanceStatus
from graduate.chaos.faults import Fault, FaultContext, FaultPlan
from graduate.chaos.harness import _fire, _release_all
from graduate.ledger import Ledger, PausePoint
from graduate.runs.timeline import Timeline

if TYPE_CHECKING:
    from graduate.runs.session import RunSession

STEP = "create"
POINT: PausePoint = "before-effect"
A, B, C = "inst-a", "inst-b", "inst-c"


@dataclass
class _Session:
    """What `_fire` reads of a run session: its ledger, its instances, and a watch
    that asks its condition once (every instance is running)."""

    ledger: Ledger
    instance_ids: list[str]
    timeline: Timeline = field(default_factory=Timeline)

    def watch(self, deadline: float, *, until: Callable[[dict[str, InstanceStatus]], bool],
              **_: Any) -> dict[str, InstanceStatus]:
        statuses = {i: InstanceStatus(InstanceState.RUNNING) for i in self.instance_ids}
        until(statuses)
        return statuses

    def owes_interrupt(self, instance_id: str, step: str) -> bool:
        return False  # the runs here place no interrupt


class _Calls:
    """Calls of STEP, each paused at the point in a thread until the harness lets it go."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.threads: list[threading.Thread] = []

    def reach(self, instance_id: str) -> None:
        """Start the instance's call and return once it is paused at the point."""
        thread = threading.Thread(target=self._pause, args=(instance_id,), daemon=True)
        thread.start()
        self.threads.append(thread)
        deadline = time.monotonic() + 10
        ledger = Ledger(self.path)
        try:
            while ledger.reached(instance_id, STEP, POINT) is None:
                assert time.monotonic() < deadline, f"{instance_id} never reached the point"
                time.sleep(0.01)
        finally:
            ledger.close()

    def _pause(self, instance_id: str) -> None:
        ledger = Ledger(self.path)
        try:
            ledger.pause_at(instance_id, STEP, POINT)
        finally:
            ledger.close()


class _Firing(Fault):
    """A fault that records which instance each firing was for, and runs `during` (what
    the instances do while it fires) around its release."""

    name = "test-firing"
    description = "records its firings"

    def __init__(self, during: Callable[[int, Callable[[], None]], None]) -> None:
        self.during = during
        self.fired_for: list[str | None] = []

    def fire(self, context: FaultContext) -> None:
        self.fired_for.append(None if context.reached is None else context.reached.instance_id)
        self.during(len(self.fired_for), context.release)


@pytest.fixture
def calls(ledger: Ledger, ledger_path: str) -> Iterator[_Calls]:
    for instance_id in (A, B, C):
        ledger.arm(instance_id, STEP, POINT)
    running = _Calls(ledger_path)
    yield running
    for instance_id in (A, B, C):
        ledger.release(instance_id, STEP, POINT)
    for thread in running.threads:
        thread.join(timeout=10)


def fire_for_every_instance(ledger: Ledger, fault: _Firing) -> None:
    """Fire `fault` as the harness does once A reached the point, to hit every instance."""
    session = cast("RunSession", _Session(ledger, [A, B, C]))
    plan = FaultPlan(fault, step=STEP, point=POINT, hit="all")
    let_go: set[str] = set()
    context = FaultContext(session, plan, ledger.reached(A, STEP, POINT), proxies=(),
                           release=lambda: let_go.update(_release_all(session, plan)))
    _fire(session, plan, context, session.timeline, time.monotonic() + 30, let_go)


def test_an_instance_that_reached_the_point_while_the_fault_fired_is_hit_by_that_firing(
        ledger: Ledger, calls: _Calls) -> None:
    """B gets to the point after the harness saw who was paused, before the release: the
    release lets it go with A, so no second firing is for B (a second partition, kill or
    stop would cut off the step it already went on with). C gets there after the
    release: the next firing is for C, and there is no third."""
    def during(firing: int, release: Callable[[], None]) -> None:
        if firing == 1:
            calls.reach(B)
            release()
            calls.reach(C)
        else:
            release()

    calls.reach(A)
    fault = _Firing(during)
    fire_for_every_instance(ledger, fault)

    assert fault.fired_for == [A, C]
