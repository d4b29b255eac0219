"""Score each flow on the source document's four criteria, classify it by the inventory
rules, and recommend what to do with it.

Criteria (execution-fabric.md, "When to keep Celery vs graduate"): duration (minutes vs
hours to days), state (task idempotency vs long-lived state and human waits),
compensation (rare vs required), failure domain (retry and DLQ vs resume at the exact step).

Classification (dealix-context.md, "Workflow inventory"): short-lived-local under 15 min,
one service, no compensation; medium-lived-queued 15 min to 4 h, at most 2 services;
long-lived-durable over 4 h, or more services, or compensation. The rules overlap at
exactly two services ("at most 2" vs "2+"); the medium rule's explicit bound is read as
winning, so a flow becomes long-lived-durable by services from three on.
"""

from __future__ import annotations

from graduate.migrate.inventory.flows import Group, effects, evidence_of_effects, step
from graduate.migrate.inventory.hazards import TASK_CHAIN, time_limit
from graduate.migrate.inventory.model import (
    Classification,
    Evidence,
    FlowCandidate,
    FlowStep,
    Hazard,
    Lean,
    Location,
    Recommendation,
    Score,
)
from graduate.migrate.inventory.project import Project, Task
from graduate.migrate.inventory.signs import human_wait, undoes

SHORT = 15 * 60.0
LONG = 4 * 3600.0
_RETRY_BACKOFF_MAX = 600.0  # Celery's retry_backoff_max default (tasks.html#Task.retry_backoff_max)


def score(project: Project, group: Group, hazards: list[tuple[Task, Hazard]]) -> FlowCandidate:
    handlers = {id(member): handler
                for member, handler, _ in project.among(project.error_edges, group.tasks)}
    steps = tuple(step(project, task, handlers) for task in group.tasks)
    members = [*group.tasks, *group.handlers]
    own_hazards = tuple(dict.fromkeys(h for _, h in project.among(hazards, members)))
    systems = tuple(sorted({effect.split(".")[0]
                            for _, effect in _real_effects(project, group.tasks)}))
    wait = human_wait(project, members)
    wait_evidence = Evidence(wait[0], f"waits for a person: {wait[1]}") if wait else None
    estimated = _duration(project, group.tasks, steps)
    scores = (
        _duration_score(project, group.tasks, steps, estimated),
        _state_score(project, members, wait_evidence),
        _compensation_score(project, members),
        _failure_domain_score(project, group.tasks, systems, own_hazards),
    )
    compensation = scores[2].leans == "workflow"
    classification, reasons = _classify(estimated, systems, compensation)
    workflow = sum(1 for s in scores if s.leans == "workflow")
    reasons.append(f"{workflow} of 4 criteria lean to a workflow engine")
    recommendation, hardening = _recommend(classification, workflow, steps, own_hazards)
    return FlowCandidate(
        name=group.name, entry=group.tasks[0].short, location=group.tasks[0].location,
        steps=steps, handlers=tuple(h.short for h in group.handlers), systems=systems,
        estimated_seconds=estimated, human_wait=wait_evidence,
        wait_after=wait[2].short if wait and wait[2] in group.tasks else None, scores=scores,
        classification=classification, recommendation=recommendation,
        reasons=tuple(reasons), hardening=hardening, hazards=own_hazards)


def rank(flows: list[FlowCandidate]) -> list[FlowCandidate]:
    """Strongest recommendation first, then most criteria for a workflow, most hazards."""
    return sorted(flows, key=lambda f: (-f.recommendation.rank, -f.workflow_criteria,
                                        -len(f.hazards), f.name))


def _real_effects(project: Project, tasks: list[Task]) -> list[tuple[Task, str]]:
    return [(task, effect) for task in tasks for effect, _ in effects(project, task)]


def _duration(project: Project, tasks: list[Task], steps: tuple[FlowStep, ...]) -> float | None:
    """How long one instance can take as configured (delays, time limits, retries);
    None when a periodic sweep advances it (it lasts as long as the state it waits in)."""
    if project.among(project.sweeps, tasks):
        return None
    total = 0.0
    for task, flow_step in zip(tasks, steps, strict=True):
        limit, _, _ = time_limit(project, task)
        total += (flow_step.delay_before or 0.0) + (limit or 0.0)
        retries = flow_step.max_attempts - 1
        if flow_step.retry_delay:
            if flow_step.backoff:
                total += sum(min(flow_step.retry_delay * 2**i, _RETRY_BACKOFF_MAX)
                             for i in range(retries))
            else:
                total += flow_step.retry_delay * retries
    return total


def _hours(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.1f} h"
    return f"{value / 60:.0f} min" if value >= 60 else f"{value:g} s"


def _duration_score(project: Project, tasks: list[Task], steps: tuple[FlowStep, ...],
                    estimated: float | None) -> Score:
    evidence = [Evidence(s.location, f"{s.task.short} starts after {s.delay:g} s ({s.how})")
                for s in project.among(project.launches, tasks) if s.delay]
    evidence += [Evidence(where, f"{t.short} retries after {d:g} s")
                 for t, d, where in project.among(project.retries, tasks) if d]
    limited: dict[tuple[Location, float], list[str]] = {}
    for task in tasks:
        limit, at, _ = time_limit(project, task)
        if limit and at:
            limited.setdefault((at, limit), []).append(task.short)
    evidence += [Evidence(at, f"{', '.join(names)} may run {limit:g} s")
                 for (at, limit), names in limited.items()]
    if estimated is None:
        sweeps = [(t, w) for t, _, w in project.among(project.sweeps, tasks)]
        periods = {id(t): every for t, every, _ in project.scheduled}
        evidence += [Evidence(w, f"{t.short} advances it every "
                                 f"{periods.get(id(t)) or 0:g} s from the rows' state")
                     for t, w in sweeps]
        return Score("duration", "workflow",
                     "open-ended: a periodic sweep advances it, so it lasts as long as its "
                     "rows wait (hours to days)", tuple(evidence))
    leans: Lean = "workflow" if estimated > LONG else "celery"
    band = ("over 4 h" if estimated > LONG else
            "15 min to 4 h" if estimated > SHORT else "15 min or less")
    return Score("duration", leans,
                 f"up to {_hours(estimated)} ({band}), counting countdowns, ETAs, time limits "
                 "and retry delays", tuple(evidence))


def _state_score(project: Project, members: list[Task], wait: Evidence | None) -> Score:
    writes = project.among(project.status_writes, members)
    sweeps = project.among(project.sweeps, members)
    evidence = [Evidence(where, f"{t.short} sets {w.field} = {w.value}") for t, w, where in writes]
    evidence += [Evidence(where, f"{t.short} sweeps rows with {q.field} = {q.value}")
                 for t, q, where in sweeps]
    if wait is not None:
        evidence.append(wait)
    values = {w.value for _, w, _ in writes}
    if writes and (sweeps or len(values) >= 2 or wait is not None):
        return Score("state", "workflow",
                     f"a hand-made state machine: tasks advance a status field through "
                     f"{len(values)} value(s)" + (" and a periodic sweep moves it on"
                                                  if sweeps else "")
                     + ("; a person's decision is awaited" if wait else ""), tuple(evidence))
    return Score("state", "celery", "no persisted step state beyond one write: task "
                 "idempotency is enough", tuple(evidence))


def _compensation_score(project: Project, members: list[Task]) -> Score:
    evidence = [Evidence(where, f"{call} in {context} of {t.short}")
                for t, call, where, context in project.among(project.compensations, members)]
    handler_ids = {id(h) for _, h, _ in project.among(project.error_edges, members, at=1)}
    evidence += [Evidence(t.location, f"{t.short} is a link_error handler")
                 for t in members if id(t) in handler_ids]
    evidence += [Evidence(t.location, f"{t.short} undoes work, by its name")
                 for t in members if id(t) not in handler_ids and undoes(t.short)]
    if evidence:
        return Score("compensation", "workflow",
                     "required: failures are undone in code (except blocks, on_failure, "
                     "link_error)", tuple(evidence))
    return Score("compensation", "celery", "none found: a failure is retried or left for a "
                 "person")


def _failure_domain_score(project: Project, tasks: list[Task], systems: tuple[str, ...],
                          hazards: tuple[Hazard, ...]) -> Score:
    evidence = tuple(evidence_of_effects(project, tasks))
    with_effects = {id(t) for t, _ in _real_effects(project, tasks)}
    if len(systems) >= 3 or (len(systems) >= 2 and len(with_effects) >= 2):
        return Score("failure domain", "workflow",
                     f"{len(with_effects)} step(s) commit to {len(systems)} systems "
                     f"({', '.join(systems)}): a crash between them leaves a half-done "
                     "commitment that must resume at the exact step", evidence)
    if chain := next((h for h in hazards if h.rule == TASK_CHAIN), None):
        return Score("failure domain", "workflow",
                     "a chain of tasks that start one another under early acknowledgement, "
                     "recorded nowhere: a crash mid-step loses every later step, which no "
                     "retry or dead-letter queue sees; it must resume at the exact step",
                     (Evidence(chain.location, chain.why), *evidence))
    what = f"{len(systems)} system(s)" + (f" ({', '.join(systems)})" if systems else "")
    return Score("failure domain", "celery", f"{what}: retry and a dead-letter queue are "
                 "enough", evidence)


def _classify(estimated: float | None, systems: tuple[str, ...],
              compensation: bool) -> tuple[Classification, list[str]]:
    reasons: list[str] = []
    if estimated is None or estimated > LONG:
        reasons.append("lasts over 4 h" if estimated else "open-ended duration")
    if len(systems) > 2:
        reasons.append(f"crosses {len(systems)} services")
    if compensation:
        reasons.append("needs compensation")
    if reasons or estimated is None:
        return "long-lived-durable", reasons
    if estimated > SHORT or len(systems) == 2:
        return "medium-lived-queued", [
            f"up to {_hours(estimated)}" if estimated > SHORT else "15 min or less",
            f"{len(systems)} services"]
    return "short-lived-local", ["15 min or less",
                                 f"{len(systems)} service(s), no compensation"]


def _recommend(classification: Classification, workflow: int, steps: tuple[FlowStep, ...],
               hazards: tuple[Hazard, ...]) -> tuple[Recommendation, tuple[str, ...]]:
    hardening = list(dict.fromkeys(f"{h.task}: {h.fix}" for h in hazards))
    if classification == "long-lived-durable":
        return (Recommendation.GRADUATE if workflow >= 2 else Recommendation.SPIKE_FIRST,
                tuple(hardening))
    if classification == "medium-lived-queued":
        keyless = [s.task for s in steps if not s.idempotent]
        if keyless:
            hardening.append(f"{', '.join(keyless)}: carry an idempotency key and set "
                             "acks_late=True (medium-lived-queued: Celery + idempotency key)")
        return (Recommendation.HARDEN if hardening else Recommendation.KEEP), tuple(hardening)
    return (Recommendation.HARDEN if hardening else Recommendation.KEEP), tuple(hardening)
