"""A matrix: every combination of engine, fault and profile, one chaos run per cell.

The matrix file in the evidence store is rewritten atomically after every cell, so a
matrix killed or interrupted with Ctrl-C keeps every finished cell, and `--resume`
runs only the cells that have no run yet. Cells may run side by side (`jobs`), in lanes:
processes of their own that run an engine's cells one after another
(`graduate.chaos.cells`); the matrix file is still written by the matrix alone, as each
cell ends.

A lane starts its Temporal server or Redis once and its cells share them (`lane_services`):
each cell's run has its own run id, task queue or Celery queues, workflow ids and
instance ids, so no cell sees another's work, and a fault that restarts the server or
the broker still kills and restarts the lane's own. A team's app names its own queues,
which would carry one cell's leftovers into the next: its cells start servers of their
own, as do cells on registered workers (`--workers external`).
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from graduate.adapters import check_engine, describe, engine_names, needs
from graduate.apps import Target, resolve_target
from graduate.chaos.cells import Cell, Lane, run_side_by_side
from graduate.chaos.faults import (
    Fault,
    FaultPlan,
    deploy_change,
    double_start,
    fault_names,
    kill_pool_child,
    kill_worker,
    none,
    parse_label,
    parse_plan,
    restart_broker,
    restart_server,
    rollback_rehearsal,
    stop_worker,
    wait_timeout,
)
from graduate.chaos.harness import ChaosOptions, ChaosResult, run_chaos
from graduate.chaos.profiles import load_profiles, require_profile
from graduate.config import Settings
from graduate.errors import ConfigError
from graduate.evidence import EvidenceStore, now_iso
from graduate.flow import Flow, Step
from graduate.processes import Spares
from graduate.runner import RunOptions, approve_all
from graduate.runs.record import CellOutcome, CellSummary, MatrixRecord, MatrixSpecRecord
from graduate.runs.remote import check_external
from graduate.runs.session import new_run_id, validate_options
from graduate.runs.timeline import INSTANCES_STARTED, TimelineEvent
from graduate.runs.workers import WorkersKind
from graduate.services.provider import Stack, open_stack
from graduate.timescale import TimeScale

# The double start and the rollback rehearsal are in by default: the spike ADR's exit
# criteria ask for both, its gate accepts them only from evidence, and a matrix attached
# to the ADR brings their runs. They cost no recovery delay (nothing is restarted).
DEFAULT_FAULTS = (none.NAME, kill_worker.NAME, kill_pool_child.NAME, stop_worker.NAME,
                  restart_broker.NAME, restart_server.NAME, wait_timeout.NAME,
                  double_start.NAME, rollback_rehearsal.NAME)
# `graduate demo`'s matrix (and the bench's timing of it): the sample spike under every
# fault a reader of the README meets, on each engine, with the demo's deadline.
DEMO_FLOW = "partner_approval"
DEMO_FAULTS = (none.NAME, kill_worker.NAME, stop_worker.NAME, restart_broker.NAME,
               restart_server.NAME, deploy_change.NAME,
               f"{deploy_change.NAME}+{deploy_change.VERSIONED.name}", wait_timeout.NAME)
DEMO_TIMEOUT = 45.0
# A cell, as planned and as the matrix file keeps it, is the stored record's.
__all__ = ["DEFAULT_FAULTS", "DEFAULT_INSTANCES", "DEMO_FAULTS", "DEMO_FLOW", "DEMO_TIMEOUT",
           "CellOutcome", "LaneShared", "MatrixSpec", "default_point", "demo_jobs", "lane_services",
           "new_matrix_id",
           "plan_cells", "run_matrix", "settle_cell", "summarise"]
# Several instances in flight, as in production: the fault hits one of them (or, with
# hit="all", each), and the checker judges what it did to the others too.
DEFAULT_INSTANCES = 3


@dataclass(frozen=True)
class MatrixSpec:
    flow: str
    engines: tuple[str, ...] = field(default_factory=engine_names)
    # FAULT[+OPTION...][@STEP:POINT]: an option is a flag the fault declares
    faults: tuple[str, ...] = DEFAULT_FAULTS
    profiles: tuple[str, ...] = ("defaults",)
    at: str | None = None  # default fault point for faults given without one
    instances: int = DEFAULT_INSTANCES
    timeout: float = 90.0
    restart_delay: float = 1.0
    wait_deadline: float = 5.0  # the waits' deadline in wait-timeout cells
    hit: str = "one"  # the fault hits one instance, or "all" of them
    change: str = "reorder"  # what deploy-change cells deploy: reorder or add-step
    time_scale: str = "1"  # every cell's flow durations compressed: "1h=1s", "3600"
    # Started by each cell's run ("local"), or registered by `graduate worker`
    # ("external": each cell waits for one at least, and drives all of its pool).
    workers: WorkersKind = "local"
    # The flow's inputs every instance of every cell takes (`--input`); the defaults
    # for those not given.
    input: dict[str, tuple[str, ...]] = field(default_factory=dict)


def demo_jobs(engines: Sequence[str]) -> int:
    """How many of the demo's cells run at once: one per engine (a lane each). A cell
    mostly waits on an engine's clock (a timeout, a visibility sweep), so on two cores
    three overlap without slowing each other's recovery; more would crowd their starts."""
    return max(1, len(engines))


def default_point(flow: Flow) -> str:
    """The step in flight that matters most: the first after the first wait (the
    commitment a human approved), else the first step; paused before its effect."""
    after_wait = False
    for node in flow.flat_nodes:
        if isinstance(node, Step) and (after_wait or not flow.waits):
            return f"{node.name}:before-effect"
        if node in flow.waits:
            after_wait = True
    return f"{flow.steps[0].name}:before-effect"


def plan_cells(flow: Flow, spec: MatrixSpec, project_dir: Path) -> list[CellOutcome]:
    """Every cell of the matrix, validated before any runs."""
    scale = TimeScale.parse(spec.time_scale)
    scale.apply(flow)  # a scale the flow cannot take is refused before any cell runs
    for engine in spec.engines:
        check_engine(engine)
        validate_options(flow, RunOptions(flow=spec.flow, engine=engine,
                                          instances=spec.instances, timeout=spec.timeout,
                                          time_scale=scale,
                                          workers_from=spec.workers, input=spec.input))
    # An empty list would store a matrix of no cells, which `graduate report` would then
    # take for the latest one.
    for items, option in ((spec.faults, "--faults"), (spec.profiles, "--profiles")):
        if not items:
            raise ConfigError(f"a matrix needs at least one cell: give {option} at least one "
                              "name (comma-separated), or leave it out for the defaults")
    if spec.change not in deploy_change.CHANGE.choices:  # even with no deploy-change cell
        raise ConfigError(f"--change {spec.change!r} is not one of "
                          f"{', '.join(deploy_change.CHANGE.choices)}")
    known = load_profiles(project_dir)  # each one's settings checked for every engine
    for profile in spec.profiles:
        require_profile(known, profile)
    cells = []
    for engine in spec.engines:
        for item in spec.faults:
            name, _, at = item.partition("@")
            try:
                fault, options = parse_label(name)
            except ConfigError as error:
                raise ConfigError(f"{error}; in --faults, write FAULT[+OPTION][@STEP:POINT] "
                                  f"with FAULT one of: {', '.join(fault_names())}") from error
            point = at or _default_at(flow, fault, spec.at)
            if deploy_change.CHANGE in fault.options:
                options = {**options, deploy_change.CHANGE.name: spec.change}
            plan = parse_plan(fault, point, flow, restart_delay=spec.restart_delay,
                              options=options, hit=spec.hit)
            for profile in spec.profiles:
                key = f"{engine}|{plan.label}@{point or '-'}|{profile}"
                cells.append(CellOutcome(key=key, engine=engine, fault=fault.name, at=point,
                                         profile=profile, options=options))
    return cells


def _default_at(flow: Flow, fault: Fault, given: str | None) -> str | None:
    if not fault.needs_point:
        return None
    if fault.at_wait and flow.waits:
        return f"{flow.waits[0].name}:during-wait"
    return given or default_point(flow)


def summarise(result: ChaosResult) -> CellSummary:
    """The numbers of one cell, from its verdicts."""
    resumes = [i.resume.time_to_resume for i in result.instances
               if i.resume is not None and i.resume.time_to_resume is not None]
    counts = result.verdict.counts
    return CellSummary(
        completed=counts["completed"], compensated=counts["compensated"],
        failed=counts["failed"], lost=counts["lost"], stuck=counts["stuck"],
        instances=len(result.instances),
        applicable=result.applicable, fired=result.fired, reason=result.reason,
        unabsorbed_duplicates=result.verdict.unabsorbed_duplicates,
        absorbed_duplicates=result.verdict.absorbed_duplicates,
        hit_by_fault=result.verdict.hit_by_fault,
        continued=sum(1 for i in result.instances if i.resume and i.resume.continued),
        resumed_exactly=result.verdict.resumed_exactly,
        median_time_to_resume=statistics.median(resumes) if resumes else None,
        passed=result.verdict.passed,
        failures=result.verdict.failures,
    )


def new_matrix_id() -> str:
    return f"m{new_run_id()}"


def run_matrix(settings: Settings, spec: MatrixSpec, store: EvidenceStore, *,
               resume: str | None = None, jobs: int = 1,
               on_cell: Callable[[CellOutcome, int, int], None] | None = None,
               on_planned: Callable[[int], None] | None = None,
               matrix_id: str | None = None) -> tuple[str, list[CellOutcome]]:
    """Run every cell not yet done, up to `jobs` at once (each then in a process of its
    own: `graduate.chaos.cells`); return the matrix id and all cells. A new matrix takes
    `matrix_id` (from `new_matrix_id`: its caller holds its lock, `matrix_lock`).
    `on_planned(cells to run)` is told once every option is checked and the matrix
    saved, before the first cell starts."""
    store.ensure_writable()
    if resume is not None:
        record = store.load_matrix(resume)
        spec = MatrixSpec(**asdict(record.spec))
    if jobs > 1 and spec.workers == "external":
        raise ConfigError("cells on registered workers (--workers external) share them, and "
                          "one cell's fault would hit another's instances: run them one at "
                          "a time (--jobs 1)")
    targets = _targets(settings, spec)
    # The matrix records the registered engines (an app's: "celery-app", not "celery").
    spec = replace(spec, engines=tuple(t.engine for t in targets))
    flow = targets[0].flow
    if resume is None:
        record = MatrixRecord(matrix_id=matrix_id or new_matrix_id(), created_at=now_iso(),
                              flow=flow.name, spec=MatrixSpecRecord(**asdict(spec)),
                              cells=tuple(plan_cells(flow, spec, settings.project_dir)))
    by_engine = {t.engine: t for t in targets}
    if spec.workers == "external":  # refused before any cell, not at the first
        for target in targets:
            check_external(settings, RunOptions(
                flow=target.flow_ref, engine=target.engine, workers_from=spec.workers,
                time_scale=TimeScale.parse(spec.time_scale)))
    cells = list(record.cells)

    def save() -> None:
        # Rewritten whole after every cell, by this process alone: a matrix stopped
        # midway keeps what it settled.
        store.save_matrix(replace(record, cells=tuple(cells), updated_at=now_iso()))

    save()
    pending = [n for n, cell in enumerate(cells) if cell.status == "pending"]
    if on_planned is not None:
        on_planned(len(pending))

    def settled(index: int, outcome: CellOutcome) -> None:
        cells[index] = outcome
        save()
        if on_cell is not None:
            on_cell(outcome, sum(cells[n].status != "pending" for n in pending), len(pending))

    runs = {}
    for index in pending:
        cell = cells[index]
        plan = parse_plan(cell.fault, cell.at, flow, restart_delay=spec.restart_delay,
                          options=cell.options, hit=spec.hit)
        target = by_engine[cell.engine]
        runs[index] = (settings, _options(spec, target, plan, cell), store, target.flow, cell)
    if jobs == 1:
        with lane_services(settings, spec.engines, spec.workers) as shared:
            for index, args in runs.items():
                settled(index, settle_cell(*args, shared))
    else:
        folder = settings.state_dir / "matrices" / record.matrix_id  # the lanes' own files
        run_side_by_side(_lanes(settings, spec, [(n, cells[n].engine) for n in pending],
                                runs, jobs),
                         at_once=jobs, folder=folder,
                         on_done=lambda call, outcome: settled(int(call.name), outcome))
    return record.matrix_id, cells


def _lanes(settings: Settings, spec: MatrixSpec, pending: Sequence[tuple[int, str]],
           runs: dict[int, tuple[Settings, ChaosOptions, EvidenceStore, Flow, CellOutcome]],
           jobs: int) -> list[Lane[CellOutcome]]:
    """The pending cells (index, engine) in lanes: each engine's cells dealt in turn to
    as many lanes as `jobs` gives each engine (one at least), so that the lanes at once
    are of different engines: a Temporal server's start and a Redis's weigh differently
    on the cores."""
    engines = list(dict.fromkeys(engine for _, engine in pending))
    per_engine = max(1, math.ceil(jobs / max(1, len(engines))))
    dealt: dict[tuple[int, str], list[int]] = {}
    for engine in engines:
        mine = [index for index, on in pending if on == engine]
        for number, index in enumerate(mine):
            dealt.setdefault((number % per_engine, engine), []).append(index)
    order = sorted(dealt, key=lambda key: (key[0], engines.index(key[1])))
    return [Lane(name=f"{engine}-{turn}",
                 cells=tuple(Cell(name=str(index), call=settle_cell, args=runs[index])
                             for index in dealt[(turn, engine)]),
                 opens=lane_services, open_args=(settings, (engine,), spec.workers))
            for turn, engine in order]


def _shares(engine: str, workers: WorkersKind) -> bool:
    """Whether a cell on `engine` runs on its lane's servers (see the module's doc)."""
    return workers == "local" and not describe(engine).runs_app


@dataclass(frozen=True)
class LaneShared:
    """What a lane opens once for its cells."""

    stack: Stack | None  # the servers its cells share (None when none shares)
    # Worker processes that imported their code during an earlier cell's wait, for the
    # next cell's start to take (ADR 0022).
    spares: Spares


@contextlib.contextmanager
def lane_services(settings: Settings, engines: Sequence[str],
                  workers: WorkersKind) -> Iterator[LaneShared]:
    """The servers a lane's cells on `engines` share, started once (see `_shares`), and
    its spare workers, the first ones importing while the servers start (at normal
    priority: the lane holds the start lock, and the import would otherwise be its
    first cell's); stopped when the lane ends."""
    sharing = [engine for engine in engines if _shares(engine, workers)]
    with contextlib.ExitStack() as held:
        spares = held.enter_context(Spares(settings.state_dir / "spares"))
        if workers == "local":
            spares.stock([m for engine in engines for m in describe(engine).worker_modules],
                         idle=False)
        stack = held.enter_context(open_stack(settings, needs(sharing), use_kept=False)
                                   ) if sharing else None
        yield LaneShared(stack, spares)


def settle_cell(settings: Settings, options: ChaosOptions, store: EvidenceStore, flow: Flow,
                cell: CellOutcome, shared: LaneShared | None = None,
                started: Callable[[], None] | None = None) -> CellOutcome:
    """Run one cell, on the lane's `shared` servers where it shares them, its first
    workers taken from the lane's spares, and store its run: the cell as settled by it.
    `started` is called once the run's instances have started: its start, which takes
    the cores, is over."""
    spares = shared.spares if shared is not None else None

    def event(item: TimelineEvent) -> None:
        if item.kind == INSTANCES_STARTED.kind:
            if started is not None:
                started()
            if spares is not None:
                spares.refill()  # they import at idle priority: no other start waits

    stack = shared.stack if shared is not None and _shares(
        options.run.engine, options.run.workers_from) else None
    with spares.offered() if spares is not None else contextlib.nullcontext():
        result = run_chaos(settings, options, store, flow=flow, stack=stack,
                           on_event=event)
    return replace(cell, run_id=result.run_id,
                   status="done" if result.applicable else "not-applicable",
                   summary=summarise(result))


def _targets(settings: Settings, spec: MatrixSpec) -> list[Target]:
    """Each engine of the spec, resolved: the flow's model on it, or a declared app on the
    app engine that runs it (checked before any cell runs)."""
    if not spec.engines:
        raise ConfigError("a matrix needs at least one engine; give --engines")
    return [resolve_target(settings.project_dir, settings.spikes_dir, spec.flow, engine)
            for engine in spec.engines]


def _options(spec: MatrixSpec, target: Target, plan: FaultPlan,
             cell: CellOutcome) -> ChaosOptions:
    return ChaosOptions(
        run=RunOptions(flow=target.flow_ref,
                       engine=cell.engine, instances=spec.instances, timeout=spec.timeout,
                       decisions=approve_all(target.flow), app=target.app,
                       time_scale=TimeScale.parse(spec.time_scale),
                       workers_from=spec.workers, input=spec.input),
        plan=plan, profile=cell.profile,
        wait_deadline=spec.wait_deadline if plan.fault.lets_waits_expire else None,
    )
