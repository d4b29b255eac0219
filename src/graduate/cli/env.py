"""`graduate env up|down|status`: keep local services running between commands."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from graduate.cli.common import console, settings
from graduate.services.provider import KeptService, env_down, env_up, kept_services

app = typer.Typer(
    help="Keep a local Temporal server and Redis running between commands.\n\n"
         "Example: graduate env up && graduate run partner_approval -e temporal; "
         "graduate env down",
    no_args_is_help=True,
)


@app.command()
def up(
    ctx: typer.Context,
    temporal_port: Annotated[int | None, typer.Option(
        help="Port for Temporal (default: a free one).")] = None,
    redis_port: Annotated[int | None, typer.Option(
        help="Port for Redis (default: a free one).")] = None,
) -> None:
    """Start a local Temporal dev server and Redis, and leave them running.

    Later commands in this project use them instead of starting their own. Services
    configured as external are not started. State survives `down` and `up`: the
    Temporal server keeps its database in .graduate/temporal.db.

    Example: graduate env up --temporal-port 7233
    """
    kept = env_up(settings(ctx), temporal_port=temporal_port, redis_port=redis_port)
    _print(kept)


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop the services `graduate env up` started.

    Example: graduate env down
    """
    stopped = env_down(settings(ctx))
    names = ", ".join(s.name for s in stopped) or "nothing was running"
    console.print(f"stopped: {names}")


@app.command()
def status(ctx: typer.Context) -> None:
    """Show the services `graduate env up` keeps, and whether each is alive.

    Example: graduate env status
    """
    kept = kept_services(settings(ctx).state_dir)
    if not kept:
        console.print("no local services are kept up; start them with `graduate env up`")
        return
    _print(kept)


def _print(kept: dict[str, KeptService]) -> None:
    table = Table(title="Local services")
    for column in ("service", "address", "pid", "alive", "log"):
        table.add_column(column)
    for name, service in kept.items():
        alive = "[green]yes[/]" if service.alive() else "[red]no[/]"
        table.add_row(name, service.address, str(service.pid), alive, service.log)
    console.print(table)
