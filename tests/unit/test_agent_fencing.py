"""An agent fenced off by a newer one under the same name must end as fenced (the CLI's
exit 2), even when its heartbeat finds out while the command loop is idle: the heartbeat
also stops the loop, which then ends at its condition, not at its fencing check (seen in
a CI rehearsal as `graduate worker` exiting 0)."""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest

from graduate.fleet import agent as agent_module
from graduate.fleet.agent import Agent
from graduate.fleet.ledger import Fenced, FleetLedger


class FencedLedger:
    """Commands never come; the first heartbeat learns that a newer agent took over."""

    def __init__(self) -> None:
        self.takes = 0

    def take(self, worker: object) -> None:
        self.takes += 1

    def heartbeat(self, worker_id: str, *, epoch: int | None = None) -> None:
        raise Fenced(f"worker {worker_id}: epoch {epoch} was replaced by epoch 2")

    @staticmethod
    def connection_errors() -> tuple[type[Exception], ...]:
        return (ConnectionError,)


class Registered:
    worker_id = "w1"
    epoch = 1


def test_a_heartbeat_that_finds_the_agent_fenced_ends_its_loop_as_fenced(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_module, "HEARTBEAT_INTERVAL", 0.05)
    ledger = FencedLedger()
    agent = Agent.__new__(Agent)
    agent.fleet = cast(FleetLedger, ledger)
    agent.registered = cast(Any, Registered())
    agent.fenced = None
    stop = threading.Event()

    with pytest.raises(Fenced, match="replaced by epoch 2"):
        agent.serve(stop)

    assert stop.is_set()
    assert ledger.takes >= 1
