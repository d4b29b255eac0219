"""The source document's table "When to keep Celery vs graduate to Temporal", answered for
one flow from its evidence, and the recommendation that follows.

Each row has two halves. What the flow *needs* comes from its definition (its waits,
systems, compensations and reversibility class), because the table's signals are
properties of the business process. What each engine *did* comes from the runs: whether
it lost or duplicated a commitment, compensated, and resumed at the exact step.
"""

from __future__ import annotations

from collections.abc import Sequence

from graduate.adapters import describe
from graduate.chaos.faults import (
    Fault,
    deploy_change,
    get_fault,
    kill_worker,
    parse_label,
    stop_worker,
)
from graduate.check import Verdict
from graduate.errors import GraduateError
from graduate.reports.model import (
    CellReport,
    Criterion,
    EngineSummary,
    FlowInfo,
    Recommendation,
    RunReport,
    Side,
)
from graduate.reports.units import HOUR, duration, seconds

LONG_LIVED = 4 * HOUR  # the workflow inventory's line between queued and durable


def criteria(flow: FlowInfo, cells: Sequence[CellReport], runs: Sequence[RunReport],
             summaries: Sequence[EngineSummary]) -> tuple[Criterion, ...]:
    """The four rows of the table, answered for `flow`."""
    engines = [s.engine for s in summaries if s.verdict != "no evidence"]
    return (_duration(flow, runs), _state(flow, cells, engines),
            _compensation(flow, runs, engines), _failure_domain(flow, cells, engines))


def _side(flow: FlowInfo, temporal: bool) -> Side:
    if not flow.known:
        return "open"
    return "temporal" if temporal else "celery"


def _unknown(flow: FlowInfo) -> str:
    return (f"Unknown: no run of {flow.name} has finished yet, so its definition is not in "
            "the evidence.")


def _duration(flow: FlowInfo, runs: Sequence[RunReport]) -> Criterion:
    waited = sum(w.deadline for w in flow.waits) + sum(d for _, d in flow.timers)
    systems = list(dict.fromkeys(s.system for s in flow.steps))
    long_lived = waited > LONG_LIVED
    needs = _unknown(flow)
    if flow.known:
        waits = ", ".join(f"{w.name} up to {duration(w.deadline)}" for w in flow.waits)
        needs = (f"{'Long-lived' if long_lived else 'Short-lived'}: an instance can last "
                 f"{duration(waited) if waited else 'only as long as its steps'}"
                 f"{f' (it waits for {waits})' if waits else ''}. It has "
                 f"{len(flow.steps)} step(s) across {len(systems)} system(s): "
                 f"{', '.join(systems)}.")
    evidence = []
    completed = [i.time_to_complete for r in runs for i in r.instances
                 if i.time_to_complete is not None]
    if completed:
        shortened = any(name == "wait_deadline" and value != "null"
                        for r in runs for name, value in r.options)
        spread = (f"{min(completed):.1f} s" if f"{min(completed):.1f}" == f"{max(completed):.1f}"
                  else f"{min(completed):.1f}-{max(completed):.1f} s")
        evidence.append(
            f"Instances in these runs finished in {spread}: "
            "the waits were answered at once"
            f"{' or shortened for the wait-timeout runs' if shortened else ''}, so the runs "
            "test behaviour under faults, not real duration.")
    return Criterion(
        signal="Duration", prefer_celery="Minutes, single service",
        prefer_temporal="Hours-days, multi-step state machine", flow_needs=needs,
        evidence=tuple(evidence),
        points_to=_side(flow, long_lived or len(systems) > 1))


def _state(flow: FlowInfo, cells: Sequence[CellReport], engines: list[str]) -> Criterion:
    loose = [s for s in flow.steps if not s.honours_idempotency]
    needs = _unknown(flow)
    if flow.known:
        parts = []
        if flow.waits:
            parts.append(f"It holds state across {len(flow.waits)} human wait(s) "
                         f"({', '.join(w.name for w in flow.waits)}), and its code will "
                         "change while instances wait, so it needs versioning.")
        if loose:
            parts.append(f"Step(s) {', '.join(s.name for s in loose)} call systems that do "
                         "not honour idempotency keys "
                         f"({', '.join(dict.fromkeys(s.system for s in loose))}): a repeated "
                         "call changes the world twice, so task idempotency is not enough.")
        if not parts:
            parts.append("No human wait, and every system honours idempotency keys: task "
                         "idempotency is enough.")
        needs = " ".join(parts)
    evidence = []
    for engine in engines:
        mine = [c for c in cells if c.engine == engine and c.status in ("pass", "fail")]
        evidence.append(f"{engine}: {sum(c.unabsorbed_duplicates for c in mine)} unabsorbed "
                        f"duplicate(s), {sum(c.absorbed_duplicates for c in mine)} absorbed by "
                        "an idempotency key.")
    deploys = [c for c in cells if _fault(c).changes_code]
    if not deploys:
        evidence.append(f"Versioning was not tested: no {deploy_change.NAME} cell in this "
                        f"evidence (add {deploy_change.NAME} to the matrix's --faults).")
    for cell in deploys:
        outcome = {"pass": "passed", "fail": "failed", "not-applicable": "does not apply",
                   "pending": "has not run"}[cell.status]
        why = f" ({cell.reason})" if cell.status == "not-applicable" else ""
        evidence.append(f"{cell.engine}: {cell.title} {outcome}{why}.")
    return Criterion(
        signal="State", prefer_celery="Task idempotency sufficient",
        prefer_temporal="Long-lived state + human waits + versioning", flow_needs=needs,
        evidence=tuple(evidence), points_to=_side(flow, bool(flow.waits or loose)))


def _compensation(flow: FlowInfo, runs: Sequence[RunReport], engines: list[str]) -> Criterion:
    declared = [s for s in flow.steps if s.compensation]
    reversibility = dict(flow.classes).get("reversibility_class", "")
    costly = reversibility[:2] in ("R2", "R3")
    needs = _unknown(flow)
    if flow.known:
        if declared:
            needs = ("Required: compensation is declared for "
                     f"{', '.join(f'{s.name} ({s.compensation})' for s in declared)}"
                     f"{f'; reversibility {reversibility}' if reversibility else ''}.")
        else:
            needs = ("None declared"
                     f"{f'; reversibility {reversibility}' if reversibility else ''}.")
    compensating = {s.name for s in declared}
    evidence = []
    for engine in engines:
        instances = [(r, i) for r in runs if r.engine == engine for i in r.instances]
        done = [(r, i) for r, i in instances if i.verdict == "compensated"]
        half = []
        for run, instance in instances:
            if not Verdict(instance.verdict).fails_run:
                continue
            landed = {e.step for e in instance.effects
                      if e.kind == "effect" and (e.applied or e.absorbed)}
            undone = {e.step for e in instance.effects
                      if e.kind == "compensation" and (e.applied or e.absorbed)}
            if (landed & compensating) - undone:
                half.append(f"{run.title} ({instance.instance_id})")
        line = (f"{engine}: compensated {len(done)} instance(s) in "
                f"{', '.join(dict.fromkeys(r.title for r, _ in done))}"
                if done else f"{engine}: compensation was not exercised")
        if half:
            line += (f"; left {len(half)} instance(s) with effects applied and not "
                     f"compensated: {', '.join(half)}")
        evidence.append(line + ".")
    return Criterion(
        signal="Compensation", prefer_celery="Rare, manual acceptable",
        prefer_temporal="Required, audited, replayable", flow_needs=needs,
        evidence=tuple(evidence), points_to=_side(flow, bool(declared) or costly))


def _failure_domain(flow: FlowInfo, cells: Sequence[CellReport],
                    engines: list[str]) -> Criterion:
    reversibility = dict(flow.classes).get("reversibility_class", "")
    exact_needed = reversibility[:2] in ("R2", "R3") or any(s.compensation for s in flow.steps)
    needs = _unknown(flow)
    if flow.known:
        costly = (f"its reversibility is {reversibility}, so " if reversibility else "")
        needs = ("It must resume at the exact step after a crash or a deploy: "
                 f"{costly}a lost or repeated step is costly."
                 if exact_needed else
                 "Retry and a dead-letter queue can be enough: its effects are cheap to "
                 f"reverse ({reversibility or 'no reversibility class'}).")
    evidence = []
    for engine in engines:
        mine = [c for c in cells if c.engine == engine and c.status in ("pass", "fail")]
        parts = []
        for group, name in (("worker", "a worker kill or deploy"),
                            ("service", "a broker/server restart or partition")):
            hit = [c for c in mine if _fault(c).group == group]
            if sum(c.hit_by_fault for c in hit):
                parts.append(f"after {name}, resumed at the exact step in "
                             f"{sum(c.resumed_exactly for c in hit)} of "
                             f"{sum(c.hit_by_fault for c in hit)} instance(s) hit")
        if not parts:
            parts.append("no fault hit an instance in flight")
        lost, stuck = sum(c.lost for c in mine), sum(c.stuck for c in mine)
        failed = sum(c.failed for c in mine)
        parts.append(f"{lost} commitment(s) lost, {stuck} stuck, {failed} failed")
        evidence.append(f"{engine}: {'; '.join(parts)}.")
    return Criterion(
        signal="Failure domain", prefer_celery="Retry and DLQ enough",
        prefer_temporal="Must resume exact step after deploy", flow_needs=needs,
        evidence=tuple(evidence), points_to=_side(flow, exact_needed))


def recommend(flow: FlowInfo, cells: Sequence[CellReport], summaries: Sequence[EngineSummary],
              answered: Sequence[Criterion]) -> Recommendation:
    """Graduate, keep Celery, or not enough evidence, with the reasons."""
    temporal = next((s for s in summaries if _engine_side(s.engine) == "temporal"), None)
    celery = [s for s in summaries if _engine_side(s.engine) == "celery"
              and s.verdict != "no evidence"]
    pending = sum(1 for c in cells if c.status == "pending")
    caveat = ((f"{pending} cell(s) have not run yet: render the report again once the "
               "matrix is complete (`graduate matrix --resume`).",) if pending else ())

    def undecided(*why: str) -> Recommendation:
        return Recommendation(decision="not-enough-evidence",
                              headline="Not enough evidence to decide yet.",
                              reasons=(*why, *caveat))

    if not flow.known:
        return undecided("No run of this flow has finished, so nothing is known about it.")
    if temporal is None or temporal.verdict == "no evidence":
        return undecided("No Temporal run is in this evidence: run the matrix with "
                         "--engines temporal,celery-chain,celery-state-machine.")
    if not celery:
        return undecided("No Celery run is in this evidence: without one there is nothing to "
                         "compare Temporal with.")
    if temporal.hit_by_fault == 0:
        return undecided("No fault hit a Temporal instance in flight, so its resume is "
                         f"untested: add {kill_worker.NAME} and {stop_worker.NAME} to the "
                         "matrix's --faults.")
    needs = [c for c in answered if c.points_to == "temporal"]
    passing = [s for s in celery if s.verdict == "pass"]
    failing = [s for s in celery if s.verdict == "fail"]
    caught = _caught_by_replay(cells)
    real_failures = [c for c in cells if _engine_side(c.engine) == "temporal" and c.status == "fail"
                     and c not in caught]
    if temporal.verdict == "fail" and real_failures:
        if not needs and passing:
            return _keep(flow, passing, answered, caveat)
        return undecided(f"Temporal itself failed: {temporal.sentence} Graduating would not "
                         "fix these: read the failures below and the run's settings first.")
    if not needs and passing:
        return _keep(flow, passing, answered, caveat)
    reasons = []
    if needs:
        reasons.append(f"{flow.name} is on the Temporal side of the source document's table "
                       f"for {', '.join(c.signal.lower() for c in needs)} (section 4).")
    if caught:
        reasons.append(
            "temporal: every cell passed but the deploy of changed code without its "
            "versioning guard, which replay caught as intended: the instance was held, "
            "visibly, with nothing applied twice, and the same deploy with the guard "
            f"passed.{_median(temporal)}")
    else:
        reasons.append(f"temporal: {temporal.sentence}{_median(temporal)}")
    reasons.extend(f"{s.engine}: {s.sentence}" for s in failing)
    for summary in passing:
        reasons.append(
            f"{summary.engine} also passed every cell it ran.{_median(summary)} A team could "
            "keep this flow on Celery only by building, running and versioning that state "
            "machine itself; Temporal provides the same guarantees, with the history, timers "
            "and versioning, as a product.")
    return Recommendation(decision="graduate",
                          headline=f"Graduate {flow.name} to Temporal.",
                          reasons=(*reasons, *caveat))


def _caught_by_replay(cells: Sequence[CellReport]) -> list[CellReport]:
    """Temporal's unversioned deploy cells that failed the safe way (held, not lost,
    nothing duplicated) while the same deploy with the versioning guard passed: the
    engine refusing changed code, which is what the guard exists for."""
    temporal = [c for c in cells if _engine_side(c.engine) == "temporal" and _fault(c).changes_code]
    guarded = any(c.status == "pass" and _guarded(c) for c in temporal)
    return [c for c in temporal if guarded and c.status == "fail"
            and not _guarded(c) and c.lost == 0 and c.failed == 0
            and c.unabsorbed_duplicates == 0]


def _fault(cell: CellReport) -> Fault:
    return get_fault(cell.fault)


def _guarded(cell: CellReport) -> bool:
    """Whether the cell ran with every option its fault needs to count as proof (the
    versioning guard, for a deploy)."""
    fault, options = parse_label(cell.column.split("@", 1)[0])
    return bool(fault.proven_with) and fault.proves(options)


def _engine_side(engine: str) -> str | None:
    """The side of the source document's table that `engine` stands for."""
    try:
        return describe(engine).side
    except GraduateError:
        return None


def _keep(flow: FlowInfo, passing: Sequence[EngineSummary], answered: Sequence[Criterion],
          caveat: tuple[str, ...]) -> Recommendation:
    best = passing[0]
    celery_side = [c.signal.lower() for c in answered if c.points_to == "celery"]
    return Recommendation(
        decision="keep-celery",
        headline=f"Keep {flow.name} on Celery ({best.engine}).",
        reasons=(f"{flow.name} is on the Celery side of the source document's table for "
                 f"{', '.join(celery_side) or 'every signal'} (section 4).",
                 f"{best.engine}: {best.sentence}{_median(best)}", *caveat))


def _median(summary: EngineSummary) -> str:
    if summary.median_time_to_resume is None:
        return ""
    return f" Median time to resume after a fault: {seconds(summary.median_time_to_resume)}."
