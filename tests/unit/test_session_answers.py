"""The run's answers to waits, and a fault point reached in the same poll.

A step paused at a fault point stands for the instant a worker crashes. A decision the
harness sends after that instant goes to the broker, and a worker that is about to be
killed takes it (prefetches it) and dies with it: under Celery's defaults it then comes
back only after the visibility timeout, an hour, which a crash at that instant would
never cause. So in a poll where the fault's trigger holds, no answer is sent; the next
poll, once the fault fired, sends it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from graduate.adapters import describe
from graduate.adapters.base import Engine, InstanceState, InstanceStatus, Signal
from graduate.errors import EngineError
from graduate.flow import Step, load_flow
from graduate.ledger import Ledger
from graduate.runner import RunOptions
from graduate.runs.session import RunSession, new_request
from graduate.runs.timeline import Timeline
from graduate.runs.workers import WorkerControl
from graduate.services.provider import Stack

REPO = Path(__file__).resolve().parents[2]
FLOW = load_flow(REPO / "spikes" / "pmi_milestones.toml")


class WaitingEngine:
    """Reports every instance waiting at the first sign-off; records the signals sent."""

    name = "celery-state-machine"
    # Answers that follow the engine's looks: none sent before the instance waits.
    capabilities = replace(describe(name).capabilities, early_signals=False)

    def __init__(self) -> None:
        self.signals: list[tuple[str, str]] = []

    def statuses(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        return {iid: InstanceStatus(InstanceState.WAITING, ("open_plan", "day_one"), None,
                                    "day_one_signoff") for iid in instance_ids}

    def signal(self, instance_id: str, name: str, payload: dict[str, Any]) -> None:
        self.signals.append((instance_id, name))


def session(engine: WaitingEngine, tmp_path: Path) -> RunSession:
    options = RunOptions(flow=FLOW.name, engine=engine.name,
                         decisions={"day_one_signoff": "approve"})
    run = RunSession(flow=FLOW, options=options, run_id="r1", run_dir=tmp_path,
                     ledger=cast(Ledger, None), stack=cast(Stack, None),
                     engine=cast(Engine, engine), workers=cast(WorkerControl, None),
                     timeline=Timeline(), deadline=time.monotonic() + 30)
    run.requests.append(new_request(FLOW, "r1", 1, "t"))
    return run


def test_no_decision_is_sent_in_the_poll_where_the_fault_point_was_reached(
        tmp_path: Path) -> None:
    engine = WaitingEngine()

    session(engine, tmp_path).watch(time.monotonic() + 30, until=lambda statuses: True)

    assert engine.signals == []


def test_a_waiting_instance_is_answered_while_no_fault_point_is_reached(
        tmp_path: Path) -> None:
    engine = WaitingEngine()
    run = session(engine, tmp_path)
    polls = iter([False, True])

    run.watch(time.monotonic() + 30, until=lambda statuses: next(polls))

    assert engine.signals == [(run.instance_ids[0], "day_one_signoff")]


class TogetherEngine(WaitingEngine):
    """Sends signals together (`SignalsTogether`); the second of the first batch fails."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    def signal_all(self, signals: Sequence[Signal]) -> list[Exception | None]:
        self.batches.append([s.instance_id for s in signals])
        down = EngineError("the server is down")
        return [down if (len(self.batches), n) == (1, 1) else None for n in range(len(signals))]


def test_the_waits_found_in_one_look_are_answered_together_and_a_failed_one_again(
        tmp_path: Path) -> None:
    engine = TogetherEngine()
    run = session(engine, tmp_path)
    run.requests.extend(new_request(FLOW, "r1", n, "t") for n in (2, 3))
    polls = iter([False, False, True])

    run.watch(time.monotonic() + 30, until=lambda statuses: next(polls))

    first, second, third = run.instance_ids
    # One batch per look; the one the engine could not signal is sent again next look.
    assert engine.batches == [[first, second, third], [second]]
    assert engine.signals == []
    assert run.signalled == {(iid, "day_one_signoff") for iid in run.instance_ids}


class RunningEngine:
    """A chain-like engine (it keeps a signal sent before its wait) whose instances never
    report waiting: only the ledger can tell the harness that a wait is due."""

    name = "celery-chain"
    capabilities = describe(name).capabilities

    def __init__(self) -> None:
        self.signals: list[tuple[str, str]] = []

    def statuses(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        return {iid: InstanceStatus(InstanceState.RUNNING) for iid in instance_ids}

    def signal(self, instance_id: str, name: str, payload: dict[str, Any]) -> None:
        self.signals.append((instance_id, name))


def early_session(tmp_path: Path, *, arming: object = None) -> tuple[RunSession, RunningEngine]:
    engine = RunningEngine()
    options = RunOptions(flow=FLOW.name, engine=engine.name,
                         decisions={"invoicing_signoff": "approve"})
    ledger = Ledger(str(tmp_path / "ledger.sqlite3"))
    run = RunSession(flow=FLOW, options=options, run_id="r1", run_dir=tmp_path, ledger=ledger,
                     stack=cast(Stack, None), engine=cast(Engine, engine),
                     workers=cast(WorkerControl, None), timeline=Timeline(),
                     deadline=time.monotonic() + 30, arming=cast(Any, arming))
    run.requests.extend(new_request(FLOW, "r1", n, "t") for n in (1, 2))
    ledger.register_all(FLOW, run.requests, engine.name)
    return run, engine


def land(run: RunSession, number: int, step: str) -> None:
    request = run.requests[number]
    run.ledger.call(FLOW, request, cast(Step, FLOW.node(step)), attempt=1,
                    engine=run.engine.name)


def test_a_plain_run_answers_a_wait_once_the_step_before_it_landed(tmp_path: Path) -> None:
    run, engine = early_session(tmp_path)
    first = run.instance_ids[0]
    land(run, 0, "open_plan")
    polls = iter([False, False, False, True])

    run.watch(time.monotonic() + 30, until=lambda statuses: next(polls))
    assert engine.signals == []  # the step before the wait has not landed yet

    land(run, 0, "cut_over_invoicing")
    polls = iter([False, False, True])
    run.watch(time.monotonic() + 30, until=lambda statuses: next(polls))

    # Answered at the first look after it landed, once, and only that instance.
    assert engine.signals == [(first, "invoicing_signoff")]
    assert run.signalled == {(first, "invoicing_signoff")}


def test_a_chaos_run_answers_only_an_instance_that_waits(tmp_path: Path) -> None:
    class NoFault:
        def withheld(self, instance_id: str) -> tuple[str, ...]:
            return ()

    run, engine = early_session(tmp_path, arming=NoFault())
    land(run, 0, "cut_over_invoicing")
    polls = iter([False, True])

    run.watch(time.monotonic() + 30, until=lambda statuses: next(polls))

    assert engine.signals == []


def test_a_step_that_landed_twice_before_a_look_is_answered_once(tmp_path: Path) -> None:
    run, engine = early_session(tmp_path)
    first, second = run.instance_ids
    for number in (0, 0, 1):  # the first instance's step redelivered and absorbed
        land(run, number, "cut_over_invoicing")
    polls = iter([False, True])

    run.watch(time.monotonic() + 30, until=lambda statuses: next(polls))

    assert sorted(engine.signals) == [(first, "invoicing_signoff"),
                                      (second, "invoicing_signoff")]


def test_a_landing_read_by_a_watch_that_ends_before_it_answers_is_answered_by_the_next(
        tmp_path: Path) -> None:
    run, engine = early_session(tmp_path)
    first = run.instance_ids[0]
    land(run, 0, "cut_over_invoicing")

    run.watch(time.monotonic() + 30, until=lambda statuses: True)  # reads it, sends nothing
    assert engine.signals == []
    polls = iter([False, True])
    run.watch(time.monotonic() + 30, until=lambda statuses: next(polls))

    assert engine.signals == [(first, "invoicing_signoff")]


def test_an_instance_the_operator_cancelled_at_its_wait_gets_no_answer(
        tmp_path: Path) -> None:
    engine = WaitingEngine()
    run = session(engine, tmp_path)
    run.requests.append(new_request(FLOW, "r1", 2, "t"))
    cancelled, other = run.instance_ids

    class CancelledAtWait:
        """A rollback fired at the sign-off: the first instance's answer stays held."""

        def withheld(self, instance_id: str) -> tuple[str, ...]:
            return ("day_one_signoff",) if instance_id == cancelled else ()

    run.arming = cast(Any, CancelledAtWait())
    polls = iter([False, True])

    run.watch(time.monotonic() + 30, until=lambda statuses: next(polls))

    assert engine.signals == [(other, "day_one_signoff")]
