"""`graduate report`: render stored evidence for people and machines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from graduate.cli.common import console, settings
from graduate.evidence import EvidenceStore
from graduate.reports import FORMATS, build_report, parse_formats, write_reports


def report(
    ctx: typer.Context,
    matrix: Annotated[str | None, typer.Option(
        "--matrix", help="Matrix id (default: the latest matrix in the evidence folder).")
    ] = None,
    run: Annotated[list[str] | None, typer.Option(
        "--run", help="A run id instead of a matrix; repeat the option for several runs.")
    ] = None,
    flow: Annotated[str | None, typer.Option(
        "--flow", help="Every stored run of this flow (a crash-resume suite's evidence "
                       "holds runs of several flows).")
    ] = None,
    formats: Annotated[str, typer.Option(
        "--format", help=f"Comma-separated formats: {', '.join(FORMATS)}.")
    ] = ",".join(FORMATS),
    out: Annotated[Path | None, typer.Option(
        help="Folder to write the reports into (default: .graduate/reports).")] = None,
    evidence: Annotated[Path | None, typer.Option(
        help="Evidence folder (default: .graduate/evidence, or `evidence` in "
             "\\[tool.graduate]).")] = None,
) -> None:
    """Render a matrix (or a list of runs) from the evidence store: HTML and Markdown for
    people, JUnit XML and JSON for machines. Nothing is re-run, so a report can be
    regenerated at any time.

    Example: graduate report --format html,md --out reports/

    Example: graduate report --run 3fa2c1 --run 9b0d4e --format junit

    Example: graduate report --flow partner_approval --evidence .graduate/ci-evidence

    Exits 0 once the files are written, whatever the verdicts (the JUnit file carries them).

    Exits 2 when there is no evidence, or an id is unknown.
    """
    config = settings(ctx)
    wanted = parse_formats(formats)
    store = EvidenceStore(evidence or config.evidence_dir)
    built = build_report(store, matrix_id=matrix, run_ids=run or (), flow=flow)
    written = write_reports(built, out or config.state_dir / "reports", wanted)
    for name, path in zip(wanted, written, strict=True):
        console.print(f"{name}: {path}", soft_wrap=True)
    console.print(f"recommendation: {built.recommendation.headline}")
