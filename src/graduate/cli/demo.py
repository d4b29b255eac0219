"""`graduate demo`: the main job of the README, the pilot's crash matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import graduate
from graduate import CellOutcome
from graduate.adapters import engine_names
from graduate.chaos.matrix import (
    DEFAULT_INSTANCES,
    DEMO_FAULTS,
    DEMO_FLOW,
    DEMO_TIMEOUT,
)
from graduate.cli.chaos import HitOption, matrix_table
from graduate.cli.common import console, given_path, settings
from graduate.errors import ConfigError
from graduate.evidence import EvidenceStore
from graduate.files import unwritable
from graduate.reports.build import build_report
from graduate.reports.render import write_reports


def demo(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(help="Deadline of each run, seconds.")]
    = DEMO_TIMEOUT,
    instances: Annotated[int, typer.Option(help="Instances per run.")] = DEFAULT_INSTANCES,
    hit: HitOption = "one",
    jobs: Annotated[int | None, typer.Option(
        help="Cells to run at once (default: one per engine), each engine's in lanes "
             "that share a server, each cell with its own workers.")] = None,
    out: Annotated[Path | None, typer.Option(
        parser=given_path,
        help="Folder for the HTML and Markdown reports (default: reports/).")] = None,
) -> None:
    """Run the pilot (partner_approval) under every fault on Temporal and on both
    Celery strategies, and summarise what each engine did with each commitment.

    Each engine's cells run one after another on a local Temporal server or Redis that
    the demo starts for them, and everything it starts is stopped again. The evidence
    goes to the evidence folder, and the HTML and Markdown reports to reports/. The
    engines run side by side, one cell each at a time by default: a few minutes on two
    cores.

    Example: graduate demo
    """
    config = settings(ctx)
    reports = out or config.project_dir / "reports"
    if problem := unwritable(reports):  # found now, not after minutes of running
        raise ConfigError(f"the reports cannot be written into {reports} ({problem}); give "
                          "--out a folder you can write to")
    engines = engine_names()
    at_once = "one per engine" if jobs is None else str(jobs)

    def banner(cells: int) -> None:  # once the options are checked: never before an error
        console.print(f"[bold]graduate demo[/]: the crash matrix of {DEMO_FLOW} on "
                      f"{', '.join(engines)}; {len(DEMO_FAULTS)} faults each, {cells} cells, "
                      f"{at_once} at once")

    def progress(cell: CellOutcome, number: int, total: int) -> None:
        result = ("n/a" if cell.status == "not-applicable"
                  else "pass" if cell.summary is not None and cell.summary.passed else "fail")
        console.print(f"  [{number}/{total}] {cell.key.split('|')[1].split('@')[0]} on "
                      f"{cell.engine}: {result}")

    result = graduate.matrix(DEMO_FLOW, engines=engines, faults=DEMO_FAULTS,
                             instances=instances, hit=hit, timeout=timeout, settings=config,
                             jobs=jobs, on_cell=progress, on_planned=banner)
    console.print(matrix_table(result.matrix_id, result.cells))
    built = build_report(EvidenceStore(config.evidence_dir), matrix_id=result.matrix_id,
                         settings=config)
    written = write_reports(built, reports, ("html", "md"))
    console.print(f"recommendation: {built.recommendation.headline}")
    console.print(f"evidence: {result.evidence}")
    for path in written:
        console.print(f"report: {path}", soft_wrap=True)
