"""The run asks the engine only about the instances due (docs/adr/0017): one whose
effect landed in the ledger at once, one whose status changed soon again, and every
other one at least every REVISIT_AT_MOST seconds, so that what leaves no ledger row (a
finish after the last effect, a park at a wait, a failure) is still seen."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from tests.unit.conftest import SAMPLE

from graduate.adapters.base import Capabilities, Engine, InstanceState, InstanceStatus
from graduate.flow import InstanceRequest, Step, load_flow
from graduate.ledger import Ledger
from graduate.runner import Decision, RunOptions
from graduate.runs.session import (
    FINISH_LOOK_AFTER,
    POLL_INTERVAL,
    REVISIT_AT_MOST,
    REVISITS_PER_SECOND,
    Revisits,
    RunSession,
    new_request,
    steps_ending_the_flow,
    steps_followed_by_steps,
)
from graduate.runs.timeline import Timeline

FLOW = load_flow(SAMPLE)
FIRST_STEP = next(node for node in FLOW.nodes if isinstance(node, Step))
# The step before the approval wait: once it lands the instance may park, leaving no row.
BEFORE_WAIT = next(node for node in FLOW.nodes
                   if isinstance(node, Step) and node.name == "request_approval")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def registered(ledger: Ledger, count: int) -> list[InstanceRequest]:
    requests = [new_request(FLOW, "r1", n, "t") for n in range(1, count + 1)]
    ledger.register_all(FLOW, requests, "fake")
    return requests


def land(ledger: Ledger, request: InstanceRequest, step: Step = FIRST_STEP) -> None:
    """An effect of the instance's `step` (its first) lands in the ledger."""
    ledger.call(FLOW, request, step, attempt=1, engine="fake")


def running(instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
    return {iid: InstanceStatus(InstanceState.RUNNING) for iid in instance_ids}


def first_look_at_one(tmp_path: Path) -> tuple[Ledger, InstanceRequest, Clock, Revisits]:
    """One registered instance, which the first look asks the engine about."""
    ledger = Ledger(str(tmp_path / "ledger.sqlite3"))
    (request,) = registered(ledger, 1)
    clock = Clock()
    revisits = Revisits(ledger, "r1", clock)
    assert revisits.due([request.instance_id], {}) == [request.instance_id]
    return ledger, request, clock, revisits


def test_every_instance_is_due_at_the_first_look_then_only_those_whose_effects_landed(
        tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path / "ledger.sqlite3"))
    first, second, third = registered(ledger, 3)
    ids = [first.instance_id, second.instance_id, third.instance_id]
    clock = Clock()
    revisits = Revisits(ledger, "r1", clock)

    assert revisits.due(ids, {}) == ids
    revisits.looked(dict.fromkeys(ids, True))
    known = running(ids)
    assert revisits.due(ids, known) == []

    land(ledger, second)
    assert revisits.due(ids, known) == [second.instance_id]
    revisits.looked({second.instance_id: True})
    assert revisits.due(ids, known) == []  # its row is read once


def test_an_unchanged_instance_is_looked_at_less_and_less_often_up_to_a_bound(
        tmp_path: Path) -> None:
    _, request, clock, revisits = first_look_at_one(tmp_path)
    iid = request.instance_id
    known = running([iid])
    revisits.looked({iid: True})

    gaps: list[float] = []
    last = clock.now
    while len(gaps) < 8:
        clock.now += POLL_INTERVAL / 4
        if revisits.due([iid], known):
            gaps.append(round(clock.now - last, 3))
            last = clock.now
            revisits.looked({iid: False})

    # Each gap at least the one before, none past the bound, and the bound reached.
    assert gaps == sorted(gaps)
    assert gaps[0] <= 2 * POLL_INTERVAL
    assert max(gaps) <= REVISIT_AT_MOST + POLL_INTERVAL / 4
    assert gaps[-1] >= REVISIT_AT_MOST
    # A change brings it back to a look every POLL_INTERVAL.
    revisits.looked({iid: True})
    clock.now += POLL_INTERVAL
    assert revisits.due([iid], known) == [iid]


def test_an_effect_that_lands_makes_an_idle_instance_due_at_once(tmp_path: Path) -> None:
    ledger, request, clock, revisits = first_look_at_one(tmp_path)
    iid = request.instance_id
    known = running([iid])
    for _ in range(6):  # idle: its gap grows to the bound
        clock.now += REVISIT_AT_MOST
        assert revisits.due([iid], known) == [iid]
        revisits.looked({iid: False})

    land(ledger, request)
    assert revisits.due([iid], known) == [iid]


def test_a_ledger_that_does_not_answer_makes_every_instance_due(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path / "ledger.sqlite3"))
    requests = registered(ledger, 2)
    ids = [r.instance_id for r in requests]
    revisits = Revisits(ledger, "r1", Clock())
    revisits.due(ids, {})
    revisits.looked(dict.fromkeys(ids, True))
    ledger.db.execute("DROP TABLE effects")

    assert revisits.due(ids, running(ids)) == ids


class MovingEngine:
    """Instance 1 lands an effect at each look at it; both finish, without a ledger row,
    at a given look of their own; every look is counted per instance."""

    name = "moving"

    def __init__(self, ledger: Ledger, requests: list[InstanceRequest],
                 finish_at: dict[str, int]) -> None:
        self.ledger, self.requests, self.finish_at = ledger, requests, finish_at
        self.looks: Counter[str] = Counter()

    def statuses(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        read = {}
        for iid in instance_ids:
            self.looks[iid] += 1
            finished = self.looks[iid] >= self.finish_at[iid]
            read[iid] = InstanceStatus(InstanceState.COMPLETED if finished
                                       else InstanceState.RUNNING)
            if iid == self.requests[0].instance_id and not finished:
                land(self.ledger, self.requests[0], BEFORE_WAIT)
        return read


def test_the_watch_asks_about_the_instance_that_moves_and_still_sees_the_idle_one_finish(
        tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path / "ledger.sqlite3"))
    busy, idle = registered(ledger, 2)
    # The idle instance finishes at its fifth look, with no row in the ledger: after
    # gaps of about 0.1, 0.2, 0.4 and 0.8 s; the busy one lands an effect at each look.
    engine = MovingEngine(ledger, [busy, idle], {busy.instance_id: 40, idle.instance_id: 5})
    nothing = cast(Any, None)
    session = RunSession(flow=FLOW, options=RunOptions(flow=str(SAMPLE), engine="moving",
                                                       instances=2),
                         run_id="r1", run_dir=tmp_path, ledger=ledger, stack=nothing,
                         engine=cast(Engine, engine), workers=nothing, timeline=Timeline(),
                         deadline=time.monotonic() + 60, requests=[busy, idle])

    statuses = session.watch(time.monotonic() + 60)

    assert {s.state for s in statuses.values()} == {InstanceState.COMPLETED}
    assert engine.looks[busy.instance_id] == 40
    # Asked about eight times less often than the one that moved at every look, and not
    # once after it finished.
    assert engine.looks[idle.instance_id] == 5


def idle(revisits: Revisits, ids: list[str], known: dict[str, InstanceStatus],
         clock: Clock) -> None:
    """Look at every instance until each has backed off to REVISIT_AT_MOST unchanged
    (while it backs off after a change it is due whatever the budget)."""
    for _ in range(8):
        clock.now += REVISIT_AT_MOST
        revisits.looked(dict.fromkeys(revisits.due(ids, known), False))
    clock.now += POLL_INTERVAL
    revisits.looked(dict.fromkeys(revisits.due(ids, known), False))


def test_revisits_are_asked_within_a_budget_a_second_and_none_is_starved(
        tmp_path: Path) -> None:
    """At thousands in flight a 2 s revisit of each was thousands of status reads a
    second (docs/adr/0024): unchanged instances are revisited at most
    REVISITS_PER_SECOND a second, the longest due first, so each still comes round."""
    ledger = Ledger(str(tmp_path / "ledger.sqlite3"))
    count = int(4 * REVISITS_PER_SECOND * REVISIT_AT_MOST)
    requests = registered(ledger, count)
    ids = [r.instance_id for r in requests]
    clock = Clock()
    revisits = Revisits(ledger, "r1", clock)
    assert revisits.due(ids, {}) == ids  # the first look: every one, whatever the budget
    revisits.looked(dict.fromkeys(ids, True))
    known = running(ids)
    idle(revisits, ids, known, clock)

    seconds, asked = 30.0, Counter[str]()
    last_asked = dict.fromkeys(ids, clock.now)
    longest, since = 0.0, clock.now
    while clock.now < since + seconds:
        clock.now += POLL_INTERVAL
        due = revisits.due(ids, known)
        asked.update(due)
        for iid in due:
            longest = max(longest, clock.now - last_asked[iid])
            last_asked[iid] = clock.now
        revisits.looked(dict.fromkeys(due, False))

    assert sum(asked.values()) <= REVISITS_PER_SECOND * (seconds + 1)
    # Every one asked again, none left longer than its share of the budget allows.
    assert set(asked) == set(ids)
    assert longest <= count / REVISITS_PER_SECOND + REVISIT_AT_MOST


def test_an_instance_that_moves_is_asked_at_once_when_the_budget_is_spent(
        tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path / "ledger.sqlite3"))
    requests = registered(ledger, int(3 * REVISITS_PER_SECOND * REVISIT_AT_MOST))
    ids = [r.instance_id for r in requests]
    clock = Clock()
    revisits = Revisits(ledger, "r1", clock)
    revisits.due(ids, {})
    revisits.looked(dict.fromkeys(ids, True))
    known = running(ids)
    idle(revisits, ids, known, clock)
    clock.now += REVISIT_AT_MOST  # every one due again: more than the budget allows
    first = revisits.due(ids, known)
    assert len(first) <= REVISITS_PER_SECOND * (REVISIT_AT_MOST + 1) < len(ids)
    revisits.looked(dict.fromkeys(first, False))

    land(ledger, requests[-1])
    revisits.nudge(requests[-2].instance_id)  # a signal sent to it
    assert revisits.due(ids, known) == [requests[-2].instance_id, requests[-1].instance_id]


def test_a_step_followed_by_a_step_asks_for_no_look_and_one_before_a_wait_does(
        tmp_path: Path) -> None:
    """A step whose next node is another step leaves what follows in the ledger too (the
    next step's call, whatever its outcome): its landing makes the instance due on its
    revisit, not at once (docs/adr/0024). The step before a wait (a park leaves no row)
    and the last step (so does a finish) still do."""
    ledger = Ledger(str(tmp_path / "ledger.sqlite3"))
    (request,) = registered(ledger, 1)
    iid = request.instance_id
    clock = Clock()
    revisits = Revisits(ledger, "r1", clock, passing=steps_followed_by_steps(FLOW))
    assert steps_followed_by_steps(FLOW) == {"create_record", "activate"}
    revisits.due([iid], {})
    revisits.looked({iid: True})
    known = running([iid])
    for _ in range(6):  # idle: its gap grows to the bound
        clock.now += REVISIT_AT_MOST
        revisits.due([iid], known)
        revisits.looked({iid: False})
    clock.now += POLL_INTERVAL

    land(ledger, request)
    assert revisits.due([iid], known) == []
    land(ledger, request, BEFORE_WAIT)
    assert revisits.due([iid], known) == [iid]


class IdleEngine:
    """Every instance runs and never moves; every look is counted per instance."""

    name = "idle"

    def __init__(self) -> None:
        self.looks: Counter[str] = Counter()

    def statuses(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        self.looks.update(instance_ids)
        return running(instance_ids)


def test_a_first_look_starts_an_instance_idle_not_backing_off(tmp_path: Path) -> None:
    """A watch's first look at instances never looked at is no change to follow up
    (docs/adr/0024): each is next asked about on its idle revisit, not 0.1, 0.3, 0.7 and
    1.5 s later (at 5,000 instances, 25,000 describes in seconds)."""
    ledger = Ledger(str(tmp_path / "ledger.sqlite3"))
    requests = registered(ledger, 20)
    engine = IdleEngine()
    nothing = cast(Any, None)
    session = RunSession(flow=FLOW, options=RunOptions(flow=str(SAMPLE), engine="idle",
                                                       instances=len(requests)),
                         run_id="r1", run_dir=tmp_path, ledger=ledger, stack=nothing,
                         engine=cast(Engine, engine), workers=nothing, timeline=Timeline(),
                         deadline=time.monotonic() + 60, requests=requests)

    session.watch(time.monotonic() + REVISIT_AT_MOST * 0.8)

    assert engine.looks == Counter({r.instance_id: 1 for r in requests})


def test_after_a_long_pause_an_unchanged_instance_is_idle_at_once(tmp_path: Path) -> None:
    """Looks paced tens of seconds apart (a look of thousands) do not make an unchanged
    instance back off over five more looks of everyone: the backoff doubles the time
    since its last look (docs/adr/0024)."""
    _, request, clock, revisits = first_look_at_one(tmp_path)
    iid = request.instance_id
    known = running([iid])
    revisits.looked({iid: True})  # changed: due again POLL_INTERVAL later...
    clock.now += 30.0  # ...but the next look comes 30 s later, and finds it unchanged
    assert revisits.due([iid], known) == [iid]
    revisits.looked({iid: False})

    clock.now += REVISIT_AT_MOST / 2
    assert revisits.due([iid], known) == []
    clock.now += REVISIT_AT_MOST / 2
    assert revisits.due([iid], known) == [iid]


class AnsweringEngine(IdleEngine):
    """An idle engine that keeps a signal sent before its wait; each signal is kept."""

    capabilities = Capabilities(durable_progress=True, signals=True, timers=True,
                                compensation=True, versioning=False, early_signals=True)

    def __init__(self) -> None:
        super().__init__()
        self.signals: list[tuple[str, str, dict[str, Any]]] = []

    def signal(self, instance_id: str, name: str, payload: dict[str, Any]) -> None:
        self.signals.append((instance_id, name, payload))


def answering_session(tmp_path: Path, decision: Decision,
                      ) -> tuple[RunSession, AnsweringEngine, InstanceRequest]:
    """A plain run (no fault plan) of one instance, looked at once and idle since."""
    ledger = Ledger(str(tmp_path / "ledger.sqlite3"))
    (request,) = registered(ledger, 1)
    engine = AnsweringEngine()
    nothing = cast(Any, None)
    session = RunSession(flow=FLOW, options=RunOptions(flow=str(SAMPLE), engine="idle",
                                                       instances=1,
                                                       decisions={"approval": decision}),
                         run_id="r1", run_dir=tmp_path, ledger=ledger, stack=nothing,
                         engine=cast(Engine, engine), workers=nothing, timeline=Timeline(),
                         deadline=time.monotonic() + 60, requests=[request])
    clock = Clock()
    session.revisits.clock = clock
    iid = request.instance_id
    session.revisits.due([iid], {})
    session.revisits.looked({iid: False}, first=[iid])
    clock.now += POLL_INTERVAL
    return session, engine, request


def test_a_run_that_answers_early_asks_for_no_look_when_its_approval_moves_the_instance_on(
        tmp_path: Path) -> None:
    """In a run that answers a wait from the ledger (no fault plan, an engine that keeps
    an early signal), the step before the wait lands and the approval is sent at once;
    the wait's next node is a step, whose call lands in the ledger too: neither the
    landing nor the answer makes the instance due before its revisit (docs/adr/0027)."""
    session, engine, request = answering_session(tmp_path, "approve")
    iid = request.instance_id
    known = running([iid])
    land(session.ledger, request, BEFORE_WAIT)

    assert session.revisits.due([iid], known) == []
    session._answer(known)
    assert engine.signals == [(iid, "approval", {"decision": "approve"})]
    assert session.revisits.due([iid], known) == []
    # The last step: its finish leaves no row, and comes once its call returned.
    land(session.ledger, request, FLOW.steps[-1])
    assert session.revisits.due([iid], known) == []
    cast(Clock, session.revisits.clock).now += FINISH_LOOK_AFTER
    assert session.revisits.due([iid], known) == [iid]


def test_a_rejection_sent_early_still_asks_for_a_look_at_once(tmp_path: Path) -> None:
    """A rejection may fail the instance with no row (`on_reject = "fail"`): the step
    before the wait and the answer each make it due at once, as before."""
    session, engine, request = answering_session(tmp_path, "reject")
    iid = request.instance_id
    known = running([iid])
    land(session.ledger, request, BEFORE_WAIT)

    assert session.revisits.due([iid], known) == [iid]
    session.revisits.looked({iid: False})
    session._answer(known)
    assert engine.signals == [(iid, "approval", {"decision": "reject"})]
    assert session.revisits.due([iid], known) == [iid]


class StartingEngine(IdleEngine):
    """An idle engine that starts instances (and counts each look)."""

    def start(self, request: InstanceRequest) -> None:
        del request


def test_a_plain_runs_first_watch_asks_nothing_about_the_instances_it_just_started(
        tmp_path: Path) -> None:
    """An instance a run with no fault plan started runs as of its start's answer: the
    first watch takes that, and asks about it on its idle revisit (docs/adr/0027); the
    instances of another watch are read at its first look, as before."""
    ledger = Ledger(str(tmp_path / "ledger.sqlite3"))
    engine = StartingEngine()
    nothing = cast(Any, None)
    seen: list[tuple[str, InstanceState]] = []
    session = RunSession(flow=FLOW, options=RunOptions(flow=str(SAMPLE), engine="idle",
                                                       instances=20),
                         run_id="r1", run_dir=tmp_path, ledger=ledger, stack=nothing,
                         engine=cast(Engine, engine), workers=nothing, timeline=Timeline(),
                         deadline=time.monotonic() + 60)
    session.start_instances()

    statuses = session.watch(time.monotonic() + REVISIT_AT_MOST * 0.8,
                             on_status=lambda iid, status: seen.append((iid, status.state)))

    assert engine.looks == Counter()
    assert statuses == running(session.instance_ids)
    assert seen == [(iid, InstanceState.RUNNING) for iid in session.instance_ids]
    session.watch(time.monotonic() + REVISIT_AT_MOST * 0.8)
    assert engine.looks == Counter(session.instance_ids)


def test_the_last_step_landing_asks_for_a_look_a_moment_later(
        tmp_path: Path) -> None:
    """The flow's last step lands while its call runs; the instance finishes once the
    call returned: it is due FINISH_LOOK_AFTER later, not at once, outside the budget
    of idle revisits, as one backing off is (docs/adr/0027). Any other row still makes
    it due at once."""
    ledger = Ledger(str(tmp_path / "ledger.sqlite3"))
    requests = registered(ledger, 3)
    ids = [r.instance_id for r in requests]
    clock = Clock()
    revisits = Revisits(ledger, "r1", clock, passing=steps_followed_by_steps(FLOW),
                        finishing=steps_ending_the_flow(FLOW))
    assert steps_ending_the_flow(FLOW) == {"notify"}
    known = running(ids)
    idle(revisits, ids, known, clock)

    land(ledger, requests[0], FLOW.steps[-1])
    land(ledger, requests[1], BEFORE_WAIT)
    assert revisits.due(ids, known) == [ids[1]]
    revisits.looked({ids[1]: False})
    clock.now += FINISH_LOOK_AFTER / 2
    assert ids[0] not in revisits.due(ids, known)  # (the other follows its move up)
    clock.now += FINISH_LOOK_AFTER / 2
    assert ids[0] in revisits.due(ids, known)
    assert ids[2] not in revisits.due(ids, known)
