"""`graduate bench`: measure what graduate costs and write reports/benchmarks.md."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from graduate.bench import SECTIONS, BenchOptions, previous_bench, run_bench, write_bench
from graduate.cli.common import console, given_path, settings
from graduate.errors import ConfigError


def _numbers(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a comma-separated list of whole numbers, "
                          "for example 100,1000,5000") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def bench(
    ctx: typer.Context,
    flow: Annotated[str, typer.Argument(help="The flow to bench (no timers).")]
    = "partner_approval",
    sections: Annotated[str, typer.Option(
        help=f"Comma-separated sections to run: {', '.join(SECTIONS)}.")] = ",".join(SECTIONS),
    instances: Annotated[int, typer.Option(
        help="Instances per run in the adapter-overhead section.")] = 100,
    repeats: Annotated[int, typer.Option(
        help="Runs per side (graduate, plain SDK) in the adapter-overhead section.")] = 3,
    scale: Annotated[str, typer.Option(
        help="Comma-separated instance counts for the scale section (at the fewest steps).")]
    = "100,1000,5000",
    scale_steps: Annotated[str, typer.Option(
        help="Comma-separated steps per flow for the scale section (at the fewest "
             "instances).")] = "4,8,16",
    scale_engines: Annotated[str, typer.Option(
        help="Comma-separated engines of the scale section (default: every engine).")] = "",
    scale_per_instance: Annotated[float, typer.Option(
        help="Seconds added to a scale run's deadline for each of its instances.")] = 1.0,
    faults: Annotated[str, typer.Option(help="Comma-separated faults of the matrix section.")]
    = ",".join(BenchOptions.matrix_faults),
    timeout: Annotated[float, typer.Option(help="Deadline of each run, seconds.")] = 300.0,
    out: Annotated[Path | None, typer.Option(
        parser=given_path,
        help="Folder for benchmarks.md, benchmarks.json and the charts (default: reports/).")]
    = None,
) -> None:
    """Measure graduate: `graduate.effect`'s cost, each adapter against the same flow written
    with the plain SDK (side by side, as ratios with their spread), a crash matrix's wall
    time and time to resume under defaults and tuned, and scale under a fault.

    Example (a short run): graduate bench --instances 10 --repeats 2 --scale 20,50
    """
    config = settings(ctx)
    options = BenchOptions(flow=flow, sections=_names(sections), instances=instances,
                           repeats=repeats, scale=_numbers(scale, "--scale"),
                           scale_steps=_numbers(scale_steps, "--scale-steps"),
                           scale_per_instance=scale_per_instance,
                           matrix_faults=_names(faults), timeout=timeout)
    if scale_engines:
        options = replace(options, scale_engines=_names(scale_engines))
    destination = out or config.project_dir / "reports"
    previous_bench(destination)  # a folder it cannot write to is refused before it measures
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("bench", total=options.steps())

        def advance(what: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, description=what)

        results = run_bench(config, options, on_progress=advance)
    for path in write_bench(results, destination):
        console.print(f"wrote {path}", soft_wrap=True)
