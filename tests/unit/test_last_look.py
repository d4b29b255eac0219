"""The last look before a run is judged (issue 16): what holds each unfinished instance
is asked before its status is read again, so an instance that finishes in between is
judged finished, never lost.

What failed without it: 3,401 of 5,000 celery-chain instances whose finish task ran
while the run was being judged (after its deadline) were judged lost. Their statuses
were read first (running), and `holds()`, asked a minute later, said "no" because by
then they had finished, which is what a chain's `holds()` says of a finished instance.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from graduate.adapters.base import HistoryEvent, InstanceState, InstanceStatus, ReadsTogether
from graduate.chaos.harness import _last_look, _Settled
from graduate.runs.session import RunSession

IID = "scale_4_steps-r1-1601"
RUNNING = InstanceStatus(InstanceState.RUNNING, ("create_record", "apply_02"),
                         detail="at finish")
DONE = InstanceStatus(InstanceState.COMPLETED, ("create_record", "apply_02"),
                      finished_at=time.time())


@dataclass
class _Engine:
    """An instance whose finish lands at the moment `holds` is asked (`finishes`), or
    that nothing holds any more and never moves again."""

    finishes: bool
    now: InstanceStatus = RUNNING
    name: str = "celery-chain"

    def holds(self, instance_id: str) -> bool:
        if self.finishes:
            self.now = DONE
        return not self.now.state.finished

    def status(self, instance_id: str) -> InstanceStatus:
        return self.now


@dataclass
class _Together(_Engine):
    """The same, read together (`ReadsTogether`)."""

    def holds_all(self, instance_ids: Sequence[str]) -> dict[str, bool | Exception]:
        return {iid: self.holds(iid) for iid in instance_ids}

    def statuses_alone(self, instance_ids: Sequence[str],
                       ) -> dict[str, InstanceStatus | Exception]:
        return {iid: self.status(iid) for iid in instance_ids}

    def histories(self, instance_ids: Sequence[str],
                  ) -> dict[str, list[HistoryEvent] | Exception]:
        return {iid: [] for iid in instance_ids}


@dataclass
class _Session:
    engine: _Engine

    def exact(self, statuses: dict[str, InstanceStatus]) -> dict[str, InstanceStatus]:
        return RunSession.exact(cast(Any, self), statuses)


def last_look(engine: _Engine) -> tuple[dict[str, InstanceStatus],
                                        dict[str, tuple[bool | None, str]]]:
    return _last_look(cast(Any, _Session(engine)), {IID: RUNNING}, {})


def test_an_instance_that_finishes_while_it_is_judged_is_judged_finished() -> None:
    for engine in (_Engine(finishes=True), _Together(finishes=True)):
        statuses, holds = last_look(engine)

        assert statuses[IID].state is InstanceState.COMPLETED
        assert holds == {}


def test_an_instance_nothing_holds_that_stays_unfinished_is_still_lost() -> None:
    for engine in (_Engine(finishes=False, now=RUNNING), _Together(finishes=False)):
        engine.holds = lambda instance_id: False  # type: ignore[method-assign]

        statuses, holds = last_look(engine)

        assert statuses[IID].state is InstanceState.RUNNING
        assert holds == {IID: (False, "")}


def test_the_together_fake_is_read_together() -> None:
    assert isinstance(_Together(finishes=False), ReadsTogether)
    assert not isinstance(_Engine(finishes=False), ReadsTogether)


def test_no_early_end_is_proven_past_the_deadline() -> None:
    """Past the deadline the run ends anyway: a proof (a holds() and a status read of
    every unfinished instance, twice) would only delay its judging."""
    engine = _Engine(finishes=False)
    engine.holds = lambda instance_id: False  # type: ignore[method-assign]
    until = _Settled(cast(Any, _Session(engine)), first_start=time.monotonic() - 10,
                     deadline=time.monotonic() - 1)

    assert not until({IID: RUNNING})
    assert until.proof == ""
