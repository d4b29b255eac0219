"""The report model: everything a renderer shows, computed once from stored evidence.

Renderers only lay these values out; they decide nothing. Every string that came from
a flow or a run is still plain text here (escaping is the renderer's job) but secrets
are already redacted (see `graduate.redaction`). Times inside a run are seconds
since the run started.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

CellStatus: TypeAlias = Literal["pass", "fail", "not-applicable", "pending"]
EngineVerdict: TypeAlias = Literal["pass", "fail", "no evidence"]
Decision: TypeAlias = Literal["graduate", "keep-celery", "not-enough-evidence"]
Side: TypeAlias = Literal["temporal", "celery", "open"]
ProblemKind: TypeAlias = Literal["lost", "stuck", "failed", "duplicate", "resume",
                                 "double-start", "rollback", "correlation", "audit",
                                 "reminder", "notice", "interrupt"]
Clock: TypeAlias = Literal["exact", "approximate", "none"]
Pairs: TypeAlias = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class StepInfo:
    name: str
    effect: str
    system: str
    honours_idempotency: bool
    compensation: str | None


@dataclass(frozen=True)
class WaitInfo:
    name: str
    signal: str
    deadline: float  # seconds
    on_timeout: str
    on_reject: str


@dataclass(frozen=True)
class FlowInfo:
    """The flow as the runs recorded it; `known` is False when no run recorded it."""

    name: str
    version: int | None
    description: str
    classes: Pairs  # (class, "A2: function head (+ legal/finance)")
    order: tuple[str, ...]  # every node's name, in flow order
    steps: tuple[StepInfo, ...]
    waits: tuple[WaitInfo, ...]
    timers: tuple[tuple[str, float], ...]
    known: bool


@dataclass(frozen=True)
class LedgerRow:
    """One call to an external system, as the ledger recorded it."""

    step: str
    kind: str  # effect or compensation
    effect: str
    outcome: str  # applied, absorbed, transient_error, permanent_error
    attempt: int
    start: float
    finish: float
    worker_pid: int
    idempotency_key: str


@dataclass(frozen=True)
class Event:
    """One act of the harness, from the run's timeline."""

    number: int
    at: float
    kind: str
    label: str  # the kind in plain words
    category: str  # fault, point, recovery, stop, signal, info
    detail: str
    instance_id: str | None = None  # an act on one instance only (a signal), else None

    def concerns(self, instance_id: str) -> bool:
        return self.instance_id is None or self.instance_id == instance_id


@dataclass(frozen=True)
class EffectCount:
    step: str
    kind: str
    calls: int
    applied: int
    absorbed: int
    errors: int
    duplicates: int  # applications beyond the first: the world changed twice


@dataclass(frozen=True)
class ReminderInfo:
    """What became of one wait's reminder or escalation (see
    `graduate.check.ReminderVerdict`)."""

    wait: str
    step: str
    after: float  # seconds into the wait it is due
    waited: float | None  # how long the wait lasted; None when it had not ended
    calls: int
    applied: int
    absorbed: int
    missing: bool  # due, and never sent
    summary: str  # in words
    problem: bool = False  # missing, or sent after its wait had surely ended


@dataclass(frozen=True)
class NoticeInfo:
    """What became of one notice of how a wait or the interrupt ended an instance (see
    `graduate.check.NoticeVerdict`)."""

    owner: str  # the wait's name, or the interrupt's signal
    end: str  # rejected or expired (a wait's), or interrupted
    step: str
    expected: bool  # the instance ended this way at this wait
    calls: int
    applied: int
    absorbed: int
    early: bool  # landed before a compensation did
    problem: bool  # missing, unexpected or early
    summary: str  # in words


@dataclass(frozen=True)
class ResumeInfo:
    in_flight: str
    point: str
    resumed_at: str | None
    exact: bool
    time_to_resume: float | None
    resumed_time: float | None  # when the first effect after the fault started
    reran: tuple[str, ...]
    affected_as: str = "at the fault point"  # or "attempt cut short", "held up"
    interrupted: bool = False
    held_up: bool = False  # then time_to_resume is the delay the fault cost it
    continued: bool = False
    measured_from: str = ""  # the record time_to_resume was read from


@dataclass(frozen=True)
class Problem:
    """A required property that does not hold, with the IDs to trace it."""

    kind: ProblemKind
    run_id: str
    engine: str
    cell: str  # the cell in words
    instance_id: str
    correlation_id: str
    trace_id: str
    step: str | None
    detail: str


@dataclass(frozen=True)
class InstanceReport:
    instance_id: str
    correlation_id: str
    trace_id: str
    verdict: str
    reason: str
    engine_state: str
    effects: tuple[EffectCount, ...]
    resume: ResumeInfo | None
    time_to_complete: float | None
    rows: tuple[LedgerRow, ...]
    problems: tuple[Problem, ...]
    reminders: tuple[ReminderInfo, ...] = ()
    notices: tuple[NoticeInfo, ...] = ()


@dataclass(frozen=True)
class FaultInfo:
    kind: str
    planned: bool  # a fault was planned (not the baseline), so not firing means something
    expects_resume: bool  # it fires with a step in flight, so a resume is to be seen
    description: str  # as the run described it, e.g. "kill-worker at activate:before-effect"
    explanation: str  # what the fault does, in plain words
    applicable: bool
    fired: bool
    reason: str  # why it does not apply, or why it did not fire


@dataclass(frozen=True)
class RunReport:
    run_id: str
    created_at: str
    engine: str
    profile: str
    cell: str  # the cell's label: fault@point[profile]
    title: str  # the cell in words: "kill-worker", "deploy-change+versioned [tuned]"
    fault: FaultInfo
    options: Pairs
    settings_set: int  # number of the SettingsSet holding this run's settings
    environment_set: int
    services: Pairs
    events: tuple[Event, ...]
    instances: tuple[InstanceReport, ...]
    clock: Clock  # how the ledger's clock was aligned with the timeline's
    span: float  # seconds from the start to the last thing recorded
    passed: bool
    not_started: int = 0  # instances the run's deadline passed before it started them
    # The definition of the flow it ran ("current definition", "older definition 1"),
    # when the report holds runs of more than one, or runs of an older one; else "".
    definition: str = ""


@dataclass(frozen=True)
class DefinitionInfo:
    """One definition of the flow among the report's runs (or left out of it)."""

    label: str  # "current definition", "older definition 1"
    current: bool
    runs: tuple[str, ...]
    change: str  # how the current definition differs from it (`path: then -> now`)


@dataclass(frozen=True)
class SettingsSet:
    number: int
    engine: str
    profile: str
    values: Pairs
    runs: tuple[str, ...]


@dataclass(frozen=True)
class EnvironmentSet:
    number: int
    host: Pairs
    packages: Pairs
    servers: Pairs
    runs: tuple[str, ...]


@dataclass(frozen=True)
class CellReport:
    """One engine x fault x profile combination, and what its run showed."""

    key: str
    engine: str
    profile: str
    fault: str
    at: str | None
    column: str  # fault@point, the matrix column
    label: str  # column[profile]: the cell's exact name, as in JUnit
    title: str  # the cell in words, as short as this report allows
    status: CellStatus
    reason: str  # not applicable, not run, fault did not fire, or run file missing
    run_id: str | None
    instances: int
    completed: int
    compensated: int
    failed: int
    lost: int
    stuck: int
    unabsorbed_duplicates: int
    absorbed_duplicates: int
    hit_by_fault: int
    resumed_exactly: int
    median_time_to_resume: float | None
    fired: bool
    failures: tuple[str, ...]  # the checker's own words, naming instance and correlation ID
    problems: tuple[Problem, ...]
    evidence_missing: bool
    definition: str = ""  # its run's definition of the flow, when the report marks them


@dataclass(frozen=True)
class GridRow:
    """One row of the matrix: an engine under a profile; one slot per fault column."""

    engine: str
    profile: str
    slots: tuple[tuple[CellReport, ...], ...]


@dataclass(frozen=True)
class EngineSummary:
    engine: str
    title: str  # the engine in plain words
    verdict: EngineVerdict
    sentence: str
    cells_passed: int
    cells_failed: int
    cells_not_applicable: int
    cells_pending: int
    instances: int
    completed: int
    compensated: int
    failed: int
    lost: int
    stuck: int
    unabsorbed_duplicates: int
    absorbed_duplicates: int
    hit_by_fault: int
    resumed_exactly: int
    median_time_to_resume: float | None


@dataclass(frozen=True)
class ResumePoint:
    seconds: float
    exact: bool
    cell: str
    instance_id: str


@dataclass(frozen=True)
class ResumeStats:
    """How long instances hit by a fault took to make progress again, per engine."""

    engine: str
    points: tuple[ResumePoint, ...]
    minimum: float | None
    lower_quartile: float | None
    median: float | None
    upper_quartile: float | None
    maximum: float | None
    not_resumed: int  # hit by a fault, and nothing ran after it


@dataclass(frozen=True)
class Criterion:
    """One row of the source document's table, answered for this flow."""

    signal: str
    prefer_celery: str
    prefer_temporal: str
    flow_needs: str
    evidence: tuple[str, ...]
    points_to: Side


@dataclass(frozen=True)
class Recommendation:
    decision: Decision
    headline: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Report:
    title: str
    source: Literal["matrix", "runs", "flow"]  # "flow": every stored run of one flow
    matrix_id: str | None
    created_at: str | None
    updated_at: str | None
    run_ids: tuple[str, ...]
    flow: FlowInfo
    engines: tuple[str, ...]
    columns: tuple[str, ...]
    column_notes: Pairs  # (column, what its fault does)
    grid: tuple[GridRow, ...]
    cells: tuple[CellReport, ...]
    summaries: tuple[EngineSummary, ...]
    problems: tuple[Problem, ...]
    resume: tuple[ResumeStats, ...]
    runs: tuple[RunReport, ...]
    settings_sets: tuple[SettingsSet, ...]
    environment_sets: tuple[EnvironmentSet, ...]
    criteria: tuple[Criterion, ...]
    recommendation: Recommendation
    warnings: tuple[str, ...]
    # How the runs' flow durations relate to the flow's own: "real time", or each time
    # scale with what it scaled (`graduate.timescale.TimeScaleRecord.describe`).
    time_scales: tuple[str, ...] = ()
    # Which definitions of the flow the runs ran, in sentences: the runs of older ones
    # left out (and how to include them), or each run's marked; where the current
    # definition comes from when the flow no longer loads. Empty when there is nothing
    # to say: every run ran the flow as it is.
    definition_notes: tuple[str, ...] = ()
    definitions: tuple[DefinitionInfo, ...] = ()  # those marked on runs, when marked
    left_out: tuple[DefinitionInfo, ...] = ()  # older definitions whose runs are left out

    @property
    def pending(self) -> int:
        return sum(1 for c in self.cells if c.status == "pending")
