"""`graduate.effect`: an application's own side effects, recorded in the ledger under a run.

A team wraps each external call in its tasks or activities and leaves it there in
production::

    with graduate.effect("esign.send_envelope", key=req.idempotency_key) as call:
        if esign.send_envelope(req.partner_id) == "already sent":
            call.absorbed()

Outside a graduate run this does nothing but call through: `effect` looks at one
module-level variable and hands back a shared do-nothing object. Under a run (the
worker process was started with the variables of `RunContext`), each call is
recorded in the ledger with its instance, step, attempt, key, correlation and trace
IDs, worker pid and outcome, yields an audit record, and honours the fault points the
harness armed (before-effect, after-effect) exactly as the simulated systems do.

The instance comes from the engine's own context, asked through the context providers
the adapters declare (`graduate.adapters.CONTEXT_PROVIDERS`): Temporal's workflow ID
from the activity info; for Celery, graduate's correlation header, which signal
handlers carry through apply_async, chains, groups, chords and retries.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from graduate.errors import ConfigError

# Production code imports this module outside any run: what only a run needs (the
# ledger, the flow, asyncio, the audit schema) is imported when a run first needs it.
if TYPE_CHECKING:
    from graduate.flow import Flow
    from graduate.ledger import EffectCall, EffectKind, InstanceRecord, Ledger

# The variables graduate's harness sets for a worker process it runs under a run.
LEDGER_URL_VARIABLE = "GRADUATE_RUN_LEDGER_URL"
RUN_ID_VARIABLE = "GRADUATE_RUN_ID"
FLOW_VARIABLE = "GRADUATE_RUN_FLOW"

F = TypeVar("F", bound=Callable[..., Any])
Key = str | Callable[..., str] | None


@dataclass(frozen=True)
class RunContext:
    """What a worker process needs to record effects: the ledger, the run, the flow."""

    ledger_url: str
    run_id: str
    flow_source: str  # the flow the application implements: its steps name the effects

    def environ(self) -> dict[str, str]:
        """The variables that put a worker process under this run."""
        return {LEDGER_URL_VARIABLE: self.ledger_url, RUN_ID_VARIABLE: self.run_id,
                FLOW_VARIABLE: self.flow_source}

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> RunContext | None:
        names = (LEDGER_URL_VARIABLE, RUN_ID_VARIABLE, FLOW_VARIABLE)
        values = [environ.get(name, "") for name in names]
        if not any(values):
            return None
        if not all(values):
            missing = [name for name, value in zip(names, values, strict=True) if not value]
            raise ConfigError(f"graduate.effect: {', '.join(missing)} missing from the "
                              f"environment; a worker under a run needs all of {', '.join(names)}"
                              " (graduate's harness sets them), or none outside a run")
        return cls(*values)


@dataclass(frozen=True)
class Correlation:
    """The IDs graduate carries with an instance through an engine's messages."""

    instance_id: str
    correlation_id: str
    trace_id: str

    def to_header(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_header(cls, value: object) -> Correlation | None:
        """The correlation in a message header, or None when it is absent or malformed."""
        if not isinstance(value, Mapping):
            return None
        fields = [value.get(name) for name in ("instance_id", "correlation_id", "trace_id")]
        if not all(isinstance(field, str) for field in fields):
            return None
        return cls(*cast(list[str], fields))


_propagated: ContextVar[Correlation | None] = ContextVar("graduate_correlation", default=None)


@contextmanager
def propagating(correlation: Correlation) -> Iterator[None]:
    """Carry `correlation` with every message sent and activity started in this block:
    how an instance is started under a run, and how an adapter's hook sets the
    correlation a task or activity received."""
    token = _propagated.set(correlation)
    try:
        yield
    finally:
        _propagated.reset(token)


def propagated() -> Correlation | None:
    """The correlation this code runs under, if graduate propagated one to it."""
    return _propagated.get()


@dataclass(frozen=True)
class EngineCall:
    """Where a call is made, as the engine's own context tells it."""

    engine: str
    instance_id: str  # empty when the context names no instance
    attempt: int
    execution_id: str  # the task or activity that makes the call: the audit causation
    heartbeat: Callable[[], None] | None = None  # keeps the call alive while it pauses


def engine_call() -> EngineCall | None:
    """Ask each adapter whose SDK this process has loaded where the current code runs.

    A process that never imported an SDK cannot be inside one of its tasks, so an
    adapter's provider (and its SDK) is imported only once the SDK is in use.
    """
    from graduate.adapters import CONTEXT_PROVIDERS

    for sdk_module, provider_module in CONTEXT_PROVIDERS.items():
        if sdk_module in sys.modules:
            found: EngineCall | None = importlib.import_module(provider_module).current()
            if found is not None:
                return found
    return None


class Call:
    """One call in progress: what `with graduate.effect(...) as call` gives."""

    def absorbed(self) -> None:
        """Say the external system ignored this call as a repeat of an applied key."""


class _RecordedCall(Call):
    def __init__(self, site: EffectCall, where: EngineCall | None) -> None:
        self.site = site
        self.where = where
        self.started_at = time.time()
        self.was_absorbed = False

    def absorbed(self) -> None:
        self.was_absorbed = True


_NO_CALL = Call()


class Effect:
    """What `graduate.effect` returns: a context manager (`with`, `async with`) and a
    decorator (of sync and async functions). This base does nothing: outside a run."""

    def __enter__(self) -> Call:
        return _NO_CALL

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        return None

    async def __aenter__(self) -> Call:
        return _NO_CALL

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        return None

    def __call__(self, function: F) -> F:
        return function


_NO_EFFECT = Effect()


class _Recorder:
    """The run this process records for: its ledger, its flow, the instances it saw."""

    def __init__(self, context: RunContext) -> None:
        self.context = context
        self._lock = threading.Lock()
        self._ledger: Ledger | None = None
        self._ledger_pid = 0
        self._flow: Flow | None = None
        self._instances: dict[str, InstanceRecord | None] = {}

    def ledger(self) -> Ledger:
        with self._lock:
            # A prefork pool child must not share its parent's database connection.
            if self._ledger is None or self._ledger_pid != os.getpid():
                from graduate.ledger import Ledger

                self._ledger = Ledger(self.context.ledger_url)
                self._ledger_pid = os.getpid()
            return self._ledger

    def flow(self) -> Flow:
        if self._flow is None:
            from graduate.flow import load_flow

            self._flow = load_flow(self.context.flow_source)
        return self._flow

    def instance(self, instance_id: str) -> InstanceRecord | None:
        if not instance_id:
            return None
        if self._instances.get(instance_id) is None:
            self._instances[instance_id] = self.ledger().find_instance(instance_id)
        return self._instances[instance_id]

    def step_for(self, name: str, step: str | None) -> tuple[str, EffectKind]:
        flow = self.flow()
        # A `for_each` step's call names its item (`grant_access[acme]`): the declared
        # step's, recorded under the item's own name.
        from graduate.flow import declared_name

        declared = None if step is None else declared_name(step)
        for candidate in flow.effect_steps:
            if declared is not None and candidate.name != declared:
                continue
            recorded = step or candidate.name
            if candidate.effect == name:
                return recorded, "effect"
            if candidate.compensation == name:
                return recorded, "compensation"
            if step is not None:
                return recorded, "effect"
        known = sorted({s.effect for s in flow.effect_steps}
                       | {s.compensation for s in flow.steps if s.compensation})
        if step is not None:
            raise ConfigError(
                f"graduate.effect({name!r}, step={step!r}): flow {flow.name!r} has no step "
                f"{step!r}; its steps are {', '.join(s.name for s in flow.steps)}")
        raise ConfigError(
            f"graduate.effect({name!r}): flow {flow.name!r} ({self.context.flow_source}) has "
            f"no step whose effect or compensation is {name!r}; its effects are "
            f"{', '.join(known)}. Use one of these names, or pass step= explicitly.")

    def begin(self, name: str, key: str, step: str | None,
              where: EngineCall | None) -> _RecordedCall:
        """Resolve who makes the call, then pause if before-effect is armed for it."""
        from graduate.ledger import EffectCall

        step_name, kind = self.step_for(name, step)
        correlation = propagated()
        instance_id = (where.instance_id if where is not None and where.instance_id
                       else correlation.instance_id if correlation is not None else "")
        site = EffectCall(
            run_id=self.context.run_id, flow=self.flow().name, instance_id=instance_id,
            step=step_name, effect=name, kind=kind,
            attempt=where.attempt if where is not None else 1, idempotency_key=key,
            correlation_id=correlation.correlation_id if correlation is not None else "",
            trace_id=active_trace_id() or (
                correlation.trace_id if correlation is not None else ""),
            engine=where.engine if where is not None else "")
        heartbeat = where.heartbeat if where is not None else None
        if kind == "effect" and instance_id:
            self.ledger().pause_at(instance_id, step_name, "before-effect", heartbeat)
        return _RecordedCall(site, where)

    def end(self, call: _RecordedCall, error: BaseException | None) -> None:
        """Record the call as it ended, with its audit record; then pause if after-effect
        is armed (the world changed; the engine does not know yet)."""
        from graduate import audit
        from graduate.ledger import Outcome

        outcome = (Outcome.ERROR if error is not None
                   else Outcome.ABSORBED if call.was_absorbed else Outcome.APPLIED)
        ledger = self.ledger()
        instance = self.instance(call.site.instance_id)
        with ledger.transaction():
            row = ledger.record_call(call.site, outcome, started_at=call.started_at,
                                     error=error)
            envelope = audit.envelope(
                row, instance, self.flow(),
                causation_id=call.where.execution_id if call.where is not None else "")
            ledger.record_audit(row, envelope, audit.problems(envelope))
        if call.site.kind == "effect" and error is None and call.site.instance_id:
            heartbeat = call.where.heartbeat if call.where is not None else None
            ledger.pause_at(call.site.instance_id, call.site.step, "after-effect", heartbeat)


class _RecordedEffect(Effect):
    def __init__(self, recorder: _Recorder, name: str, key: Key, step: str | None) -> None:
        self._recorder = recorder
        self._name = name
        self._key = key
        self._step = step
        self._calls: list[_RecordedCall] = []

    def _begin(self, where: EngineCall | None) -> _RecordedCall:
        if callable(self._key):
            raise ConfigError(f"graduate.effect({self._name!r}): a key function works only "
                              "when effect decorates a function; in a with block pass the "
                              "key itself")
        call = self._recorder.begin(self._name, self._key or "", self._step, where)
        self._calls.append(call)
        return call

    def __enter__(self) -> Call:
        return self._begin(engine_call())

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._recorder.end(self._calls.pop(), error)

    async def __aenter__(self) -> Call:
        # The engine's context is read here, on the loop; the pause at a fault point and
        # the ledger's writes block, so they run in a thread.
        import asyncio

        return await asyncio.to_thread(self._begin, engine_call())

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        import asyncio

        await asyncio.to_thread(self.__exit__, kind, error, traceback)

    def __call__(self, function: F) -> F:
        recorder, name, key, step = self._recorder, self._name, self._key, self._step

        def call_key(*args: Any, **kwargs: Any) -> str:
            return key(*args, **kwargs) if callable(key) else key or ""

        if inspect.iscoroutinefunction(function):
            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with _RecordedEffect(recorder, name, call_key(*args, **kwargs), step):
                    return await function(*args, **kwargs)

            return cast(F, run_async)

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with _RecordedEffect(recorder, name, call_key(*args, **kwargs), step):
                return function(*args, **kwargs)

        return cast(F, run)


def _recorder_from_environ() -> _Recorder | None:
    context = RunContext.from_environ(os.environ)
    return _Recorder(context) if context is not None else None


class _Active:
    """The run this process records for. `recorder is None` is the one check on the path
    outside a run: not under a run, call through."""

    __slots__ = ("recorder",)

    def __init__(self) -> None:
        self.recorder: _Recorder | None = _recorder_from_environ()


_active = _Active()


def activate(context: RunContext | None) -> None:
    """Record this process's effects for `context` (None: stop recording).

    Worker processes under a run need not call this: the harness's variables activate
    it when graduate is imported. Functions decorated while no run was active stay
    undecorated.
    """
    _active.recorder = _Recorder(context) if context is not None else None


def effect(name: str, *, key: Key = None, step: str | None = None) -> Effect:
    """Wrap one call to an external system, named `SYSTEM.OPERATION` as in the flow.

    Use it as `with`/`async with` (key: the call's idempotency key) or as a decorator
    (key: a string, or a function of the decorated function's arguments). `step` names
    the flow's step when the effect name alone does not. Outside a graduate run this
    does nothing but call through.
    """
    recorder = _active.recorder
    if recorder is None:
        return _NO_EFFECT
    return _RecordedEffect(recorder, name, key, step)


@functools.cache
def _otel_trace() -> ModuleType | None:
    """OpenTelemetry's trace API, when the application has it (an optional dependency)."""
    try:
        return importlib.import_module("opentelemetry.trace")
    except ImportError:
        return None


@contextmanager
def trace_parent(trace_id: str) -> Iterator[None]:
    """Make the instance's trace (32 hex digits) the OpenTelemetry parent of what starts
    in this block, when the application traces: the spans its engine's tracing
    (temporalio.contrib.opentelemetry, opentelemetry-instrumentation-celery) starts from
    here then carry the instance's trace ID, which `active_trace_id` reads back."""
    trace = _otel_trace()
    if trace is None or not re.fullmatch(r"[0-9a-f]{32}", trace_id):
        yield
        return
    parent = trace.NonRecordingSpan(trace.SpanContext(
        trace_id=int(trace_id, 16), span_id=random.getrandbits(63) + 1, is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)))
    with trace.use_span(parent, end_on_exit=False):
        yield


def inject_trace(carrier: dict[str, Any]) -> None:
    """Write the current OpenTelemetry context into a message's headers (W3C traceparent,
    with the application's propagator) unless the message already carries one: a message
    sent from under `trace_parent` by a process that does not trace (graduate's harness
    starting an instance) then hands the instance's trace to the worker's tracing, which
    would otherwise start a trace of its own."""
    trace = _otel_trace()
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return
    propagate = importlib.import_module("opentelemetry.propagate")
    if not propagate.get_global_textmap().fields & carrier.keys():
        propagate.inject(carrier)


def active_trace_id() -> str:
    """The trace ID of the active OpenTelemetry span, when the application traces."""
    trace = _otel_trace()
    if trace is None:
        return ""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""
