"""The report model, from the evidence store only: the one place that reads evidence.

A report is built from one matrix (by default the latest) or from a list of runs. Every
record is redacted as it is read; the verdicts are judged again from the stored
instance verdicts with `graduate.check.judge_run`, so the report and `graduate chaos`
can never disagree on what passes.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

from graduate.adapters import all_engine_names, describe
from graduate.adapters.base import HistoryEvent
from graduate.chaos.faults import descriptions, parse_label, plan_from_record, timeline_events
from graduate.check import (
    EffectVerdict,
    FaultFacts,
    InstanceVerdict,
    NoticeVerdict,
    ReminderVerdict,
    Resume,
    Verdict,
    correlation_failure,
    judge_run,
    measured_to,
)
from graduate.config import Settings
from graduate.errors import ConfigError, GraduateError
from graduate.evidence import EvidenceStore, known_ids
from graduate.flow import CLASS_MEANINGS, Node, Parallel, Step, Wait
from graduate.ledger import EffectRecord
from graduate.redaction import redact_value
from graduate.reports.decision import criteria, recommend
from graduate.reports.model import (
    CellReport,
    CellStatus,
    Clock,
    DefinitionInfo,
    EffectCount,
    EngineSummary,
    EngineVerdict,
    EnvironmentSet,
    Event,
    FaultInfo,
    FlowInfo,
    GridRow,
    InstanceReport,
    LedgerRow,
    NoticeInfo,
    Pairs,
    Problem,
    ReminderInfo,
    Report,
    ResumeInfo,
    ResumePoint,
    ResumeStats,
    RunReport,
    SettingsSet,
    StepInfo,
    WaitInfo,
)
from graduate.runs.definitions import (
    CurrentDefinition,
    Definition,
    by_definition,
    current_definition,
)
from graduate.runs.record import CellSummary, MatrixRecord, RunRecord

_EPSILON = 1e-6
R = TypeVar("R", RunRecord, MatrixRecord)


def build_report(store: EvidenceStore, *, matrix_id: str | None = None,
                 run_ids: Sequence[str] = (), flow: str | None = None,
                 all_definitions: bool = False, settings: Settings | None = None) -> Report:
    """The report of `matrix_id` (default: the latest matrix), of the runs `run_ids`, or
    of the stored runs of `flow`: those of the flow's current definition, or with
    `all_definitions` those of every definition it had.

    `settings` say where each flow is as it stands now (the project's spikes folder, or
    the flow file its runs recorded); without them, or when the flow no longer loads,
    the newest definition among its runs stands for it. A named matrix or run is always
    reported; when the runs in a report ran more than one definition of the flow (or an
    older one), each run is marked with its own (`runs.definitions`)."""
    if sum(bool(x) for x in (matrix_id, run_ids, flow)) > 1:
        raise ConfigError("give one of --matrix, --run or --flow: a report covers one "
                          "matrix, a list of runs, or the runs of one flow")
    if all_definitions and not flow:
        raise ConfigError("--all-definitions goes with --flow NAME; a matrix or the runs "
                          "named by --run are reported whatever definition of the flow they "
                          "ran, each run marked with its own")
    if flow:
        return _from_flow(store, flow, settings, all_definitions)
    if run_ids:
        return _from_runs(store, list(dict.fromkeys(run_ids)), settings=settings)
    if matrix_id is None and store.latest_matrix() is None and store.runs():
        # A folder of runs and no matrix (a crash-resume suite's): report every run.
        return _from_runs(store, store.runs(), settings=settings)
    return _from_matrix(store, matrix_id or _latest_matrix(store), settings)


def _redacted(record: R) -> R:
    """A copy of a stored run or matrix with every secret replaced, at any depth; the
    record itself when it holds none (most do: decoding it again cost half a report)."""
    stored = record.to_dict()
    shown = redact_value(stored)
    if shown == stored:
        return record
    return type(record).from_dict(shown, source=f"{record.KIND} record (redacted)")


def _latest_matrix(store: EvidenceStore) -> str:
    found = store.latest_matrix()
    if found is not None:
        return found
    if store.root.exists() and not store.root.is_dir():
        raise ConfigError(f"the evidence folder {store.root} is not a folder; point --evidence "
                          "at the folder that holds your evidence")
    absent = "" if store.root.exists() else " (no such folder exists yet)"
    raise ConfigError(f"the evidence folder {store.root} is empty; run `graduate matrix FLOW` "
                      "(or `graduate chaos ...`) first, or point --evidence at the folder that "
                      f"holds your evidence{absent}")




@dataclass(frozen=True)
class _CellSpec:
    key: str
    engine: str
    fault: str
    at: str | None
    profile: str
    status: str  # pending, done, not-applicable (as the matrix file says)
    run_id: str | None
    summary: CellSummary | None

    @property
    def column(self) -> str:
        return self.key.split("|")[1] if self.key.count("|") == 2 else (
            f"{self.fault}@{self.at or '-'}")

    @property
    def label(self) -> str:
        return f"{self.column}[{self.profile}]"


def _from_matrix(store: EvidenceStore, matrix_id: str, settings: Settings | None) -> Report:
    if not store.matrix_path(matrix_id).exists():
        raise ConfigError(f"no matrix {matrix_id!r} in {store.root}; matrices there: "
                          f"{known_ids(store.matrices())}. Leave out --matrix for the latest "
                          "one")
    record = _redacted(store.load_matrix(matrix_id))
    specs = [_CellSpec(key=c.key, engine=c.engine, fault=c.fault, at=c.at, profile=c.profile,
                       status=c.status, run_id=c.run_id, summary=c.summary)
             for c in record.cells]
    runs: dict[str, RunRecord] = {}
    warnings = []
    for spec in specs:
        if spec.status == "pending" or not spec.run_id:
            continue
        if store.run_path(spec.run_id).exists():
            runs[spec.run_id] = _redacted(store.load_run(spec.run_id))
        else:
            warnings.append(
                f"cell {spec.engine} {spec.label} names run {spec.run_id}, but "
                f"{store.run_path(spec.run_id)} is missing: its result comes from the "
                "matrix's summary, and its timeline, settings and IDs cannot be shown. "
                "Restore the file from where the evidence is kept, or run the matrix again")
    engines = list(dict.fromkeys([*record.spec.engines, *(s.engine for s in specs)]))
    return _assemble(source="matrix", matrix_id=matrix_id, record=record, specs=specs,
                     runs=runs, engines=engines, warnings=warnings,
                     definitions=_Definitions.of(runs, settings))


def _runs_of(store: EvidenceStore, flow: str) -> dict[str, RunRecord]:
    """The stored runs of `flow`, by id, in the order they ran (a matrix's order: its
    columns read as the matrix ran them, not by random run id)."""
    runs = {r: store.load_run(r) for r in store.runs()}
    found = sorted((r for r, run in runs.items() if run.flow.name == flow),
                   key=lambda r: (runs[r].started_at or 0.0, r))  # none recorded: first
    if not found:
        names = sorted({run.flow.name for run in runs.values()})
        raise ConfigError(f"no run of the flow {flow!r} in {store.root}; flows there: "
                          f"{known_ids(names)}")
    return {r: runs[r] for r in found}


def _from_flow(store: EvidenceStore, flow: str, settings: Settings | None,
               all_definitions: bool) -> Report:
    """The stored runs of `flow`: of its current definition, or of every one."""
    runs = _runs_of(store, flow)
    definitions = _Definitions.of(runs, settings)
    if all_definitions:
        return _from_runs(store, list(runs), source="flow", settings=settings)
    current, *older = definitions.found
    left_out = tuple(d for d in older if d.runs)
    if not current.runs:
        where = f" ({definitions.current.where})" if definitions.current else ""
        raise ConfigError(
            f"no run of the current definition of {flow}{where} in {store.root}: its "
            f"{len(runs)} run(s) ran "
            f"{len(left_out)} older definition(s), the newest differing from it in "
            f"{left_out[0].change}. Run the flow again (`graduate matrix {flow}`), or give "
            "--all-definitions to report the older runs, each marked with its definition")
    return _from_runs(store, list(current.runs), source="flow", settings=settings,
                      left_out=left_out)


def _from_runs(store: EvidenceStore, run_ids: list[str],
               source: Literal["runs", "flow"] = "runs", *, settings: Settings | None,
               left_out: tuple[Definition, ...] = ()) -> Report:
    # A link that leads nowhere is there, and unreadable: read_json says why.
    missing = [r for r in run_ids
               if not (store.run_path(r).exists() or store.run_path(r).is_symlink())]
    if missing:
        raise ConfigError(f"no run {', '.join(missing)} in {store.root}; runs there: "
                          f"{known_ids(store.runs())}")
    runs = {r: _redacted(store.load_run(r)) for r in run_ids}
    specs = []
    for run_id, run in runs.items():
        fault = run.fault
        step, point, offset = fault.step, fault.point, fault.offset
        at = f"{step}:{point}" if step else (f"+{offset:g}s" if offset is not None else None)
        plan = plan_from_record(fault.plan_fields())
        key = f"{run.engine}|{plan.label}@{at or '-'}|{run.profile}"
        specs.append(_CellSpec(key=key, engine=run.engine, fault=plan.fault.name, at=at,
                               profile=run.profile,
                               status="done" if fault.applicable else "not-applicable",
                               run_id=run_id, summary=None))
    engines = [e for e in all_engine_names() if any(s.engine == e for s in specs)]
    engines += [s.engine for s in specs if s.engine not in engines]
    return _assemble(source=source, matrix_id=None, record=None, specs=specs, runs=runs,
                     engines=list(dict.fromkeys(engines)), warnings=[],
                     definitions=_Definitions.of(runs, settings, left_out))


def _assemble(*, source: Literal["matrix", "runs", "flow"], matrix_id: str | None,
              record: MatrixRecord | None, specs: list[_CellSpec], runs: dict[str, RunRecord],
              engines: list[str], warnings: list[str], definitions: _Definitions) -> Report:
    flow = _flow(record, runs, definitions.preferred)
    settings_sets = _settings_sets(runs)
    environment_sets = _environment_sets(runs)
    titles = _titles(specs)
    by_run = {s.run_id: s for s in specs if s.run_id}
    run_reports = {
        run_id: _run(run, flow, by_run[run_id].label, titles[by_run[run_id].key],
                     _number_of(settings_sets, run_id), _number_of(environment_sets, run_id),
                     definitions.label(run_id))
        for run_id, run in runs.items()
    }
    for run_id, run in runs.items():
        stored = run.verdict.passed
        now = run_reports[run_id]
        if now.fault.applicable and stored != now.passed:
            warnings.append(
                f"run {run_id} ({now.engine} {now.title}) was judged "
                f"{'pass' if stored else 'fail'} when it ran, but "
                f"{'passes' if now.passed else 'fails'} under the rules of this graduate's "
                "checker, which this report applies to every run. Run the cell again to "
                "refresh its evidence")
    cells = tuple(_cell(spec, titles[spec.key], run_reports.get(spec.run_id or ""))
                  for spec in specs)
    columns = tuple(dict.fromkeys(c.column for c in cells))
    profiles = list(dict.fromkeys(c.profile for c in cells))
    grid = tuple(
        GridRow(engine=engine, profile=profile, slots=tuple(
            tuple(c for c in cells if c.engine == engine and c.profile == profile
                  and c.column == column) for column in columns))
        for engine in engines for profile in profiles
        if any(c.engine == engine and c.profile == profile for c in cells))
    ordered_runs = tuple(run_reports[s.run_id] for s in specs
                         if s.run_id and s.run_id in run_reports)
    resume = tuple(_resume_stats(engine, [r for r in ordered_runs if r.engine == engine])
                   for engine in engines)
    summaries = tuple(_summary(engine, [c for c in cells if c.engine == engine], stats)
                      for engine, stats in zip(engines, resume, strict=True))
    answered = criteria(flow, cells, ordered_runs, summaries)
    recommendation = recommend(flow, cells, summaries, answered)
    title = f"{flow.name}: Celery or Temporal? Evidence from " + (
        f"matrix {matrix_id}" if matrix_id else f"{len(runs)} run(s)")
    return Report(
        title=title, source=source, matrix_id=matrix_id,
        created_at=record.created_at if record else None,
        updated_at=record.updated_at if record else None,
        run_ids=tuple(s.run_id for s in specs if s.run_id), flow=flow,
        engines=tuple(engines), columns=columns,
        column_notes=tuple((c, _explain(c)) for c in columns),
        grid=grid, cells=cells, summaries=summaries,
        problems=tuple(p for c in cells for p in c.problems), resume=resume,
        runs=ordered_runs, settings_sets=settings_sets, environment_sets=environment_sets,
        criteria=answered, recommendation=recommendation, warnings=tuple(warnings),
        time_scales=tuple(dict.fromkeys(_time_scale(run) for run in runs.values())),
        definition_notes=definitions.notes(), definitions=definitions.marked,
        left_out=tuple(_definition_info(d) for d in definitions.left_out),
    )


def _titles(specs: list[_CellSpec]) -> dict[str, str]:
    """Each cell in words: its fault, and its point or profile only where they differ."""
    def name(spec: _CellSpec) -> str:
        return spec.column.split("@", 1)[0]

    profiles = {s.profile for s in specs}
    titles = {}
    for spec in specs:
        points = {s.at for s in specs if name(s) == name(spec)}
        title = name(spec)
        if len(points) > 1 and spec.at:
            title += f" at {spec.at}"
        if len(profiles) > 1:
            title += f" [{spec.profile}]"
        titles[spec.key] = title
    return titles


def _explain(column: str) -> str:
    """What the fault of a column does, e.g. for "deploy-change+versioned@approval:..."."""
    try:
        fault, options = parse_label(column.split("@", 1)[0])
    except GraduateError:
        return ""  # a fault this release does not know: the column's name says it all
    return fault.explain(options)


def _engine_summary(engine: str) -> str:
    try:
        return describe(engine).summary
    except GraduateError:
        return engine  # evidence of an engine this installation does not know


def _event_title(kind: str) -> str:
    known = timeline_events().get(kind)
    return known.title if known else kind.replace("-", " ")


def _event_category(kind: str) -> str:
    known = timeline_events().get(kind)
    return known.category if known else "info"


# ---------------------------------------------------------------------------- the flow


def _flow(record: MatrixRecord | None, runs: dict[str, RunRecord],
          preferred: Sequence[str]) -> FlowInfo:
    names = {r.flow.name for r in runs.values()}
    if len(names) > 1:
        raise ConfigError(f"these runs are of different flows ({', '.join(sorted(names))}), "
                          "give --flow NAME for the runs of one flow; "
                          "a report covers one flow: give the runs of one flow only")
    # The flow as it is now (the runs of its current definition), as written: a
    # wait-timeout run records the flow with its waits shortened for the run.
    candidates = sorted(runs.values(), key=lambda r: (r.run_id not in preferred,
                                                      r.options.wait_deadline is not None))
    recorded = next((r.flow for r in candidates if r.flow.definition), None)
    if recorded is None:
        name = (record.flow or record.spec.flow if record else
                names.pop() if names else "unknown flow")
        return FlowInfo(name=name, version=None, description="", classes=(), order=(),
                        steps=(), waits=(), timers=(), known=False)
    flow = recorded.load()
    honours = {s.name: s.honours_idempotency for s in flow.systems}
    steps, waits, timers = [], [], []
    for node in flow.flat_nodes:
        if isinstance(node, Step):
            system = node.effect.split(".", 1)[0]
            steps.append(StepInfo(name=node.name, effect=node.effect, system=system,
                                  honours_idempotency=honours.get(system, True),
                                  compensation=node.compensation))
        elif isinstance(node, Wait):
            waits.append(WaitInfo(name=node.name, signal=node.signal, deadline=node.deadline,
                                  on_timeout=node.on_timeout, on_reject=node.on_reject))
        else:
            timers.append((node.name, node.duration))
    classes = tuple(
        (name, f"{value} ({CLASS_MEANINGS[name].get(str(value), 'unknown')})")
        for name, value in (("approval_class", flow.approval_class),
                            ("reversibility_class", flow.reversibility_class),
                            ("sensitivity_class", flow.sensitivity_class)))
    return FlowInfo(name=recorded.name, version=recorded.version,
                    description=flow.description, classes=classes,
                    order=tuple(_in_order(n) for n in flow.nodes), steps=tuple(steps),
                    waits=tuple(waits), timers=tuple(timers), known=True)


@dataclass(frozen=True)
class _Definitions:
    """The definitions of the flow that a report's runs ran (`graduate.runs.definitions`),
    and what the report says of them."""

    flow: str
    current: CurrentDefinition | None  # None: no run, or runs of several flows
    found: tuple[Definition, ...]  # the current one first, then the older ones
    left_out: tuple[Definition, ...]  # older definitions whose runs the report leaves out
    looked: bool  # the flow was looked for where it is now (settings were given)

    @classmethod
    def of(cls, runs: Mapping[str, RunRecord], settings: Settings | None,
           left_out: tuple[Definition, ...] = ()) -> _Definitions:
        names = {run.flow.name for run in runs.values()}
        if len(names) != 1:
            return cls("", None, (), left_out, settings is not None)
        name = names.pop()
        current = current_definition(
            name, list(runs.values()),
            spikes_dir=settings.spikes_dir if settings else None,
            project_dir=settings.project_dir if settings else None)
        return cls(name, current, by_definition(list(runs.values()), current.flow), left_out,
                   settings is not None)

    @property
    def preferred(self) -> tuple[str, ...]:
        """The runs of the current definition, to describe the flow from."""
        return self.found[0].runs if self.found else ()

    @property
    def marked(self) -> tuple[DefinitionInfo, ...]:
        """Each definition the runs ran, when they ran an older one: then every run is
        marked with its own. Empty when all ran the current one."""
        if not any(d.runs for d in self.found[1:]):
            return ()
        return tuple(_definition_info(d) for d in self.found if d.runs)

    def label(self, run_id: str) -> str:
        if not self.marked:
            return ""
        return next(d.label for d in self.found if run_id in d.runs)

    def notes(self) -> tuple[str, ...]:
        """What the report says of the definitions, plainly."""
        if self.current is None:
            return ()
        notes = []
        if self.looked and not self.current.loaded:
            notes.append(f"{self.flow} no longer loads ({self.current.why}): its runs are "
                         "counted against the newest definition among them, that of "
                         f"{self.current.where}.")
        if self.left_out:
            runs = sum(len(d.runs) for d in self.left_out)
            notes.append(
                f"Only the runs of {self.flow}'s current definition are here: {runs} run(s) "
                f"of {len(self.left_out)} older definition(s) are left out (listed below); "
                f"graduate report --flow {self.flow} --all-definitions includes them, "
                "each marked with its definition.")
        if len(self.marked) > 1:
            notes.append(
                f"These runs ran {len(self.marked)} definitions of {self.flow}, each run "
                "marked with its own (listed below), counted against "
                f"{self.current.describe()}. Read older definitions' verdicts as evidence of "
                "a flow that has changed since.")
        elif self.marked:
            notes.append(
                f"These runs ran an older definition of {self.flow} (listed below), not "
                f"{self.current.describe()}: read their verdicts as evidence of a flow that "
                "has changed since.")
        return tuple(notes)


def _definition_info(definition: Definition) -> DefinitionInfo:
    return DefinitionInfo(label=definition.label, current=definition.current,
                          runs=definition.runs, change=definition.change)


def _in_order(node: Node) -> str:
    """A node's name in the flow's order; a parallel group with its branches, each a
    sequence of steps, side by side."""
    if not isinstance(node, Parallel):
        return node.name
    branches = " ∥ ".join(" → ".join(s.name for s in b.steps) for b in node.branches)
    return f"{node.name} ({branches}, joined)"


# ---------------------------------------------------------------------------- runs


def _run(run: RunRecord, flow: FlowInfo, label: str, title: str, settings_set: int,
         environment_set: int, definition: str) -> RunReport:
    origin, clock = _origin(run)
    fired_at = run.fault_fired_at
    events = tuple(
        Event(number=n, at=e.at, kind=e.kind,
              label=_event_title(e.kind), category=_event_category(e.kind),
              detail=e.detail, instance_id=e.instance or None)
        # In time order, as a run now writes it: one stored before could hold an event
        # added late with its earlier time (a worker counted from its spawn) after others.
        for n, e in enumerate(sorted(run.timeline, key=lambda e: e.at), start=1))
    fault = run.fault
    planned = plan_from_record(fault.plan_fields())
    verdicts = run.verdicts
    instances = tuple(
        _instance(verdict, [row for row in run.ledger
                            if row.instance_id == verdict.instance_id],
                  origin, fired_at, run_id=run.run_id, engine=run.engine, cell=title)
        for verdict in verdicts)
    ends = [e.at for e in events] + [r.finish for i in instances for r in i.rows]
    facts = fault.facts() if fault.applicable else None
    return RunReport(
        run_id=run.run_id, created_at=run.created_at, engine=run.engine,
        profile=run.profile, cell=label, title=title,
        fault=FaultInfo(kind=planned.fault.name, planned=planned.fault.fires,
                        expects_resume=planned.fault.expects_resume,
                        description=fault.description,
                        explanation=descriptions().get(fault.fault, ""),
                        applicable=fault.applicable, fired=fault.fired, reason=fault.reason),
        options=tuple((k, _text(v)) for k, v in sorted(
            {**asdict(run.options), "time_scale": _time_scale(run)}.items())),
        settings_set=settings_set, environment_set=environment_set,
        services=_flatten(run.environment.services),
        events=events, instances=instances, clock=clock,
        span=max(ends, default=0.0),
        passed=judge_run(verdicts, fault=facts, not_started=run.not_started).passed,
        not_started=run.not_started, definition=definition,
    )


def _origin(run: RunRecord) -> tuple[float, Clock]:
    """The run's start on the ledger's clock (epoch seconds), and how sure it is.

    The timeline counts from the run's start, the ledger in epoch seconds. The checker
    measured each time to resume from the fault to an engine event (in the instance's
    history) or to the first effect after it, so an instance that resumed pins the
    fault, and with it the start, exactly. Otherwise the first thing recorded (an
    effect, or the engine's first history event) is taken as happening when the
    instances were started.
    """
    fired = run.fault_fired_at
    for item in run.instances:
        resume = item.verdict.resume
        if fired is None or resume is None or resume.time_to_resume is None:
            continue
        if (event := _measured_at(item.history, resume.measured_from)) is not None:
            return event - resume.time_to_resume - fired, "exact"
    for verdict in run.verdicts:
        resume = verdict.resume
        if (fired is None or resume is None or resume.time_to_resume is None
                or not resume.resumed_at or resume.measured_from.startswith("engine")):
            continue
        step, _, tail = resume.resumed_at.partition(" (")
        kind = "compensation" if tail else "effect"
        rows = [r for r in run.ledger if r.instance_id == verdict.instance_id]
        for row in rows:
            if row.step != step or row.kind != kind:
                continue
            fault_at = row.started_at - resume.time_to_resume
            first = next((r for r in rows if r.started_at >= fault_at - _EPSILON), None)
            if first is row:
                return fault_at - fired, "exact"
    moments = [r.started_at for r in run.ledger] + [
        h.at for i in run.instances for h in i.history if h.kind != "history-unavailable"]
    started = next((e.at for e in run.timeline if e.kind == "instances-started"), 0.0)
    if moments:
        return min(moments) - started, "approximate"
    return 0.0, "none"


def _measured_at(history: Sequence[HistoryEvent], measured_from: str) -> float | None:
    """When the engine event a time to resume was measured to happened (see
    `graduate.check.time_taken_up`), if it was measured to one."""
    return next((e.at for e in history if e.taken_up and measured_to(e) == measured_from),
                None)


def _instance(verdict: InstanceVerdict, ledger: list[EffectRecord], origin: float,
              fired_at: float | None, *, run_id: str, engine: str,
              cell: str) -> InstanceReport:
    rows = tuple(
        LedgerRow(step=r.step, kind=r.kind, effect=r.effect, outcome=r.outcome.value,
                  attempt=r.attempt, start=r.started_at - origin,
                  finish=r.finished_at - origin, worker_pid=r.worker_pid,
                  idempotency_key=r.idempotency_key)
        for r in ledger)
    resume = verdict.resume
    return InstanceReport(
        instance_id=verdict.instance_id, correlation_id=verdict.correlation_id,
        trace_id=verdict.trace_id, verdict=verdict.verdict.value, reason=verdict.reason,
        engine_state=verdict.engine_state,
        effects=tuple(EffectCount(step=e.step, kind=e.kind, calls=e.calls, applied=e.applied,
                                  absorbed=e.absorbed, errors=e.errors,
                                  duplicates=e.unabsorbed_duplicates)
                      for e in verdict.effects),
        resume=None if resume is None else ResumeInfo(
            in_flight=resume.in_flight, point=resume.point, resumed_at=resume.resumed_at,
            exact=resume.exact, time_to_resume=resume.time_to_resume,
            resumed_time=(fired_at + resume.time_to_resume
                          if fired_at is not None and resume.time_to_resume is not None
                          else None),
            reran=resume.reran, affected_as=resume.affected_as,
            interrupted=resume.interrupted, held_up=resume.held_up,
            continued=resume.continued, measured_from=resume.measured_from),
        time_to_complete=verdict.time_to_complete, rows=rows,
        problems=_problems(verdict, rows, run_id=run_id, engine=engine, cell=cell),
        reminders=tuple(ReminderInfo(
            wait=r.wait, step=r.step, after=r.after, waited=r.waited, calls=r.calls,
            applied=r.applied, absorbed=r.absorbed, missing=r.missing, summary=r.describe(),
            problem=r.problem)
            for r in verdict.reminders),
        notices=tuple(NoticeInfo(
            owner=n.owner, end=n.end, step=n.step, expected=n.expected, calls=n.calls,
            applied=n.applied, absorbed=n.absorbed, early=n.early, problem=n.problem,
            summary=n.describe())
            for n in verdict.notices),
    )


def _problems(verdict: InstanceVerdict, rows: tuple[LedgerRow, ...], *, run_id: str,
              engine: str, cell: str) -> tuple[Problem, ...]:
    """The required properties that do not hold, as `judge_run` checks them."""

    def problem(kind: Any, step: str | None, detail: str) -> Problem:
        return Problem(kind=kind, run_id=run_id, engine=engine, cell=cell,
                       instance_id=verdict.instance_id,
                       correlation_id=verdict.correlation_id, trace_id=verdict.trace_id,
                       step=step, detail=detail)

    found = []
    # Which verdicts break a run is the checker's call: ask it rather than repeat its list.
    if verdict.verdict.fails_run:
        found.append(problem(verdict.verdict.value, None, verdict.reason))
    for effect in verdict.effects:
        if effect.unabsorbed_duplicates:
            applied = [r for r in rows if r.step == effect.step and r.kind == effect.kind
                       and r.outcome == "applied"]
            calls = "; ".join(f"attempt {r.attempt} at {r.start:.2f}s by pid {r.worker_pid}"
                              for r in applied)
            keys = ", ".join(dict.fromkeys(r.idempotency_key for r in applied))
            what = "compensation" if effect.kind == "compensation" else "effect"
            found.append(problem(
                "duplicate", effect.step,
                f"the {what} of {effect.step} was applied {effect.applied} times "
                f"({calls}); idempotency key {keys or 'unknown'} did not absorb the repeat"))
    resume = verdict.resume
    if resume is not None and not resume.exact:
        reran = f"; it ran {', '.join(resume.reran)} again" if resume.reran else ""
        found.append(problem(
            "resume", resume.in_flight,
            f"was in flight at {resume.in_flight} ({resume.point.replace('-', ' ')}) when "
            f"the fault fired, and resumed at {resume.resumed_at or 'nothing'}{reran}"))
    if verdict.starts is not None and not verdict.starts.passed:
        found.append(problem("double-start", None, verdict.starts.reason))
    if verdict.rollback is not None:
        found += [problem("rollback", None, p) for p in verdict.rollback.problems]
    if verdict.interrupt is not None:
        found += [problem("interrupt", None, p) for p in verdict.interrupt.problems]
    if verdict.correlation_breaks:
        found.append(problem("correlation", verdict.correlation_breaks[0].step,
                             correlation_failure(verdict.correlation_breaks)))
    found += [problem("audit", None, gap) for gap in verdict.audit_gaps]
    found += [problem("reminder", r.step, r.describe()) for r in verdict.reminders if r.problem]
    found += [problem("notice", n.step, n.describe()) for n in verdict.notices if n.problem]
    return tuple(found)


# ---------------------------------------------------------------------------- cells


def _cell(spec: _CellSpec, title: str, run: RunReport | None) -> CellReport:
    base: dict[str, Any] = {
        "key": spec.key, "engine": spec.engine, "profile": spec.profile, "fault": spec.fault,
        "at": spec.at, "column": spec.column, "label": spec.label, "title": title,
        "run_id": spec.run_id, "definition": run.definition if run is not None else "",
    }
    zero: dict[str, Any] = {
        "instances": 0, "completed": 0, "compensated": 0, "failed": 0, "lost": 0,
        "stuck": 0, "unabsorbed_duplicates": 0, "absorbed_duplicates": 0,
        "hit_by_fault": 0, "resumed_exactly": 0, "median_time_to_resume": None,
        "fired": False, "failures": (), "problems": (), "evidence_missing": False,
    }
    if spec.status == "pending":
        return CellReport(**base, **zero, status="pending", reason="not run")
    if run is None:
        return _from_summary(spec, base, zero)
    if not run.fault.applicable:
        return CellReport(**base, **zero, status="not-applicable", reason=run.fault.reason)
    instances = run.instances
    resumes = [i.resume.time_to_resume for i in instances
               if i.resume is not None and i.resume.time_to_resume is not None]
    fault = FaultFacts(run.fault.planned, run.fault.fired, run.fault.expects_resume,
                       run.fault.reason)
    verdict = judge_run([_back(i) for i in instances], fault=fault,
                        not_started=run.not_started)
    problems = tuple(p for i in instances for p in i.problems)
    return CellReport(
        **base, status="pass" if verdict.passed else "fail",
        reason="" if run.fault.fired or not run.fault.planned else run.fault.reason,
        instances=len(instances), completed=verdict.counts["completed"],
        compensated=verdict.counts["compensated"], failed=verdict.counts["failed"],
        lost=verdict.counts["lost"], stuck=verdict.counts["stuck"],
        unabsorbed_duplicates=verdict.unabsorbed_duplicates,
        absorbed_duplicates=verdict.absorbed_duplicates, hit_by_fault=verdict.hit_by_fault,
        resumed_exactly=verdict.resumed_exactly,
        median_time_to_resume=statistics.median(resumes) if resumes else None,
        fired=run.fault.fired, failures=verdict.failures, problems=problems,
        evidence_missing=False,
    )


def _back(instance: InstanceReport) -> InstanceVerdict:
    """The checker's verdict again, from the report's copy of it."""
    resume = instance.resume
    return InstanceVerdict(
        instance_id=instance.instance_id, correlation_id=instance.correlation_id,
        trace_id=instance.trace_id, verdict=Verdict(instance.verdict), reason=instance.reason,
        engine_state=instance.engine_state,
        effects=tuple(EffectVerdict(step=e.step, kind=e.kind, calls=e.calls, applied=e.applied,
                                    absorbed=e.absorbed, errors=e.errors)
                      for e in instance.effects),
        resume=None if resume is None else Resume(
            in_flight=resume.in_flight, point=resume.point, resumed_at=resume.resumed_at,
            exact=resume.exact, time_to_resume=resume.time_to_resume, reran=resume.reran,
            continued=resume.continued, interrupted=resume.interrupted,
            held_up=resume.held_up, measured_from=resume.measured_from),
        time_to_complete=instance.time_to_complete,
        reminders=tuple(ReminderVerdict(wait=r.wait, step=r.step, after=r.after,
                                        waited=r.waited, calls=r.calls, applied=r.applied,
                                        absorbed=r.absorbed)
                        for r in instance.reminders),
        notices=tuple(NoticeVerdict(owner=n.owner, end=n.end, step=n.step, expected=n.expected,
                                    calls=n.calls, applied=n.applied, absorbed=n.absorbed,
                                    early=n.early)
                      for n in instance.notices))


def _from_summary(spec: _CellSpec, base: dict[str, Any],
                  zero: dict[str, Any]) -> CellReport:
    """A settled cell whose run file is gone: what the matrix file kept of it."""
    s = spec.summary
    applicable = spec.status != "not-applicable" and (s is None or s.applicable)
    reason = "run file missing" if applicable else s.reason if s is not None else ""
    if s is None:
        return CellReport(**base, **{**zero, "evidence_missing": True},
                          status="fail" if applicable else "not-applicable", reason=reason)
    status: CellStatus = ("not-applicable" if not applicable else
                          "pass" if s.passed else "fail")
    return CellReport(
        **base, status=status, reason=reason,
        instances=s.instances, completed=s.completed, compensated=s.compensated,
        failed=s.failed, lost=s.lost, stuck=s.stuck,
        unabsorbed_duplicates=s.unabsorbed_duplicates,
        absorbed_duplicates=s.absorbed_duplicates, hit_by_fault=s.hit_by_fault,
        resumed_exactly=s.resumed_exactly, median_time_to_resume=s.median_time_to_resume,
        fired=s.fired, failures=s.failures, problems=(), evidence_missing=True)


# ---------------------------------------------------------------------------- summaries


def _summary(engine: str, cells: list[CellReport], resume: ResumeStats) -> EngineSummary:
    ran = [c for c in cells if c.status in ("pass", "fail")]
    failed = [c for c in ran if c.status == "fail"]
    pending = sum(1 for c in cells if c.status == "pending")
    not_applicable = sum(1 for c in cells if c.status == "not-applicable")

    def total(pick: Callable[[CellReport], int]) -> int:
        return sum(pick(c) for c in ran)

    verdict: EngineVerdict = "no evidence" if not ran else "fail" if failed else "pass"
    lost, stuck = total(lambda c: c.lost), total(lambda c: c.stuck)
    broken = sum(1 for c in ran for p in c.problems if p.kind == "failed")
    duplicates = total(lambda c: c.unabsorbed_duplicates)
    hit, exact = total(lambda c: c.hit_by_fault), total(lambda c: c.resumed_exactly)
    if verdict == "no evidence":
        sentence = "No cell has run yet."
    elif verdict == "pass":
        sentence = (f"Passed all {len(ran)} cell(s) that ran: no commitment lost, stuck or "
                    f"left failed, no duplicate went through, and {exact} of {hit} "
                    "instance(s) hit by a fault resumed at the step in flight.")
    else:
        what = [f"{n} {word}" for n, word in (
            (lost, "commitment(s) lost"), (stuck, "instance(s) stuck"),
            (broken, "commitment(s) failed, neither done nor undone"),
            (duplicates, "unabsorbed duplicate(s)"),
            (hit - exact, "instance(s) not resumed at the step in flight")) if n]
        sentence = (f"Failed {len(failed)} of {len(ran)} cell(s) that ran "
                    f"({', '.join(c.title for c in failed)}): {', '.join(what)}.")
    extra = [f"{n} {word}" for n, word in ((not_applicable, "not applicable"),
                                            (pending, "not run yet")) if n]
    if extra:
        sentence += f" Other cells: {', '.join(extra)}."
    return EngineSummary(
        engine=engine, title=_engine_summary(engine), verdict=verdict,
        sentence=sentence, cells_passed=len(ran) - len(failed), cells_failed=len(failed),
        cells_not_applicable=not_applicable, cells_pending=pending,
        instances=total(lambda c: c.instances), completed=total(lambda c: c.completed),
        compensated=total(lambda c: c.compensated), failed=total(lambda c: c.failed),
        lost=lost, stuck=stuck, unabsorbed_duplicates=duplicates,
        absorbed_duplicates=total(lambda c: c.absorbed_duplicates), hit_by_fault=hit,
        resumed_exactly=exact,
        median_time_to_resume=resume.median,
    )


def _resume_stats(engine: str, runs: list[RunReport]) -> ResumeStats:
    points = tuple(
        ResumePoint(seconds=float(i.resume.time_to_resume), exact=i.resume.exact,
                    cell=run.title, instance_id=i.instance_id)
        for run in runs for i in run.instances
        if i.resume is not None and i.resume.time_to_resume is not None)
    not_resumed = sum(1 for run in runs for i in run.instances
                      if i.resume is not None and i.resume.time_to_resume is None)
    values = sorted(p.seconds for p in points)
    if not values:
        return ResumeStats(engine=engine, points=(), minimum=None, lower_quartile=None,
                           median=None, upper_quartile=None, maximum=None,
                           not_resumed=not_resumed)
    quartiles = (statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1
                 else [values[0]] * 3)
    return ResumeStats(engine=engine, points=points, minimum=values[0],
                       lower_quartile=quartiles[0], median=statistics.median(values),
                       upper_quartile=quartiles[2], maximum=values[-1],
                       not_resumed=not_resumed)


# ---------------------------------------------------------------------------- settings


def _settings_sets(runs: dict[str, RunRecord]) -> tuple[SettingsSet, ...]:
    groups: dict[str, list[str]] = {}
    for run_id, run in runs.items():
        groups.setdefault(_signature(run.engine, run.profile, run.settings),
                          []).append(run_id)
    sets = []
    for number, (signature, members) in enumerate(groups.items(), start=1):
        engine, profile, values = json.loads(signature)
        sets.append(SettingsSet(number=number, engine=engine, profile=profile or "",
                                values=tuple((k, _setting_text(v))
                                             for k, v in sorted(values.items())),
                                runs=tuple(members)))
    return tuple(sets)


def _environment_sets(runs: dict[str, RunRecord]) -> tuple[EnvironmentSet, ...]:
    groups: dict[str, list[str]] = {}
    for run_id, run in runs.items():
        env = run.environment
        groups.setdefault(_signature(env.host, env.packages, env.servers),
                          []).append(run_id)
    sets = []
    for number, (signature, members) in enumerate(groups.items(), start=1):
        host, packages, servers = json.loads(signature)
        sets.append(EnvironmentSet(number=number, host=_flatten(host),
                                   packages=_flatten(packages), servers=_flatten(servers),
                                   runs=tuple(members)))
    return tuple(sets)


def _number_of(sets: Sequence[SettingsSet | EnvironmentSet], run_id: str) -> int:
    return next(s.number for s in sets if run_id in s.runs)


def _signature(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def _flatten(data: dict[str, Any], prefix: str = "") -> Pairs:
    """Nested settings as (dotted.name, text) pairs; absent values are left out."""
    pairs: list[tuple[str, str]] = []
    for key, value in sorted(data.items()):
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            pairs.extend(_flatten(value, f"{name}."))
        elif value is not None and value != []:
            pairs.append((name, _text(value)))
    return tuple(pairs)


def _setting_text(value: Any) -> str:
    return "not set (the engine's default)" if value is None else _text(value)


def _time_scale(run: RunRecord) -> str:
    scale = run.options.time_scale
    return "real time" if scale is None else scale.describe()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
