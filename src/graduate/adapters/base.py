"""The Engine protocol every adapter implements, and the values that cross it.

Adapters never let SDK types past their package: what comes out of an engine is one
of the plain values below. Workers always run as separate processes, each in its own
process group, and report readiness by writing a file (not by a fixed sleep).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from graduate.flow import Flow, InstanceRequest
from graduate.processes import ManagedProcess, await_ready, spawn_module
from graduate.services.model import Services, TemporalTarget

if TYPE_CHECKING:
    from graduate.migrate.replay import Replayed

WORKER_READY_TIMEOUT = 60.0
# Where an engine that can export its instances' histories (for a replay gate) writes
# them, in its run folder: one JSON file per instance.
HISTORIES = "histories"


class InstanceState(StrEnum):
    """Where an instance stands, as its engine reports it."""

    RUNNING = "running"
    WAITING = "waiting"  # on a human signal
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the engine holds no record of it

    @property
    def finished(self) -> bool:
        return self in (InstanceState.COMPLETED, InstanceState.COMPENSATED,
                        InstanceState.FAILED)


@dataclass(frozen=True)
class InstanceStatus:
    """An instance's state, the nodes (steps, waits, timers) it has passed, and why it ended."""

    state: InstanceState
    done: tuple[str, ...] = ()
    finished_at: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class HeldUp:
    """An unfinished instance that nothing can move before `until` (epoch seconds;
    infinite: until a deploy), and what holds it until then (see `Engine.held_until`)."""

    until: float
    why: str


@dataclass(frozen=True)
class HistoryEvent:
    """One entry of the engine's own record of an instance."""

    at: float
    kind: str
    detail: str = ""
    # The engine records here that an attempt of its (a task, an activity, a workflow
    # task) ended unfinished: it timed out, its worker was lost, its message came back.
    cut_short: bool = False
    # The version of the code that made this event (a build ID under Temporal's worker
    # versioning): which version ran each step. Empty when the engine does not say.
    version: str = ""
    # The engine records here that work of the instance waited for a worker that was
    # gone, though none of its attempts had begun: a message a dead worker had only
    # taken, a workflow task left on a dead worker's sticky queue.
    held_up: bool = False
    # A worker took the instance's work up here (an activity or workflow task started,
    # a task's message began to run): where the engine's own record shows a resume.
    taken_up: bool = False


@dataclass(frozen=True)
class Capabilities:
    """What an engine or strategy offers, so that reports compare like with like."""

    durable_progress: bool  # the engine itself records which step an instance is on
    signals: bool
    timers: bool
    compensation: bool
    versioning: bool
    # What a fault can break: a pool child apart from the worker's main process, a
    # broker that holds the queued work, a server that holds the instances' progress.
    pool_children: bool = False
    broker: bool = False
    server: bool = False
    # An operator can ask the engine to stop an instance and undo it (`Engine.cancel`).
    cancellation: bool = True
    # Workers run as versions side by side, each instance pinned to the version it
    # started on (Temporal's worker deployment versions); `versioning` is a code guard.
    worker_versioning: bool = False
    # A signal sent before the instance reaches its wait is kept, and the wait takes it
    # when reached: a plain run answers a wait as soon as the step before it landed.
    early_signals: bool = False


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs, passed to it as JSON on its standard input.

    Never on its command line: the spec carries passwords and API keys, and any user of
    the machine can read a command line (`ps`, /proc/PID/cmdline).
    """

    engine: str
    flow_source: str
    services: dict[str, Any]
    ready_file: str
    settings: dict[str, Any] = field(default_factory=dict)
    # After a guarded deploy: the version that instances in flight started on.
    previous_flow_source: str | None = None
    # Queues are per run, so workers never pick up what an earlier run left behind.
    run_id: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        return cls(**json.loads(text))

    @classmethod
    def from_stdin(cls) -> WorkerSpec:
        """The spec `start_worker_process` wrote to this worker's standard input."""
        return cls.from_json(sys.stdin.read())

    def temporal(self) -> TemporalTarget:
        return TemporalTarget(**self.services["temporal"])


def services_for_worker(services: Services) -> dict[str, Any]:
    """The services as plain data for a worker (secrets included: it needs them)."""
    return {
        "temporal": asdict(services.temporal) if services.temporal else None,
        "broker_url": services.broker_url,
        "result_backend_url": services.result_backend_url,
        "ledger_url": services.ledger_url,
        "app_db_url": services.app_db_url,
    }


@dataclass
class WorkerGroup:
    """The worker processes of one engine."""

    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def stop(self, grace: float = 10.0) -> None:
        for process in self.processes:
            process.stop(grace)

    @classmethod
    def start(cls, starters: Sequence[Callable[[], ManagedProcess]]) -> WorkerGroup:
        """Start a process with each of `starters`, in order; if one fails (or start-up
        is interrupted), stop those already started before the error goes on."""
        group = cls()
        with group._stopped_on_failure():
            for start in starters:
                group.processes.append(start())
        return group

    @classmethod
    def start_together(cls, launchers: Sequence[Callable[[], Launched]]) -> WorkerGroup:
        """Launch a process with each of `launchers`, then wait until each is ready: their
        start-ups (an interpreter importing its SDK each, seconds on loaded cores)
        overlap instead of adding up. If one fails (or start-up is interrupted), every
        one launched is stopped before the error goes on."""
        group = cls()
        with group._stopped_on_failure():
            launched = []
            for launch in launchers:
                launched.append(launch())
                group.processes.append(launched[-1].process)
            for one in launched:
                one.await_ready()
        return group

    @contextlib.contextmanager
    def _stopped_on_failure(self) -> Iterator[None]:
        """Stop every process of the group if the block fails or is interrupted."""
        try:
            yield
        except BaseException:
            self.stop()
            raise


@dataclass(frozen=True)
class Launched:
    """A worker process spawned and not yet known to be ready (`launch_worker_process`)."""

    process: ManagedProcess
    ready_file: Path

    def await_ready(self) -> ManagedProcess:
        """The process, once it wrote its ready file (stopped if it never does)."""
        await_ready(self.process, self.ready_file, what=f"worker {self.process.name}",
                    timeout=WORKER_READY_TIMEOUT)
        return self.process


def start_worker_process(name: str, module: str, spec: WorkerSpec, run_dir: Path,
                         extra_args: tuple[str, ...] = ()) -> ManagedProcess:
    """Start `python -m module RUN_DIR EXTRA_ARGS...` with `spec` on its standard input,
    and wait until it writes its ready file. RUN_DIR tells `ps` readers which run the
    worker serves; the worker itself reads everything it needs from the spec."""
    return launch_worker_process(name, module, spec, run_dir, extra_args).await_ready()


def launch_worker_process(name: str, module: str, spec: WorkerSpec, run_dir: Path,
                          extra_args: tuple[str, ...] = ()) -> Launched:
    """`start_worker_process` without the wait for its ready file: spawned (or a spare
    taken: `graduate.processes.Spares`), and its readiness to be awaited
    (`Launched.await_ready`)."""
    ready_file = Path(spec.ready_file)
    process = spawn_module(name, module, [str(run_dir), *extra_args],
                           run_dir / "logs" / f"{name}.log", ready_file,
                           stdin=spec.to_json().encode())
    return Launched(process, ready_file)


def write_ready_file(path: str, pid: int) -> None:
    """Called by a worker once it takes work; the supervisor waits for this file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(".tmp")
    temporary.write_text(str(pid), encoding="utf-8")
    temporary.replace(target)


class Engine(Protocol):
    """Runs one flow on one engine (or one strategy of an engine).

    Adapters are built as `Adapter(flow, services, run_dir, settings=None,
    worker_services=None)`: `settings` overrides the engine's defaults (a profile), and
    `worker_services` is what workers connect to when it differs from what the client
    uses (through a network proxy that a partition fault cuts).
    """

    name: str
    capabilities: Capabilities
    settings: dict[str, Any]

    def start_workers(self, count: int) -> WorkerGroup:
        """Start `count` worker processes (and any helper process such as Celery beat)
        and return once each takes work."""
        ...

    def start_worker(self) -> ManagedProcess:
        """Start one more worker process (a replacement after a kill or a deploy)."""
        ...

    def replace(self, process: ManagedProcess) -> ManagedProcess:
        """Start a process that takes over the role of `process` (a worker, or a helper
        such as Celery beat) after it died: what a process supervisor does."""
        ...

    def deploy(self, flow: Flow, previous: Flow | None = None) -> None:
        """Workers started from now on run `flow` (a new version of the same flow). With
        `previous`, they also keep instances that started on it on that version: the
        engine's versioning guard, only where `capabilities.versioning` is true."""
        ...

    def holds(self, instance_id: str) -> bool:
        """Whether the engine still holds something that can move the instance on: a
        running workflow, a queued or unacknowledged task, a row its tick will advance.
        False means nothing will ever move it again: the instance is lost. Raises
        CannotTell, saying what it could not inspect, rather than guess either way."""
        ...

    def held_until(self, instance_id: str) -> HeldUp | None:
        """When the unfinished instance is held only by what the engine gives back at a
        known time (a dead worker's unacknowledged messages, back after the broker's
        visibility timeout): nothing can move it before `HeldUp.until`; infinite when
        only a deploy can (a workflow task that fails on replay at every attempt). None
        when something may move it any time, or nothing holds it (see `holds`)."""
        ...

    def start(self, request: InstanceRequest) -> None:
        """Start one instance of the flow."""
        ...

    def start_duplicate(self, request: InstanceRequest) -> str | None:
        """Start `request`'s business key again while its instance may be in flight (a
        retried webhook, a double click), as a caller of this engine would: same
        instance ID, business key and correlation ID, a trace of its own (a new request).
        The engine's refusal in words, or None when it accepted the start."""
        ...

    def cancel(self, instance_id: str) -> None:
        """An operator's rollback: ask the engine to stop the instance and undo what it
        applied, by whatever compensation path it has (the outcome is judged from the
        ledger, not from what this promises)."""
        ...

    def signal(self, instance_id: str, name: str, payload: dict[str, Any]) -> None:
        """Deliver a named signal (a human decision) to an instance."""
        ...

    def status(self, instance_id: str) -> InstanceStatus:
        """The instance's state as the engine records it."""
        ...

    def statuses(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        """`status` of each instance, asked together where the engine can (the harness
        watches every unfinished instance on every round, on the workers' cores). It may
        lag `status` by a moment (Temporal's visibility store), never run ahead of it."""
        ...

    def history(self, instance_id: str) -> list[HistoryEvent]:
        """The engine's own record of the instance, oldest first."""
        ...

    def server_versions(self) -> dict[str, str]:
        """The versions of the servers the engine talks to, as they report themselves
        (a broker or server graduate did not start included); none it cannot reach."""
        ...

    def close(self) -> None:
        """Release clients and connections (workers are stopped through their group)."""
        ...


@dataclass(frozen=True)
class Signal:
    """A named signal (a human decision) for one instance (`Engine.signal`)."""

    instance_id: str
    name: str
    payload: dict[str, Any]


@runtime_checkable
class SignalsTogether(Protocol):
    """An engine that sends several signals at once, where each `Engine.signal` is a
    round trip to a server the harness would otherwise wait on one by one."""

    def signal_all(self, signals: Sequence[Signal]) -> list[Exception | None]:
        """`Engine.signal` for each, sent together: for each, None once delivered, or
        what `signal` would have raised."""
        ...


@runtime_checkable
class StartsTogether(Protocol):
    """An engine that starts several instances at once, where each `Engine.start` is a
    round trip (or a transaction) the harness would otherwise wait on one by one."""

    def start_all(self, requests: Sequence[InstanceRequest]) -> None:
        """`Engine.start` for each; raises as `start` would (then some may have started,
        as with `start` called in turn)."""
        ...


@runtime_checkable
class ReadsTogether(Protocol):
    """An engine that reads many instances' records at once, where each `Engine.status`,
    `holds` or `history` is a round trip to a server: judging a run of thousands of
    instances one call at a time took longer than the run (issue 16)."""

    def statuses_alone(self, instance_ids: Sequence[str],
                       ) -> dict[str, InstanceStatus | Exception]:
        """`Engine.status` of each (each read by itself, never from a batched list that
        may lag), the calls in flight together: for each, its status or what `status`
        would have raised."""
        ...

    def holds_all(self, instance_ids: Sequence[str]) -> dict[str, bool | Exception]:
        """`Engine.holds` of each, the calls in flight together: for each, the answer or
        what `holds` would have raised."""
        ...

    def histories(self, instance_ids: Sequence[str],
                  ) -> dict[str, list[HistoryEvent] | Exception]:
        """`Engine.history` of each, the calls in flight together: for each, the history
        or what `history` would have raised."""
        ...


@runtime_checkable
class PredictsDeploys(Protocol):
    """An engine that can tell, before a deploy, which instances the new code breaks: it
    replays their recorded histories on it (the check `graduate replay` makes)."""

    def predict_deploy(self, instance_ids: Sequence[str], flow: Flow,
                       previous: Flow | None = None) -> list[Replayed]:
        """Each instance's history replayed on `flow` (with `previous` kept by the
        versioning guard)."""
        ...
