"""`graduate flows`: the flows in the spikes folder, validated."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from graduate.cli.common import console, print_error, settings
from graduate.errors import FlowError
from graduate.flow import Flow, Step, Timer, Wait, discover


def flows(ctx: typer.Context) -> None:
    """List the flows found in the spikes folder, with their classes, and any that are invalid.

    Example: graduate flows

    Exits with 2 when a flow file is invalid, so CI can use it as a check.
    """
    config = settings(ctx)
    found = discover(config.spikes_dir)
    if not found:
        raise FlowError(f"no flow files (*.toml) in {config.spikes_dir}; add one, or set "
                        "`spikes = \"path\"` in [tool.graduate] of pyproject.toml")
    table = Table(title=f"Flows in {config.spikes_dir}")
    for column in ("flow", "version", "classes", "steps", "waits", "timers", "file"):
        table.add_column(column)
    broken: list[FlowError] = []
    for path, flow in found:
        if isinstance(flow, Flow):
            table.add_row(
                flow.name, str(flow.version),
                f"{flow.approval_class} {flow.reversibility_class} {flow.sensitivity_class}",
                str(_count(flow, Step)), str(_count(flow, Wait)), str(_count(flow, Timer)),
                escape(path.name),
            )
        else:
            table.add_row(f"[red]{escape(path.stem)}[/]", "", "[red]invalid[/]", "", "", "",
                          escape(path.name))
            broken.append(flow)
    console.print(table)
    for error in broken:
        print_error(str(error), label="invalid")
    if broken:
        raise typer.Exit(2)


def _count(flow: Flow, kind: type[Step] | type[Wait] | type[Timer]) -> int:
    return sum(1 for node in flow.flat_nodes if isinstance(node, kind))
