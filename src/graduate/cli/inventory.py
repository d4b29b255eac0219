"""`graduate inventory PATH`: what in a Celery codebase should graduate, and why."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from graduate import __version__
from graduate.cli.common import console, err_console, given_path
from graduate.errors import ConfigError
from graduate.migrate.inventory import Inventory, flow_named
from graduate.migrate.inventory import inventory as read_inventory
from graduate.migrate.inventory.flowfile import flow_toml
from graduate.migrate.inventory.gate import THRESHOLDS, check, failures
from graduate.migrate.inventory.jsonform import to_json
from graduate.migrate.inventory.markdown import to_markdown


class OutputFormat(StrEnum):
    TABLE = "table"
    MD = "md"
    JSON = "json"
    SARIF = "sarif"


def inventory(
    path: Annotated[str, typer.Argument(  # a str: typer would turn "" into "."
        help="The Celery codebase: a folder (or one .py file). It is read, never imported.")],
    output_format: Annotated[OutputFormat, typer.Option(
        "--format", help="table (terminal; Markdown with --out), md, json, or sarif (for "
                         "code scanning).")
    ] = OutputFormat.TABLE,
    out: Annotated[Path | None, typer.Option(
        parser=given_path,
        help="Write the report (or, with --flow, the flow file) here instead of stdout.")
    ] = None,
    fail_on: Annotated[list[str] | None, typer.Option(
        help=f"Exit 1 when a hazard is at least this severe or a flow is recommended at "
             f"least this strongly; repeatable. One of: {', '.join(THRESHOLDS)}.")] = None,
    flow: Annotated[str | None, typer.Option(
        help="Write a flow definition (TOML) for this found flow, ready for "
             "`graduate matrix`.")] = None,
) -> None:
    """Find what should graduate in a Celery codebase: tasks, settings, canvas, beat,
    hand-made state machines, compensation, hazards, and flows ranked with reasons.

    Example: graduate inventory src/ --format md --fail-on high

    Example: graduate inventory src/ --flow partner_approval --out spikes/partner.toml
    """
    thresholds = check(fail_on or [])
    found = read_inventory(path)
    if flow is not None:
        text = flow_toml(found, flow_named(found, flow))
        if out is None:
            typer.echo(text)
        else:
            _write(out, text)
            err_console.print(f"wrote flow {flow} to {out}; next: graduate matrix {out}",
                              soft_wrap=True, markup=False)
    elif output_format is OutputFormat.TABLE and out is None:
        _print_tables(found)
    else:
        text = _render(found, output_format)
        if out is None:
            typer.echo(text, nl=False)  # machine formats go out byte for byte, not through rich
        else:
            _write(out, text)
    reasons = failures(found, thresholds)
    if reasons:
        err_console.print(f"[bold red]--fail-on:[/] {len(reasons)} reason(s)", soft_wrap=True)
        for reason in reasons:
            err_console.print(f"  {reason}", soft_wrap=True, markup=False)
        raise typer.Exit(1)


def _write(out: Path, text: str) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"--out {out} cannot be written ({error.strerror}); give a file "
                          "path in a folder you can write to") from error


def _render(found: Inventory, output_format: OutputFormat) -> str:
    if output_format is OutputFormat.JSON:
        return to_json(found) + "\n"
    if output_format is OutputFormat.SARIF:
        # Here, not at the top: the SARIF rules come with the reader and libcst, which
        # every `graduate` process would load otherwise (inventory() loads them itself).
        from graduate.migrate.inventory.sarif import repository_of, to_sarif

        return to_sarif(found, __version__, repository_of(Path(found.root))) + "\n"
    return to_markdown(found)


_SKIPPED_SHOWN = 3


def _print_tables(found: Inventory) -> None:
    if not found.flows:
        console.print(f"No Celery task found in {found.root} ({found.files} Python files read; "
                      "a task whose function is known only at run time is not seen).", markup=False)
    flows = Table(title=f"Flows in {found.root}, ranked", caption_justify="left")
    for column in ("#", "flow", "recommendation", "class", "criteria", "hazards", "steps",
                   "entry"):
        flows.add_column(column)
    for number, item in enumerate(found.flows, 1):
        flows.add_row(str(number), item.name, str(item.recommendation), item.classification,
                      f"{item.workflow_criteria}/4", str(len(item.hazards)),
                      " -> ".join(s.task for s in item.steps), str(item.location))
    if found.flows:
        console.print(flows)
    if found.hazards:
        hazards = Table(title="Hazards")
        for column in ("severity", "rule", "task", "where", "why"):
            hazards.add_column(column)
        for hazard in found.hazards:
            hazards.add_row(str(hazard.severity), hazard.rule, hazard.task,
                            str(hazard.location), hazard.why)
        console.print(hazards)
    counts = {kind.value: len(found.of_kind(kind)) for kind in {f.kind for f in found.findings}}
    console.print(f"{found.files} files; findings: "
                  + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"),
                  markup=False)
    # A large codebase can have dozens: the first few here, every one in md and json.
    for skipped in found.skipped[:_SKIPPED_SHOWN]:
        err_console.print(f"skipped {skipped.location}: {skipped.reason}", markup=False,
                          soft_wrap=True)
    if len(found.skipped) > _SKIPPED_SHOWN:
        more = len(found.skipped) - _SKIPPED_SHOWN
        err_console.print(f"skipped {more} more place{'s' if more > 1 else ''} "
                          f"({len(found.skipped)} in all): --format md or json lists each "
                          "with the reason", markup=False, soft_wrap=True)
    console.print("Details: --format md or json; a flow file: --flow NAME", markup=False)
