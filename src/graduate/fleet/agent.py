"""The agent that `graduate worker` runs beside one worker, on the worker's host.

It starts the worker as the harness would (the engine's own launch, through the run
supervisor: its own process group, dying with the agent), registers it in the fleet's
ledger, sends a heartbeat from a thread, and carries out the fault commands the harness
writes there, one at a time, recording when and what it saw.

The worker is never restarted on the agent's own initiative: a fault command stops it,
and `restart-after` (or `deploy`) starts the next one, as the harness decides.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import graduate
from graduate.adapters import describe, needs, open_engine
from graduate.adapters.base import Engine
from graduate.apps import App, resolve_target
from graduate.chaos.profiles import profile_settings
from graduate.config import Settings
from graduate.db import is_postgres
from graduate.errors import ConfigError, GraduateError
from graduate.fleet.ledger import (
    HEARTBEAT_INTERVAL,
    Command,
    CommandKind,
    CommandState,
    Fenced,
    FleetLedger,
    RegisteredWorker,
)
from graduate.flow import Flow, flow_from_dict, write_flow_json
from graduate.processes import ManagedProcess, children
from graduate.redaction import redact_text, redact_url
from graduate.runs.supervisor import WORKER_FORCED, Supervisor
from graduate.runs.timeline import Timeline, TimelineEvent
from graduate.services.model import Services
from graduate.services.probe import (
    check_temporal_access,
    probe_address,
    probe_celery_services,
)
from graduate.services.resolver import ExternalStrategy, Resolver, is_redis
from graduate.timescale import TimeScale, scaled_flow

# How often the agent looks for a new command.
COMMAND_POLL = 0.2
DEFAULT_POOL = "fleet"
REAP_WITHIN = 5.0
# How long the agent keeps trying to record a command's outcome while the ledger is away.
REPORT_WITHIN = 60.0
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class AgentOptions:
    """What `graduate worker` runs, and as whom."""

    target: str  # a flow (name, .toml file, module:ATTRIBUTE) or a declared app
    engine: str
    # The run ID the worker's queues are named by: a harness reaches the worker through
    # an engine client opened with the same one.
    pool: str = DEFAULT_POOL
    # The worker's name in the registry; an agent started again under the same name
    # takes over from the one before (and fences it). Default: HOST-ENGINE-TARGET.
    worker_id: str | None = None
    profile: str = "defaults"
    code_version: str | None = None  # a deploy's tag, say; default: graduate's and the flow's
    time_scale: TimeScale = field(default_factory=TimeScale)


@dataclass(frozen=True)
class Observed:
    """What carrying out a command gave: its final state, what the agent saw, in words."""

    state: CommandState
    seen: Mapping[str, object]
    detail: str


def check_services(settings: Settings, engine: str) -> None:
    """Refuse, before anything connects, a service `engine`'s worker needs that is not
    given as external: a worker on another host shares every one with the harness."""
    if not settings.ledger_url:
        raise ConfigError("graduate worker needs the ledger on PostgreSQL, shared with the "
                          "harness: give --ledger-url postgresql://user@host/db, or set "
                          "GRADUATE_LEDGER_URL, or ledger_url in [tool.graduate]")
    if not is_postgres(settings.ledger_url):
        raise ConfigError(f"graduate worker needs the ledger on PostgreSQL, not "
                          f"{redact_url(settings.ledger_url)!r}: workers on other hosts share "
                          "it. Give --ledger-url postgresql://user@host/db")
    description = describe(engine)
    wanted = needs([engine])
    if wanted.temporal and not settings.temporal_address:
        raise ConfigError(f"a {description.product} worker needs the Temporal server the "
                          "harness uses: give --temporal-address HOST:PORT (and "
                          "--temporal-namespace, TLS files or GRADUATE_TEMPORAL_API_KEY as "
                          "the cluster needs), or GRADUATE_TEMPORAL_ADDRESS")
    if wanted.broker:
        if not settings.broker_url:
            raise ConfigError(f"a {description.product} worker needs the broker the harness "
                              "uses: give --broker-url redis://... or amqp://..., or "
                              "GRADUATE_BROKER_URL")
        if not settings.result_backend_url and not is_redis(settings.broker_url):
            raise ConfigError("with a RabbitMQ broker, give the Redis result backend the "
                              "harness uses: --result-backend-url redis://..., or "
                              "GRADUATE_RESULT_BACKEND_URL")
    app_db = settings.app_db_url
    if description.keeps_app_tables and not (app_db and is_postgres(app_db)):
        raise ConfigError(f"{engine} keeps each instance's state in the app's own tables, "
                          "which the harness reads from its host: give --app-db-url "
                          "postgresql://... (or GRADUATE_APP_DB_URL)")


def external_services(settings: Settings, engine: str) -> Services:
    """The services `engine`'s worker needs (checked by `check_services`), each one
    probed: an unreachable one is named in seconds, not after a worker's retries."""
    wanted = needs([engine])
    if wanted.temporal:
        check_temporal_access(settings)
    if wanted.temporal and settings.temporal_address:
        probe_address(settings.temporal_address, "the Temporal server")
    if wanted.broker:
        probe_celery_services(settings.broker_url, settings.result_backend_url)
    return Resolver(settings, ExternalStrategy()).services(wanted)


class Agent:
    """One worker and its agent. Build it with `open_agent`; `serve` takes commands."""

    def __init__(self, fleet: FleetLedger, engine: Engine, supervisor: Supervisor,
                 flow: Flow, app: App | None, options: AgentOptions, run_dir: Path,
                 log: Callable[[str], None]) -> None:
        self.fleet = fleet
        self.engine = engine
        self.supervisor = supervisor
        self.flow = flow
        self.app = app
        self.options = options
        self.run_dir = run_dir
        self.log = log
        self.registered: RegisteredWorker | None = None
        self.fenced: Fenced | None = None
        # The worker process, kept after a fault stopped it until the next one starts.
        self.current: ManagedProcess | None = None
        self._stopping: set[int] = set()  # workers sent SIGTERM or SIGQUIT by a command
        self._carry_out: dict[CommandKind, Callable[[Command], Observed]] = {
            CommandKind.KILL_GROUP: self._kill_group,
            CommandKind.KILL_POOL_CHILD: self._kill_pool_child,
            CommandKind.STOP_WARM: lambda c: self._stop(signal.SIGTERM, "warm"),
            CommandKind.STOP_COLD: lambda c: self._stop(signal.SIGQUIT, "cold"),
            CommandKind.RESTART_AFTER: self._restart_after,
            CommandKind.DEPLOY: self._deploy,
        }

    @property
    def worker(self) -> RegisteredWorker:
        assert self.registered is not None, "the agent registers when it opens"
        return self.registered

    def code_version(self) -> str:
        if self.options.code_version:
            return self.options.code_version
        what = f"app {self.app.name}" if self.app else f"flow {self.flow.name}"
        return f"graduate {graduate.__version__}; {what} v{self.flow.version}"

    def start(self) -> None:
        """Start the worker and register it (a new epoch: any agent before it under the
        same name is fenced off)."""
        self.supervisor.start(1)
        self.current = self.supervisor.workers[0]
        self.registered = self.fleet.register(
            self.engine.name, self.app.name if self.app else self.flow.name,
            socket.gethostname(), self.current.pid, self.code_version(),
            os.getpgid(self.current.pid), worker_id=self.options.worker_id,
            agent_pid=os.getpid(), pool=self.options.pool, flow_version=self.flow.version,
            settings=self.engine.settings)

    def serve(self, stop: threading.Event) -> None:
        """Take and carry out commands until `stop` is set; Fenced if another agent
        registered under this worker's name."""
        with self._heartbeat(stop):
            while not stop.is_set():
                if self.fenced is not None:
                    raise self.fenced
                try:
                    command = self.fleet.take(self.worker)
                except Fenced:
                    raise
                except self.fleet.connection_errors() as error:
                    self._reconnect(error)
                    command = None
                if command is None:
                    stop.wait(COMMAND_POLL)
                    continue
                self.carry_out(command)
        # The heartbeat sets `stop` when it finds this agent fenced: the loop then ends
        # without passing the check at its top, and must not end as a clean stop.
        if self.fenced is not None:
            raise self.fenced

    def carry_out(self, command: Command) -> None:
        self.log(f"took {command.kind} {dict(command.args) or ''} (run {command.run_id})")
        try:
            result = self._carry_out[command.kind](command)
        except GraduateError as error:
            result = Observed(CommandState.FAILED, {}, redact_text(str(error)))
        self._report(command, result)
        self.log(f"{command.kind} {result.state}: {result.detail}")

    def _report(self, command: Command, result: Observed) -> None:
        """Record the outcome, through a database that may be away for a while: what the
        agent did is done, and the harness waits for this record of it."""
        deadline = time.monotonic() + REPORT_WITHIN
        while True:
            try:
                self.fleet.finish(self.worker, command, result.state, result.seen,
                                  result.detail)
                return
            except Fenced:
                raise
            except self.fleet.connection_errors() as error:
                if time.monotonic() > deadline:
                    raise
                self._reconnect(error)
                time.sleep(HEARTBEAT_INTERVAL)

    @contextlib.contextmanager
    def _heartbeat(self, stop: threading.Event) -> Iterator[None]:
        """A heartbeat from a thread, so that a long command (a restart's wait) does not
        make the worker look dead. Only database calls here: processes are started from
        the main thread, whose exit their parent-death signal follows."""
        done = threading.Event()

        def beat() -> None:
            while not done.wait(HEARTBEAT_INTERVAL):
                try:
                    self.fleet.heartbeat(self.worker.worker_id, epoch=self.worker.epoch)
                except Fenced as fenced:
                    self.fenced = fenced
                    stop.set()
                    return
                except self.fleet.connection_errors() as error:
                    self._reconnect(error)

        thread = threading.Thread(target=beat, name="graduate-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _reconnect(self, error: Exception) -> None:
        """The database is away: this thread's next call opens a new connection."""
        self.log(f"the ledger does not answer ({redact_text(str(error))}); trying again")
        self.fleet.close()

    def stop(self) -> None:
        """Stop the worker (its whole group) and leave the registry."""
        self.supervisor.stop_all()
        if self.registered is not None and self.fenced is None:
            # A new connection: SIGTERM or Ctrl-C may have cut a query short on the old one.
            self.fleet.close()
            with contextlib.suppress(GraduateError):
                self.fleet.deregister(self.registered)

    # ------------------------------------------------------------------ the commands

    def _running(self) -> ManagedProcess:
        worker = self.current
        if worker is None or not worker.alive():
            code = worker.popen.returncode if worker is not None else None
            raise ConfigError(f"the worker is not running (it exited with code {code}); "
                              f"send {CommandKind.RESTART_AFTER} first")
        return worker

    def _kill_group(self, command: Command) -> Observed:
        victim = self._running()
        victim.kill()  # SIGKILL to the group; returns once nothing of it runs
        with contextlib.suppress(subprocess.TimeoutExpired):
            victim.popen.wait(REAP_WITHIN)  # dead already: its exit code, reaped
        seen = {"signal": "SIGKILL", "pid": victim.pid, "group_pid": victim.pid,
                "exit_code": victim.popen.returncode, "group_gone": not victim.group_alive()}
        return Observed(CommandState.DONE, seen,
                        f"SIGKILL to process group {victim.pid}; it exited with code "
                        f"{victim.popen.returncode}")

    def _kill_pool_child(self, command: Command) -> Observed:
        worker = self._running()
        wanted = command.args.get("pid")
        pool = children(worker.pid)
        if wanted is None:
            if not pool:
                return Observed(CommandState.FAILED, {"pid": worker.pid, "killed": False},
                                f"worker {worker.pid} has no pool child: it runs steps in "
                                "its main process")
            wanted = pool[0]
        if not isinstance(wanted, int) or wanted == worker.pid or wanted not in pool:
            return Observed(CommandState.FAILED, {"pid": wanted, "killed": False},
                            f"process {wanted} is not a pool child of worker {worker.pid} "
                            f"(its pool children: {pool or 'none'}); nothing killed")
        with contextlib.suppress(ProcessLookupError):
            os.kill(wanted, signal.SIGKILL)
        return Observed(CommandState.DONE, {"signal": "SIGKILL", "pid": wanted,
                                            "worker_pid": worker.pid, "killed": True},
                        f"SIGKILL to pool child {wanted} of worker {worker.pid}; its main "
                        "process lives on")

    def _stop(self, signum: signal.Signals, how: str) -> Observed:
        victim = self._running()
        # A deploy signals the worker's main process; it finishes what it holds (warm),
        # or does not wait for it (cold: lost when acknowledged early, given back to the
        # broker at once when acknowledged late). `restart-after` waits for it to exit.
        victim.popen.send_signal(signum)
        self._stopping.add(victim.pid)
        return Observed(CommandState.DONE, {"signal": signum.name, "pid": victim.pid},
                        f"{signum.name} to worker {victim.pid} ({how} shutdown)")

    def _restart_after(self, command: Command) -> Observed:
        seconds = _seconds(command.args.get("seconds", 0))
        return self._replace(seconds, {}, "")

    def _deploy(self, command: Command) -> Observed:
        if self.app is not None:
            return Observed(CommandState.FAILED, {},
                            f"graduate cannot load a changed version of app {self.app.name}'s "
                            "own code; roll out the new version yourself, then restart the "
                            "worker")
        new = _flow_arg(command.args.get("flow"), "flow")
        if new is None:
            raise ConfigError(f"{CommandKind.DEPLOY} needs args {{\"flow\": the changed "
                              "flow as a dict or JSON text, \"previous\": the same or None, "
                              "\"seconds\": N}")
        previous = _flow_arg(command.args.get("previous"), "previous")
        folder = self.run_dir / "deploy"
        new = write_flow_json(new, folder / f"{new.name}-v{new.version}.json")
        if previous is not None:
            previous = write_flow_json(previous,
                                       folder / f"{previous.name}-v{previous.version}.json")
        self.engine.deploy(new, previous=previous)
        old = self.flow
        self.flow = new
        worker = self.current
        if worker is not None and worker.alive():
            worker.popen.send_signal(signal.SIGTERM)
            self._stopping.add(worker.pid)
        guard = "with" if previous is not None else "without"
        return self._replace(_seconds(command.args.get("seconds", 0)),
                             {"version": new.version, "previous_version": old.version},
                             f"deployed {new.name} v{new.version} ({guard} versioning guard); ")

    def _forced_count(self) -> int:
        """How many workers the supervisor has had to SIGKILL after their grace (counted:
        the timeline keeps time order, so what is added is not always at its end)."""
        return sum(e.kind == WORKER_FORCED.kind for e in self.supervisor.timeline.events)

    def _replace(self, seconds: float, seen: dict[str, object], said: str) -> Observed:
        """Wait for the worker to exit (SIGTERM first if nothing stopped it; SIGKILL after
        the supervisor's grace), then start the next one after `seconds`."""
        victim = self.current
        if victim is None:
            raise ConfigError("the agent holds no worker to restart")
        stopped_here = victim.alive() and victim.pid not in self._stopping
        if stopped_here:
            victim.popen.send_signal(signal.SIGTERM)
        before = self._forced_count()
        self.supervisor.await_exit(victim)
        forced = self._forced_count() > before
        exited_at, code = time.time(), victim.popen.returncode
        if victim not in self.supervisor.processes:  # the last restart could not start one
            self.supervisor.processes.append(victim)
        replacement = self.supervisor.replace(victim, seconds)
        self.current = replacement
        self.registered = self.fleet.update_process(
            self.worker, replacement.pid, os.getpgid(replacement.pid), self.code_version(),
            self.flow.version)
        seen = {**seen, "old_pid": victim.pid, "exit_code": code, "forced": forced,
                "stopped_by_restart": stopped_here, "exited_at": round(exited_at, 3),
                "pid": replacement.pid, "group_pid": os.getpgid(replacement.pid),
                "started_at": round(replacement.began_at, 3)}
        exit_signal = f" ({signal.Signals(-code).name})" if code is not None and code < 0 else ""
        return Observed(CommandState.DONE, seen,
                        f"{said}worker {victim.pid} exited with code {code}{exit_signal}"
                        f"{', forced after its grace' if forced else ''}; worker "
                        f"{replacement.pid} started {seconds:g}s later")


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"seconds must be a number >= 0, not {value!r}")
    return float(value)


def _flow_arg(value: object, name: str) -> Flow | None:
    if value is None:
        return None
    data: Any = json.loads(value) if isinstance(value, str) else value
    if not isinstance(data, dict):
        raise ConfigError(f"{CommandKind.DEPLOY}: {name} must be a flow as a dict or JSON "
                          "text (graduate.flow.flow_to_dict)")
    return flow_from_dict(data, origin=f"{CommandKind.DEPLOY} command's {name}")


@contextlib.contextmanager
def open_agent(settings: Settings, options: AgentOptions,
               log: Callable[[str], None]) -> Iterator[Agent]:
    """A worker started and registered, with its agent; on exit (an error, Ctrl-C,
    SIGTERM) the worker's whole process group is stopped and the registration ends."""
    target = resolve_target(settings.project_dir, settings.spikes_dir, options.target,
                            options.engine)
    check_services(settings, target.engine)
    flow = target.flow
    worker_id = options.worker_id or (
        f"{socket.gethostname()}-{target.engine}-{target.app.name if target.app else flow.name}")
    options = replace(options, worker_id=worker_id)
    if not options.pool or _SAFE_NAME.search(options.pool):
        raise ConfigError(f"--pool {options.pool!r}: use letters, digits, '.', '_' or '-'")
    # The engines name their queues after the run folder: the pool.
    run_dir = settings.state_dir / "fleet" / _SAFE_NAME.sub("_", worker_id) / options.pool
    if target.app is None:
        flow, _ = scaled_flow(flow, options.time_scale, run_dir / "derived")
    elif not options.time_scale.real_time:
        raise ConfigError("--time-scale: a team's app keeps the durations its own code "
                          "sets; run its worker in real time")
    engine_settings = profile_settings(options.profile, target.engine, settings.project_dir)
    assert settings.ledger_url is not None  # check_services refused a missing one
    fleet = FleetLedger(settings.ledger_url)
    with contextlib.ExitStack() as resources:
        resources.callback(fleet.close)
        services = external_services(settings, target.engine)
        engine = open_engine(target.engine, flow, services, run_dir, settings=engine_settings,
                             app=target.app)
        resources.callback(engine.close)
        timeline = Timeline(listener=lambda event: log(_said(event)))
        agent = Agent(fleet, engine, Supervisor(engine, timeline), flow, target.app, options,
                      run_dir, log)
        resources.callback(agent.stop)
        agent.start()
        yield agent


def _said(event: TimelineEvent) -> str:
    return f"{event.kind}: {event.detail}"
