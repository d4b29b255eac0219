"""What an inventory finds, as frozen values: findings, hazards, flow candidates, skips.

Every item carries the place in the code it was read from (file relative to the root
of the inventory, and line), so that a reader can check each claim by opening the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, TypeAlias


@dataclass(frozen=True, order=True)
class Location:
    """A line in a file, the file relative to the inventory's root (POSIX separators)."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


class FindingKind(StrEnum):
    """What a finding is about."""

    APP = "app"                     # a Celery application object
    TASK = "task"                   # a task, however declared
    SETTING = "setting"             # a Celery setting, wherever it lives
    CALL = "call"                   # .delay / .apply_async / send_task / a project helper
    CANVAS = "canvas"               # chain, group, chord, link, link_error
    BEAT = "beat"                   # a periodic schedule entry
    STATUS_WRITE = "status-write"   # a task advancing a status field
    STATE_SWEEP = "state-sweep"     # a periodic task querying rows in a state
    STATE_MODEL = "state-model"     # a model class with a status field
    COMPENSATION = "compensation"   # an undo called on a failure path
    WORKFLOW = "workflow"           # a Temporal activity or a LangGraph node
    TASK_TABLE = "task-table"       # tasks looked up in a dict


@dataclass(frozen=True)
class Finding:
    """One fact read from the code."""

    kind: FindingKind
    name: str
    location: Location
    detail: str = ""


class Severity(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        return {"high": 3, "medium": 2, "low": 1}[self.value]


@dataclass(frozen=True)
class Hazard:
    """A setting or pattern with a known failure, where it is and why it fails."""

    rule: str
    severity: Severity
    task: str
    location: Location
    why: str
    fix: str


class Recommendation(StrEnum):
    """What to do with a flow, strongest first in the ranking."""

    GRADUATE = "graduate"
    SPIKE_FIRST = "spike first"
    HARDEN = "keep with hardening"
    KEEP = "keep on Celery"

    @property
    def rank(self) -> int:
        return {"graduate": 3, "spike first": 2, "keep with hardening": 1,
                "keep on Celery": 0}[self.value]


# The inventory rules of the Dealix context (workflow classification).
Classification: TypeAlias = Literal["short-lived-local", "medium-lived-queued",
                                    "long-lived-durable"]
Criterion: TypeAlias = Literal["duration", "state", "compensation", "failure domain"]
Lean: TypeAlias = Literal["celery", "workflow"]


@dataclass(frozen=True)
class Evidence:
    location: Location
    text: str


@dataclass(frozen=True)
class Score:
    """One of the source document's four criteria for one flow, and what it rests on."""

    criterion: Criterion
    leans: Lean
    summary: str
    evidence: tuple[Evidence, ...] = ()


@dataclass(frozen=True)
class FlowStep:
    """A task of a flow, in the order the flow runs it, with what it needs to be a step."""

    task: str
    location: Location
    effect: str                  # system.operation
    timeout: float | None        # seconds: the task's soft or hard time limit
    max_attempts: int            # 1 + retries
    retry_delay: float | None    # seconds before the first retry
    backoff: bool
    delay_before: float | None   # countdown/ETA on the call that starts this step
    compensation: str | None     # system.operation that undoes it
    idempotent: bool
    # "sweep": a periodic task that moves rows on (a workflow's timer or deadline);
    # "compensation": a task that only undoes others (a link_error handler).
    role: Literal["step", "sweep", "compensation"] = "step"


@dataclass(frozen=True)
class FlowCandidate:
    """Tasks that run together (call graph and canvas), scored and ranked."""

    name: str
    entry: str
    location: Location
    steps: tuple[FlowStep, ...]
    handlers: tuple[str, ...]           # error handlers (link_error), not steps
    systems: tuple[str, ...]
    estimated_seconds: float | None     # None: open-ended (advanced by a periodic sweep)
    human_wait: Evidence | None
    wait_after: str | None              # the step after which a person's decision is awaited
    scores: tuple[Score, ...]
    classification: Classification
    recommendation: Recommendation
    reasons: tuple[str, ...]
    hardening: tuple[str, ...] = ()
    hazards: tuple[Hazard, ...] = ()

    @property
    def workflow_criteria(self) -> int:
        return sum(1 for score in self.scores if score.leans == "workflow")


@dataclass(frozen=True)
class Skipped:
    """Code the inventory could not read, and why, so nothing is silently ignored."""

    location: Location
    reason: str


@dataclass(frozen=True)
class Inventory:
    """The result of reading one codebase."""

    root: str
    files: int
    findings: tuple[Finding, ...]
    hazards: tuple[Hazard, ...]
    flows: tuple[FlowCandidate, ...]
    skipped: tuple[Skipped, ...]
    # The settings the hazards were judged against (broker, visibility timeout, ...).
    settings: tuple[tuple[str, str], ...] = ()

    def of_kind(self, kind: FindingKind) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.kind == kind)
