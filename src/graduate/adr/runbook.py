"""Runbooks from evidence: the deploy, rollback and double-start sections of a spike's ADR.

A runbook written by hand says what a team hopes happens. These are written from two
things graduate knows for certain: the flow's compensation paths (what is undone, in
which order, and which systems honour idempotency keys) and the verdicts of the runs
attached to the ADR (which faults resumed, lost or duplicated; what the rollback
rehearsal compensated; whether a second start was refused). Each section ends with the
commands that rehearse it again. Only the runs of the flow as it is now are cited
(`graduate.runs.definitions`): an attached run of an older definition is named as left
out, as the gates count it for nothing.

The section is graduate's own: `graduate adr attach` rewrites it from the evidence
after every attachment, and `graduate adr runbook` on demand. Notes of a team's own go
in another section.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from graduate.adapters import describe
from graduate.chaos.faults import (
    deploy_change,
    double_start,
    rollback_rehearsal,
    stop_worker,
    wait_timeout,
)
from graduate.chaos.matrix import default_point
from graduate.flow import Flow
from graduate.runs.definitions import by_definition
from graduate.runs.record import RunRecord

RUNBOOKS_HEADING = "Runbooks"
_CELL = 240  # characters of a table cell: a run's first failure, cut; its report has all
_NAMED = 6  # runs of an older definition named before "and N more"


@dataclass(frozen=True)
class Observation:
    """One attached run, as a runbook cites it."""

    run_id: str
    engine: str
    description: str  # the fault as the run describes it: "deploy-change at ... (versioned)"
    profile: str
    outcome: str  # passed, failed, not applicable
    shown: str  # what the run showed, in words


@dataclass(frozen=True)
class RunbookSection:
    title: str  # "Deploy"
    checklist_item: str  # the release checklist item it answers
    procedure: tuple[str, ...]  # the steps, from the flow and the evidence
    observed: tuple[Observation, ...]  # the attached runs of the faults it rests on
    commands: tuple[str, ...]  # to rehearse it again


@dataclass(frozen=True)
class LeftOut:
    """Attached runs of an older definition of the flow: not cited, only named."""

    runs: tuple[str, ...]
    change: str  # how the flow changed since the newest of them ran


@dataclass(frozen=True)
class Runbook:
    flow: str
    target_engine: str
    sections: tuple[RunbookSection, ...]
    observed: tuple[Observation, ...]  # every attached run of the flow as it is, for the summary
    left_out: tuple[LeftOut, ...] = ()  # by older definition, the newest first


def build_runbook(flow: Flow, runs: Sequence[RunRecord], *, target_engine: str,
                  flow_ref: str) -> Runbook:
    """The runbooks of `flow` (as it is now) from its attached `runs` (the latest first
    counts as any other: every run of this definition of the flow is cited; the runs of
    older ones are left out, and named). `flow_ref` is how the commands name the flow."""
    current, *older = by_definition(runs, flow)
    runs = [r for r in runs if r.run_id in current.runs]
    observed = tuple(_observe(run) for run in runs)
    rehearse = _Commands(flow, flow_ref, target_engine, runs)
    return Runbook(flow=flow.name, target_engine=target_engine, observed=observed, sections=(
        _deploy(flow, runs, rehearse, target_engine),
        _rollback(flow, runs, rehearse, target_engine),
        _double_start(flow, runs, rehearse, target_engine),
    ), left_out=tuple(LeftOut(d.runs, d.change) for d in older))


def render_runbook(runbook: Runbook) -> list[str]:
    """The Markdown lines of the ADR's Runbooks section (below its heading)."""
    lines = [
        "<!-- Written by graduate from the flow and the attached evidence; rewritten at "
        "every `graduate adr attach` and by `graduate adr runbook`. Edits here are lost: "
        "keep notes in another section. -->",
        "",
    ]
    if runbook.observed:
        lines += ["What the attached runs showed, by engine and fault:", "",
                  *_table(runbook.observed), ""]
    else:
        which = " of the flow as it is now" if runbook.left_out else ""
        lines += [f"No run{which} is attached yet: each runbook below comes from the flow "
                  "alone until one is (`graduate matrix` then `graduate adr attach`).", ""]
    for older in runbook.left_out:
        named = ", ".join(f"`{r}`" for r in older.runs[:_NAMED])
        more = (f" and {len(older.runs) - _NAMED} more, all in the Evidence section"
                if len(older.runs) > _NAMED else "")
        lines += [f"Left out: {len(older.runs)} attached run(s) of an older definition of "
                  f"the flow ({named}{more}), which has changed since they ran "
                  f"({_cell(older.change)}); they prove nothing about the flow as it is, "
                  "and its gates do not count them.", ""]
    for section in runbook.sections:
        lines += [f"### {section.title}", "",
                  f"Answers the release checklist's **{section.checklist_item}**.", ""]
        lines += [f"{number}. {step}" for number, step in
                  enumerate(section.procedure, start=1)]
        lines.append("")
        if section.observed:
            lines += ["Evidence:", "", *_table(section.observed), ""]
        else:
            lines += ["Evidence: no attached run rehearses this yet.", ""]
        lines += ["Rehearse:", "", "```sh", *section.commands, "```", ""]
    return lines[:-1]


# ---------------------------------------------------------------------------- sections


def _deploy(flow: Flow, runs: Sequence[RunRecord], rehearse: _Commands,
            target: str) -> RunbookSection:
    changes = _of(runs, deploy_change.NAME)
    stops = _of(runs, stop_worker.NAME)
    on_target = [r for r in changes if r.engine == target]
    guarded = [r for r in on_target if r.fault.options.get(deploy_change.VERSIONED.name)]
    unguarded = [r for r in on_target if not r.fault.options.get(deploy_change.VERSIONED.name)]
    steps = ["Rehearse the rollback first (see Rollback below): before every worker upgrade "
             "that changes workflow code."]
    if any(_passed(r) for r in guarded):
        steps.append(f"Ship changed workflow code on {_title(target)} behind its versioning "
                     f"guard: {_ids(guarded, _passed)} kept the instances in flight on their "
                     "version.")
    else:
        steps.append(f"Ship changed workflow code on {_title(target)} behind its versioning "
                     "guard; no attached run shows the guard holding yet: rehearse it "
                     "before the deploy.")
    if broken := [r for r in unguarded if not _passed(r)]:
        steps.append(f"Never ship a changed flow without the guard: {_ids(broken)} "
                     f"({_shown(broken)}) broke the instances in flight.")
    if stops:
        warm = [r for r in stops if _passed(r)]
        steps.append("Replace workers with a warm shutdown (SIGTERM) and a grace period "
                     "longer than the longest step"
                     + (f" ({_longest_work(flow)})" if _longest_work(flow) else "")
                     + (f": {_ids(warm)} went on at the step in flight." if warm else
                        f": {_ids(stops)} did not survive it ({_shown(stops)})."))
    else:
        steps.append("Replace workers with a warm shutdown (SIGTERM) and a grace period "
                     "longer than the longest step; no attached run rehearses it yet.")
    if unkeyed := _unkeyed_steps(flow):
        steps.append("A step re-run during a deploy repeats its effect on a system that "
                     f"honours no idempotency key: {', '.join(unkeyed)}. Check the ledger "
                     "for duplicates of these after every deploy.")
    return RunbookSection(
        "Deploy", "Runbook: deploy", tuple(steps), tuple(_observe(r) for r in
                                                         (*changes, *stops)),
        (rehearse(deploy_change.NAME, f"{rehearse.wait_point} --versioned"),
         rehearse(stop_worker.NAME, rehearse.step_point("after-effect"))))


def _rollback(flow: Flow, runs: Sequence[RunRecord], rehearse: _Commands,
              target: str) -> RunbookSection:
    rehearsals = _of(runs, rollback_rehearsal.NAME)
    expiries = _of(runs, wait_timeout.NAME)
    steps = ["Cancel the instances in flight through the engine (the rollback rehearsal "
             "does it as an operator would). A step already running finishes first; "
             "its effect counts as applied."]
    undo = []
    for step in reversed(flow.steps):
        system = flow.system(step.system)
        honours = ("honours idempotency keys" if system.honours_idempotency
                   else "honours no idempotency key")
        if step.compensation:
            undoer = flow.system(step.compensation.split(".", 1)[0])
            retry = ("its system honours idempotency keys: safe to retry"
                     if undoer.honours_idempotency else
                     "its system honours no idempotency key: retry only after checking "
                     "the ledger")
            undo.append(f"`{step.name}` applied → `{step.compensation}` ({retry})")
        elif step.read_only:
            undo.append(f"`{step.name}` only read ({system.name}): nothing to undo")
        else:
            undo.append(f"`{step.name}` applied → no compensation declared: undo by hand "
                        f"({system.name} {honours})")
    steps.append("Compensate what applied, newest first, once each: " + "; ".join(undo) + ".")
    on_target = [r for r in rehearsals if r.engine == target]
    if passing := [r for r in on_target if _passed(r)]:
        steps.append(f"Verify as the rehearsal did on {_title(target)} ({_ids(passing)}): "
                     "compensations for exactly the steps that applied, in reverse, once "
                     "each, and nothing applied after the cancel.")
    elif on_target:
        steps.append(f"The rehearsal on {_title(target)} did not hold ({_ids(on_target)}: "
                     f"{_shown(on_target)}): fix it before relying on this runbook.")
    else:
        steps.append(f"No attached rehearsal on {_title(target)} yet: rehearse before every "
                     "worker upgrade that changes workflow code.")
    if compensated := [r for r in expiries if _passed(r)]:
        steps.append(f"A passed approval deadline takes the same path ({_ids(compensated)}).")
    return RunbookSection(
        "Rollback", "Runbook: rollback", tuple(steps),
        tuple(_observe(r) for r in (*rehearsals, *expiries)),
        (rehearse(f"{rollback_rehearsal.NAME}+all", rehearse.wait_point),
         rehearse(rollback_rehearsal.NAME, rehearse.step_point("before-effect"))))


def _double_start(flow: Flow, runs: Sequence[RunRecord], rehearse: _Commands,
                  target: str) -> RunbookSection:
    starts = _of(runs, double_start.NAME)
    business_key = flow.idempotency_key.replace(":{step}", "").replace("{step}", "")
    steps = [f"One business key (`{business_key}`) gets one set of commitments: a second "
             "start (a retried webhook, a double click) must be refused visibly or do "
             "nothing."]
    for engine in dict.fromkeys(r.engine for r in starts):
        mine = [r for r in starts if r.engine == engine]
        refused = sorted({why for r in mine for i in r.verdicts if i.starts
                          for why in i.starts.refused})
        twice = [r for r in mine if any(i.starts and len(i.starts.effect_sets) > 1
                                        for i in r.verdicts)]
        if twice:
            steps.append(f"On {_title(engine)} a second start ran the flow again "
                         f"({_ids(twice)}): refuse it before the engine, keyed by the "
                         "business key.")
        elif refused and all(_passed(r) for r in mine):
            steps.append(f"On {_title(engine)} a second start is refused "
                         f"({'; '.join(refused)}; {_ids(mine)}): the caller sees the "
                         "refusal and must not retry it as new.")
        elif all(_passed(r) for r in mine):
            steps.append(f"On {_title(engine)} a second start did nothing ({_ids(mine)}).")
        else:
            steps.append(f"On {_title(engine)} the double start did not hold "
                         f"({_ids(mine)}: {_shown(mine)}).")
    if not any(r.engine == target for r in starts):
        steps.append(f"No attached double start on {_title(target)} yet: the release "
                     "checklist accepts this item only from a passing one.")
    return RunbookSection(
        "Double start", "Runbook: double start", tuple(steps),
        tuple(_observe(r) for r in starts),
        (rehearse(double_start.NAME, rehearse.step_point("after-effect")),
         rehearse(f"{double_start.NAME}+crash", rehearse.step_point("after-effect"))))


# ---------------------------------------------------------------------------- parts


class _Commands:
    """`graduate chaos` lines that rehearse a fault on the target engine, as the
    attached runs ran it (their time scale and profile)."""

    def __init__(self, flow: Flow, flow_ref: str, target: str,
                 runs: Sequence[RunRecord]) -> None:
        self.flow, self.flow_ref, self.target = flow, flow_ref, target
        latest = next((r for r in reversed(runs) if r.engine == target), None)
        self.extra = ""
        if latest is not None:
            if latest.profile != "defaults":
                self.extra += f" --profile {latest.profile}"
            if latest.options.time_scale is not None:
                self.extra += f" --time-scale {latest.options.time_scale.label}"
        wait = flow.waits[0].name if flow.waits else None
        self.wait_point = (f"{wait}:during-wait" if wait is not None
                           else self.step_point("before-effect"))

    def step_point(self, point: str) -> str:
        return default_point(self.flow).replace(":before-effect", f":{point}")

    def __call__(self, fault: str, at: str) -> str:
        return (f"graduate chaos {self.flow_ref} -e {self.target} --fault {fault} --at {at} "
                f"--instances 3{self.extra}")


def _of(runs: Sequence[RunRecord], fault: str) -> list[RunRecord]:
    return [r for r in runs if r.fault.fault == fault and r.fault.applicable]


def _passed(run: RunRecord) -> bool:
    return run.fault.applicable and run.verdict.passed


def _ids(runs: Sequence[RunRecord],
         keep: Callable[[RunRecord], bool] | None = None) -> str:
    chosen = [r for r in runs if keep is None or keep(r)]
    return ", ".join(f"run `{r.run_id}`" for r in chosen)


def _shown(runs: Sequence[RunRecord]) -> str:
    """What the runs' instances became, in counts (their tables give the detail)."""
    return "; ".join(", ".join(f"{count} {name}" for name, count in r.verdict.counts.items()
                               if count) or "nothing finished" for r in runs)


def _title(engine: str) -> str:
    try:
        return describe(engine).title
    except Exception:  # an engine this graduate no longer knows: its name is enough
        return engine


def _unkeyed_steps(flow: Flow) -> list[str]:
    return [f"`{s.name}` ({s.system})" for s in flow.steps
            if not flow.system(s.system).honours_idempotency]


def _longest_work(flow: Flow) -> str:
    step = max(flow.steps, key=lambda s: s.work, default=None)
    return "" if step is None or not step.work else f"`{step.name}` works {step.work:g}s"


def _observe(run: RunRecord) -> Observation:
    fault = run.fault
    outcome = ("not applicable" if not fault.applicable else
               "passed" if run.verdict.passed else "failed")
    return Observation(run_id=run.run_id, engine=run.engine, description=fault.description,
                       profile=run.profile, outcome=outcome, shown=_what_it_showed(run))


def _what_it_showed(run: RunRecord) -> str:
    if not run.fault.applicable:
        return run.fault.reason
    verdict = run.verdict
    parts = [f"{count} {name}" for name, count in verdict.counts.items() if count]
    if verdict.hit_by_fault:
        parts.append(f"resumed exactly {verdict.resumed_exactly}/{verdict.hit_by_fault}")
    if verdict.unabsorbed_duplicates:
        parts.append(f"{verdict.unabsorbed_duplicates} duplicate(s) not absorbed")
    for instance in run.verdicts:
        if instance.starts is not None:
            sets = len(instance.starts.effect_sets)
            parts.append(f"second start {'refused' if instance.starts.refused else 'accepted'}"
                         f", {sets} set(s) of effects")
        if instance.rollback is not None:
            undone = ", ".join(instance.rollback.compensated) or "nothing"
            parts.append(f"compensated {undone}")
            parts += list(instance.rollback.problems)
    if run.options.time_scale is not None:
        parts.append(f"time scale {run.options.time_scale.label}")
    if not verdict.passed and verdict.failures:
        parts.append(verdict.failures[0])
    return "; ".join(dict.fromkeys(parts))


def _table(observations: Sequence[Observation]) -> list[str]:
    rows = ["| run | engine | fault | profile | outcome | what it showed |",
            "|---|---|---|---|---|---|"]
    rows += [f"| `{o.run_id}` | {o.engine} | {_cell(o.description)} | {o.profile} | "
             f"{o.outcome} | {_cell(o.shown)} |" for o in observations]
    return rows


def _cell(text: str) -> str:
    flat = text.replace("|", "\\|").replace("\n", " ")
    return flat if len(flat) <= _CELL else flat[:_CELL - 1].rstrip() + "…"

