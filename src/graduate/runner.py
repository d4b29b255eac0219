"""One run of a flow on one engine: services, workers, instances, and what became of them.

This is the path of a run (DESIGN.md) without faults: resolve the services, start
the workers in their own process groups, register and start each instance with its
correlation and trace IDs, answer its waits if asked to, and wait until every
instance has finished or the run's deadline passes. Whatever happens, every process
the run started is stopped before it returns.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from graduate.adapters import check_engine, needs_temporal, open_engine
from graduate.adapters.base import Engine, InstanceState, InstanceStatus
from graduate.config import Settings
from graduate.errors import ConfigError
from graduate.flow import Flow, InstanceRequest, Step, Wait, load_flow
from graduate.ledger import FailureMode, Ledger, Outcome
from graduate.processes import ManagedProcess
from graduate.services.model import Services
from graduate.services.provider import Needs, Stack, open_stack

POLL_INTERVAL = 0.1
_FAILURE = re.compile(
    r"(?P<step>[a-z][a-z0-9_]*)=(?P<mode>permanent|transient(?::(?P<times>[0-9]+))?)", re.ASCII)
Decision = Literal["approve", "reject"]


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


@dataclass(frozen=True)
class RunOptions:
    """What to run: a flow, an engine, how many instances, and how to answer waits."""

    flow: str
    engine: str
    instances: int = 1
    workers: int = 1
    timeout: float = 120.0
    decisions: Mapping[str, Decision] = field(default_factory=dict)
    failures: Sequence[Failure] = ()
    tenant_id: str = "demo-tenant"
    temporal_port: int | None = None
    redis_port: int | None = None


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


@dataclass(frozen=True)
class RunResult:
    run_id: str
    flow: str
    engine: str
    instances: tuple[InstanceResult, ...]
    services: dict[str, object]

    @property
    def finished(self) -> bool:
        return all(i.state.finished for i in self.instances)

    @property
    def succeeded(self) -> bool:
        """Every instance ended as the flow intends: completed or compensated."""
        return all(i.state in (InstanceState.COMPLETED, InstanceState.COMPENSATED)
                   for i in self.instances)


def new_run_id() -> str:
    """Short enough to read in a table; the ledger keeps each instance's start time."""
    return secrets.token_hex(3)


def new_request(flow: Flow, run_id: str, number: int, tenant_id: str) -> InstanceRequest:
    return InstanceRequest(
        instance_id=f"{flow.name}-{run_id}-{number:02d}", run_id=run_id, tenant_id=tenant_id,
        entity_id=f"{run_id}-{number:02d}", date=f"{datetime.now(UTC):%Y%m%d}",
        correlation_id=str(uuid.uuid4()), trace_id=uuid.uuid4().hex,
    )


def validate_options(flow: Flow, options: RunOptions) -> None:
    """Reject options that do not fit the flow before anything starts."""
    check_engine(options.engine)
    if options.instances < 1 or options.workers < 1:
        raise ConfigError("--instances and --workers must be 1 or more")
    if options.timeout <= 0:
        raise ConfigError("--timeout must be a positive number of seconds")
    signals = {w.signal for w in flow.waits}
    for name, decision in options.decisions.items():
        if name not in signals:
            raise ConfigError(f"flow {flow.name!r} waits for no signal {name!r}; its waits "
                              f"take: {', '.join(sorted(signals)) or 'none'}")
        if decision not in ("approve", "reject"):
            raise ConfigError(f"decision {decision!r} for {name} must be approve or reject")
    steps = {s.name for s in flow.steps}
    for failure in options.failures:
        if failure.step not in steps:
            raise ConfigError(f"--fail names step {failure.step!r}, which flow {flow.name!r} "
                              f"does not have; its steps: {', '.join(sorted(steps))}")


@dataclass
class RunSession:
    """A run in progress: its flow, services, engine, workers and instances.

    `open_session` builds it and tears it down; a plain run and a chaos run differ
    only in what they do between starting the instances and judging them.
    """

    flow: Flow
    options: RunOptions
    run_id: str
    run_dir: Path
    ledger: Ledger
    stack: Stack
    engine: Engine
    workers: list[ManagedProcess] = field(default_factory=list)
    requests: list[InstanceRequest] = field(default_factory=list)
    signalled: set[tuple[str, str]] = field(default_factory=set)
    # Signals not to answer yet: a fault that fires during a wait holds its answer back.
    held_signals: set[str] = field(default_factory=set)
    # Told (instance, signal, decision) after each answer, so a timeline shows the human.
    on_signal: Callable[[str, str, str], None] | None = None

    @property
    def instance_ids(self) -> list[str]:
        return [r.instance_id for r in self.requests]

    def start_instances(self, prepare: Callable[[InstanceRequest], None] | None = None) -> None:
        """Register, prepare (inject failures, arm fault points) and start each instance."""
        for number in range(1, self.options.instances + 1):
            request = new_request(self.flow, self.run_id, number, self.options.tenant_id)
            self.ledger.register(self.flow, request, self.engine.name)
            for failure in self.options.failures:
                self.ledger.inject_failure(request.instance_id, failure.step, failure.mode,
                                           failure.times)
            if prepare is not None:
                prepare(request)
            self.requests.append(request)
            self.engine.start(request)

    def watch(self, deadline: float, *,
              until: Callable[[dict[str, InstanceStatus]], bool] | None = None,
              on_status: Callable[[str, InstanceStatus], None] | None = None,
              on_poll: Callable[[], None] | None = None,
              ) -> dict[str, InstanceStatus]:
        """Poll the engine until every instance finished, `until` holds, or `deadline`
        (monotonic) passed. An instance that waits for a signal listed in the options'
        decisions is sent that decision, once. `on_poll` runs on every round."""
        statuses: dict[str, InstanceStatus] = {}
        while True:
            if on_poll is not None:
                on_poll()
            for instance_id in self.instance_ids:
                previous = statuses.get(instance_id)
                if previous is not None and previous.state.finished:
                    continue
                status = self._status(instance_id, previous, deadline)
                if on_status is not None and previous != status:
                    on_status(instance_id, status)
                statuses[instance_id] = status
                self._answer(instance_id, status)
            if (all(s.state.finished for s in statuses.values())
                    or (until is not None and until(statuses))
                    or time.monotonic() > deadline):
                return statuses
            time.sleep(POLL_INTERVAL)

    def _status(self, instance_id: str, previous: InstanceStatus | None,
                deadline: float) -> InstanceStatus:
        # A broker or server being restarted by a fault makes status calls fail for a
        # while; the last known status stands until it answers again.
        try:
            return self.engine.status(instance_id)
        except Exception:
            if time.monotonic() > deadline:
                raise
            return previous or InstanceStatus(InstanceState.UNKNOWN,
                                              detail="the engine does not answer")

    def _answer(self, instance_id: str, status: InstanceStatus) -> None:
        if status.state is not InstanceState.WAITING:
            return
        wait = next_wait(self.flow, status.done)
        decisions = self.options.decisions
        if (wait and wait.signal in decisions and wait.signal not in self.held_signals
                and (instance_id, wait.signal) not in self.signalled):
            decision = decisions[wait.signal]
            try:
                self.engine.signal(instance_id, wait.signal, {"decision": decision})
            except Exception:
                return  # the engine is down; the next poll tries again
            self.signalled.add((instance_id, wait.signal))
            if self.on_signal is not None:
                self.on_signal(instance_id, wait.signal, decision)

    def result(self, statuses: dict[str, InstanceStatus]) -> RunResult:
        return RunResult(
            run_id=self.run_id, flow=self.flow.name, engine=self.engine.name,
            instances=tuple(summarise(self.flow, self.ledger, r, statuses[r.instance_id])
                            for r in self.requests),
            services=self.stack.services.describe(),
        )


@contextlib.contextmanager
def open_session(settings: Settings, options: RunOptions, *, flow: Flow | None = None,
                 engine_settings: dict[str, Any] | None = None, use_kept: bool = True,
                 worker_services: Callable[[Stack], Services] | None = None,
                 ) -> Iterator[RunSession]:
    """Services, engine and workers for one run; everything started is stopped on exit."""
    flow = flow or load_flow(options.flow, spikes_dir=settings.spikes_dir)
    validate_options(flow, options)
    run_id = new_run_id()
    run_dir = settings.state_dir / "runs" / run_id
    needs = Needs(temporal=needs_temporal(options.engine),
                  broker=not needs_temporal(options.engine))
    with open_stack(settings, needs, temporal_port=options.temporal_port,
                    redis_port=options.redis_port, use_kept=use_kept) as stack:
        engine = open_engine(
            options.engine, flow, stack.services, run_dir, settings=engine_settings,
            worker_services=worker_services(stack) if worker_services else None)
        session = RunSession(flow=flow, options=options, run_id=run_id, run_dir=run_dir,
                             ledger=Ledger(settings.ledger), stack=stack, engine=engine)
        try:
            session.workers.extend(engine.start_workers(options.workers).processes)
            yield session
        finally:
            for process in reversed(session.workers):
                process.stop()
            engine.close()


def run_flow(settings: Settings, options: RunOptions,
             on_status: Callable[[str, InstanceStatus], None] | None = None) -> RunResult:
    """Run `options.flow` on `options.engine` and report what became of every instance."""
    with open_session(settings, options) as session:
        session.start_instances()
        statuses = session.watch(time.monotonic() + options.timeout, on_status=on_status)
        return session.result(statuses)


def approve_all(flow: Flow) -> dict[str, Decision]:
    """A decision for every wait of `flow`: approve."""
    return {wait.signal: "approve" for wait in flow.waits}


def next_wait(flow: Flow, done: Sequence[str]) -> Wait | None:
    """The first wait the instance has not passed yet."""
    return next((w for w in flow.waits if w.name not in done), None)


def summarise(flow: Flow, ledger: Ledger, request: InstanceRequest,
              status: InstanceStatus) -> InstanceResult:
    effects = [e for e in ledger.effects(instance_id=request.instance_id) if e.kind == "effect"]
    applied = [e for e in effects if e.outcome is Outcome.APPLIED]
    per_step: dict[str, int] = {}
    for effect in effects:
        if effect.outcome in (Outcome.APPLIED, Outcome.ABSORBED):
            per_step[effect.step] = per_step.get(effect.step, 0) + 1
    registered = ledger.instance(request.instance_id).started_at
    return InstanceResult(
        instance_id=request.instance_id, correlation_id=request.correlation_id,
        trace_id=request.trace_id, state=status.state,
        steps_done=sum(1 for name in status.done if isinstance(_node(flow, name), Step)),
        steps_total=len(flow.steps), effects_applied=len(applied),
        effects_absorbed=sum(1 for e in effects if e.outcome is Outcome.ABSORBED),
        duplicates=sum(count - 1 for count in per_step.values() if count > 1),
        duration=status.finished_at - registered if status.finished_at else None,
        detail=status.detail,
    )


def _node(flow: Flow, name: str) -> object:
    return next((n for n in flow.nodes if n.name == name), None)

