"""One chaos run: arm, await the point, fire, recover, judge, store.

The run is a session (`graduate.runs.session`) opened with the fault plan's arming and
a timeline: the fault point is armed before the instances start; the fault fires only
once an instance reports that it reached the point; the fault then recovers as an
operator would (its module says how), and the session's supervisor restarts whatever
died. Verdicts come from `graduate.check`, from the ledger and the engine's own record
only, and the whole run is written to the evidence store.
"""

from __future__ import annotations

import functools
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from graduate.adapters import describe, needs
from graduate.adapters.base import (
    HISTORIES,
    HeldUp,
    HistoryEvent,
    InstanceState,
    InstanceStatus,
    ReadsTogether,
)
from graduate.chaos.faults import (
    FAULT_FIRED,
    NOT_FIRED,
    POINT_REACHED,
    FaultContext,
    FaultPlan,
    find_wait,
    not_applicable,
    timeline_events,
)
from graduate.chaos.profiles import profile_settings
from graduate.chaos.proxy import Proxy
from graduate.check import (
    FaultActs,
    FaultFacts,
    InstanceVerdict,
    RunVerdict,
    judge_acts,
    judge_audit,
    judge_instance,
    judge_run,
)
from graduate.config import Settings
from graduate.environment import host, package_versions, server_versions
from graduate.errors import ConfigError
from graduate.evidence import EvidenceStore, now_iso
from graduate.flow import (
    Flow,
    InstanceRequest,
    Wait,
    check_seconds,
    declared_name,
    flow_to_dict,
    write_flow_json,
)
from graduate.ledger import EffectRecord, Ledger, PausePoint, PointReached
from graduate.runner import RunOptions
from graduate.runs.record import (
    EnvironmentRecord,
    FaultRecord,
    FlowRecord,
    InstanceEvidence,
    OptionsRecord,
    RunRecord,
)
from graduate.runs.session import RunSession, load_run_flow, next_wait, open_session
from graduate.runs.supervisor import WORKER_STARTED
from graduate.runs.timeline import (
    HELD_UP,
    INSTANCES_STARTED,
    RUN_ENDED,
    VERSIONS_RAN,
    Timeline,
    TimelineEvent,
)
from graduate.runs.workers import ActNotCarriedOut
from graduate.services.provider import Stack, own_servers
from graduate.timescale import TimeScaleRecord

__all__ = ["ChaosOptions", "ChaosResult", "TimelineEvent", "run_chaos"]

# After the fault, how often the engine is asked whether it still holds the unfinished
# instances (it may read the broker and ping workers).
SETTLED_CHECK = 1.0


@dataclass(frozen=True)
class ChaosOptions:
    """A run (flow, engine, instances, deadline, decisions) under one fault and profile."""

    run: RunOptions
    plan: FaultPlan
    profile: str = "defaults"
    wait_deadline: float | None = None  # shorten the flow's waits (for wait-timeout runs)
    # The profile's settings for the engine, when the caller read them from the project
    # (the pytest plugin runs in a folder of its own); otherwise read here.
    engine_settings: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.wait_deadline is not None:
            check_seconds(self.wait_deadline, "--wait-deadline", "5", error=ConfigError)
            if self.wait_deadline <= 0:
                raise ConfigError(f"--wait-deadline {self.wait_deadline:g}: a wait's deadline "
                                  "must be more than 0 seconds, for example 5")


@dataclass(frozen=True)
class ChaosResult:
    run_id: str
    flow: str
    engine: str
    plan: FaultPlan
    profile: str
    applicable: bool
    reason: str  # why the fault does not apply, or why it never fired
    fired: bool
    instances: tuple[InstanceVerdict, ...]
    verdict: RunVerdict
    evidence: Path | None
    time_scale: TimeScaleRecord | None = None  # the flow's durations as the run used them


@dataclass
class _Arming:
    """The fault point armed on each instance, and the answer held back until the fault
    fires during a wait."""

    plan: FaultPlan
    held: set[str] = field(default_factory=set)
    at_wait: str = ""  # the signal of the wait the fault fires at, if it does
    # Instances cancelled at that wait (a rollback there) never get its answer: sent
    # after the cancel it would race it, and the rehearsal is of a cancel at the wait.
    cancelled_at_wait: set[str] = field(default_factory=set)

    def arm(self, ledger: Ledger, request: InstanceRequest) -> None:
        if self.plan.step and self.plan.point in ("before-effect", "after-effect"):
            ledger.arm(request.instance_id, self.plan.step,
                       self.plan.point)  # type: ignore[arg-type]

    def withheld(self, instance_id: str) -> Collection[str]:
        return {self.at_wait} if instance_id in self.cancelled_at_wait else self.held

    def holds(self, step: str, point: PausePoint) -> bool:
        return (self.plan.step, self.plan.point) == (step, point)


def run_chaos(settings: Settings, options: ChaosOptions, store: EvidenceStore, *,
              flow: Flow | None = None, stack: Stack | None = None,
              on_event: Callable[[TimelineEvent], None] | None = None) -> ChaosResult:
    """Run `options` once and store its evidence; every process started is stopped.
    `flow` is the flow the caller already loaded from `options.run.flow`, if it did.
    `stack` holds servers the caller started for several runs (use_kept=False, with the
    same settings); otherwise the run starts its own."""
    # One deadline for the whole run: services, workers, starting the instances, the
    # fault, the recovery.
    deadline = time.monotonic() + options.run.timeout
    store.ensure_writable()
    flow, time_scale = _flow_for_run(settings, options, flow)
    plan = options.plan
    run = plan.fault.adjust(plan, flow, options.run)
    engine_settings = (dict(options.engine_settings) if options.engine_settings is not None
                       else profile_settings(options.profile, run.engine, settings.project_dir))
    engine_settings = plan.fault.engine_settings(plan, describe(run.engine), engine_settings)
    timeline = Timeline(listener=on_event)
    arming = _Arming(plan)
    if plan.point == "during-wait":
        arming.at_wait = find_wait(flow, plan.step).signal
        arming.held.add(arming.at_wait)
    # A fault that cannot apply is decided before any worker starts: what it needs is
    # known from the engine's description, the settings and the options.
    reason = _cannot_apply(settings, options, run)
    proxies: list[Proxy] = []
    try:
        with open_session(settings, run, flow=flow, stack=stack,
                          engine_settings=engine_settings, use_kept=False,
                          worker_services=plan.fault.worker_services(settings, proxies),
                          arming=arming, timeline=timeline, time_scale=time_scale,
                          deadline=deadline, workers=reason is None) as session:
            if reason is not None:
                return _store(store, options, session, flow, timeline, {}, {}, {},
                              applicable=False, fired=False, reason=reason)
            # Arm: each instance starts with its fault point armed.
            first_start = time.monotonic()
            started = session.start_instances()
            timeline.add(INSTANCES_STARTED, f"{started} instance(s)" + (
                "" if started == run.instances else
                f" of {run.instances}: the run's deadline passed while they started"))
            # Await the point.
            fired, reached, why = _await_trigger(session, plan, timeline, deadline)
            # Fire, and recover as an operator would.
            let_go: set[str] = set()  # the instances a firing's release let go
            context = FaultContext(session, plan, reached, proxies,
                                   release=lambda: let_go.update(_release_all(session, plan)),
                                   deadline=deadline)
            if fired:
                try:
                    _fire(session, plan, context, timeline, deadline, let_go)
                except ActNotCarriedOut as error:
                    # A registered worker's agent did not act (its command expired or
                    # failed): judged as a fault that never fired, unless an act had landed.
                    timeline.add(NOT_FIRED, str(error))
                    fired, why = error.after > 0, str(error)
            _release_all(session, plan, disarm=True)
            if plan.point == "during-wait":
                arming.cancelled_at_wait.update(context.acts.cancelled)
            arming.held.clear()
            # Recover: the supervisor restarts what died until every instance finished,
            # or until what is unfinished provably never moves again before the deadline.
            settled = _Settled(session, first_start, deadline)
            statuses = session.watch(deadline, revive_after=plan.restart_delay,
                                     until=settled)
            # Judge and store (what proved the early end is not asked again).
            statuses, holds = _last_look(session, statuses, settled.found)
            for iid, held_up in sorted(settled.held.items()):
                timeline.add(HELD_UP, _held_up_text(held_up), instance=iid)
            timeline.add(RUN_ENDED, "all finished" if all(
                s.state.finished for s in statuses.values())
                else settled.proof or "deadline passed")
            histories = _histories(session, session.instance_ids)
            for iid, history in histories.items():
                if ran := versions_ran(history):
                    timeline.add(VERSIONS_RAN, ran, instance=iid)
            return _store(store, options, session, flow, timeline, statuses, holds,
                          histories, applicable=True, fired=fired, reason=why,
                          acts=context.acts)
    finally:
        for proxy in proxies:
            proxy.stop()


def _cannot_apply(settings: Settings, options: ChaosOptions, run: RunOptions) -> str | None:
    """Why the run's fault cannot be performed here, or None."""
    engine = describe(run.engine)
    own = own_servers(settings, needs([run.engine]))
    own_workers = run.workers_from != "external"
    reason = not_applicable(options.plan, engine, local_broker=own.broker,
                            local_server=own.temporal, own_workers=own_workers)
    if reason is None and not own_workers and options.wait_deadline is not None:
        reason = ("the registered workers run the flow they were started with: "
                  "graduate cannot shorten its waits for them (--wait-deadline)")
    return reason


def _fire(session: RunSession, plan: FaultPlan, context: FaultContext, timeline: Timeline,
          deadline: float, let_go: set[str]) -> None:
    """Fire the fault, and recover as an operator would. `let_go` gathers the instances
    that the context's release let go."""
    # Hit: the instances paused at the point when it fires, and those its release let go
    # (one that got there while the fault was firing, between the two). One that reaches
    # the point after the release, while the fault recovers, waits there for the next
    # firing.
    hit = _paused(session, plan)
    plan.fault.fire(context)
    hit |= let_go
    # To hit every instance, the fault fires again for each that reaches its point: never
    # for one an earlier firing let go, which would cut short, kill or cut off again the
    # step it had already gone on with. Meanwhile the operator's supervisor restarts what
    # died (as it does after the last firing): a worker lost beside the fault's own acts
    # would otherwise keep every instance still to hit from its point until the deadline.
    while plan.hit == "all" and plan.point != "during-wait":
        again, reached, _ = _await_trigger(session, plan, timeline, deadline, skip=hit,
                                           revive_after=plan.restart_delay)
        if not again:
            break
        hit |= _paused(session, plan)
        plan.fault.fire(replace(context, reached=reached))  # the same acts
        hit |= let_go


def _flow_for_run(settings: Settings, options: ChaosOptions, loaded: Flow | None,
                  ) -> tuple[Flow, TimeScaleRecord | None]:
    """The flow (`loaded`, or loaded here) under the run's time scale, and with its
    waits shortened to `--wait-deadline` (real seconds, applied after the scale)."""
    flow, time_scale = load_run_flow(settings, options.run, loaded)
    if options.wait_deadline is None:
        return flow, time_scale
    nodes = tuple(n.with_deadline(options.wait_deadline) if isinstance(n, Wait) else n
                  for n in flow.nodes)
    # Workers load the flow from a file, so the shortened copy is written for them.
    folder = settings.state_dir / "derived"
    scale = "" if time_scale is None else f"-x{time_scale.factor:g}"
    return write_flow_json(
        replace(flow, nodes=nodes),
        folder / f"{flow.name}{scale}-wait-{options.wait_deadline:g}s.json"), time_scale


def _release_all(session: RunSession, plan: FaultPlan, *,
                 disarm: bool | None = None) -> set[str]:
    """Let every step paused at the fault point go on: the instances let go. The points
    no call reached yet are disarmed too, unless the fault is still to hit every
    instance."""
    let_go: set[str] = set()
    if plan.step and plan.point in ("before-effect", "after-effect"):
        point: PausePoint = plan.point  # type: ignore[assignment]
        keep_armed = not (plan.hit == "one" if disarm is None else disarm)
        reached = (session.ledger.reached_by(session.instance_ids, plan.step, point)
                   if keep_armed else {})
        for instance_id in session.instance_ids:
            if keep_armed and instance_id not in reached:
                continue
            if session.ledger.release(instance_id, plan.step, point):
                let_go.add(instance_id)
    return let_go


def _paused(session: RunSession, plan: FaultPlan) -> set[str]:
    """The instances whose call has reached the fault point so far."""
    if not (plan.step and plan.point in ("before-effect", "after-effect")):
        return set(session.instance_ids)
    point: PausePoint = plan.point  # type: ignore[assignment]
    return set(session.ledger.reached_by(session.instance_ids, plan.step, point))


def _await_trigger(session: RunSession, plan: FaultPlan, timeline: Timeline,
                   deadline: float, *, skip: set[str] | None = None,
                   revive_after: float | None = None,
                   ) -> tuple[bool, PointReached | None, str]:
    """Wait until the fault point is reached by an instance not in `skip`: (fired?, who
    reached it, why not). With `revive_after`, a process that died meanwhile is started
    again (`RunSession.watch`)."""
    if not plan.fault.fires:
        return False, None, "no fault planned"
    found: list[PointReached] = []
    start = time.monotonic()
    waiting = [iid for iid in session.instance_ids if iid not in (skip or set())]

    def reached(statuses: dict[str, InstanceStatus]) -> bool:
        if plan.offset is not None:
            return time.monotonic() - start >= plan.offset
        if plan.point == "during-wait":
            wait = find_wait(session.flow, plan.step)
            parked = [s.state is InstanceState.WAITING and wait.name not in s.done
                      for s in statuses.values() if not s.state.finished]
            # Hitting every instance: the fault fires once all of them wait there.
            return bool(parked) and (all(parked) if plan.hit == "all" else any(parked))
        hits = session.ledger.reached_by(waiting, plan.step or "",
                                         plan.point)  # type: ignore[arg-type]
        # The interrupt placed at this very pause is sent first (this round's answers) to
        # every instance paused there, not only to the first: the fault then fires on
        # steps that were in flight when it came, and a kill that takes the worker of
        # one takes none of the others paused beside it before its interrupt.
        if plan.point == "before-effect" and any(
                session.owes_interrupt(iid, hit.step) for iid, hit in hits.items()
                if iid in statuses and not statuses[iid].state.finished):
            return False
        for instance_id in waiting:
            if (hit := hits.get(instance_id)) is not None:
                found.append(hit)
                return True
        # Every instance still to hit has finished without reaching the point.
        return bool(skip) and all(statuses[i].state.finished for i in waiting
                                  if i in statuses)

    statuses = session.watch(deadline, until=reached, revive_after=revive_after)
    if found:
        hit = found[0]
        # A point armed at a `for_each` step: which of its expansions got there.
        where = f"{hit.step}:{hit.point}" + (f" (by {hit.expansion})" if hit.expansion else "")
        timeline.add(POINT_REACHED, f"{hit.instance_id} at {where} in pid {hit.pid}",
                     at=hit.at, instance=hit.instance_id)
        return True, hit, ""
    if skip:
        return False, None, "no other instance reached the fault point"
    if reached(statuses):
        timeline.add(POINT_REACHED, plan.describe())
        return True, None, ""
    finished = all(s.state.finished for s in statuses.values())
    why = ("every instance finished before reaching the fault point" if finished
           else "the fault point was not reached before the run's deadline")
    timeline.add(NOT_FIRED, why)
    return False, None, why


def _hit(session: RunSession, plan: FaultPlan, instance_id: str,
         status: InstanceStatus | None, fired: list[float], *,
         effects: Sequence[EffectRecord], reached: PointReached | None,
         ) -> tuple[PointReached, float] | None:
    """Where a fault caught this instance, and when that fault fired; None if none did.
    (A fault fires more than once when it is to hit every instance.) `effects` are its
    ledger rows, `reached` its call's arrival at the fault point, if any."""
    if not fired or plan.step is None or not plan.fault.expects_resume:
        return None
    fault_at = fired[0]
    if plan.point == "during-wait":
        # Parked at the wait when the fault fired: no effect of a later step before it.
        names = [n.name for n in session.flow.flat_nodes]
        later = set(names[names.index(plan.step) + 1:])
        early = [e for e in effects
                 if e.started_at < fault_at and declared_name(e.step) in later]
        if early or status is None:
            return None
        return PointReached(instance_id, plan.step, "during-wait", 0, fault_at), fault_at
    if reached is None:
        return None
    # The first fault after it reached its point; one that reached it after the last
    # fault was not hit.
    at = next((moment for moment in fired if moment >= reached.at), None)
    return None if at is None else (reached, at)


@dataclass(frozen=True)
class _Look:
    """What `_Settled` saw of the unfinished instances when it proved the early end."""

    statuses: dict[str, InstanceStatus]
    ledger_rows: dict[str, int]  # effect rows in the ledger, per instance
    held: dict[str, float]  # until when nothing can move each held one (its `why` may
    # count a retry's attempts, which move nothing)


@dataclass
class _Settled:
    """Whether every unfinished instance is provably lost, provably held up past the
    run's deadline, or provably parked, so that waiting for the deadline could change
    nothing; `proof` says how it was proven.

    Lost: the engine's `holds()` says nothing holds it (no message in the broker's queues
    or unacknowledged set, no task in a live worker's hands, no timer, no running
    workflow or row its tick advances); an engine that cannot tell is never taken for a
    "no". Held up: it is held (so at the deadline it would be judged stuck, as it is
    now), but only by what the engine gives back at a known time after the deadline
    (`Engine.held_until`: a dead worker's unacknowledged messages on Redis, back after
    the visibility timeout; a state machine's row whose decision was lost, moved only by
    its wait's expiry). An instance that waits for an answer the run has yet to send is
    never held up: the answer moves it. Parked: it waits for a signal the run will not send, at a
    wait whose deadline falls after the run's, even counted from the first instance's
    start.

    A proof is taken only when the next round (SETTLED_CHECK later) proves it again and
    a fresh read of the engine and the ledger finds each unfinished instance as the
    first did: statuses lag the ledger (a batched read, a finish task not recorded yet)
    and a message moves between workers in steps, so one round's proof may be of an
    instance that is still moving.
    """

    session: RunSession
    first_start: float  # monotonic, before the first instance started
    deadline: float  # monotonic
    proof: str = field(default="", init=False)
    # What holds() said of each instance when the proof was made.
    found: dict[str, tuple[bool | None, str]] = field(default_factory=dict, init=False)
    held: dict[str, HeldUp] = field(default_factory=dict, init=False)  # until when
    _asked: float = field(default=0.0, init=False)
    # What the engine and the ledger showed when the proof last held: the run ends only
    # when a later round proves it again and finds the same (see `_look`).
    _first: _Look | None = field(default=None, init=False)

    def __call__(self, statuses: dict[str, InstanceStatus]) -> bool:
        unfinished = {iid: s for iid, s in statuses.items() if not s.state.finished}
        if not unfinished or time.monotonic() - self._asked < SETTLED_CHECK:
            return False
        if time.monotonic() > self.deadline:
            return False  # the run ends now anyway: a proof would only delay its judging
        self._asked = time.monotonic()
        proven = self._prove(unfinished)
        if proven is None:
            self._first = None
            return False
        look = self._look(unfinished.keys(), proven[2])
        if look is None or look != self._first:
            # Proven for the first time, on what may be a moment's lag (a batched status
            # behind its instance, a finish in flight, a message a new worker took but
            # has not marked yet), or on a look that differs: the next round proves it
            # again.
            self._first = look
            return False
        self.proof, self.found, self.held = proven
        return True

    def _look(self, unfinished: Collection[str],
              held: dict[str, HeldUp]) -> _Look | None:
        """Each unfinished instance's status read again by itself, and its rows in the
        ledger, with when nothing can move each held one: what must stay the same from
        the round that first proved the early end to the one that ends the run. None
        when the engine or the ledger does not answer."""
        try:
            statuses = {iid: self.session.engine.status(iid) for iid in unfinished}
            rows = Counter(e.instance_id for e in self.session.ledger.effects(
                run_id=self.session.run_id) if e.instance_id in unfinished)
        except Exception:
            return None  # not proven: the next round looks again
        return _Look(statuses, dict(rows), {iid: up.until for iid, up in held.items()})

    def _prove(self, unfinished: dict[str, InstanceStatus],
               ) -> tuple[str, dict[str, tuple[bool | None, str]], dict[str, HeldUp]] | None:
        """The proof that waiting for the deadline changes nothing, with what holds()
        said of each instance and until when each held one is held; None when not proven."""
        if any(self._owed_answer(iid, s) for iid, s in unfinished.items()):
            return None  # the run sends it on this round, after this look (`watch`)
        parked = {iid for iid, s in unfinished.items() if self._parked(s)}
        found: dict[str, tuple[bool | None, str]] = {}
        held: dict[str, HeldUp] = {}
        for iid in unfinished.keys() - parked:
            found[iid] = _holds(self.session, iid)
            if found[iid][0] is False:
                continue
            if found[iid][0] is None or (up := self._held_past_deadline(iid)) is None:
                return None
            held[iid] = up
        lost = [iid for iid in found if iid not in held]
        # holds() says "no" for an instance that finished since its status was read (a
        # worker failing its task visibly): only one still unfinished after it is lost.
        if any(self._finished_now(iid) for iid in lost):
            return None
        parts = []
        if lost:
            parts.append(f"nothing holds {', '.join(sorted(lost))}: "
                         f"{self.session.engine.name} keeps no message, task, timer or "
                         "record that can move it")
        if held:
            parts.append(f"nothing can move {', '.join(sorted(held))} before the run's "
                         "deadline (see their held-up events)")
        if parked:
            parts.append(f"{', '.join(sorted(parked))} wait(s) for a signal this run does "
                         "not send, past the run's deadline")
        return "ended early: " + "; ".join(parts), found, held

    def _held_past_deadline(self, instance_id: str) -> HeldUp | None:
        try:
            up = self.session.engine.held_until(instance_id)
        except Exception:
            return None  # not proven: the next round looks again
        deadline = time.time() + (self.deadline - time.monotonic())
        return up if up is not None and up.until > deadline else None

    def _finished_now(self, instance_id: str) -> bool:
        try:
            return self.session.engine.status(instance_id).state.finished
        except Exception:
            return True  # not proven: the next round looks again

    def _owed_answer(self, instance_id: str, status: InstanceStatus) -> bool:
        """Whether the instance waits for a decision the run sends and has not sent yet."""
        if status.state is not InstanceState.WAITING:
            return False
        wait = next_wait(self.session.flow, status.done)
        return (wait is not None and wait.signal in self.session.options.decisions
                and (instance_id, wait.signal) not in self.session.signalled)

    def _parked(self, status: InstanceStatus) -> bool:
        if status.state is not InstanceState.WAITING:
            return False
        wait = next_wait(self.session.flow, status.done)
        return (wait is not None and wait.signal not in self.session.options.decisions
                and self.first_start + wait.deadline > self.deadline)


def _held_up_text(held_up: HeldUp) -> str:
    """A held-up event's words: until when nothing can move the instance, and why."""
    if math.isinf(held_up.until):
        return f"nothing can move it until a deploy: {held_up.why}"
    until = datetime.fromtimestamp(held_up.until, UTC).isoformat(timespec="seconds")
    return (f"nothing can move it before {until} ({held_up.until - time.time():.0f} s from "
            f"now, after the run's deadline): {held_up.why}")


def _holds(session: RunSession, instance_id: str) -> tuple[bool | None, str]:
    """Whether the engine still holds the instance; None, and why, when it cannot tell."""
    try:
        return session.engine.holds(instance_id), ""
    except Exception as error:
        return None, str(error) or type(error).__name__


def versions_ran(history: Sequence[HistoryEvent]) -> str:
    """Which version ran each step, from the engine's record ("" when it names none):
    "crm.reserve on v1, crm.activate on v2"."""
    return ", ".join(f"{e.detail} on {e.version}" for e in history if e.version and e.detail)


def _last_look(session: RunSession, statuses: dict[str, InstanceStatus],
               found: Mapping[str, tuple[bool | None, str]],
               ) -> tuple[dict[str, InstanceStatus], dict[str, tuple[bool | None, str]]]:
    """The statuses the run is judged on (`RunSession.exact`), and what holds each
    instance still unfinished (`_holds`; those in `found` as found). What holds it is
    asked first: an instance that finishes before its status is read again is judged on
    its finished status, never lost on the "no" its finishing gave (3,401 of 5,000
    chain instances that finished while a run was judged were judged lost so)."""
    holds = _holds_of(session, [iid for iid, s in statuses.items() if not s.state.finished],
                      found)
    statuses = session.exact(statuses)
    return statuses, {iid: held for iid, held in holds.items()
                      if not statuses[iid].state.finished}


def _holds_of(session: RunSession, instance_ids: Sequence[str],
              found: Mapping[str, tuple[bool | None, str]],
              ) -> dict[str, tuple[bool | None, str]]:
    """`_holds` of each instance (those in `found` as found), asked together where the
    engine can (`ReadsTogether`)."""
    asked = [iid for iid in instance_ids if iid not in found]
    if not isinstance(session.engine, ReadsTogether):
        return {**{iid: _holds(session, iid) for iid in asked},
                **{iid: found[iid] for iid in instance_ids if iid in found}}
    answers = session.engine.holds_all(asked)
    return {**{iid: (None, str(a) or type(a).__name__) if isinstance(a, Exception)
               else (a, "") for iid, a in answers.items()},
            **{iid: found[iid] for iid in instance_ids if iid in found}}


def _histories(session: RunSession,
               instance_ids: Sequence[str]) -> dict[str, list[HistoryEvent]]:
    """Each instance's history from the engine, read together where the engine can
    (`ReadsTogether`); one it could not read is a single `history-unavailable` event."""
    if isinstance(session.engine, ReadsTogether):
        read = session.engine.histories(instance_ids)
        return {iid: _unavailable(h) if isinstance(h, Exception) else h
                for iid, h in read.items()}
    histories = {}
    for iid in instance_ids:
        try:
            histories[iid] = session.engine.history(iid)
        except Exception as error:
            histories[iid] = _unavailable(error)
    return histories


def _unavailable(error: Exception) -> list[HistoryEvent]:
    return [HistoryEvent(time.time(), "history-unavailable", str(error))]


def _store(store: EvidenceStore, options: ChaosOptions, session: RunSession, flow: Flow,
           timeline: Timeline, statuses: dict[str, InstanceStatus],
           holds: dict[str, tuple[bool | None, str]],
           histories: dict[str, list[HistoryEvent]], *, applicable: bool, fired: bool,
           reason: str, acts: FaultActs | None = None) -> ChaosResult:
    ledger = session.ledger
    fault_times = [timeline.started + e.at for e in timeline.events
                   if e.kind == FAULT_FIRED.kind]
    kinds = timeline_events()
    # When each recovery began, and whether it was a worker started (in place of one
    # the fault took): only then did a worker that outlived the fault not wait for it.
    recoveries = sorted((timeline.started + e.at, e.kind == WORKER_STARTED.kind)
                        for e in timeline.events
                        if e.kind in kinds and kinds[e.kind].category == "recovery")
    # The run's ledger rows read once, not a few queries per instance: thousands of
    # instances are judged in one pass.
    entries = {entry.instance_id: entry for entry in ledger.instances(session.run_id)}
    rows = ledger.effects(run_id=session.run_id)
    effects_of: dict[str, list[EffectRecord]] = defaultdict(list)
    for row in rows:
        effects_of[row.instance_id].append(row)
    plan = options.plan
    reached = (ledger.reached_by(session.instance_ids, plan.step, plan.point)  # type: ignore[arg-type]
               if plan.step and plan.point in ("before-effect", "after-effect") else {})
    def recovery(fault_at: float | None) -> tuple[float | None, frozenset[int]]:
        """When the recovery from the fault at `fault_at` began, and the processes that
        made calls before the fault, when that recovery was a worker started."""
        if fault_at is None:
            return None, frozenset()
        moment, worker = next(((m, w) for m, w in recoveries if m >= fault_at),
                              (None, False))
        return moment, ran_before_fault(fault_at) if worker else frozenset()

    @functools.cache  # by fault time: a run has one or a few
    def ran_before_fault(moment: float) -> frozenset[int]:
        """The processes that made effect calls before `moment`."""
        return frozenset(e.worker_pid for e in rows if e.started_at < moment and e.worker_pid)

    verdicts = []
    for request in session.requests:
        iid = request.instance_id
        entry, effects = entries.get(iid) or ledger.instance(iid), effects_of[iid]
        # An instance started after the fault fired (the first on a deploy's new code) was
        # not in flight: the fault cannot have hit it.
        faced = [] if fault_times and entry.started_at > fault_times[0] else fault_times
        hit = _hit(session, plan, iid, statuses.get(iid), faced, effects=effects,
                   reached=reached.get(iid))
        held, why = holds.get(iid, (None, ""))
        fault_at = hit[1] if hit else next(iter(faced), None)
        recovered_at, survivors = recovery(fault_at)
        judged = judge_instance(flow, entry, effects, statuses[iid],
                                engine_holds=held, cannot_tell=why,
                                reached=hit[0] if hit else None, fault_at=fault_at,
                                history=histories.get(iid, ()),
                                recovered_at=recovered_at, ran_before_fault=survivors,
                                interrupted_at=session.interrupted.get(iid))
        judged = judge_acts(judged, flow, entry, effects, statuses[iid], acts or FaultActs())
        app = options.run.app
        if app is not None and app.audit is not None:
            # What the team's own systems recorded of each commitment, by its reader.
            judged = judge_audit(judged, entry, effects, functools.partial(
                app.audit_records, entry.tenant_id, entry.entity_id))
        verdicts.append(judged)
    fault = options.plan.fault
    verdict = judge_run(verdicts, fault=FaultFacts(fault.fires, fired, fault.expects_resume,
                                                   reason) if applicable else None,
                        # A pinned deploy adds an instance after the fault: never negative.
                        not_started=max(0, options.run.instances - len(verdicts))
                        if applicable else 0)
    stack = session.stack
    record = RunRecord(
        run_id=session.run_id,
        created_at=now_iso(),
        started_at=timeline.started,
        flow=FlowRecord(name=flow.name, version=flow.version, source=flow.source,
                        definition=flow_to_dict(flow)),
        engine=session.engine.name,
        profile=options.profile,
        settings=session.engine.settings,
        fault=FaultRecord.of(options.plan.to_dict(), description=options.plan.describe(),
                             applicable=applicable, fired=fired, reason=reason),
        options=OptionsRecord(instances=options.run.instances, workers=options.run.workers,
                              deadline=options.run.timeout,
                              decisions=dict(options.run.decisions),
                              wait_deadline=options.wait_deadline,
                              app=options.run.app.name if options.run.app is not None
                              else None,
                              time_scale=session.time_scale,
                              workers_from=options.run.workers_from,
                              input=dict(options.run.input)),
        environment=EnvironmentRecord(
            host=host(), packages=package_versions(),
            servers={**server_versions(stack.temporal.binary if stack.temporal else None,
                                       stack.redis.binary if stack.redis else None),
                     **session.engine.server_versions()},
            services=stack.services.describe()),
        timeline=tuple(timeline.events),
        instances=tuple(InstanceEvidence(v, tuple(histories.get(v.instance_id, [])))
                        for v in verdicts),
        ledger=tuple(rows),
        verdict=verdict,
    )
    path = store.save_run(record)
    store.save_histories(session.run_id, session.run_dir / HISTORIES)
    return ChaosResult(
        run_id=session.run_id, flow=flow.name, engine=session.engine.name, plan=options.plan,
        profile=options.profile, applicable=applicable, reason=reason, fired=fired,
        instances=tuple(verdicts), verdict=verdict, evidence=path,
        time_scale=session.time_scale,
    )
