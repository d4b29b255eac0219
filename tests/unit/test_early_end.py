"""A run ends early only on a proof made twice: once every unfinished instance is
provably lost, held up past the deadline or parked, the next round proves it again and
reads the engine and the ledger afresh, and an instance that moved in between (a new
row in the ledger, a task started, a finish recorded) is never judged on the first
round's look.

What fails without it: a celery-chain instance whose last step had been applied in the
ledger was judged held up (stuck) while its finish task was still on its way; its
result backend still said PENDING, and a message a replacement worker had just taken
still carried the dead worker's mark.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from graduate.adapters.base import HeldUp, InstanceState, InstanceStatus
from graduate.chaos import harness
from graduate.chaos.harness import _Settled

IID = "approval-r1-01"
AT_FINISH = InstanceStatus(InstanceState.RUNNING, ("create", "notify"),
                           detail="at finish: PENDING")
FINISHING = InstanceStatus(InstanceState.RUNNING, ("create", "notify"),
                           detail="at finish: STARTED")


@dataclass
class _Row:
    instance_id: str


@dataclass
class _Ledger:
    rows: list[_Row] = field(default_factory=list)

    def effects(self, *, run_id: str | None = None, **_: Any) -> list[_Row]:
        return list(self.rows)


@dataclass
class _Engine:
    """Held up to the far future by a message a dead worker took (as it looks while a
    replacement worker takes the message back), and whatever status the test sets."""

    now: InstanceStatus = AT_FINISH
    name: str = "celery-chain"
    until: float = field(default_factory=lambda: time.time() + 3600)

    def status(self, instance_id: str) -> InstanceStatus:
        return self.now

    def holds(self, instance_id: str) -> bool:
        return not self.now.state.finished

    def held_until(self, instance_id: str) -> HeldUp | None:
        return None if self.now.state.finished else HeldUp(self.until, "a dead worker's")


@dataclass
class _Session:
    engine: _Engine
    ledger: _Ledger
    run_id: str = "r1"


@pytest.fixture(autouse=True)
def every_round(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "SETTLED_CHECK", 0.0)  # each call is a round


def settled(engine: _Engine, ledger: _Ledger) -> _Settled:
    session = cast(Any, _Session(engine, ledger))
    return _Settled(session, first_start=time.monotonic(),
                    deadline=time.monotonic() + 60)


def test_a_proof_made_once_does_not_end_the_run() -> None:
    until = settled(_Engine(), _Ledger())
    assert not until({IID: AT_FINISH})
    assert until.proof == ""


def test_a_proof_made_again_on_the_same_engine_and_ledger_ends_the_run() -> None:
    engine, ledger = _Engine(), _Ledger([_Row(IID)])
    until = settled(engine, ledger)
    assert not until({IID: AT_FINISH})
    assert until({IID: AT_FINISH})
    assert until.proof.startswith(f"ended early: nothing can move {IID}")
    assert set(until.held) == {IID}


def test_a_ledger_row_written_between_the_rounds_restarts_the_proof() -> None:
    engine, ledger = _Engine(), _Ledger([_Row(IID)])
    until = settled(engine, ledger)
    assert not until({IID: AT_FINISH})
    ledger.rows.append(_Row(IID))  # notify applied while the batched status lagged
    assert not until({IID: AT_FINISH})
    assert until.proof == ""
    assert until({IID: AT_FINISH})  # nothing moved since: proven


def test_a_task_started_between_the_rounds_restarts_the_proof() -> None:
    engine = _Engine()
    until = settled(engine, _Ledger())
    assert not until({IID: AT_FINISH})
    engine.now = FINISHING  # the batched status the harness passes still lags
    assert not until({IID: AT_FINISH})
    assert until.proof == ""


def test_a_message_taken_again_between_the_rounds_restarts_the_proof() -> None:
    engine = _Engine()
    until = settled(engine, _Ledger())
    assert not until({IID: AT_FINISH})
    engine.until += 5  # a worker took it again: held from a later moment
    assert not until({IID: AT_FINISH})


def test_an_instance_that_finished_between_the_rounds_is_not_judged_held() -> None:
    engine = _Engine()
    until = settled(engine, _Ledger())
    assert not until({IID: AT_FINISH})
    engine.now = InstanceStatus(InstanceState.COMPLETED, ("create", "notify"),
                                finished_at=time.time())
    for _ in range(3):
        assert not until({IID: AT_FINISH})
    assert until.held == {}
