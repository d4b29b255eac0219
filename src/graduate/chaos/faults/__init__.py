"""The faults graduate can fire: one module each, all behind the `Fault` protocol.

A fault module says where its fault applies (by the engine's declared capabilities
and by who runs the services), how it fires and how the operator recovers, which
timeline events it writes, and whether a resume is expected after it. Its options
(a cold stop, a versioned deploy, the change deployed) are declared by the fault and
carried by its `FaultPlan`. Nothing outside a fault's own module compares its name.

A fault point is deterministic: `before-effect` and `after-effect` make the armed step
pause in the ledger (see `Ledger.arm`) and the fault fires only once it reports there;
`during-wait` fires once an instance waits on the named wait; `+SECONDS` fires at a
time offset from the start of the run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias

from graduate.adapters.base import InstanceState, InstanceStatus
from graduate.adapters.registry import EngineDescription
from graduate.check import FaultActs
from graduate.errors import ConfigError
from graduate.fleet import FLEET_EVENTS
from graduate.flow import Flow, Step, Wait, check_seconds
from graduate.ledger import PointReached
from graduate.runs.supervisor import SUPERVISOR_EVENTS
from graduate.runs.timeline import SESSION_EVENTS, EventKind, Timeline

if TYPE_CHECKING:
    from graduate.chaos.proxy import Proxy
    from graduate.config import Settings
    from graduate.runner import RunOptions
    from graduate.runs.session import RunSession
    from graduate.services.model import Services
    from graduate.services.provider import Stack

POINTS = ("before-effect", "after-effect", "during-wait")
# Of several instances, the fault hits the first at its point ("one"), or fires again
# for each instance that reaches the point (at a wait: once all wait there) ("all").
Hit: TypeAlias = Literal["one", "all"]
HITS: tuple[Hit, ...] = ("one", "all")
_OFFSET = re.compile(r"^\+(\d+(?:\.\d+)?)s?$")
OptionValue: TypeAlias = bool | str
# What a fault restarts: graduate can only restart a service it started itself.
Restarts: TypeAlias = Literal["broker", "server"] | None
RESTARTED = {"broker": "broker", "server": "Temporal server"}  # in words
# How a decision report groups faults: what they take away (or, for "operator", what a
# caller or an operator does to instances in flight: a second start, a rollback).
Group: TypeAlias = Literal["baseline", "worker", "service", "wait", "operator"]

POINT_REACHED = EventKind("fault-point-reached", "fault point reached", "point")
FAULT_FIRED = EventKind("fault-fired", "fault fired", "fault")
NOT_FIRED = EventKind("fault-not-fired", "fault did not fire", "stop")
FAULT_EVENTS = (POINT_REACHED, FAULT_FIRED, NOT_FIRED)


@dataclass(frozen=True)
class FaultOption:
    """A variant of a fault. A flag may be written `FAULT+NAME` in a matrix cell."""

    name: str
    default: OptionValue
    help: str  # for --help: what the option does
    sentence: str = ""  # for a report, after the fault's description: "with the ..."
    choices: tuple[str, ...] = ()  # for a text option

    @property
    def flag(self) -> bool:
        return isinstance(self.default, bool)


# An option of the faults that act on instances (a second start, a cancellation).
EVERY = FaultOption("all", False, "act on every instance in flight at the point, not only "
                                  "the first to reach it",
                    sentence="on every instance in flight")


@dataclass(frozen=True)
class FaultPlan:
    """One fault, where it fires, its options, and how the operator recovers."""

    fault: Fault
    step: str | None = None  # a step or wait name; None for no fault or a time offset
    point: str | None = None  # before-effect, after-effect, during-wait, or None
    offset: float | None = None  # seconds from the start, for a time-offset fault
    restart_delay: float = 1.0  # how long the operator takes to restart what was killed
    partition_for: float = 5.0  # how long a partition lasts
    options: Mapping[str, OptionValue] = field(default_factory=dict)  # the fault's own
    hit: Hit = "one"  # which of several instances it hits: see HITS

    def option(self, name: str) -> Any:
        """The value of one of the fault's options (its default when not given)."""
        declared = {o.name: o for o in self.fault.options}
        return self.options.get(name, declared[name].default)

    @property
    def label(self) -> str:
        """The fault with its flags on, as a matrix cell names it: `stop-worker+cold`."""
        flags = [o.name for o in self.fault.options if o.flag and self.option(o.name)]
        return "+".join((self.fault.name, *flags))

    def describe(self) -> str:
        where = (f" at {self.step}:{self.point}" if self.step else
                 f" at +{self.offset:g}s" if self.offset is not None else "")
        every = " on every instance" if self.hit == "all" and self.fault.fires else ""
        return f"{self.fault.name}{where}{self.fault.variant(self)}{every}"

    def to_dict(self) -> dict[str, Any]:
        """The plan as the evidence keeps it: every registered option, so that records
        of all faults have the same keys."""
        return {"fault": self.fault.name, "step": self.step, "point": self.point,
                "offset": self.offset, "restart_delay": self.restart_delay,
                "partition_for": self.partition_for, "hit": self.hit,
                **{o.name: self.option(o.name) if o in self.fault.options else o.default
                   for o in _all_options()}}


@dataclass
class FaultContext:
    """What a fault acts on while it fires and recovers."""

    session: RunSession
    plan: FaultPlan
    reached: PointReached | None  # the instance that reached the point, if one did
    proxies: Sequence[Proxy]  # between the workers and the services, if routed
    release: Callable[[], None]  # let every step paused at the fault point go on
    deadline: float = float("inf")  # the run's (monotonic): no fault waits past it
    acts: FaultActs = field(default_factory=FaultActs)  # for the verdicts

    @property
    def timeline(self) -> Timeline:
        return self.session.timeline

    def in_flight(self) -> list[str]:
        """The instances the fault acts on: the one that reached the point, or with the
        `all` option every unfinished instance once each has reached it (a step's point
        armed on each instance, a wait, or for a time offset, the moment itself)."""
        session, plan = self.session, self.plan
        every = bool(plan.options.get(EVERY.name, False))
        if not every and self.reached is not None:
            return [self.reached.instance_id]

        def there(instance_id: str, status: InstanceStatus) -> bool:
            if plan.point in ("before-effect", "after-effect"):
                return session.ledger.reached(instance_id, plan.step or "",
                                              plan.point) is not None  # type: ignore[arg-type]
            if plan.point == "during-wait":
                return (status.state is InstanceState.WAITING
                        and (plan.step or "") not in status.done)
            return True

        def settled(statuses: dict[str, InstanceStatus]) -> bool:
            arrived = [iid for iid, s in statuses.items() if there(iid, s)]
            if not every:
                return bool(arrived)
            return all(s.state.finished or there(iid, s) for iid, s in statuses.items())

        # Bounded by the run's deadline: with fewer workers than instances, a worker that
        # runs one step at a time holds the others back, and those are left out.
        statuses = session.watch(min(self.deadline, time.monotonic() + session.options.timeout),
                                 until=settled)
        arrived = [iid for iid in session.instance_ids
                   if not statuses[iid].state.finished and there(iid, statuses[iid])]
        return arrived if every else arrived[:1]


class Fault:
    """The protocol every fault module implements (with the common answers here).

    A module defines one subclass and one instance of it, `FAULT`, and the registry
    below lists it.
    """

    name: str
    description: str  # one line, for --help and reports
    title: str = ""  # in a sentence, when the name is not enough: "a deploy of changed code"
    options: tuple[FaultOption, ...] = ()
    # The options a run must have had for an ADR gate to count it as proof.
    proven_with: ClassVar[Mapping[str, OptionValue]] = {}
    events: tuple[EventKind, ...] = ()  # the kinds of timeline event it writes
    expects_resume: bool = True  # a step is in flight when it fires
    fires: bool = True  # False only for the baseline
    restarts: Restarts = None
    group: Group = "worker"
    # A matrix cell's fault point when the cell gives none: at the first wait (True)
    # when the flow has one, else the matrix's default point.
    at_wait: bool = False
    changes_code: bool = False  # a deploy: what a versioning guard is for
    needs_point: bool = True  # --at is required
    # Nobody answers the waits, so a run shortens their deadlines to stay fast.
    lets_waits_expire: bool = False
    heals_after: bool = False  # it lasts --partition-for seconds, then heals

    def applies(self, plan: FaultPlan, engine: EngineDescription) -> str | None:
        """Why `plan` cannot be performed on `engine`, or None when it can."""
        return None

    def needs_own_workers(self, plan: FaultPlan) -> str | None:
        """Why `plan` cannot be performed on workers graduate did not start (registered
        by `graduate worker`, driven through the fleet ledger), or None when it can: the
        worker faults act through `RunSession.workers`, whoever started them."""
        return None

    def restarted(self, plan: FaultPlan, engine: EngineDescription) -> Restarts:
        """What `plan` kills and starts again on `engine` (`restarts`, unless an option
        adds a service)."""
        return self.restarts

    def external(self, restarts: Restarts = None) -> str:
        """Why this fault cannot be performed when what it restarts is someone else's."""
        what = restarts or self.restarts or ""
        return (f"the {RESTARTED.get(what, 'service')} is external: graduate cannot kill "
                "and restart it")

    def requirement(self, at: str) -> str:
        """The fault as an ADR gate requires it, `at` a point (" at STEP:POINT") or ""."""
        if not self.proven_with:
            return f"{self.name}{at}"
        flags = ", ".join(name for name, value in self.proven_with.items() if value is True)
        return f"{self.title or self.name} ({self.name}{at}, {flags})"

    def proves(self, options: Mapping[str, OptionValue]) -> bool:
        """Whether a run with `options` counts as proof for an ADR gate: it had the
        options `proven_with` names."""
        return all(options.get(name) == value for name, value in self.proven_with.items())

    def explain(self, options: Mapping[str, OptionValue]) -> str:
        """The description, with what the flags among `options` change."""
        return "".join([self.description, *(f", {o.sentence}" for o in self.options
                                             if o.flag and options.get(o.name))])

    def variant(self, plan: FaultPlan) -> str:
        """The plan's options in words, after its name and point ("" without options)."""
        return ""

    def check(self, plan: FaultPlan, flow: Flow) -> FaultPlan:
        """Refuse a plan the flow cannot take, before any run; the plan to run."""
        return plan

    def adjust(self, plan: FaultPlan, flow: Flow, run: RunOptions) -> RunOptions:
        """The run's options under this fault (a wait nobody answers, say)."""
        return run

    def engine_settings(self, plan: FaultPlan, engine: EngineDescription,
                        settings: Mapping[str, Any]) -> dict[str, Any]:
        """The engine's settings under this fault, from the profile's `settings` (workers
        that must run as versions from the start, say)."""
        return dict(settings)

    def worker_services(self, settings: Settings,
                        proxies: list[Proxy]) -> Callable[[Stack], Services] | None:
        """What the workers connect to, when not the services themselves (proxies the
        fault can cut, each added to `proxies` for the harness to stop)."""
        return None

    def fire(self, context: FaultContext) -> None:
        """Fire the fault, then recover as an operator would."""
        raise NotImplementedError(self.name)

    def __repr__(self) -> str:
        return f"Fault({self.name!r})"


def _builtin() -> tuple[Fault, ...]:
    from graduate.chaos.faults import (
        deploy_change,
        double_start,
        kill_pool_child,
        kill_worker,
        none,
        partition,
        restart_broker,
        restart_server,
        rollback_rehearsal,
        stop_worker,
        wait_timeout,
    )

    return (none.FAULT, kill_worker.FAULT, kill_pool_child.FAULT, stop_worker.FAULT,
            restart_broker.FAULT, restart_server.FAULT, partition.FAULT,
            deploy_change.FAULT, wait_timeout.FAULT, double_start.FAULT,
            rollback_rehearsal.FAULT)


_REGISTRY: dict[str, Fault] = {}


def faults() -> tuple[Fault, ...]:
    """Every fault graduate knows, in the order --help lists them."""
    if not _REGISTRY:
        _REGISTRY.update((f.name, f) for f in _builtin())
    return tuple(_REGISTRY.values())


def fault_names() -> tuple[str, ...]:
    return tuple(f.name for f in faults())


def get_fault(name: str) -> Fault:
    """The fault called `name`, or a ConfigError that lists the known ones."""
    for fault in faults():
        if fault.name == name:
            return fault
    raise ConfigError(f"unknown fault {name!r}; choose one of: {', '.join(fault_names())}")


def _all_options() -> list[FaultOption]:
    return list({o.name: o for f in faults() for o in f.options}.values())


def descriptions() -> dict[str, str]:
    """Each fault's one-line description, by name."""
    return {f.name: f.description for f in faults()}


def timeline_events() -> dict[str, EventKind]:
    """Every kind of timeline event a run can write, by kind: the session's, the
    supervisor's, the fleet's commands to registered workers, and each fault's."""
    kinds = [*SESSION_EVENTS, *FAULT_EVENTS, *SUPERVISOR_EVENTS, *FLEET_EVENTS,
             *(e for f in faults() for e in f.events)]
    return {k.kind: k for k in kinds}


def parse_label(label: str) -> tuple[Fault, dict[str, OptionValue]]:
    """`FAULT[+FLAG...]` (as a matrix cell names a fault) -> the fault and its flags."""
    name, *flags = label.split("+")
    fault = get_fault(name)
    declared = {o.name for o in fault.options if o.flag}
    for flag in flags:
        if flag not in declared:
            known = ", ".join(f"{fault.name}+{o}" for o in sorted(declared)) or "no flags"
            raise ConfigError(f"fault {fault.name!r} has no option {flag!r} (its options: "
                              f"{known})")
    return fault, {flag: True for flag in flags}


def plan_from_record(data: Mapping[str, Any]) -> FaultPlan:
    """The plan a stored run's `fault` block describes (without checking it again)."""
    from graduate.chaos.faults import none

    fault = get_fault(str(data.get("fault") or none.NAME))
    return FaultPlan(fault, step=data.get("step"), point=data.get("point"),
                     offset=data.get("offset"),
                     restart_delay=float(data.get("restart_delay", 1.0)),
                     partition_for=float(data.get("partition_for", 5.0)),
                     options={o.name: data[o.name] for o in fault.options
                              if data.get(o.name, o.default) != o.default},
                     hit="all" if data.get("hit") == "all" else "one")


def parse_plan(fault: str | Fault, at: str | None, flow: Flow, *, restart_delay: float = 1.0,
               partition_for: float = 5.0, options: Mapping[str, OptionValue] | None = None,
               hit: str = "one", **named: OptionValue) -> FaultPlan:
    """Validate `--fault F --at STEP:POINT` (or `+SECONDS`) and its options (`options`,
    or named: `versioned=True`) against the flow. An option of another fault is refused
    unless it is left at its default. `hit` is which of several instances it hits."""
    chosen = fault if isinstance(fault, Fault) else get_fault(fault)
    own = _options(chosen, {**(options or {}), **named})
    _check_times(chosen, restart_delay, partition_for)
    if hit not in HITS:
        raise ConfigError(f"--hit {hit!r} is not understood; choose one (the first instance "
                          "at the fault point) or all (every instance, as each reaches it)")
    every: Hit = "all" if hit == "all" else "one"
    plan = FaultPlan(chosen, restart_delay=restart_delay, partition_for=partition_for,
                     options=own, hit=every)
    if not chosen.needs_point:  # the fault picks its own point, from a name at most
        return chosen.check(replace(plan, step=(at or "").partition(":")[0] or None), flow)
    if not at:
        raise ConfigError(f"--fault {chosen.name} needs --at STEP:POINT (POINT is one of "
                          f"{', '.join(POINTS)}) or --at +SECONDS")
    if match := _OFFSET.match(at):
        offset = check_seconds(float(match.group(1)), f"--at {at}", "+2.5", error=ConfigError)
        if every == "all":
            raise ConfigError(f"--hit all needs a fault point (STEP:POINT), not a time "
                              f"offset ({at}): a fault at a time hits whatever is in flight")
        return chosen.check(replace(plan, offset=offset), flow)
    name, sep, point = at.partition(":")
    if not sep or point not in POINTS:
        raise ConfigError(f"--at {at!r} is not understood; write STEP:POINT with POINT one "
                          f"of {', '.join(POINTS)}, or +SECONDS (for example +2.5)")
    node = next((n for n in flow.flat_nodes if n.name == name), None)
    if chosen.changes_code and every == "all" and point != "during-wait":
        raise ConfigError(f"--hit all with {chosen.name} needs WAIT:during-wait: a deploy "
                          "happens once, so it lands while every instance waits there")
    if point == "during-wait":
        find_wait(flow, name)
    elif not isinstance(node, Step):
        steps = ", ".join(s.name for s in flow.steps)
        raise ConfigError(f"--at {at!r}: flow {flow.name!r} has no step {name!r}; its steps: "
                          f"{steps}")
    return chosen.check(replace(plan, step=name, point=point), flow)


def _check_times(fault: Fault, restart_delay: float, partition_for: float) -> None:
    """Refuse a time no operator or network could keep (NaN, infinite, negative, absurd),
    and --partition-for given to a fault that does not heal after it."""
    check_seconds(restart_delay, "--restart-delay", "1", error=ConfigError)
    if restart_delay < 0:
        raise ConfigError(f"--restart-delay {restart_delay:g} is negative; give the seconds "
                          "the operator takes to restart what was killed, 0 or more")
    check_seconds(partition_for, "--partition-for", "5", error=ConfigError)
    if partition_for <= 0:
        raise ConfigError(f"--partition-for {partition_for:g}: a partition must last more "
                          "than 0 seconds, for example 5")
    if partition_for != FaultPlan(fault).partition_for and not fault.heals_after:
        raise ConfigError(f"--partition-for does not apply to --fault {fault.name}; faults "
                          "that take it: " + ", ".join(f.name for f in faults()
                                                       if f.heals_after))


def _options(fault: Fault, given: Mapping[str, OptionValue]) -> dict[str, OptionValue]:
    declared = {o.name: o for o in fault.options}
    others = {o.name: o for o in _all_options()}
    own: dict[str, OptionValue] = {}
    for name, value in given.items():
        if name in declared:
            option = declared[name]
            if option.choices and value not in option.choices:
                raise ConfigError(f"{fault.name}: {name} {value!r} is not one of "
                                  f"{', '.join(option.choices)}")
            if value != option.default:
                own[name] = value
        elif name not in others:
            raise ConfigError(f"no fault has an option {name!r}")
        elif value != others[name].default:
            raise ConfigError(f"the option {name} does not apply to {fault.name}; faults "
                              "that take it: " + ", ".join(
                                  f.name for f in faults()
                                  if any(o.name == name for o in f.options)))
    return own


def find_wait(flow: Flow, name: str | None) -> Wait:
    """The wait called `name` (the first wait when None), or a ConfigError."""
    waits = flow.waits
    if not waits:
        raise ConfigError(f"flow {flow.name!r} has no wait, so a wait cannot time out")
    if name is None:
        return waits[0]
    for wait in waits:
        if wait.name == name:
            return wait
    raise ConfigError(f"flow {flow.name!r} has no wait {name!r}; its waits: "
                      f"{', '.join(w.name for w in waits)}")


def not_applicable(plan: FaultPlan, engine: EngineDescription, *, local_broker: bool,
                   local_server: bool, own_workers: bool = True) -> str | None:
    """Why `plan` cannot be performed on `engine` with these services and workers
    (`own_workers`: graduate started them), or None."""
    reason = plan.fault.applies(plan, engine)
    if reason is not None:
        return reason
    if not own_workers and (reason := plan.fault.needs_own_workers(plan)) is not None:
        return reason
    if plan.fault.lets_waits_expire and engine.runs_app:
        return (f"{engine.title} sets its waits' deadlines in its own code; graduate can "
                "shorten only a model's")
    restarts = plan.fault.restarted(plan, engine)
    if restarts == "broker" and not local_broker:
        return plan.fault.external(restarts)
    if restarts == "server" and not local_server:
        return plan.fault.external(restarts)
    return None
