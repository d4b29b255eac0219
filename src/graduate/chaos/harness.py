"""One chaos run: start a flow, break it at a deterministic point, recover, judge, store.

The path is the plain run's (`graduate.runner.open_session`) with three additions:
the fault point is armed before the instances start; the fault fires only once an
instance reports that it reached the point; and the harness then acts as an operator
would (restarting what was killed after `restart_delay`), writing each act into a
timeline. Verdicts come from `graduate.check`, from the ledger and the engine's own
record only, and the whole run is written to the evidence store.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from graduate.adapters.base import HistoryEvent, InstanceState, InstanceStatus
from graduate.chaos.changes import changed_flow
from graduate.chaos.faults import FaultPlan, not_applicable
from graduate.chaos.profiles import profile_settings
from graduate.chaos.proxy import Proxy
from graduate.check import InstanceVerdict, RunVerdict, judge_instance, judge_run
from graduate.config import Settings
from graduate.environment import host, package_versions, server_versions
from graduate.evidence import EvidenceStore, now_iso
from graduate.flow import Flow, Wait, flow_to_dict, load_flow, write_flow_json
from graduate.ledger import PointReached
from graduate.processes import ManagedProcess
from graduate.runner import RunOptions, RunSession, open_session
from graduate.services.local import LocalRedis, LocalTemporal
from graduate.services.model import Services
from graduate.services.provider import Stack

STOP_GRACE = 30.0  # how long a SIGTERMed worker may take to finish its task


@dataclass(frozen=True)
class ChaosOptions:
    """A run (flow, engine, instances, deadline, decisions) under one fault and profile."""

    run: RunOptions
    plan: FaultPlan
    profile: str = "defaults"
    wait_deadline: float | None = None  # shorten the flow's waits (for wait-timeout runs)


@dataclass(frozen=True)
class TimelineEvent:
    at: float  # seconds since the run started
    kind: str
    detail: str = ""
    instance: str | None = None  # set when the act concerns one instance only


@dataclass
class Timeline:
    started: float = field(default_factory=time.time)
    events: list[TimelineEvent] = field(default_factory=list)
    listener: Callable[[TimelineEvent], None] | None = None

    def add(self, kind: str, detail: str = "", at: float | None = None,
            instance: str | None = None) -> float:
        moment = time.time() if at is None else at
        event = TimelineEvent(round(moment - self.started, 3), kind, detail, instance)
        self.events.append(event)
        if self.listener is not None:
            self.listener(event)
        return moment


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


def run_chaos(settings: Settings, options: ChaosOptions, store: EvidenceStore, *,
              on_event: Callable[[TimelineEvent], None] | None = None) -> ChaosResult:
    """Run `options` once and store its evidence; every process started is stopped."""
    flow = _flow_for_run(settings, options)
    plan = options.plan
    run = options.run
    if plan.fault == "wait-timeout":
        run = replace(run, decisions={k: v for k, v in run.decisions.items()
                                      if k != _wait(flow, plan.step).signal})
    engine_settings = profile_settings(options.profile, run.engine, settings.project_dir)
    timeline = Timeline(listener=on_event)
    proxies: list[Proxy] = []
    try:
        with open_session(settings, run, flow=flow, engine_settings=engine_settings,
                          use_kept=False,
                          worker_services=(_through_proxies(settings, proxies)
                                           if plan.fault == "partition" else None),
                          ) as session:
            return _run(store, options, session, flow, plan, timeline, proxies)
    finally:
        for proxy in proxies:
            proxy.stop()


def _run(store: EvidenceStore, options: ChaosOptions, session: RunSession, flow: Flow,
         plan: FaultPlan, timeline: Timeline, proxies: list[Proxy]) -> ChaosResult:
    run = session.options
    stack = session.stack
    reason = not_applicable(plan, run.engine, local_broker=stack.redis is not None,
                            local_server=stack.temporal is not None)
    if reason is not None:
        return _store(store, options, session, flow, timeline, {}, {}, {},
                      applicable=False, fired=False, reason=reason)
    if plan.point == "during-wait":
        session.held_signals.add(_wait(flow, plan.step).signal)

    def signalled(instance_id: str, signal: str, decision: str) -> None:
        timeline.add("signal-sent", f"{signal}={decision} to {instance_id}",
                     instance=instance_id)

    session.on_signal = signalled
    session.start_instances(prepare=lambda r: _arm(session, plan, r.instance_id))
    timeline.add("instances-started", f"{len(session.requests)} instance(s)")
    deadline = time.monotonic() + run.timeout
    fired, reached, why = _await_trigger(session, plan, timeline, deadline)
    if fired:
        _fire(session, plan, reached, timeline, proxies)
    _release_all(session, plan)
    session.held_signals.clear()
    statuses = session.watch(deadline, on_poll=lambda: _supervise(session, plan, timeline))
    timeline.add("run-ended", "all finished" if all(
        s.state.finished for s in statuses.values()) else "deadline passed")
    holds = {iid: _holds(session, iid) for iid, s in statuses.items()
             if not s.state.finished}
    histories = {iid: _history(session, iid) for iid in session.instance_ids}
    return _store(store, options, session, flow, timeline, statuses, holds, histories,
                  applicable=True, fired=fired, reason=why)


def _through_proxies(settings: Settings, proxies: list[Proxy]) -> Callable[[Stack], Services]:
    """Put a TCP proxy between the workers and the broker or server, for a partition."""

    def route(stack: Stack) -> Services:
        services = stack.services
        folder = settings.state_dir / "proxies"
        if services.temporal is not None:
            host, port = _host_port(services.temporal.address)
            proxy = Proxy.start(folder, "temporal-proxy", host, port)
            proxies.append(proxy)
            services = replace(services, temporal=replace(services.temporal,
                                                          address=proxy.address))
        routed: dict[str, str] = {}
        for url in (services.broker_url, services.result_backend_url):
            if url and url.startswith(("redis://", "amqp://")) and url not in routed:
                scheme, _, rest = url.partition("://")
                credentials, _, location = rest.rpartition("@")
                hostport, _, path = location.partition("/")
                host, port = _host_port(hostport, 6379 if scheme == "redis" else 5672)
                proxy = Proxy.start(folder, f"{scheme}-proxy-{len(proxies)}", host, port)
                proxies.append(proxy)
                login = f"{credentials}@" if credentials else ""
                routed[url] = f"{scheme}://{login}{proxy.address}/{path}"
        return replace(services,
                       broker_url=routed.get(services.broker_url or "", services.broker_url),
                       result_backend_url=routed.get(services.result_backend_url or "",
                                                     services.result_backend_url))

    return route


def _host_port(address: str, default_port: int = 7233) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host:
        return address, default_port
    return host, int(port)


def _flow_for_run(settings: Settings, options: ChaosOptions) -> Flow:
    flow = load_flow(options.run.flow, spikes_dir=settings.spikes_dir)
    if options.wait_deadline is None:
        return flow
    nodes = tuple(replace(n, deadline=options.wait_deadline) if isinstance(n, Wait) else n
                  for n in flow.nodes)
    # Workers load the flow from a file, so the shortened copy is written for them.
    folder = settings.state_dir / "derived"
    return write_flow_json(replace(flow, nodes=nodes),
                           folder / f"{flow.name}-wait-{options.wait_deadline:g}s.json")


def _wait(flow: Flow, name: str | None) -> Wait:
    return next(w for w in flow.waits if name is None or w.name == name)


def _arm(session: RunSession, plan: FaultPlan, instance_id: str) -> None:
    if plan.step and plan.point in ("before-effect", "after-effect"):
        session.ledger.arm(instance_id, plan.step, plan.point)  # type: ignore[arg-type]


def _release_all(session: RunSession, plan: FaultPlan) -> None:
    if plan.step and plan.point in ("before-effect", "after-effect"):
        for instance_id in session.instance_ids:
            session.ledger.release(instance_id, plan.step, plan.point)  # type: ignore[arg-type]


def _await_trigger(session: RunSession, plan: FaultPlan, timeline: Timeline,
                   deadline: float) -> tuple[bool, PointReached | None, str]:
    """Wait until the fault point is reached: (fired?, who reached it, why not)."""
    if plan.fault == "none":
        return False, None, "no fault planned"
    found: list[PointReached] = []
    start = time.monotonic()

    def reached(statuses: dict[str, InstanceStatus]) -> bool:
        if plan.offset is not None:
            return time.monotonic() - start >= plan.offset
        if plan.point == "during-wait":
            wait = _wait(session.flow, plan.step)
            return any(s.state is InstanceState.WAITING and wait.name not in s.done
                       for s in statuses.values())
        for instance_id in session.instance_ids:
            hit = session.ledger.reached(instance_id, plan.step or "",
                                         plan.point)  # type: ignore[arg-type]
            if hit is not None:
                found.append(hit)
                return True
        return False

    statuses = session.watch(deadline, until=reached)
    if found:
        hit = found[0]
        timeline.add("fault-point-reached",
                     f"{hit.instance_id} at {hit.step}:{hit.point} in pid {hit.pid}", at=hit.at)
        return True, hit, ""
    if reached(statuses):
        timeline.add("fault-point-reached", plan.describe())
        return True, None, ""
    finished = all(s.state.finished for s in statuses.values())
    why = ("every instance finished before reaching the fault point" if finished
           else "the fault point was not reached before the run's deadline")
    timeline.add("fault-not-fired", why)
    return False, None, why


def _fire(session: RunSession, plan: FaultPlan, reached: PointReached | None,
          timeline: Timeline, proxies: list[Proxy]) -> None:
    """Fire the fault, then recover as an operator would."""
    if plan.fault == "partition":
        for proxy in proxies:
            proxy.cut()
        timeline.add("fault-fired", "network cut between the workers and "
                                    f"{', '.join(p.name for p in proxies)}")
        _release_all(session, plan)
        time.sleep(plan.partition_for)  # the partition's length, part of the scenario
        for proxy in proxies:
            proxy.heal()
        timeline.add("network-healed", f"after {plan.partition_for:g}s")
    elif plan.fault == "kill-worker":
        victim = _worker_holding(session, reached)
        victim.kill()
        timeline.add("fault-fired", f"SIGKILL to {victim.name} (process group {victim.pid})")
        _release_all(session, plan)
        _replace_worker(session, victim, plan, timeline)
    elif plan.fault == "kill-pool-child":
        victim = _worker_holding(session, reached)
        if reached is None or reached.pid == victim.pid:
            timeline.add("fault-skipped", "no pool child holds the step: the worker runs it "
                                          "in its main process")
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(reached.pid, signal.SIGKILL)
        timeline.add("fault-fired", f"SIGKILL to pool child {reached.pid} of {victim.name}; "
                                    "the worker's main process lives on")
    elif plan.fault == "stop-worker":
        victim = _worker_holding(session, reached)
        # A deploy signals the worker's main process. SIGTERM asks for a warm shutdown:
        # Celery finishes the task in hand, Temporal waits its graceful shutdown timeout.
        # SIGQUIT is Celery's cold shutdown: the task in hand is abandoned.
        stop = signal.SIGQUIT if plan.cold else signal.SIGTERM
        victim.popen.send_signal(stop)
        timeline.add("fault-fired", f"{stop.name} to {victim.name}'s main process "
                                    f"({'cold' if plan.cold else 'warm'} shutdown, as a "
                                    "deploy or scale-down)")
        _release_all(session, plan)  # a warm shutdown finishes the task in hand
        _await_exit(victim, timeline)
        _replace_worker(session, victim, plan, timeline)
    elif plan.fault == "restart-broker":
        _restart(session.stack.redis, "broker", plan, timeline, session)
    elif plan.fault == "restart-server":
        _restart(session.stack.temporal, "Temporal server", plan, timeline, session)
    elif plan.fault == "deploy-change":
        _deploy(session, plan, timeline)
    elif plan.fault == "wait-timeout":
        wait = _wait(session.flow, plan.step)
        timeline.add("fault-fired", f"nobody answers {wait.name}; its deadline is "
                                    f"{wait.deadline:g}s")
    else:
        raise NotImplementedError(plan.fault)


def _deploy(session: RunSession, plan: FaultPlan, timeline: Timeline) -> None:
    """A rolling deploy of the changed flow: each worker is stopped as a deploy stops it
    (SIGTERM) and replaced by one running the new version."""
    old = session.flow
    new = write_flow_json(changed_flow(old, plan.change),
                          session.run_dir / "deploy" / f"{old.name}-v{old.version + 1}.json")
    session.engine.deploy(new, previous=old if plan.versioned else None)
    timeline.add("fault-fired", f"deploy of {old.name} v{new.version} ({plan.change}, "
                                f"{'with' if plan.versioned else 'without'} versioning guard)")
    for worker in [w for w in session.workers if "beat" not in w.name]:
        worker.popen.send_signal(signal.SIGTERM)
        _await_exit(worker, timeline)
        _replace_worker(session, worker, plan, timeline)


def _worker_holding(session: RunSession, reached: PointReached | None) -> ManagedProcess:
    """The worker whose process group holds the paused step (else the first worker)."""
    workers = [w for w in session.workers if "beat" not in w.name and w.alive()]
    if reached is not None:
        with contextlib.suppress(ProcessLookupError):
            group = os.getpgid(reached.pid)
            for worker in workers:
                if worker.pid == group:
                    return worker
    return workers[0]


def _await_exit(victim: ManagedProcess, timeline: Timeline) -> None:
    deadline = time.monotonic() + STOP_GRACE
    while victim.popen.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if victim.popen.poll() is None:
        victim.kill()
        timeline.add("worker-forced", f"{victim.name} still ran {STOP_GRACE:g}s after "
                                      "SIGTERM: SIGKILL")
    else:
        timeline.add("worker-exited", f"{victim.name} with code {victim.popen.returncode}")
    victim.stop()  # whatever it left in its process group goes with it


def _replace_worker(session: RunSession, victim: ManagedProcess, plan: FaultPlan,
                    timeline: Timeline) -> None:
    session.workers.remove(victim)
    time.sleep(plan.restart_delay)  # the operator's reaction time, part of the scenario
    worker = session.engine.start_worker()
    session.workers.append(worker)
    timeline.add("worker-started", f"{worker.name} (pid {worker.pid}) replaces {victim.name}")


def _restart(service: LocalTemporal | LocalRedis | None, what: str, plan: FaultPlan,
             timeline: Timeline, session: RunSession) -> None:
    # not_applicable() has ruled out services graduate did not start itself.
    assert service is not None
    assert service.process is not None
    process = service.process
    process.kill()
    timeline.add("fault-fired", f"SIGKILL to the {what} (pid {process.pid})")
    _release_all(session, plan)
    time.sleep(plan.restart_delay)  # the operator's reaction time, part of the scenario
    service.start()
    timeline.add("service-restarted", f"{what} back on the same port and data")


def _hit(session: RunSession, plan: FaultPlan, instance_id: str,
         status: InstanceStatus | None, fault_at: float | None) -> PointReached | None:
    """Where the fault caught this instance, or None if it did not catch it."""
    if fault_at is None or plan.step is None or plan.fault == "wait-timeout":
        return None
    if plan.point == "during-wait":
        # Parked at the wait when the fault fired: no effect of a later step before it.
        names = [n.name for n in session.flow.nodes]
        later = set(names[names.index(plan.step) + 1:])
        early = [e for e in session.ledger.effects(instance_id=instance_id)
                 if e.started_at < fault_at and e.step in later]
        if early or status is None:
            return None
        return PointReached(instance_id, plan.step, "during-wait", 0, fault_at)
    reached = session.ledger.reached(instance_id, plan.step, plan.point)  # type: ignore[arg-type]
    # One that reached its point only after the fault was not hit by it.
    return reached if reached is not None and reached.at <= fault_at else None


def _supervise(session: RunSession, plan: FaultPlan, timeline: Timeline) -> None:
    """A process supervisor's job: a worker or helper that died is started again."""
    for process in [p for p in session.workers if not p.alive()]:
        timeline.add("process-died", f"{process.name} exited with code "
                                     f"{process.popen.returncode}; the supervisor restarts it")
        session.workers.remove(process)
        time.sleep(plan.restart_delay)  # the supervisor's back-off, part of the scenario
        replacement = session.engine.replace(process)
        session.workers.append(replacement)
        timeline.add("worker-started", f"{replacement.name} (pid {replacement.pid}) "
                                       f"replaces {process.name}")


def _holds(session: RunSession, instance_id: str) -> bool | None:
    """Whether the engine still holds the instance; None when it cannot tell."""
    try:
        return session.engine.holds(instance_id)
    except Exception:
        return None


def _history(session: RunSession, instance_id: str) -> list[HistoryEvent]:
    try:
        return session.engine.history(instance_id)
    except Exception as error:
        return [HistoryEvent(time.time(), "history-unavailable", str(error))]


def _store(store: EvidenceStore, options: ChaosOptions, session: RunSession, flow: Flow,
           timeline: Timeline, statuses: dict[str, InstanceStatus],
           holds: dict[str, bool | None],
           histories: dict[str, list[HistoryEvent]], *, applicable: bool, fired: bool,
           reason: str) -> ChaosResult:
    ledger = session.ledger
    fault_at = next((timeline.started + e.at for e in timeline.events
                     if e.kind == "fault-fired"), None)
    verdicts = []
    for request in session.requests:
        iid = request.instance_id
        reached = _hit(session, options.plan, iid, statuses.get(iid), fault_at)
        verdicts.append(judge_instance(
            flow, ledger.instance(iid), ledger.effects(instance_id=iid), statuses[iid],
            engine_holds=holds.get(iid), reached=reached, fault_at=fault_at))
    verdict = judge_run(verdicts)
    stack = session.stack
    record: dict[str, Any] = {
        "run_id": session.run_id,
        "created_at": now_iso(),
        "started_at": timeline.started,  # epoch seconds; timeline times count from here
        "flow": {"name": flow.name, "version": flow.version, "source": flow.source,
                 "definition": flow_to_dict(flow)},
        "engine": session.engine.name,
        "profile": options.profile,
        "settings": session.engine.settings,
        "fault": {**asdict(options.plan), "description": options.plan.describe(),
                  "applicable": applicable, "fired": fired, "reason": reason},
        "options": {"instances": options.run.instances, "workers": options.run.workers,
                    "deadline": options.run.timeout,
                    "decisions": dict(options.run.decisions),
                    "wait_deadline": options.wait_deadline},
        "environment": {
            "host": host(), "packages": package_versions(),
            "servers": server_versions(stack.temporal.binary if stack.temporal else None,
                                       stack.redis.binary if stack.redis else None),
            "services": stack.services.describe(),
        },
        "timeline": [asdict(e) for e in timeline.events],
        "instances": [
            {**asdict(v), "history": [asdict(h) for h in histories.get(v.instance_id, [])]}
            for v in verdicts
        ],
        "ledger": [asdict(e) for e in ledger.effects(run_id=session.run_id)],
        "verdict": {**asdict(verdict), "passed": verdict.passed},
    }
    path = store.save_run(session.run_id, record)
    return ChaosResult(
        run_id=session.run_id, flow=flow.name, engine=session.engine.name, plan=options.plan,
        profile=options.profile, applicable=applicable, reason=reason, fired=fired,
        instances=tuple(verdicts), verdict=verdict, evidence=path,
    )
