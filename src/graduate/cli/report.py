"""`graduate report`: render stored evidence for people and machines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from graduate.adr import load_policy
from graduate.cli.common import console, given_path, print_error, settings
from graduate.errors import ConfigError
from graduate.evidence import EvidenceStore
from graduate.reports import FORMATS, build_report, parse_formats, write_reports
from graduate.reports.index import build_index, write_index


def report(
    ctx: typer.Context,
    matrix: Annotated[str | None, typer.Option(
        "--matrix", help="Matrix id (default: the latest matrix in the evidence folder).")
    ] = None,
    run: Annotated[list[str] | None, typer.Option(
        "--run", help="A run id instead of a matrix; repeat the option for several runs.")
    ] = None,
    flow: Annotated[str | None, typer.Option(
        "--flow", help="The stored runs of this flow (a crash-resume suite's evidence "
                       "holds runs of several flows) that ran its current definition, as "
                       "the spikes folder holds it; the report says how many runs of older "
                       "definitions it left out.")
    ] = None,
    all_definitions: Annotated[bool, typer.Option(
        "--all-definitions", help="With --flow: the runs of every definition the flow had, "
                                  "each marked with its own.")
    ] = False,
    index: Annotated[bool, typer.Option(
        "--index", help="Write index.md instead: one page comparing every flow that has a "
                        "graduate ADR in docs/adr, from each ADR and the runs attached to "
                        "it (which graduate, which could stay on Celery, and why).")
    ] = False,
    formats: Annotated[str, typer.Option(
        "--format", help=f"Comma-separated formats: {', '.join(FORMATS)}.")
    ] = ",".join(FORMATS),
    out: Annotated[Path | None, typer.Option(
        parser=given_path,
        help="Folder to write the reports into (default: .graduate/reports).")] = None,
    evidence: Annotated[Path | None, typer.Option(
        parser=given_path,
        help="Evidence folder (default: .graduate/evidence, or `evidence` in "
             "\\[tool.graduate]).")] = None,
) -> None:
    """Render a matrix (or a list of runs) from the evidence store: HTML and Markdown for
    people, JUnit XML and JSON for machines. Nothing is re-run, so a report can be
    regenerated at any time.

    Example: graduate report --format html,md --out reports/

    Example: graduate report --run 3fa2c1 --run 9b0d4e --format junit

    Example: graduate report --flow partner_approval --evidence .graduate/ci-evidence

    Example: graduate report --flow partner_approval --all-definitions

    Example: graduate report --index --out reports

    Exits 0 once the files are written, whatever the verdicts (the JUnit file carries them).

    Exits 2 when there is no evidence, or an id is unknown.
    """
    config = settings(ctx)
    if index:
        if matrix or run or flow or evidence or all_definitions:
            raise ConfigError("--index reads each ADR's attached runs where they are; give "
                              "it without --matrix, --run, --flow or --evidence, and without "
                              "--all-definitions")
        target = out or config.state_dir / "reports"
        built_index = build_index(config.project_dir, load_policy(config.project_dir), target)
        console.print(f"index: {write_index(built_index, target)} "
                      f"({len(built_index.entries)} ADR(s))", soft_wrap=True)
        for name, why in built_index.unreadable:  # in the page, and said here
            print_error(f"{name} could not be read: {why}; `graduate adr check` lists what "
                        "to fix", label="warning")
        return
    wanted = parse_formats(formats)
    store = EvidenceStore(evidence or config.evidence_dir)
    built = build_report(store, matrix_id=matrix, run_ids=run or (), flow=flow,
                         all_definitions=all_definitions, settings=config)
    written = write_reports(built, out or config.state_dir / "reports", wanted)
    for name, path in zip(wanted, written, strict=True):
        console.print(f"{name}: {path}", soft_wrap=True)
    for note in built.definition_notes:
        console.print(f"note: {note}", soft_wrap=True)
    console.print(f"recommendation: {built.recommendation.headline}")
