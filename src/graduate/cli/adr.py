"""`graduate adr new|attach|status|promote|check`: ADRs that a flow graduates through."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from graduate.cli.common import console, given_path, settings
from graduate.config import Settings

# graduate.adr (with the evidence, the checker and jsonschema it reads) is imported by
# the command that runs, not here: every `graduate` process would pay for it otherwise.
if TYPE_CHECKING:
    from graduate.adr import GateResult

app = typer.Typer(
    help="Architecture decision records that move a flow from planned to shipped: "
         "planned → spiking → approved → shipped, each step only when its gate passes on "
         "the attached evidence.\n\nExample: graduate adr new partner_approval && graduate "
         "adr attach 3 m20736d && graduate adr promote 3 --to spiking",
    no_args_is_help=True,
)

AdrArgument = Annotated[str, typer.Argument(
    metavar="ADR", help="The ADR's number (3), file name, or path.")]
ByOption = Annotated[str | None, typer.Option(
    "--by", help="Who acts (default: $USER, else git's user.name).")]


def _who(config: Settings, by: str | None) -> str:
    from graduate.adr import AdrError, default_actor
    who = (by or "").strip() or default_actor(config.project_dir)
    if not who:
        raise AdrError("say who acts with --by NAME: neither $USER nor git's user.name is set")
    return who


@app.command()
def new(
    ctx: typer.Context,
    flow: Annotated[str, typer.Argument(help="A flow name from the spikes folder or a file.")],
    by: ByOption = None,
) -> None:
    """Write docs/adr/NNNN-graduate-FLOW.md for a flow, with status planned.

    Example: graduate adr new partner_approval

    Exits 2 for an unknown flow, or when the flow already has an open ADR.
    """
    from graduate.adr import load_policy, new_adr
    config = settings(ctx)
    document = new_adr(config.project_dir, flow, spikes_dir=config.spikes_dir,
                       who=_who(config, by), policy=load_policy(config.project_dir))
    console.print(f"wrote {escape(str(document.path))} ({document.record.status})",
                  soft_wrap=True)
    console.print(f"next: fill it in, then `graduate adr attach {document.record.number} "
                  "RUN_OR_MATRIX_ID`", soft_wrap=True)


@app.command(name="attach")
def attach_evidence(
    ctx: typer.Context,
    adr: AdrArgument,
    items: Annotated[list[str], typer.Argument(
        metavar="EVIDENCE...",
        help="Run ids, matrix ids (their runs come too), or JUnit XML files.")],
    evidence: Annotated[Path | None, typer.Option(
        "--evidence", parser=given_path,
        help="Evidence folder (default: .graduate/evidence, or `evidence` in "
             "\\[tool.graduate]).")] = None,
) -> None:
    """Pin evidence to an ADR by its sha256: runs, matrices and JUnit reports.

    Example: graduate adr attach 3 m20736d c12f1a reports/crash-resume.xml

    Exits 2 for an id or file that is not found, or evidence of another flow.
    """
    from graduate.adr import attach, load_policy
    from graduate.evidence import EvidenceStore
    config = settings(ctx)
    store = EvidenceStore(evidence or config.evidence_dir)
    done = attach(config.project_dir, adr, items, store,
                  policy=load_policy(config.project_dir))
    for attachment in done.added:
        via = f" (from matrix {attachment.via})" if attachment.via else ""
        console.print(f"attached {attachment.kind} {attachment.id}{via}: {escape(attachment.path)} "
                      f"sha256 {attachment.sha256[:12]}", soft_wrap=True)
    for attachment in done.already:
        console.print(f"already attached: {attachment.kind} {attachment.id}", soft_wrap=True)
    console.print(f"{done.document.name}: {len(done.document.record.evidence)} evidence "
                  "file(s) attached; its runbooks rewritten from them", soft_wrap=True)


@app.command(name="runbook")
def runbook(ctx: typer.Context, adr: AdrArgument) -> None:
    """Rewrite an ADR's Runbooks section (deploy, rollback, double start) from its flow's
    compensation paths and the verdicts of its attached runs, with the commands that
    rehearse each; `adr attach` does it too.

    Example: graduate adr runbook 3
    """
    from graduate.adr import find_document, load_policy, write_runbooks
    config = settings(ctx)
    document = write_runbooks(config.project_dir, find_document(config.project_dir, adr),
                              load_policy(config.project_dir))
    console.print(f"{document.name}: runbooks written from "
                  f"{sum(1 for a in document.record.evidence if a.kind == 'run')} attached "
                  "run(s)", soft_wrap=True)


@app.command()
def status(ctx: typer.Context) -> None:
    """The ADRs, their status, and what each still lacks for its next status.

    Example: graduate adr status
    """
    from graduate.adr import load_policy, standings
    config = settings(ctx)
    rows = standings(config.project_dir, load_policy(config.project_dir))
    if not rows:
        console.print("no graduate ADRs in docs/adr yet; write one with `graduate adr new "
                      "FLOW`")
        return
    table = Table(title="ADRs", show_lines=True)
    for column in ("ADR", "flow", "status", "next", "still lacks"):
        table.add_column(column, overflow="fold")
    for row in rows:
        if row.status is None:
            table.add_row(escape(row.name), "", "[red]invalid[/]", "", escape(row.error))
            continue
        lacks = "—"
        if row.gate is not None and row.next is not None:
            lacks = (f"[green]nothing: graduate adr promote {row.number} --to {row.next}[/]"
                     if row.gate.passed else
                     "\n".join(f"[red]✗[/] {escape(item.title)}" for item in row.gate.unmet))
        table.add_row(escape(row.name), row.flow, row.status.value,
                      row.next.value if row.next else "—", lacks)
    console.print(table)


@app.command(name="promote")
def promote_adr(
    ctx: typer.Context,
    adr: AdrArgument,
    to: Annotated[str, typer.Option(
        "--to", help="spiking, approved or shipped (one step on), or rejected or "
                     "superseded (with --reason).")],
    by: ByOption = None,
    reason: Annotated[str, typer.Option(
        help="Why; required for rejected and superseded.")] = "",
) -> None:
    """Move an ADR one status on when its gate passes, or close it with a reason.

    Records who, when and on which evidence (ids and sha256) in the front block and
    under "Status history".

    Example: graduate adr promote 3 --to approved --by "Dana Lee"

    Exits 1 with the unmet gate items when the gate does not pass; 2 for a step the
    lifecycle does not allow (skipping a status, going back, a closed ADR).
    """
    from graduate.adr import Status, load_policy, parse_status, promote
    config = settings(ctx)
    target = parse_status(to)
    result = promote(config.project_dir, adr, target, who=_who(config, by), reason=reason,
                     policy=load_policy(config.project_dir))
    name = result.document.name
    if not result.moved:
        console.print(f"[bold red]refused:[/] {escape(name)} cannot move to {target}; unmet:",
                      soft_wrap=True)
        _print_unmet(result.gate)
        raise typer.Exit(1)
    move = result.document.record.history[-1]
    pinned = len(move.evidence)
    console.print(f"{escape(name)}: {move.source} → {move.target} by {escape(move.who)} at "
                  f"{move.when}, on {pinned} evidence file(s)", soft_wrap=True)
    if target is Status.SHIPPED:
        console.print("shipped: keep `graduate adr check` in CI so the evidence stays as "
                      "promoted", soft_wrap=True)


def _print_unmet(gate: GateResult) -> None:
    for item in gate.unmet:
        console.print(f"  [red]✗[/] {escape(item.title)}", soft_wrap=True)
        for problem in item.problems:
            console.print(f"      {escape(problem)}", soft_wrap=True)


@app.command(name="check")
def check_adrs(ctx: typer.Context) -> None:
    """Verify, for CI, that every ADR's status is still supported by its evidence.

    Every attached file must be present with the sha256 it was pinned with, and the
    gate of the ADR's current status must still pass.

    Example: graduate adr check

    Exits 1 when any ADR has a problem (each is printed), 0 otherwise.
    """
    from graduate.adr import check, load_policy
    config = settings(ctx)
    checked, findings = check(config.project_dir, load_policy(config.project_dir))
    for finding in findings:
        console.print(f"[red]FAIL[/] {escape(finding.adr)}: {escape(finding.problem)}",
                      soft_wrap=True)
    console.print(f"{checked} ADR(s) checked, {len(findings)} problem(s)")
    if findings:
        raise typer.Exit(1)
