"""A plain run of a flow on one engine: its options, and what became of each instance.

The run itself is a session (`graduate.runs.session`): services, workers, instances,
and every process stopped at the end. A plain run starts the instances, answers their
waits as the options say, and summarises them once they finished or the deadline passed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from graduate.adapters.base import InstanceState, InstanceStatus
from graduate.apps import App
from graduate.check import judge_instance
from graduate.config import Settings
from graduate.errors import ConfigError, InputError
from graduate.flow import Flow, InstanceRequest
from graduate.ledger import FailureMode, Ledger
from graduate.runs.session import load_run_flow, new_run_id, open_session, validate_options
from graduate.runs.workers import WorkersKind
from graduate.services.provider import Stack
from graduate.timescale import TimeScale, TimeScaleRecord

# Kept importable from here for the callers that take a run's options from this module.
__all__ = ["Decision", "Failure", "InstanceResult", "RunOptions", "RunResult", "approve_all",
           "new_run_id", "run_flow", "summarise", "validate_options"]
_FAILURE = re.compile(
    r"(?P<step>[a-z][a-z0-9_]*)=(?P<mode>permanent|transient(?::(?P<times>[0-9]+))?)", re.ASCII)
# A wait's answer, or "interrupt": the flow's interrupt signal, sent by the harness (see
# `RunOptions.interrupt_after`).
Decision = Literal["approve", "reject", "interrupt"]


@dataclass(frozen=True)
class Failure:
    """A failure injected into the system behind one step, for every instance."""

    step: str
    mode: FailureMode
    times: int = 1

    @classmethod
    def parse(cls, text: str) -> Failure:
        """`STEP=transient[:N]` (N from 1) or `STEP=permanent`."""
        match = _FAILURE.fullmatch(text)
        if match is None or (match["times"] is not None and int(match["times"]) < 1):
            raise ConfigError(f"--fail {text!r} is not understood; write STEP=transient:N "
                              "(fail N >= 1 times, then succeed) or STEP=permanent")
        if match["mode"] == "permanent":
            return cls(step=match["step"], mode="permanent")
        return cls(step=match["step"], mode="transient", times=int(match["times"] or 1))


def parse_inputs(items: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """`--input NAME=ITEM,ITEM,...` (repeatable, one per input) as {name: items}; the
    items themselves are checked against the flow (`Flow.input_for`)."""
    given: dict[str, tuple[str, ...]] = {}
    for text in items:
        name, sep, listed = text.partition("=")
        items_given = tuple(item.strip() for item in listed.split(","))
        if not sep or not name.strip() or not listed.strip():
            raise InputError(f"--input {text!r} is not understood; write NAME=ITEM,ITEM,... "
                             "for example --input parties=acme,bidco,counsel")
        if "" in items_given:
            raise InputError(f"--input {text!r} has an empty item; separate items by single "
                             "commas, for example parties=acme,bidco")
        if name.strip() in given:
            raise InputError(f"--input {name.strip()} is given twice; give each input once, "
                             "its items separated by commas")
        given[name.strip()] = items_given
    return given


# The flow's inputs as the library API takes them: {"parties": ["acme", "bidco"]} (or
# "acme,bidco"), or the command line's ["parties=acme,bidco"].
InputValues = Mapping[str, Sequence[str] | str] | Sequence[str]


def input_values(given: InputValues | None) -> dict[str, tuple[str, ...]]:
    """`given` as RunOptions holds it: {input name: its items}."""
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        if isinstance(given, str):
            given = [given]
        return parse_inputs(given)
    values: dict[str, tuple[str, ...]] = {}
    for name, items in given.items():
        if isinstance(items, str):
            values[name] = tuple(item.strip() for item in items.split(","))
        elif isinstance(items, Sequence) and all(isinstance(i, str) for i in items):
            values[name] = tuple(items)
        else:
            raise InputError(f"input {name!r} = {items!r} must be a list of names, for "
                             f"example {{{name!r}: [\"acme\", \"bidco\"]}}, or \"acme,bidco\"")
    return values


@dataclass(frozen=True)
class RunOptions:
    """What to run: a flow, an engine, how many instances, and how to answer waits."""

    flow: str
    engine: str
    instances: int = 1
    workers: int = 1
    timeout: float = 120.0
    decisions: Mapping[str, Decision] = field(default_factory=dict)
    # With `decisions = {INTERRUPT_SIGNAL: "interrupt"}`, where the interrupt reaches
    # each instance: a step's name, while that step is in flight; a wait's name, while
    # the instance waits there; None, as soon as it started. See RunSession._interrupt.
    interrupt_at: str | None = None
    failures: Sequence[Failure] = ()
    tenant_id: str = "demo-tenant"
    temporal_port: int | None = None
    redis_port: int | None = None
    # A team's app ([tool.graduate.apps.NAME], see `graduate.apps.resolve_app`) runs
    # instead of graduate's model; `flow` is then the flow it implements, `engine` an app
    # engine.
    app: App | None = None
    # Compresses every duration of the flow for the run (`graduate.timescale`).
    time_scale: TimeScale = field(default_factory=TimeScale)
    # Where the workers come from: started by the run ("local"), or registered by
    # `graduate worker` on any host ("external"; then `workers` is how many it needs).
    workers_from: WorkersKind = "local"
    # The flow's inputs (`[input]`) every instance of the run takes: input name -> its
    # items (`{"parties": ("acme", "bidco")}`); an input not given takes its default.
    input: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # One input per instance, in the order they start, over `input` (an instance past
    # the end of the list takes `input` alone).
    instance_inputs: Sequence[Mapping[str, tuple[str, ...]]] = ()

    def input_of(self, number: int) -> Mapping[str, tuple[str, ...]]:
        """The input instance `number` (from 1) is given."""
        own = self.instance_inputs[number - 1] if number <= len(self.instance_inputs) else {}
        return {**self.input, **own}


@dataclass(frozen=True)
class InstanceResult:
    """What became of one instance, from its engine and from the ledger."""

    instance_id: str
    correlation_id: str
    trace_id: str
    state: InstanceState
    steps_done: int
    steps_total: int
    effects_applied: int
    effects_absorbed: int
    duplicates: int
    duration: float | None
    detail: str
    interrupted_at: float | None = None  # when the run sent the flow's interrupt, if it did


@dataclass(frozen=True)
class RunResult:
    run_id: str
    flow: str
    engine: str
    instances: tuple[InstanceResult, ...]
    services: dict[str, object]
    not_started: int = 0  # instances the run's deadline passed before it could start
    time_scale: TimeScaleRecord | None = None  # the flow's durations as the run used them

    @property
    def finished(self) -> bool:
        return not self.not_started and all(i.state.finished for i in self.instances)

    @property
    def succeeded(self) -> bool:
        """Every instance started and ended as the flow intends: completed or compensated."""
        return not self.not_started and all(
            i.state in (InstanceState.COMPLETED, InstanceState.COMPENSATED)
            for i in self.instances)


def run_flow(settings: Settings, options: RunOptions, *, flow: Flow | None = None,
             stack: Stack | None = None,
             on_status: Callable[[str, InstanceStatus], None] | None = None) -> RunResult:
    """Run `options.flow` on `options.engine` and report what became of every instance.

    `flow` and `stack` are the flow (as loaded from `options.flow`; the run applies its
    time scale) and the services the caller already loaded and resolved, once, for this
    run or several; without them the run does both itself.
    """
    # The deadline covers the whole run: services, workers, and starting the instances.
    deadline = time.monotonic() + options.timeout
    prepared, time_scale = load_run_flow(settings, options, flow)
    with open_session(settings, options, flow=prepared, time_scale=time_scale, stack=stack,
                      deadline=deadline) as session:
        started = session.start_instances()
        statuses = session.exact(session.watch(session.deadline, on_status=on_status))
        return RunResult(
            run_id=session.run_id, flow=session.flow.name, engine=session.engine.name,
            instances=tuple(summarise(session.flow, session.ledger, r,
                                      statuses[r.instance_id],
                                      interrupted_at=session.interrupted.get(r.instance_id))
                            for r in session.requests),
            services=session.stack.services.describe(),
            not_started=options.instances - started,
            time_scale=session.time_scale,
        )


def approve_all(flow: Flow) -> dict[str, Decision]:
    """A decision for every wait of `flow`: approve."""
    return {wait.signal: "approve" for wait in flow.waits}


def summarise(flow: Flow, ledger: Ledger, request: InstanceRequest,
              status: InstanceStatus, *, interrupted_at: float | None = None,
              ) -> InstanceResult:
    """What became of one instance, counted by the checker (`graduate.check`), as a chaos
    run counts it: a repeat its idempotency key absorbed is not a duplicate."""
    record = ledger.instance(request.instance_id)
    flow = flow.for_instance(record.request)  # its steps as the instance ran them
    verdict = judge_instance(flow, record, ledger.effects(instance_id=request.instance_id),
                             status, engine_holds=None, interrupted_at=interrupted_at)
    return InstanceResult(
        instance_id=request.instance_id, correlation_id=request.correlation_id,
        trace_id=request.trace_id, state=status.state,
        steps_done=sum(1 for name in status.done if name in {s.name for s in flow.steps}),
        steps_total=len(flow.steps),
        effects_applied=sum(e.applied for e in verdict.effects if e.kind == "effect"),
        effects_absorbed=verdict.absorbed,
        duplicates=verdict.unabsorbed_duplicates,
        duration=status.finished_at - record.started_at if status.finished_at else None,
        detail=status.detail,
        interrupted_at=interrupted_at,
    )
