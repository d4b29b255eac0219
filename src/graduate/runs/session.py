"""A run in progress: its flow, services, engine, workers and instances.

This is the path of a run (DESIGN.md): resolve the services, let the supervisor start
the workers in their own process groups (or, with `--workers external`, wait for enough
workers registered by `graduate worker` on any host), register and start each instance with its
correlation and trace IDs, answer its waits if asked to, and wait until every instance
has finished or the run's deadline passes. Whatever happens, every process the run
started is stopped when the session closes.

A plain run and a chaos run differ only in what they give the session when it opens
(a fault plan's `Arming`, a timeline) and in what they do between starting the
instances and judging them.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import secrets
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from graduate.adapters import check_engine, needs, open_engine
from graduate.adapters.base import (
    Engine,
    InstanceState,
    InstanceStatus,
    ReadsTogether,
    Signal,
    SignalsTogether,
    StartsTogether,
)
from graduate.apps import check_app
from graduate.config import Settings
from graduate.errors import ConfigError
from graduate.flow import (
    Flow,
    InstanceRequest,
    Step,
    Wait,
    check_seconds,
    declared_name,
    load_flow,
)
from graduate.ledger import Ledger, PausePoint
from graduate.processes import ready_by
from graduate.runs.supervisor import Supervisor
from graduate.runs.timeline import SIGNAL_SENT, Timeline
from graduate.runs.workers import LocalWorkers, WorkerControl
from graduate.services.model import Services
from graduate.services.provider import Stack, open_stack
from graduate.timescale import TimeScaleRecord, scaled_flow

if TYPE_CHECKING:
    from graduate.runner import RunOptions

POLL_INTERVAL = 0.1
MAX_WORKERS = 64  # each a process of its own, started and awaited one by one
# While many instances start, those already started are looked at this often, so that
# one waiting for a signal gets its answer then, not after the last one started.
ANSWER_WHILE_STARTING = 1.0
# Instances registered in one ledger transaction and started together (where the engine
# can: `StartsTogether`), between two looks at those already started. With 50, a run
# once spent 35 s past a short deadline judging the twice as many it started, one
# status, holds and history call each; the judging now reads them together where the
# engine can (`ReadsTogether`), and tests/badinput/test_deadline.py holds it to 30 s.
START_BATCH = 50
# A look at every unfinished instance costs a status call each: with thousands of them
# a look takes seconds of the harness's CPU, on the cores the workers and servers use.
# A look that took longer than PACED_AFTER is followed by a pause LOOK_PAUSE_FACTOR times
# as long, so the harness spends at most a third of the time looking; a quicker one
# (tens of instances) by POLL_INTERVAL only, so that a wait is answered at once.
PACED_AFTER = 0.5
LOOK_PAUSE_FACTOR = 2.0
# A look asks the engine only about the instances due (docs/adr/0017): one whose ledger
# rows moved since it was last looked at is due at once, and one whose status just
# changed is due again POLL_INTERVAL later; each look that finds it unchanged doubles
# that gap, up to REVISIT_AT_MOST. What leaves no row in the ledger (an instance that
# finishes after its last effect, parks at a wait, fails or times out) is so seen
# within REVISIT_AT_MOST (or the budget's round, below), and soon when it follows a move.
REVISIT_AT_MOST = 2.0
# Idle revisits (not the instances that moved, nor those not seen yet or backing off
# after a move) are asked about at most this many a second, whatever the instances in
# flight: at 5,000 in flight a 2 s revisit
# was up to 2,500 status reads a second on the cores the workers and servers use
# (docs/adr/0024). Past REVISITS_PER_SECOND * REVISIT_AT_MOST instances in flight an
# unchanged one is so looked at about every (in flight / REVISITS_PER_SECOND) seconds.
REVISITS_PER_SECOND = 50.0
# The flow's last step lands its effect while its call still runs, and the instance
# finishes only once the call returned: a look at once found it running nearly always,
# and its finish was seen on its idle revisit (a describe more, up to REVISIT_AT_MOST
# later). So the look comes this long after its row is read: on Temporal, under the
# overhead bench's load, an instance closed 0.08 / 0.19 / 0.32 s (p10 / p50 / p90, max
# 0.49) after its last effect (docs/adr/0027).
FINISH_LOOK_AFTER = 0.4


def pause_after(took: float) -> float:
    """How long to pause after a look at the instances that took `took` seconds."""
    return LOOK_PAUSE_FACTOR * took if took > PACED_AFTER else POLL_INTERVAL


class Arming(Protocol):
    """What a fault plan asks of the session, given once when it opens."""

    def arm(self, ledger: Ledger, request: InstanceRequest) -> None:
        """Prepare an instance before it starts (arm its fault point)."""
        ...

    def withheld(self, instance_id: str) -> Collection[str]:
        """Signals not to answer `instance_id` yet: a fault that fires during a wait holds
        its answer, and to an instance the operator cancelled there, for good."""
        ...

    def holds(self, step: str, point: PausePoint) -> bool:
        """Whether a step paused at `point` is the fault's to let go (once it fired)."""
        ...


def new_run_id() -> str:
    """Short enough to read in a table; the ledger keeps each instance's start time."""
    return secrets.token_hex(3)


def new_request(flow: Flow, run_id: str, number: int, tenant_id: str,
                given: Mapping[str, tuple[str, ...]] | None = None) -> InstanceRequest:
    """Instance `number` of the run, with every input of the flow (`given`, else its
    default) written into the request, so the ledger and evidence show what it ran for."""
    return InstanceRequest(
        instance_id=f"{flow.name}-{run_id}-{number:02d}", run_id=run_id, tenant_id=tenant_id,
        entity_id=f"{run_id}-{number:02d}", date=f"{datetime.now(UTC):%Y%m%d}",
        correlation_id=str(uuid.uuid4()), trace_id=uuid.uuid4().hex,
        input=flow.input_for(given or {}),
    )


def check_timeout(timeout: float) -> None:
    """Refuse a run's deadline that is not a positive, finite number of seconds."""
    check_seconds(timeout, "--timeout", "120", error=ConfigError)
    if timeout <= 0:
        raise ConfigError("--timeout must be a positive number of seconds")


def validate_options(flow: Flow, options: RunOptions) -> None:
    """Reject options that do not fit the flow before anything starts."""
    check_engine(options.engine)
    if options.instances < 1 or options.workers < 1:
        raise ConfigError("--instances and --workers must be 1 or more")
    if options.workers > MAX_WORKERS:
        raise ConfigError(f"--workers {options.workers} would start more worker processes "
                          f"than a run needs or a machine holds; give at most {MAX_WORKERS}")
    if options.app is not None and not options.time_scale.real_time:
        raise ConfigError(f"--time-scale {options.time_scale.label}: a team's app keeps the "
                          "durations its own code sets; run it in real time (leave "
                          "--time-scale out), or spike its flow as a model")
    check_timeout(options.timeout)
    signals = {w.signal for w in flow.waits}
    for name, decision in options.decisions.items():
        if flow.interrupt is not None and name == flow.interrupt.signal:
            if decision != "interrupt":
                raise ConfigError(f"{name} is the flow's interrupt: its decision is "
                                  f"{name}=interrupt, not {decision!r}")
            continue
        if name not in signals:
            raise ConfigError(f"flow {flow.name!r} waits for no signal {name!r}; its waits "
                              f"take: {', '.join(sorted(signals)) or 'none'}"
                              + (f", and its interrupt {flow.interrupt.signal}"
                                 if flow.interrupt else ""))
        if decision not in ("approve", "reject"):
            raise ConfigError(f"decision {decision!r} for {name} must be approve or reject"
                              + _interrupt_hint(flow, decision))
    _check_interrupt_at(flow, options)
    for number in range(1, max(len(options.instance_inputs), 1) + 1):
        flow.input_for(options.input_of(number))  # raises InputError saying what to fix
    steps = {s.name for s in flow.steps}
    for failure in options.failures:
        if failure.step not in steps:
            raise ConfigError(f"--fail names step {failure.step!r}, which flow {flow.name!r} "
                              f"does not have; its steps: {', '.join(sorted(steps))}")


def _interrupt_hint(flow: Flow, decision: str) -> str:
    """Where `interrupt`, given to a wait's signal, belongs instead."""
    if decision != "interrupt":
        return ""
    if flow.interrupt is None:
        return f"; flow {flow.name!r} declares no interrupt to send"
    return f"; the flow's interrupt is sent with --signal {flow.interrupt.signal}=interrupt"


def _check_interrupt_at(flow: Flow, options: RunOptions) -> None:
    at = options.interrupt_at
    if at is None:
        return
    if flow.interrupt is None or options.decisions.get(flow.interrupt.signal) != "interrupt":
        signal = flow.interrupt.signal if flow.interrupt else None
        raise ConfigError(
            f"--interrupt-at {at} places the flow's interrupt, but "
            + (f"the run does not send it: add --signal {signal}=interrupt" if signal else
               f"flow {flow.name!r} declares none: add an [interrupt] table with its signal"))
    places = [s.name for s in flow.steps] + [w.name for w in flow.waits]
    if at not in places:
        raise ConfigError(f"--interrupt-at names {at!r}, which is no step or wait of flow "
                          f"{flow.name!r}; give one of: {', '.join(places)}")


def load_run_flow(settings: Settings, options: RunOptions, loaded: Flow | None = None,
                  ) -> tuple[Flow, TimeScaleRecord | None]:
    """The flow a run runs: `loaded` (the caller's, already read from `options.flow`) or
    loaded here, under the options' time scale (written for the workers, with the record
    of every duration scaled), or as defined in real time."""
    flow = loaded or load_flow(options.flow, spikes_dir=settings.spikes_dir)
    return scaled_flow(flow, options.time_scale, settings.state_dir / "derived")


def next_wait(flow: Flow, done: Sequence[str]) -> Wait | None:
    """The first wait the instance has not passed yet."""
    return next((w for w in flow.waits if w.name not in done), None)


@dataclass
class RunSession:
    """A run in progress. `open_session` builds it and tears it down."""

    flow: Flow
    options: RunOptions
    run_id: str
    run_dir: Path
    ledger: Ledger
    stack: Stack
    engine: Engine
    workers: WorkerControl  # the run's own processes, or registered workers elsewhere
    timeline: Timeline
    # When the run ends (monotonic): its start-up (services, workers, instances) counts.
    deadline: float
    arming: Arming | None = None
    time_scale: TimeScaleRecord | None = None  # the flow's durations, scaled for the run
    requests: list[InstanceRequest] = field(default_factory=list)
    signalled: set[tuple[str, str]] = field(default_factory=set)
    interrupted: dict[str, float] = field(default_factory=dict)  # instance -> when sent
    revisits: Revisits = field(init=False)  # which instances the next look asks about
    # Instances this run started, with no fault plan, that no watch has seen yet: each
    # is running as of its start's answer (`watch`).
    unseen_starts: list[str] = field(default_factory=list)
    # Each step the flow runs right before a wait, with that wait.
    opening_waits: dict[str, Wait] = field(init=False)
    # The signals whose approval, sent by this run, moves an instance on to a step
    # (`_moves_on_in_ledger`); none unless the run answers early.
    approvals_moving_on: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.opening_waits = _steps_opening_waits(self.flow)
        self.approvals_moving_on = (_waits_followed_by_steps(self.flow)
                                    if self._answers_early() else frozenset())
        # The step before a wait this run answers from the ledger, where the answer
        # moves the instance on to a step: what it does next lands there too.
        passing = steps_followed_by_steps(self.flow) | {
            step for step, wait in self.opening_waits.items()
            if self._moves_on_in_ledger(wait.signal, self.options.decisions.get(wait.signal))}
        self.revisits = Revisits(self.ledger, self.run_id, passing=passing,
                                 finishing=steps_ending_the_flow(self.flow))

    def _answers_early(self) -> bool:
        """Whether this run answers a wait as soon as the step before it landed
        (`_early_answers`): a run with no fault plan, on an engine that keeps a signal
        sent before its wait."""
        return (self.arming is None and bool(self.options.decisions)
                and self.engine.capabilities.early_signals)

    def _moves_on_in_ledger(self, signal: str, decision: str | None) -> bool:
        """Whether an answer sent by this run needs no look at the instance at once
        (docs/adr/0027): in a run that answers early, an approval of a wait that a step
        follows moves the instance on to that step, whose call lands in the ledger
        whatever its outcome (the row makes it due, as a step another step follows
        does, docs/adr/0024). A rejection (which may fail the instance with no row), an
        interrupt, or a wait that anything else follows still asks for a look at once."""
        return decision == "approve" and signal in self.approvals_moving_on

    @property
    def instance_ids(self) -> list[str]:
        return [r.instance_id for r in self.requests]

    def start_instances(self) -> int:
        """Register, prepare (inject failures, arm fault points) and start each instance,
        START_BATCH at a time, until the run's deadline passes; how many were started."""
        looked, took = time.monotonic(), 0.0
        known: dict[str, InstanceStatus] = {}
        started, each = 0, 0.0  # seconds the last batch took per instance
        while started < self.options.instances:
            if time.monotonic() - looked > max(ANSWER_WHILE_STARTING, pause_after(took)):
                began = time.monotonic()
                self._answer_started(known)
                looked = time.monotonic()
                took = looked - began
            left = self.deadline - time.monotonic()
            if left < 0:
                return started
            # The first instance starts alone, to learn the pace; a batch that would
            # then run past the deadline is cut to what fits (at least one): on loaded
            # cores a batch of 50 took seconds.
            count = min(START_BATCH, self.options.instances - started,
                        max(1, int(left / each)) if each > 0 else 1)
            began = time.monotonic()
            started += len(self._start_batch(count))
            each = (time.monotonic() - began) / count
        return started

    def start_instance(self) -> InstanceRequest:
        """Register, prepare and start one more instance (numbered after the others)."""
        return self._start_batch(1)[0]

    def _start_batch(self, count: int) -> list[InstanceRequest]:
        """Register `count` more instances (numbered after the others) together, prepare
        each, then start them, together where the engine can (`StartsTogether`)."""
        numbers = range(len(self.requests) + 1, len(self.requests) + count + 1)
        requests = [new_request(self.flow, self.run_id, number, self.options.tenant_id,
                                self.options.input_of(number)) for number in numbers]
        self.ledger.register_all(self.flow, requests, self.engine.name)
        for request in requests:
            # A failure at a `for_each` step fails each of its items the same way: each
            # expansion (`grant_access[acme]`) takes its own count, not a share of one.
            steps = [s.name for s in self.flow.for_instance(request).steps]
            for failure in self.options.failures:
                for step in (s for s in steps if declared_name(s) == failure.step):
                    self.ledger.inject_failure(request.instance_id, step, failure.mode,
                                               failure.times)
            if self.arming is not None:
                self.arming.arm(self.ledger, request)
            if (at := self._interrupted_in_flight()) is not None:
                self.ledger.arm(request.instance_id, at, "before-effect")
        self.requests.extend(requests)
        if isinstance(self.engine, StartsTogether):
            self.engine.start_all(requests)
        else:
            for request in requests:
                self.engine.start(request)
        if self.arming is None:
            self.unseen_starts.extend(r.instance_id for r in requests)
        return requests

    def watch(self, deadline: float, *,
              until: Callable[[dict[str, InstanceStatus]], bool] | None = None,
              on_status: Callable[[str, InstanceStatus], None] | None = None,
              revive_after: float | None = None,
              ) -> dict[str, InstanceStatus]:
        """Watch the instances until every one finished, `until` holds, or `deadline`
        (monotonic) passed. Every POLL_INTERVAL the ledger is read for what moved, and
        the engine asked about the instances due (`Revisits`): every one at the first
        look, then those that moved or may have. `until` is asked every round, with each
        instance as last seen. An instance that waits for a signal listed in the
        options' decisions is sent that decision, once. With `revive_after`, a process
        that died is started again after that many seconds, on every round.

        In a run with no fault plan, an instance the run started that no watch has seen
        yet is not asked about at the first look: its start's answer said it runs, and
        it starts idle, as a first look leaves it (docs/adr/0027). A fault plan's
        watches read every instance, since a fault may have changed any of them."""
        statuses: dict[str, InstanceStatus] = {}
        if self.unseen_starts:
            started = dict.fromkeys(self.unseen_starts, InstanceStatus(InstanceState.RUNNING))
            self.unseen_starts = []
            self.revisits.looked(dict.fromkeys(started, False), first=started)
            for instance_id, status in started.items():
                if on_status is not None:
                    on_status(instance_id, status)
                statuses[instance_id] = status
        while True:
            if revive_after is not None:
                self.workers.revive(revive_after)
            began = time.monotonic()
            unfinished = [iid for iid in self.instance_ids
                          if iid not in statuses or not statuses[iid].state.finished]
            for instance_id, status in self._look(unfinished, statuses, deadline).items():
                if on_status is not None and statuses.get(instance_id) != status:
                    on_status(instance_id, status)
                statuses[instance_id] = status
            # `until` is asked before any answer is sent: once a fault point is reached,
            # the step paused there stands for the instant of a crash, and a decision
            # sent now would be taken (prefetched) by the worker about to be killed,
            # which a worker crashing at that instant is never given.
            if (all(s.state.finished for s in statuses.values())
                    or (until is not None and until(statuses))
                    or time.monotonic() > deadline):
                return statuses
            self._answer({iid: statuses[iid] for iid in unfinished})
            pause = pause_after(time.monotonic() - began)
            time.sleep(min(pause, max(POLL_INTERVAL, deadline - time.monotonic())))

    def exact(self, statuses: dict[str, InstanceStatus]) -> dict[str, InstanceStatus]:
        """`statuses` (from `watch`) with each unfinished instance's read again by
        itself, before the run is judged on them: a batched read may lag the engine by
        a moment (`Engine.statuses`)."""
        unfinished = [iid for iid, status in statuses.items() if not status.state.finished]
        if isinstance(self.engine, ReadsTogether):
            for instance_id, read in self.engine.statuses_alone(unfinished).items():
                if not isinstance(read, Exception):  # the engine is down: as last seen
                    statuses[instance_id] = read
            return statuses
        for instance_id in unfinished:
            with contextlib.suppress(Exception):  # the engine is down: as last seen
                statuses[instance_id] = self.engine.status(instance_id)
        return statuses

    def _answer_started(self, known: dict[str, InstanceStatus]) -> None:
        """Answer the waits of the instances started so far; `known` keeps what each was
        last seen doing, so that a finished one is not asked again."""
        unfinished = [iid for iid in self.instance_ids
                      if iid not in known or not known[iid].state.finished]
        known.update(self._look(unfinished, known, math.inf))
        self._answer({iid: known[iid] for iid in unfinished})

    def _look(self, unfinished: list[str], known: dict[str, InstanceStatus],
              deadline: float) -> dict[str, InstanceStatus]:
        """The statuses of those of `unfinished` that are due (`Revisits`; every one
        not in `known`), read together."""
        due = self.revisits.due(unfinished, known)
        if not due:
            return {}
        fresh = self._statuses(due, known, deadline)
        # A step more in `done` is no change here: its ledger row told of it already. A
        # watch's first look is no change either, and one never looked at before starts
        # idle: what it does next lands in the ledger or is seen on its revisit (at
        # 5,000, a backoff from each first look was 25,000 describes in seconds).
        self.revisits.looked({iid: iid in known and known[iid].state is not status.state
                              for iid, status in fresh.items()},
                             first=[iid for iid in fresh if iid not in known])
        return fresh

    def _statuses(self, instance_ids: list[str], known: dict[str, InstanceStatus],
                  deadline: float) -> dict[str, InstanceStatus]:
        # A broker or server being restarted by a fault makes status calls fail for a
        # while; the last known statuses stand until it answers again.
        try:
            return self.engine.statuses(instance_ids)
        except Exception:
            if time.monotonic() > deadline:
                raise
            unknown = InstanceStatus(InstanceState.UNKNOWN, detail="the engine does not answer")
            return {iid: known.get(iid, unknown) for iid in instance_ids}

    def _answer(self, statuses: dict[str, InstanceStatus]) -> None:
        """Send each instance the flow's interrupt where the options place it, then each
        that waits for a signal listed in the options' decisions that decision, once;
        the decisions all together where the engine can."""
        for instance_id, status in statuses.items():
            self._interrupt(instance_id, status)
        decisions = self.options.decisions
        answers = self._early_answers()
        # What is sent this look: thousands of waiting instances must not each scan it.
        sending = {(a.instance_id, a.name) for a in answers}
        for instance_id, status in statuses.items():
            if status.state is not InstanceState.WAITING:
                continue
            wait = next_wait(self.flow, status.done)
            if (wait and wait.signal in decisions
                    and (self.arming is None
                         or wait.signal not in self.arming.withheld(instance_id))
                    and (instance_id, wait.signal) not in self.signalled
                    and (instance_id, wait.signal) not in sending):
                answers.append(Signal(instance_id, wait.signal,
                                      {"decision": decisions[wait.signal]}))
        if not answers:
            return
        failed: list[Exception | None]
        if isinstance(self.engine, SignalsTogether):
            failed = self.engine.signal_all(answers)
        else:
            failed = [self._signal_one(answer) for answer in answers]
        for answer, error in zip(answers, failed, strict=True):
            if error is not None:
                continue  # the engine is down; the next look tries again
            self.signalled.add((answer.instance_id, answer.name))
            if not self._moves_on_in_ledger(answer.name, answer.payload.get("decision")):
                self.revisits.nudge(answer.instance_id)  # the answer moves it on
            self.timeline.add(SIGNAL_SENT, f"{answer.name}={answer.payload['decision']} to "
                                           f"{answer.instance_id}", instance=answer.instance_id)

    def _early_answers(self) -> list[Signal]:
        """A plain run's answers to the waits whose step before them landed since the
        last look (from the ledger, not the engine's record), where the engine keeps a
        signal that comes before its wait (`Capabilities.early_signals`): the approver
        answers as soon as there is something to approve (the plain SDK baselines of
        `graduate bench` do the same), not a look after the engine parked the instance.
        A chaos run answers only instances that wait: a step that landed may be paused
        at a fault point, the instant of a crash, and a worker about to be killed would
        take the answer with it (see `watch`). One that fails is sent again once the
        instance waits."""
        landed = self.revisits.take_landed()
        if not self._answers_early():
            return []
        opens = self.opening_waits
        decisions, answers = self.options.decisions, []
        # A step whose effect landed twice (redelivered, absorbed) is one answer.
        due = dict.fromkeys((instance_id, opens[step].signal) for instance_id, step in landed
                            if step in opens)
        for instance_id, signal in due:
            if signal in decisions and (instance_id, signal) not in self.signalled:
                answers.append(Signal(instance_id, signal, {"decision": decisions[signal]}))
        return answers

    def _signal_one(self, answer: Signal) -> Exception | None:
        try:
            self.engine.signal(answer.instance_id, answer.name, answer.payload)
        except Exception as error:
            return error
        return None

    def _sends_interrupt(self) -> bool:
        interrupt = self.flow.interrupt
        return interrupt is not None and self.options.decisions.get(
            interrupt.signal) == "interrupt"

    def _interrupted_in_flight(self) -> str | None:
        """The step the interrupt is to reach in flight, if the options say so."""
        at = self.options.interrupt_at
        return at if self._sends_interrupt() and any(
            s.name == at for s in self.flow.steps) else None

    def _interrupt(self, instance_id: str, status: InstanceStatus) -> None:
        """Send the flow's interrupt, once, where the options place it (`interrupt_at`):
        while a step is in flight (its call, armed at start, pauses before its effect,
        a ledger row says so; released once the interrupt is sent, its effect lands);
        while the instance waits at a wait, as the engine reports; or as soon as it
        started. The time it was sent is what the checker judges later starts by."""
        interrupt = self.flow.interrupt
        if interrupt is None or instance_id in self.interrupted or not self._sends_interrupt():
            return
        at = self.options.interrupt_at
        step = self._interrupted_in_flight()
        if step is not None:
            if self.ledger.reached(instance_id, step, "before-effect") is None:
                return
        elif at is not None and not (status.state is InstanceState.WAITING
                                     and _waits_at(self.flow, status, at)):
            return
        try:
            self.engine.signal(instance_id, interrupt.signal, {"decision": "interrupt"})
        except Exception:
            return  # the engine is down, or the instance finished; the next poll decides
        self.interrupted[instance_id] = time.time()
        self.revisits.nudge(instance_id)
        self.timeline.add(SIGNAL_SENT, f"{interrupt.signal}=interrupt to {instance_id}",
                          instance=instance_id)
        # A fault armed at the same pause fires next, on the step still paused there.
        if step is not None and not (self.arming is not None
                                     and self.arming.holds(step, "before-effect")):
            self.ledger.release(instance_id, step, "before-effect")

    def owes_interrupt(self, instance_id: str, step: str) -> bool:
        """Whether the interrupt is still to be sent to the instance while `step` is in
        flight (paused before its effect), as the options place it."""
        return self._interrupted_in_flight() == step and instance_id not in self.interrupted


class Revisits:
    """When the harness next asks the engine about each instance it watches.

    The engine is asked only about the instances due, not about every unfinished one on
    every round (issue 16: on two cores, the harness's status calls competed with the
    workers; docs/adr/0017). The ledger is the event: every effect an instance's steps
    and compensations call lands there with a row number, so a cheap read of the rows
    since the last one read tells which instances moved, and each of those is due at
    once. What leaves no row (an instance that finishes after its last effect, parks at
    a wait, fails, times out or is cancelled) is caught by each instance's own revisit:
    due POLL_INTERVAL after its status last changed (or it moved, or was sent a
    signal), the gap doubling at each look that finds it unchanged, up to
    REVISIT_AT_MOST. Revisits are taken the longest due first, at most
    REVISITS_PER_SECOND a second (docs/adr/0024), so the engine's work on them does not
    grow with the instances in flight; an instance not looked at yet, or that moved, is
    due at once whatever the budget. A ledger that cannot be read makes every instance
    due: a look as before.
    """

    def __init__(self, ledger: Ledger, run_id: str,
                 clock: Callable[[], float] = time.monotonic, *,
                 passing: Collection[str] = (), finishing: Collection[str] = ()) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self.clock = clock
        self.passing = frozenset(passing)  # steps whose landing makes no instance due
        # Steps whose landing makes the instance due FINISH_LOOK_AFTER later, not at once.
        self.finishing = frozenset(finishing)
        self.mark = 0  # the last ledger row read
        self._next: dict[str, float] = {}  # instance -> when it is due (monotonic)
        self._gap: dict[str, float] = {}  # instance -> the gap to its next revisit
        self._looked_at: dict[str, float] = {}  # instance -> when it was last looked at
        self._moved: set[str] = set()  # nudged since it was last looked at: due at once
        self._landed: list[tuple[str, str]] = []  # (instance, step) landed, not yet taken
        # Idle revisits the budget allows now (REVISITS_PER_SECOND).
        self._allowed = REVISITS_PER_SECOND
        self._filled = clock()

    def due(self, unfinished: Sequence[str],
            known: Mapping[str, InstanceStatus]) -> list[str]:
        """Those of `unfinished` to ask the engine about now: each not in `known`, each
        that moved in the ledger (or was sent a signal) since it was last looked at, and
        each due while it backs off after a move or change, all of them; then the idle
        ones due (their gap at REVISIT_AT_MOST), the longest due first, as many as the
        budget allows (REVISITS_PER_SECOND)."""
        try:
            moved, self.mark = self.ledger.moved_since(self.run_id, self.mark)
        except Exception:
            return list(unfinished)  # the ledger does not answer: look at every one
        now = self.clock()
        for row in moved:
            if row.landed and row.step in self.finishing:
                self._after_finishing(row.instance_id, now)
            elif not (row.landed and row.step in self.passing):
                self.nudge(row.instance_id)
        self._landed.extend((row.instance_id, row.step) for row in moved if row.landed)
        # What the budget saved is kept for a second at most; a round paced after a slow
        # look still gets what its own time allows.
        self._allowed = (min(self._allowed, REVISITS_PER_SECOND)
                         + REVISITS_PER_SECOND * (now - self._filled))
        self._filled = now
        # Not seen yet, moved, or backing off after a move or change: follows the work.
        free = {iid for iid in unfinished
                if iid not in known or iid in self._moved
                or (self._gap.get(iid, 0.0) < REVISIT_AT_MOST and self._next.get(iid, now) <= now)}
        taken = heapq.nsmallest(max(0, int(self._allowed)),
                                (iid for iid in unfinished
                                 if iid not in free and self._next.get(iid, now) <= now),
                                key=lambda iid: self._next.get(iid, now))
        self._allowed -= len(taken)
        chosen = free.union(taken)
        return [iid for iid in unfinished if iid in chosen]

    def looked(self, changed: Mapping[str, bool], first: Collection[str] = ()) -> None:
        """After a look: which of the instances it read changed since the look before;
        those in `first` were looked at for the first time in a watch: one never looked
        at before starts idle (revisited after REVISIT_AT_MOST, within the budget) unless
        it moved meanwhile; any other keeps its backoff."""
        now = self.clock()
        firsts = set(first)
        for instance_id, moved in changed.items():
            if (instance_id in firsts and instance_id not in self._moved
                    and instance_id not in self._gap):
                gap = REVISIT_AT_MOST
            else:
                # The backoff doubles the time since the last look, not the gap asked
                # for: after paced looks (tens of seconds apart at 5,000 instances) an
                # unchanged instance is idle at once, not after five looks of everyone.
                since = now - self._looked_at.get(instance_id, now)
                gap = POLL_INTERVAL if moved else min(
                    2 * max(self._gap.get(instance_id, POLL_INTERVAL), since),
                    REVISIT_AT_MOST)
            self._gap[instance_id] = gap
            self._next[instance_id] = now + gap
            self._looked_at[instance_id] = now
        self._moved.difference_update(changed)

    def take_landed(self) -> list[tuple[str, str]]:
        """(instance, step) of each effect that landed (applied or absorbed) in the rows
        read since the last call: the same read of the ledger tells the run which waits
        it may answer early (`RunSession._early_answers`)."""
        landed, self._landed = self._landed, []
        return landed

    def _after_finishing(self, instance_id: str, now: float) -> None:
        """The flow's last step landed: due FINISH_LOOK_AFTER from now, outside the
        budget, unless something else already made it due sooner."""
        if instance_id in self._moved:
            return
        self._next[instance_id] = min(self._next.get(instance_id, math.inf),
                                      now + FINISH_LOOK_AFTER)
        self._gap[instance_id] = POLL_INTERVAL / 2  # backing off: due whatever the budget

    def nudge(self, instance_id: str) -> None:
        """The instance moved (or is about to): due at the next look, then soon again."""
        self._moved.add(instance_id)
        self._next[instance_id] = 0.0
        self._gap[instance_id] = POLL_INTERVAL / 2  # doubled to POLL_INTERVAL if unchanged


def steps_followed_by_steps(flow: Flow) -> frozenset[str]:
    """The steps whose effect landing asks for no look at once (docs/adr/0024): each is
    followed by another step (not a wait, not the end), so what the instance does next,
    its next step's call whatever its outcome, lands in the ledger too. A `for_each`
    step (run once per item) is not one of them."""
    return frozenset(before.name for before, node in itertools.pairwise(flow.nodes)
                     if isinstance(before, Step) and isinstance(node, Step)
                     and before.for_each is None)


def steps_ending_the_flow(flow: Flow) -> frozenset[str]:
    """The step the flow ends with, if it ends with one (a `for_each` step, run once per
    item, excepted): once it lands, the instance finishes when its call returns."""
    last = flow.nodes[-1] if flow.nodes else None
    return frozenset({last.name} if isinstance(last, Step) and last.for_each is None
                     else ())


def _steps_opening_waits(flow: Flow) -> dict[str, Wait]:
    """Each step the flow runs right before a wait (a `for_each` step, run once per
    item, excepted), with that wait."""
    return {before.name: node for before, node in itertools.pairwise(flow.nodes)
            if isinstance(node, Wait) and isinstance(before, Step) and before.for_each is None}


def _waits_followed_by_steps(flow: Flow) -> frozenset[str]:
    """The signals of the waits whose next node is a step (a `for_each` step, run once
    per item, excepted): an approval moves the instance on to that step's call."""
    return frozenset(wait.signal for wait, node in itertools.pairwise(flow.nodes)
                     if isinstance(wait, Wait) and isinstance(node, Step)
                     and node.for_each is None)


def _waits_at(flow: Flow, status: InstanceStatus, wait: str) -> bool:
    found = next_wait(flow, status.done)
    return found is not None and found.name == wait


@contextlib.contextmanager
def open_session(settings: Settings, options: RunOptions, *, flow: Flow,
                 stack: Stack | None = None, engine_settings: dict[str, Any] | None = None,
                 use_kept: bool = True,
                 worker_services: Callable[[Stack], Services] | None = None,
                 arming: Arming | None = None, timeline: Timeline | None = None,
                 time_scale: TimeScaleRecord | None = None,
                 deadline: float | None = None, workers: bool = True,
                 ) -> Iterator[RunSession]:
    """Services, engine and workers for one run; everything started is stopped on exit.

    `flow` is the flow to run, prepared by the caller (`load_run_flow`: under the
    options' time scale, as `time_scale` records). `stack`, when given, was resolved once
    by the caller (for several runs); otherwise the session opens its own services.
    `deadline` (monotonic) is when the run ends, by default `options.timeout`
    from now: it covers the start-up, so workers that are not ready by then end the run
    with an error, and instances not started by then are never started. With
    `workers=False` no worker is started or awaited (a run decided before it starts: a
    fault that cannot apply), and the engine is opened only to be recorded.
    """
    if deadline is None:
        deadline = time.monotonic() + options.timeout
    validate_options(flow, options)
    if options.app is not None:
        check_app(options.app)  # the team's code, refused before anything starts
    run_id = new_run_id()
    run_dir = settings.state_dir / "runs" / run_id
    timeline = timeline or Timeline()
    external = workers and options.workers_from == "external"
    if external:
        from graduate.runs.remote import check_external

        check_external(settings, options)
    with contextlib.ExitStack() as resources:
        if stack is None:
            stack = resources.enter_context(open_stack(
                settings, needs([options.engine]), temporal_port=options.temporal_port,
                redis_port=options.redis_port, use_kept=use_kept))
        # The engine's first connection and the workers' readiness are bounded by the
        # run's deadline. A replacement that a fault starts later keeps its own bound:
        # a fault that fires near the deadline is still to be judged.
        with ready_by(deadline):
            control: WorkerControl
            if external:
                from graduate.runs.remote import RegisteredWorkers

                registered = RegisteredWorkers.await_registered(
                    settings.ledger, engine=options.engine,
                    target=options.app.name if options.app is not None else flow.name,
                    count=options.workers, run_id=run_id, timeline=timeline,
                    deadline=deadline)
                resources.callback(registered.stop_all)
                # The client sends to the workers' pool, with the settings they run with.
                engine = open_engine(options.engine, flow, stack.services, run_dir,
                                     settings=dict(registered.settings), app=options.app,
                                     queue=registered.pool)
                resources.callback(engine.close)
                control = registered
            else:
                engine = open_engine(
                    options.engine, flow, stack.services, run_dir, settings=engine_settings,
                    worker_services=worker_services(stack) if worker_services else None,
                    app=options.app)
                resources.callback(engine.close)
                supervisor = Supervisor(engine, timeline)
                resources.callback(supervisor.stop_all)
                if workers:
                    supervisor.start(options.workers)
                control = LocalWorkers(supervisor)
        yield RunSession(flow=flow, options=options, run_id=run_id, run_dir=run_dir,
                         ledger=Ledger(settings.ledger), stack=stack, engine=engine,
                         workers=control, timeline=timeline, deadline=deadline,
                         arming=arming, time_scale=time_scale)
