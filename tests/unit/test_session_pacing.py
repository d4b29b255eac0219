"""The harness's looks at the instances pace themselves: after a look that took long
(thousands of instances, a status call each), it pauses at least twice as long, so it
spends at most a third of the time looking, on the cores the workers need; after a quick
look (tens of instances) it looks again at once, so waits are answered without delay."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from tests.unit.conftest import SAMPLE

from graduate.adapters.base import InstanceState, InstanceStatus
from graduate.flow import load_flow
from graduate.runner import RunOptions
from graduate.runs.session import (
    LOOK_PAUSE_FACTOR,
    PACED_AFTER,
    POLL_INTERVAL,
    RunSession,
    new_request,
    pause_after,
)

LOOK = PACED_AFTER + 0.1  # seconds each look at the instances takes


class SlowEngine:
    """An engine whose status calls take LOOK seconds; it records when each began."""

    name = "slow"

    def __init__(self) -> None:
        self.looks: list[float] = []

    def statuses(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        self.looks.append(time.monotonic())
        time.sleep(LOOK)
        return {iid: InstanceStatus(InstanceState.RUNNING) for iid in instance_ids}


def test_after_a_long_look_the_harness_pauses_twice_as_long(tmp_path: Path) -> None:
    flow = load_flow(SAMPLE)
    engine = SlowEngine()
    nothing = cast(Any, None)
    session = RunSession(flow=flow, options=RunOptions(flow=str(SAMPLE), engine="slow",
                                                       instances=2),
                         run_id="r1", run_dir=tmp_path, ledger=nothing, stack=nothing,
                         engine=cast(Any, engine), workers=nothing, timeline=nothing,
                         deadline=time.monotonic() + 60,
                         requests=[new_request(flow, "r1", n, "t") for n in (1, 2)])

    session.watch(time.monotonic() + 3 * LOOK * (1 + LOOK_PAUSE_FACTOR))

    gaps = [b - a for a, b in zip(engine.looks, engine.looks[1:], strict=False)]
    assert len(gaps) >= 2
    # Each look (LOOK) and the pause after it (twice LOOK); the last pause is cut short
    # by the deadline.
    assert min(gaps[:-1]) >= LOOK * (1 + LOOK_PAUSE_FACTOR) * 0.95


def test_after_a_quick_look_the_harness_looks_again_at_once() -> None:
    assert pause_after(PACED_AFTER / 2) == POLL_INTERVAL
    assert pause_after(PACED_AFTER * 4) == LOOK_PAUSE_FACTOR * PACED_AFTER * 4
