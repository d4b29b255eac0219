"""`graduate signal`: deliver a human decision to a waiting instance."""

from __future__ import annotations

from typing import Annotated, Any

import typer

import graduate
from graduate.cli.common import console, settings
from graduate.errors import ConfigError
from graduate.files import parse_json


def signal_instance(
    ctx: typer.Context,
    instance: Annotated[str, typer.Argument(help="Instance ID, as `graduate run` prints it.")],
    name: Annotated[str, typer.Argument(
        help="Signal name the flow's wait takes, or the flow's interrupt signal.")],
    decision: Annotated[str | None, typer.Option(
        help="approve (the default) or reject; the interrupt signal takes none.")] = None,
    payload: Annotated[str | None, typer.Option(
        help="Extra JSON object to send with the decision.")] = None,
) -> None:
    """Send a signal (a human decision, or the flow's interrupt) to a running instance.

    The interrupt (declared by the flow's \\[interrupt] table) may come at any point: no
    further step starts, and every step that applied is compensated.

    Use it while `graduate run` waits in another terminal, with services kept up by
    `graduate env up` or given as external services.

    Example: graduate signal partner_approval-20261125T101500-ab12-0001 approval --decision reject
    """
    body: Any = parse_json(payload, "--payload", ConfigError) if payload else None
    sent = graduate.signal(instance, name, decision=decision, payload=body,
                           settings=settings(ctx))
    console.print(f"sent {sent.signal}={sent.decision} to {sent.instance_id} on {sent.engine}")
