"""`graduate run`: run a flow on one or more engines and show what became of each instance."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

import graduate
from graduate import Decision, Failure, InstanceState, InstanceStatus, RunResult
from graduate.adapters import engine_names
from graduate.cli.common import InputOption, TimeScaleOption, console, settings
from graduate.errors import ConfigError

STATE_STYLE = {
    InstanceState.COMPLETED: "green", InstanceState.COMPENSATED: "yellow",
    InstanceState.FAILED: "red", InstanceState.WAITING: "cyan", InstanceState.RUNNING: "cyan",
    InstanceState.UNKNOWN: "red",
}


def run(
    ctx: typer.Context,
    flow: Annotated[str, typer.Argument(
        help="A flow name from the spikes folder, a .toml file, or module:ATTRIBUTE; or an "
             "app declared in \\[tool.graduate.apps.NAME] (its own workers run).")],
    engine: Annotated[list[str], typer.Option(
        "--engine", "-e",
        help=f"Engine to run on: {', '.join(engine_names())} (for an app: temporal or "
             "celery). Repeat to run on several.")],
    instances: Annotated[int, typer.Option(help="Instances to start at once.")] = 1,
    workers: Annotated[int, typer.Option(help="Worker processes to start.")] = 1,
    timeout: Annotated[float, typer.Option(
        help="Seconds to wait for every instance to finish before giving up.")] = 120.0,
    signal: Annotated[list[str] | None, typer.Option(
        "--signal", "-s",
        help="Answer a wait as soon as an instance reaches it: SIGNAL=approve or "
             "SIGNAL=reject. Without it, waits run to their deadline or until "
             "`graduate signal` is sent from another terminal. SIGNAL=interrupt sends the "
             "flow's interrupt (see --interrupt-at).")] = None,
    interrupt_at: Annotated[str | None, typer.Option(
        help="With --signal SIGNAL=interrupt: send the interrupt while this step is in "
             "flight, or while the instance waits at this wait (default: as soon as the "
             "instance started).")] = None,
    fail: Annotated[list[str] | None, typer.Option(
        help="Make the external system of a step fail: STEP=transient:N (N times, then "
             "succeed) or STEP=permanent.")] = None,
    temporal_port: Annotated[int | None, typer.Option(
        help="Port for the local Temporal server (default: a free one).")] = None,
    redis_port: Annotated[int | None, typer.Option(
        help="Port for the local Redis (default: a free one).")] = None,
    time_scale: TimeScaleOption = "1",
    input_: InputOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Run a flow on real engines and print, per instance: status, steps done, effects, duration.

    Starts what it needs (a local Temporal dev server or Redis, unless external ones are
    configured or `graduate env up` keeps them running), starts the workers as separate
    processes, runs the instances, and stops everything it started.

    Example: graduate run partner_approval --engine temporal --engine celery-chain
    --instances 3 --signal approval=approve

    Exits 0 when every instance completed or was compensated, 1 otherwise.
    """
    config = settings(ctx)
    # The flow (a declared app: its declaration too) read and checked once per engine,
    # before the first run starts; the first run checks it against the options, which
    # are the same for every engine.
    targets = {name: graduate.resolve(flow, engine=name, settings=config) for name in engine}
    decisions = _decisions(signal or [])
    failures = [Failure.parse(text) for text in fail or []]
    results = []
    for name in engine:
        result = graduate.run(
            targets[name], engine=name, instances=instances, workers=workers, timeout=timeout,
            decisions=decisions, failures=failures, settings=config,
            interrupt_at=interrupt_at, inputs=input_,
            temporal_port=temporal_port, redis_port=redis_port, time_scale=time_scale,
            on_status=None if as_json else _progress_of(
                f"[bold]Running {escape(flow)} on {name}[/] ({instances} instance(s))"))
        results.append(result)
        if not as_json:
            console.print(_table(result))
            if result.time_scale is not None:
                console.print(f"time scale: {escape(result.time_scale.describe())}")
            if result.not_started:
                console.print(
                    f"[red]{result.not_started} of {instances} instance(s) never started:[/] "
                    f"the run's --timeout passed while starting them; give a longer "
                    "--timeout or fewer --instances")
    if as_json:
        console.print_json(json.dumps([asdict(r) for r in results]))
    elif len(results) > 1:
        console.print(_comparison(results))
    if not all(r.succeeded for r in results):
        raise typer.Exit(1)


def _decisions(items: list[str]) -> dict[str, Decision]:
    decisions: dict[str, Decision] = {}
    for item in items:
        name, sep, decision = item.partition("=")
        if not sep or decision not in ("approve", "reject", "interrupt"):
            raise ConfigError(f"--signal {item!r} is not understood; write SIGNAL=approve or "
                              "SIGNAL=reject, for example --signal approval=approve (or "
                              "SIGNAL=interrupt for the flow's interrupt)")
        if name in decisions:  # the last would win in silence, alike or not
            raise ConfigError(f"--signal {name} is given twice ({decisions[name]}, then "
                              f"{decision}); answer it once")
        decisions[name] = decision  # type: ignore[assignment]
    return decisions


def _progress_of(header: str) -> Callable[[str, InstanceStatus], None]:
    """Print `header` once the run has started (bad input prints only its error), then
    each instance's state as it changes."""
    last_state: dict[str, InstanceState] = {}

    def progress(instance_id: str, status: InstanceStatus) -> None:
        if not last_state:
            console.print(header)
        if last_state.get(instance_id) is status.state:
            return
        last_state[instance_id] = status.state
        style = STATE_STYLE[status.state]
        detail = f": {escape(status.detail)}" if status.detail else ""
        console.print(f"  {instance_id} [{style}]{status.state}[/]{detail}")

    return progress


def _table(result: RunResult) -> Table:
    table = Table(title=f"{result.flow} on {result.engine} (run {result.run_id})")
    for column in ("instance", "status", "steps done", "effects", "duplicates", "duration",
                   "correlation ID", "detail"):
        table.add_column(column)
    for item in result.instances:
        style = STATE_STYLE[item.state]
        effects = str(item.effects_applied)
        if item.effects_absorbed:
            effects += f" (+{item.effects_absorbed} absorbed)"
        table.add_row(
            item.instance_id, f"[{style}]{item.state}[/]",
            f"{item.steps_done}/{item.steps_total}", effects,
            f"[red]{item.duplicates}[/]" if item.duplicates else "0",
            f"{item.duration:.1f}s" if item.duration is not None else "-",
            item.correlation_id, item.detail,
        )
    return table


def _comparison(results: list[RunResult]) -> Table:
    table = Table(title="The same flow on each engine")
    for column in ("engine", "instances", "completed", "compensated", "failed or unfinished",
                   "effects applied", "duplicates", "median duration"):
        table.add_column(column)
    for result in results:
        states = [i.state for i in result.instances]
        durations = sorted(i.duration for i in result.instances if i.duration is not None)
        median = f"{durations[len(durations) // 2]:.1f}s" if durations else "-"
        unfinished = sum(1 for s in states if s not in (InstanceState.COMPLETED,
                                                         InstanceState.COMPENSATED))
        table.add_row(
            result.engine, str(len(states)), str(states.count(InstanceState.COMPLETED)),
            str(states.count(InstanceState.COMPENSATED)), str(unfinished),
            str(sum(i.effects_applied for i in result.instances)),
            str(sum(i.duplicates for i in result.instances)), median,
        )
    return table
