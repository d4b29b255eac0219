"""`graduate chaos` (one run under a fault) and `graduate matrix` (every combination)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

import graduate
from graduate import CellOutcome, ChaosResult, Resume, RunVerdict, TimelineEvent, Verdict
from graduate.adapters import engine_names
from graduate.chaos.changes import CHANGES
from graduate.chaos.faults import (
    HITS,
    deploy_change,
    descriptions,
    double_start,
    fault_names,
    stop_worker,
)
from graduate.chaos.matrix import DEFAULT_FAULTS, DEFAULT_INSTANCES
from graduate.chaos.profiles import PROFILES
from graduate.cli.common import InputOption, TimeScaleOption, console, given_path, settings

VERDICT_STYLE = {Verdict.COMPLETED: "green", Verdict.COMPENSATED: "yellow",
                 Verdict.FAILED: "red", Verdict.LOST: "bold red", Verdict.STUCK: "bold red"}
EvidenceOption = Annotated[Path | None, typer.Option(
    parser=given_path,
    help="Evidence folder (default: .graduate/evidence, or `evidence` in \\[tool.graduate]).")]
HitOption = Annotated[str, typer.Option(
    help=f"Which instances the fault hits ({', '.join(HITS)}): the first to reach the fault "
         "point, or every one as it reaches it (at a wait: once all wait there).")]
WorkersOption = Annotated[str, typer.Option(
    help="Where the workers come from: local (each run starts its own) or external "
         "(workers registered by `graduate worker` on any host, driven through the "
         "PostgreSQL ledger; name the services they use and that ledger).")]
JobsOption = Annotated[int, typer.Option(
    help="Cells to run at once, in lanes: each lane runs an engine's cells one after "
         "another on a Temporal server or Redis of its own, each cell with its own workers "
         "and queues (a cell mostly waits for an engine's recovery, so they overlap well).")]
ChangeOption = Annotated[str, typer.Option(
    help=f"{deploy_change.NAME}: {deploy_change.CHANGE.help} ({', '.join(CHANGES)}): the "
         "first two steps swapped, or a step added in front.")]


def chaos(
    ctx: typer.Context,
    flow: Annotated[str, typer.Argument(
        help="A flow name from the spikes folder or a file, or an app declared in "
             "\\[tool.graduate.apps.NAME] (its own workers run).")],
    engine: Annotated[str, typer.Option(
        "--engine", "-e", help=f"One of {', '.join(engine_names())}; for an app, the engine "
                               "it declares: temporal or celery.")],
    fault: Annotated[str, typer.Option(help="FAULT or FAULT+FLAG (as in a matrix cell: "
                                            f"{double_start.NAME}+{double_start.CRASH.name}). "
                                            + "; ".join(
                                                f"{k}: {v}" for k, v in
                                                descriptions().items()))],
    at: Annotated[str | None, typer.Option(
        help="Where the fault fires: STEP:before-effect, STEP:after-effect (effect applied, "
             "step not yet acknowledged), WAIT:during-wait, or +SECONDS.")] = None,
    instances: Annotated[int, typer.Option(help="Instances in flight.")] = 1,
    profile: Annotated[str, typer.Option(
        help="; ".join(f"{k}: {v}" for k, v in PROFILES.items())
        + "; or one of the project's own (\\[tool.graduate.profiles.NAME])")] = "defaults",
    restart_delay: Annotated[float, typer.Option(
        help="Seconds the operator takes to restart what was killed.")] = 1.0,
    partition_for: Annotated[float, typer.Option(
        help="Seconds a partition lasts before it heals.")] = 5.0,
    versioned: Annotated[bool, typer.Option(
        help=f"{deploy_change.NAME}: {deploy_change.VERSIONED.help}.")] = False,
    pinned: Annotated[bool, typer.Option(
        help=f"{deploy_change.NAME}: {deploy_change.PINNED.help}.")] = False,
    change: ChangeOption = "reorder",
    hit: HitOption = "one",
    cold: Annotated[bool, typer.Option(
        help=f"{stop_worker.NAME}: {stop_worker.COLD.help}.")] = False,
    wait_deadline: Annotated[float | None, typer.Option(
        help="Shorten the flow's wait deadlines to this many seconds for the run.")] = None,
    timeout: Annotated[float, typer.Option(
        help="The run's deadline in seconds; unfinished instances are then judged stuck "
             "or lost.")] = 90.0,
    time_scale: TimeScaleOption = "1",
    input_: InputOption = None,
    workers: WorkersOption = "local",
    evidence: EvidenceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdicts as JSON.")] = False,
) -> None:
    """Run a flow under one fault and judge, from the ledger and the engine's own record,
    what became of every instance.

    Example: graduate chaos partner_approval -e celery-chain --fault kill-worker
    --at activate:before-effect --profile tuned

    With --workers external the run drives workers registered by `graduate worker`
    (on other hosts), firing the fault as commands in the ledger their agents carry out.

    Exits 0 when no commitment was lost or stuck, no duplicate went unabsorbed and every
    instance hit resumed at the step in flight; 1 otherwise; 2 on bad input.
    """
    header = f"[bold]{escape(flow)}[/] on {escape(engine)} ({escape(profile)}) under " + (
        escape(f"{fault} at {at}" if at else fault))
    shown: list[str] = []

    def event(item: TimelineEvent) -> None:
        if not shown:  # once the run has started: bad input prints only its error
            console.print(header)
            shown.append(header)
        _event(item)

    result = graduate.chaos(
        flow, engine=engine, fault=fault, at=at, instances=instances, profile=profile,
        timeout=timeout, restart_delay=restart_delay, partition_for=partition_for,
        versioned=versioned, pinned=pinned, cold=cold, change=change, hit=hit,
        wait_deadline=wait_deadline, time_scale=time_scale, workers=workers,
        inputs=input_, settings=settings(ctx), evidence=evidence,
        on_event=None if as_json else event)
    if as_json:
        console.print_json(json.dumps({**asdict(result), "plan": result.plan.to_dict()},
                                      default=str))
    else:
        if not shown:
            console.print(header)
        _print_result(result)
    if result.applicable and not result.verdict.passed:
        raise typer.Exit(1)


def _event(event: TimelineEvent) -> None:
    console.print(f"  [dim]{event.at:7.2f}s[/] {event.kind}: {escape(event.detail)}")


def _print_result(result: ChaosResult) -> None:
    if not result.applicable:
        console.print(f"[yellow]not applicable:[/] {escape(result.reason)}")
        return
    table = Table(title=f"Verdicts (run {result.run_id})")
    for column in ("instance", "verdict", "in flight", "resumed at", "time to resume",
                   "time to complete", "effects", "correlation ID", "why"):
        table.add_column(column)
    for item in result.instances:
        resume = item.resume
        effects = ", ".join(
            f"{e.step}{' undo' if e.kind == 'compensation' else ''} x{e.applied}"
            + (f"(+{e.absorbed} absorbed)" if e.absorbed else "")
            for e in item.effects if e.applied or e.absorbed)
        table.add_row(
            item.instance_id, f"[{VERDICT_STYLE[item.verdict]}]{item.verdict}[/]",
            "-" if resume is None else (
                resume.in_flight + ("" if resume.affected_as == "at the fault point"
                                    else f" ({resume.affected_as})")),
            "-" if resume is None else _resumed(resume),
            ("continued" if resume is not None and resume.continued
             else _seconds(resume.time_to_resume if resume else None)),
            _seconds(item.time_to_complete), effects, item.correlation_id, item.reason)
    console.print(table)
    if not result.fired:
        console.print(f"[yellow]the fault did not fire:[/] {escape(result.reason)}")
    if result.verdict.passed:
        hit = result.verdict.hit_by_fault
        console.print("[bold green]passed[/]: nothing lost or stuck, no unabsorbed duplicate, "
                      f"the {hit} instance(s) the fault caught went on at the step in flight"
                      + _affected(result.verdict))
    else:
        console.print("[bold red]failed[/]:")
        for failure in result.verdict.failures:
            console.print(f"  - {escape(failure)}", soft_wrap=True)
    if result.time_scale is not None:
        console.print(f"time scale: {escape(result.time_scale.describe())}")
    console.print(f"evidence: {escape(str(result.evidence))}")


def _affected(verdict: RunVerdict) -> str:
    """Of the instances the fault caught, how many were not at its point, in words."""
    parts = [f"{count} {what}" for count, what in ((verdict.interrupted, "cut short"),
                                                  (verdict.held_up, "only held up"))
             if count]
    return f" ({', '.join(parts)})" if parts else ""


def _resumed(resume: Resume) -> str:
    where = resume.resumed_at or "nothing"
    if resume.reran:
        return f"{where} ✗ (re-ran {', '.join(resume.reran)})"
    return f"{where} {'✓' if resume.exact else '✗'}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def matrix(
    ctx: typer.Context,
    flow: Annotated[str | None, typer.Argument(
        help="A flow name from the spikes folder or a file, or an app declared in "
             "\\[tool.graduate.apps.NAME] (not needed with --resume).")
    ] = None,
    engines: Annotated[str | None, typer.Option(
        help=f"Comma-separated engines (default: {','.join(engine_names())}; for an app, "
             "those it declares).")] = None,
    faults: Annotated[str, typer.Option(
        help=f"Comma-separated faults, each FAULT[+OPTION]\\[@STEP:POINT] (an option is a "
             f"flag the fault takes, such as {deploy_change.NAME}+"
             f"{deploy_change.VERSIONED.name}). Known: {', '.join(fault_names())}."
    )] = ",".join(DEFAULT_FAULTS),
    profiles: Annotated[str, typer.Option(
        help=f"Comma-separated profiles: {', '.join(PROFILES)}, or the project's own "
             "(\\[tool.graduate.profiles.NAME]).")] = "defaults",
    at: Annotated[str | None, typer.Option(
        help="Fault point for faults given without one (default: the first step after the "
             "first wait, before its effect).")] = None,
    instances: Annotated[int, typer.Option(help="Instances per cell.")] = DEFAULT_INSTANCES,
    hit: HitOption = "one",
    change: ChangeOption = "reorder",
    timeout: Annotated[float, typer.Option(help="Deadline of each run, seconds.")] = 90.0,
    restart_delay: Annotated[float, typer.Option(
        help="Seconds the operator takes to restart what was killed.")] = 1.0,
    resume: Annotated[bool, typer.Option(
        help="Continue the latest matrix (or --matrix-id) where it stopped.")] = False,
    matrix_id: Annotated[str | None, typer.Option(help="Matrix to resume.")] = None,
    time_scale: TimeScaleOption = "1",
    input_: InputOption = None,
    workers: WorkersOption = "local",
    jobs: JobsOption = 1,
    evidence: EvidenceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the matrix as JSON.")] = False,
) -> None:
    """Run a flow under every combination of engine, fault and profile, and summarise.

    Each cell is one chaos run; the matrix is saved after every cell, so an interrupted
    matrix loses nothing finished and `--resume` runs only what is left. With --jobs N,
    N cells run at once, each engine's in lanes that start their servers once.

    Example: graduate matrix partner_approval --engines temporal,celery-chain
    --faults kill-worker,restart-broker,restart-server --profiles defaults,tuned
    """
    with ExitStack() as stack:
        bars: list[tuple[Progress, TaskID]] = []

        def planned(cells: int) -> None:  # the bar once the options are checked
            progress = stack.enter_context(Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=console, disable=as_json))
            bars.append((progress, progress.add_task("matrix", total=cells)))

        def advance(cell: CellOutcome, number: int, total: int) -> None:
            progress, task = bars[0]
            progress.update(task, total=total, completed=number,
                            description=f"{cell.engine} {cell.fault} {cell.profile}")

        result = graduate.matrix(
            flow, engines=None if engines is None else _split(engines), faults=_split(faults),
            profiles=_split(profiles),
            at=at, instances=instances, hit=hit, change=change, timeout=timeout,
            restart_delay=restart_delay, time_scale=time_scale, resume=matrix_id or resume,
            workers=workers, jobs=jobs, inputs=input_, settings=settings(ctx),
            evidence=evidence, on_cell=advance, on_planned=planned)
    if as_json:
        console.print_json(result.evidence.read_text(encoding="utf-8"))
        return
    console.print(matrix_table(result.matrix_id, result.cells))
    console.print(f"evidence: {result.evidence}")


def _split(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def matrix_table(matrix_id: str, cells: Sequence[CellOutcome]) -> Table:
    """Engine by fault: what became of the commitments, and how the engine resumed."""
    table = Table(title=f"Matrix {matrix_id}", caption_justify="left")
    for column in ("engine", "fault", "at", "profile", "completed", "compensated", "failed",
                   "lost", "stuck", "duplicated", "absorbed", "resumed exactly",
                   "median resume", "result"):
        table.add_column(column)
    notes: list[str] = []
    for cell in cells:
        s = cell.summary
        if cell.status != "done" or s is None:
            result = "[dim]pending[/]"
            if cell.status == "not-applicable":
                notes.append(f"{cell.engine} {cell.fault}: {s.reason if s else ''}")
                result = f"[dim]n/a ({len(notes)})[/]"
            table.add_row(cell.engine, cell.label, cell.at or "-", cell.profile,
                          *["-"] * 9, result)
            continue
        resume = s.median_time_to_resume
        table.add_row(
            cell.engine, cell.label, cell.at or "-", cell.profile,
            str(s.completed), str(s.compensated), _alarm(s.failed),
            _alarm(s.lost), _alarm(s.stuck), _alarm(s.unabsorbed_duplicates),
            str(s.absorbed_duplicates), f"{s.resumed_exactly}/{s.hit_by_fault}",
            "-" if resume is None else f"{resume:.1f}s",
            "[green]pass[/]" if s.passed else "[red]fail[/]",
        )
    if notes:
        table.caption = "\n".join(f"({n}) {text}" for n, text in enumerate(notes, 1))
    return table


def _alarm(count: int) -> str:
    return f"[bold red]{count}[/]" if count else "0"
