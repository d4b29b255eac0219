"""The library API: run a flow, break it, run a matrix of faults, answer a wait.

`graduate.run`, `graduate.chaos`, `graduate.matrix` and `graduate.signal` are what the
command line and the pytest plugin call, so a program gets the same checks, with the
same messages, and the same evidence. Each is a thin layer over the run's own entry
points (`graduate.runner.run_flow`, `graduate.chaos.harness.run_chaos`,
`graduate.chaos.matrix.run_matrix`): it turns keyword arguments into their options,
refuses bad input with a `ConfigError` before anything starts, and returns their
results.

Every function takes optional `settings` (`graduate.Settings`); without them, settings
are read as the command line reads them: GRADUATE_* variables over `[tool.graduate]`
of the nearest project's pyproject.toml.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from graduate.adapters import needs, open_engine
from graduate.adapters.base import InstanceStatus
from graduate.apps import Target, app_of_run, resolve_target, target_engines
from graduate.chaos.faults import (
    FaultPlan,
    deploy_change,
    find_wait,
    parse_label,
    parse_plan,
    stop_worker,
)
from graduate.chaos.harness import ChaosOptions, ChaosResult, TimelineEvent, run_chaos
from graduate.chaos.matrix import (
    DEFAULT_FAULTS,
    DEFAULT_INSTANCES,
    CellOutcome,
    MatrixSpec,
    demo_jobs,
    new_matrix_id,
    run_matrix,
)
from graduate.chaos.matrix_lock import matrix_lock
from graduate.chaos.profiles import profile_settings
from graduate.config import Settings, load_settings
from graduate.errors import ConfigError
from graduate.evidence import EvidenceStore, known_ids
from graduate.flow import Flow, load_flow
from graduate.ledger import Ledger
from graduate.runner import (
    Decision,
    Failure,
    InputValues,
    RunOptions,
    RunResult,
    approve_all,
    input_values,
    run_flow,
)
from graduate.runs.session import check_timeout
from graduate.runs.workers import workers_kind
from graduate.services.provider import kept_services, open_services
from graduate.timescale import TimeScale

DECISIONS: tuple[Decision, ...] = get_args(Decision)


@dataclass(frozen=True)
class MatrixResult:
    """A finished (or resumed) matrix: its id, every cell, and its evidence file."""

    matrix_id: str
    cells: tuple[CellOutcome, ...]  # each with its run's id and the numbers of its verdicts
    evidence: Path


@dataclass(frozen=True)
class SignalSent:
    """A decision delivered to a waiting instance."""

    instance_id: str
    signal: str
    decision: Decision
    engine: str


def resolve(flow: str | Path, *, engine: str, settings: Settings | None = None,
            project_dir: Path | None = None) -> Target:
    """What `run` and `chaos` would run for `flow` on `engine`, read and checked once: the
    flow (a name in the spikes folder, a file, `module:ATTRIBUTE`), or a team's app
    declared at `project_dir` (default: the settings' project folder) with the flow it
    declares. Hand the result to `run` or `chaos` in place of the flow to run it as
    resolved (a caller that needs the flow or the engine first reads it only once)."""
    config = settings or load_settings()
    return resolve_target(project_dir or config.project_dir, config.spikes_dir, str(flow),
                          engine)


def _target(flow: str | Path | Target, engine: str, config: Settings,
            project_dir: Path) -> Target:
    if isinstance(flow, Target):
        return flow
    return resolve_target(project_dir, config.spikes_dir, str(flow), engine)


def run(flow: str | Path | Target, *, engine: str, instances: int = 1, workers: int = 1,
        timeout: float = 120.0, decisions: Mapping[str, Decision] | None = None,
        failures: Sequence[Failure | str] = (), settings: Settings | None = None,
        temporal_port: int | None = None, redis_port: int | None = None,
        time_scale: str | float = 1,
        on_status: Callable[[str, InstanceStatus], None] | None = None,
        interrupt_at: str | None = None, inputs: InputValues | None = None,
        instance_inputs: Sequence[InputValues] = ()) -> RunResult:
    """Run `flow` on `engine` and report what became of every instance.

    `flow` is a name in the project's spikes folder, a .toml file, or `module:ATTRIBUTE`;
    or a team's app declared in `[tool.graduate.apps.NAME]`, whose own workers then run
    on `engine` ("temporal" or "celery", as the app declares), judged against its flow;
    or what `resolve` made of either.
    `decisions` answers waits as soon as an instance reaches them (`{"approval":
    "approve"}`); a wait without one runs to its deadline, or until `graduate.signal`.
    The flow's interrupt is sent when `decisions` names its signal with "interrupt"
    (`{"red_flag": "interrupt"}`): to each instance as soon as it started, or where
    `interrupt_at` says: while that step is in flight, or while it waits at that wait.
    `failures` makes a step's external system fail (`Failure` or `"STEP=transient:2"`,
    `"STEP=permanent"`). The services come from the settings, else from
    `graduate env up`, else local ones started for the run (on `temporal_port` and
    `redis_port` when given); everything started is stopped before it returns.
    `on_status` is told each instance's status as it changes. `time_scale` compresses
    every duration of the flow for the run (`"1h=1s"`, or a factor such as 3600; see
    `graduate.timescale`): `result.time_scale` lists them as the run used them.
    `inputs` gives every instance the flow's inputs (`{"parties": ["acme", "bidco"]}`,
    or `{"parties": "acme,bidco"}`); `instance_inputs` one per instance, in the order
    they start, over `inputs`. An input not given takes the flow's default.
    """
    config = settings or load_settings()
    target = _target(flow, engine, config, config.project_dir)
    options = RunOptions(
        flow=target.flow_ref, engine=target.engine, instances=instances, workers=workers,
        timeout=timeout, decisions=dict(decisions or {}), interrupt_at=interrupt_at,
        failures=tuple(item if isinstance(item, Failure) else Failure.parse(item)
                       for item in failures),
        temporal_port=temporal_port, redis_port=redis_port, app=target.app,
        time_scale=TimeScale.parse(time_scale), input=input_values(inputs),
        instance_inputs=tuple(input_values(given) for given in instance_inputs))
    return run_flow(config, options, flow=target.flow, on_status=on_status)


def chaos(flow: str | Path | Target, *, engine: str, fault: str = "none", at: str | None = None,
          instances: int = 1, profile: str = "defaults", timeout: float = 90.0,
          restart_delay: float = 1.0, partition_for: float = 5.0, versioned: bool = False,
          pinned: bool = False, cold: bool = False, change: str = "reorder", hit: str = "one",
          wait_deadline: float | None = None, time_scale: str | float = 1,
          decisions: Mapping[str, Decision] | None = None, settings: Settings | None = None,
          evidence: Path | None = None,
          on_event: Callable[[TimelineEvent], None] | None = None,
          project_dir: Path | None = None, workers: str = "local",
          inputs: InputValues | None = None) -> ChaosResult:
    """Run `flow` on `engine` under one `fault`, judge every instance, store the evidence.

    `fault` is a fault's name, with its flags as a matrix cell writes them
    (`double-start+crash`, `rollback-rehearsal+all`).

    `at` is where the fault fires: `STEP:before-effect`, `STEP:after-effect`,
    `WAIT:during-wait` or `+SECONDS`. The harness restarts what it killed after
    `restart_delay` seconds; a partition lasts `partition_for` seconds; `versioned`
    deploys with the engine's versioning guard, `pinned` as a new worker version beside
    the old one (Temporal's worker deployment versions), `change` says what the deploy changes
    (reorder or add-step); `cold` makes stop-worker a cold shutdown. With several
    `instances` the fault hits the first to reach `at` (`hit="one"`) or each one as it
    gets there (`hit="all"`); every instance is judged. `wait_deadline`
    shortens the flow's waits for the run: a wait-timeout run needs its wait to end
    before `timeout` (in real seconds, as `timeout`, `restart_delay` and `partition_for`
    are). `time_scale` compresses every duration of the flow for the run (`"1h=1s"`, or a
    factor; see `graduate.timescale`); the engines' own settings stay real, and the
    evidence records both. Every wait is approved unless `decisions` says otherwise. The run
    is stored in `evidence` (default: the project's evidence folder) and its result
    says whether it passed (`result.verdict.passed`) and, when the fault cannot apply
    to the engine or the services, why (`result.applicable`, `result.reason`).

    `flow` may name a team's app declared in `[tool.graduate.apps.NAME]` (see `run`), or
    be what `resolve` made of one (the target's engine is then the one it runs on).
    The apps and profiles are the project's at `project_dir` (default: the settings'
    project folder; the pytest plugin runs in a test's own folder).

    `workers="external"` runs on workers registered by `graduate worker` on any host
    instead of starting its own: the run waits (within `timeout`) for one of `engine`
    running `flow` to be alive in the PostgreSQL ledger, fires the fault as commands its
    agent carries out, and judges as always. The settings must name that ledger and the
    services those workers use; a fault that needs workers graduate started itself (a
    partition through its proxies, a pinned deploy) is not applicable, with the reason.

    `inputs` gives every instance the flow's inputs, as for `run`.
    """
    config = settings or load_settings()
    project = project_dir or config.project_dir
    target = _target(flow, engine, config, project)
    engine, loaded = target.engine, target.flow
    engine_settings = profile_settings(profile, engine, project)
    chosen, flags = parse_label(fault)
    plan = parse_plan(chosen, at, loaded, restart_delay=restart_delay,
                      partition_for=partition_for, hit=hit,
                      options={deploy_change.VERSIONED.name: versioned,
                               deploy_change.PINNED.name: pinned,
                               deploy_change.CHANGE.name: change,
                               stop_worker.COLD.name: cold, **flags})
    scale = TimeScale.parse(time_scale)
    _check_wait_deadline(loaded, plan, timeout=timeout, wait_deadline=wait_deadline,
                         time_scale=scale)
    options = ChaosOptions(
        run=RunOptions(flow=loaded.source or target.flow_ref, engine=engine,
                       instances=instances, timeout=timeout,
                       decisions=approve_all(loaded) if decisions is None else dict(decisions),
                       app=target.app, time_scale=scale,
                       workers_from=workers_kind(workers), input=input_values(inputs)),
        plan=plan, profile=profile, wait_deadline=wait_deadline,
        engine_settings=engine_settings)
    return run_chaos(config, options, EvidenceStore(evidence or config.evidence_dir),
                     flow=loaded, on_event=on_event)


def matrix(flow: str | Path | None = None, *, engines: Sequence[str] | None = None,
           faults: Sequence[str] = DEFAULT_FAULTS, profiles: Sequence[str] = ("defaults",),
           at: str | None = None, instances: int = DEFAULT_INSTANCES, hit: str = "one",
           change: str = "reorder", timeout: float = 90.0,
           restart_delay: float = 1.0, wait_deadline: float = 5.0,
           time_scale: str | float = 1, resume: bool | str = False,
           settings: Settings | None = None,
           evidence: Path | None = None,
           on_cell: Callable[[CellOutcome, int, int], None] | None = None,
           on_planned: Callable[[int], None] | None = None,
           workers: str = "local", jobs: int | None = 1,
           inputs: InputValues | None = None) -> MatrixResult:
    """Run `flow` under every combination of engine, fault and profile: one chaos run
    per cell, the matrix file rewritten after each, so an interrupted matrix keeps every
    finished cell.

    `engines` defaults to every engine (for a team's declared app: those it declares).
    `faults` are fault names, each
    `FAULT[+OPTION][@STEP:POINT]` (`stop-worker+cold` for a fault's flag); `at` is the point
    of faults given without one (default: the first step after the first wait). Each
    cell runs `instances` instances, the fault hitting one of them or, with
    `hit="all"`, each; deploy-change cells deploy `change` (reorder or add-step). In
    wait-timeout cells the waits last `wait_deadline` seconds. `resume=True` continues
    the latest matrix in `evidence`, `resume="m1a2b3c"` that one, running only the
    cells left (`flow` and the other options then come from the matrix file). One
    process at a time runs a matrix: a resume of one that another process is running is
    refused with InUse, which names that process.
    `time_scale` compresses every duration of the flow in every cell (`"1h=1s"`, or a
    factor; see `graduate.timescale`).
    `on_cell(cell, number, total)` is told after each cell, in the order they end;
    `on_planned(cells)` once, when every option has been checked and before any cell runs
    (a banner printed there never precedes a refusal).
    `workers="external"` runs every cell on workers registered by `graduate worker` (see
    `chaos`): two of each engine, say, on other hosts.
    `jobs` cells run at once, in lanes: processes of their own, each running an engine's
    cells one after another on local servers it starts once, each cell with its own
    workers, queues and files (the engines' recovery is mostly waiting, so cells overlap
    well); the default runs them one after another, in this process, on one set of
    servers; `jobs=None` runs one per engine at once, as `graduate demo` does.
    `inputs` gives every instance of every cell the flow's inputs, as for `run`.
    """
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ConfigError(f"jobs {jobs!r} must be a whole number of cells to run at once, 1 "
                          "or more: --jobs 2 (jobs=2 in Python), or 1 for one at a time")
    config = settings or load_settings()
    store = EvidenceStore(evidence or config.evidence_dir)
    resume_id: str | None = None
    if resume:
        resume_id = resume if isinstance(resume, str) else store.latest_matrix()
        if resume_id is None:
            raise ConfigError(f"no matrix to resume in {store.root}; start one with "
                              "`graduate matrix FLOW`")
        # A name, not a path (../runs/x is no matrix); one being started by another
        # process has only its lock so far, and matrix_lock names that process.
        if resume_id not in store.matrices() and not (
                resume_id == Path(resume_id).name
                and store.matrix_path(resume_id).with_suffix(".lock").exists()):
            raise ConfigError(f"no matrix {resume_id!r} to resume in {store.root}; matrices "
                              f"there: {known_ids(store.matrices())}. Leave out --matrix-id "
                              "to resume the latest, or start one with `graduate matrix FLOW`")
        spec = MatrixSpec(flow="")
    elif flow is None:
        raise ConfigError("give a FLOW, or --resume (resume=True) to continue the latest "
                          "matrix")
    else:
        spec = MatrixSpec(flow=str(flow),
                          engines=(target_engines(config.project_dir, str(flow))
                                   if engines is None else tuple(engines)),
                          faults=tuple(faults), profiles=tuple(profiles), at=at,
                          instances=instances, timeout=timeout, restart_delay=restart_delay,
                          wait_deadline=wait_deadline, hit=hit, change=change,
                          time_scale=TimeScale.parse(time_scale).label,
                          workers=workers_kind(workers), input=input_values(inputs))
        expiring = [kind for kind, _ in (parse_label(item.partition("@")[0])
                                         for item in spec.faults) if kind.lets_waits_expire]
        if expiring and spec.engines:  # none is refused with the matrix's own message
            loaded = resolve_target(config.project_dir, config.spikes_dir, spec.flow,
                                    spec.engines[0]).flow
            _check_wait_deadline(loaded, parse_plan(expiring[0], None, loaded),
                                 timeout=timeout, wait_deadline=wait_deadline,
                                 time_scale=TimeScale.parse(time_scale))
    # One process at a time runs a matrix: a new one is held from before its first save,
    # so that a resume started beside it cannot run its cells too.
    store.ensure_writable()  # before the lock's file is made there
    matrix_id = resume_id or new_matrix_id()
    with matrix_lock(store, matrix_id):
        matrix_id, cells = run_matrix(config, spec, store, resume=resume_id,
                                      jobs=demo_jobs(spec.engines) if jobs is None else jobs,
                                      on_cell=on_cell, on_planned=on_planned,
                                      matrix_id=matrix_id)
    return MatrixResult(matrix_id=matrix_id, cells=tuple(cells),
                        evidence=store.matrix_path(matrix_id))


def signal(instance_id: str, name: str, *, decision: str | None = None,
           payload: Mapping[str, Any] | None = None,
           settings: Settings | None = None) -> SignalSent:
    """Deliver a human decision (`approve`, the default, or `reject`) on signal `name`
    to a waiting instance, with `payload` as extra fields; or, when `name` is the flow's
    interrupt signal, interrupt the instance wherever it is (the decision is then
    "interrupt"; an interrupt takes no approve or reject). The instance's run must still
    have its services: kept up by `graduate env up`, or external ones in the settings."""
    config = settings or load_settings()
    if decision is not None and decision not in DECISIONS:
        raise ConfigError(f"decision {decision!r} must be approve or reject (or interrupt, "
                          "which goes with the flow's interrupt signal)")
    if payload is not None and not isinstance(payload, Mapping):
        raise ConfigError("the payload must be a JSON object, for example "
                          "'{\"by\": \"ana\"}'")
    record = Ledger(config.ledger).instance(instance_id)
    flow = load_flow(record.flow_source)
    sent: Decision = "approve" if decision is None else decision
    if flow.interrupt is not None and name == flow.interrupt.signal:
        if decision not in (None, "interrupt"):
            # A reject sent as an interrupt would compensate: refuse rather than guess.
            raise ConfigError(f"{name} is flow {flow.name!r}'s interrupt: it takes no "
                              f"decision, and --decision {decision} would be ignored; "
                              f"send it without --decision")
        sent = "interrupt"
    elif decision == "interrupt":
        raise ConfigError("decision interrupt goes with the flow's interrupt signal, "
                          + (f"{flow.interrupt.signal}" if flow.interrupt else
                             f"and flow {flow.name!r} declares none")
                          + f"; a wait's signal such as {name!r} takes approve or reject")
    elif name not in {w.signal for w in flow.waits}:
        raise ConfigError(f"flow {flow.name!r} waits for no signal {name!r}; its waits take: "
                          f"{', '.join(w.signal for w in flow.waits) or 'none'}"
                          + (f", and its interrupt {flow.interrupt.signal}"
                             if flow.interrupt else ""))
    if not (kept_services(config.state_dir) or config.temporal_address or config.broker_url):
        raise ConfigError("no running services to signal through: start them with "
                          "`graduate env up` before `graduate run`, or configure external ones")
    with open_services(config, needs([record.engine])) as services:
        # The run's own folder: engines route to that run's queues by its name.
        engine = open_engine(record.engine, flow, services,
                             config.state_dir / "runs" / record.run_id,
                             app=app_of_run(config.project_dir, record.engine,
                                            record.flow_source))
        try:
            engine.signal(instance_id, name, {**(payload or {}), "decision": sent})
        finally:
            engine.close()
    return SignalSent(instance_id=instance_id, signal=name, decision=sent,
                      engine=record.engine)


def _check_wait_deadline(flow: Flow, plan: FaultPlan, *, timeout: float,
                        wait_deadline: float | None, time_scale: TimeScale) -> None:
    """Refuse a wait-timeout run whose wait cannot end before the run's deadline: the
    fault would never play out, and every instance would be judged unfinished."""
    if not plan.fault.lets_waits_expire:
        return
    check_timeout(timeout)  # before it is compared with the wait's deadline
    flow = time_scale.apply(flow)[0] if not time_scale.real_time else flow
    wait = find_wait(flow, plan.step)
    lasts = wait.deadline if wait_deadline is None else wait_deadline
    if lasts >= timeout:
        shorter = f"{min(5.0, timeout / 2):g}"
        raise ConfigError(
            f"the wait {wait.name} of {flow.name} lasts {lasts:g}s, not less than the run's "
            f"timeout of {timeout:g}s, so it cannot time out within the run; shorten it for "
            f"the run with --wait-deadline {shorter} (wait_deadline={shorter} in Python)")

