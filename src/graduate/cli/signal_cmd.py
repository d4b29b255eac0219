"""`graduate signal`: deliver a human decision to a waiting instance."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from graduate.adapters import needs, open_engine
from graduate.cli.common import console, settings
from graduate.errors import ConfigError
from graduate.files import parse_json
from graduate.flow import load_flow
from graduate.ledger import Ledger
from graduate.services.provider import kept_services, open_services


def signal_instance(
    ctx: typer.Context,
    instance: Annotated[str, typer.Argument(help="Instance ID, as `graduate run` prints it.")],
    name: Annotated[str, typer.Argument(help="Signal name the flow's wait takes.")],
    decision: Annotated[str, typer.Option(help="approve or reject.")] = "approve",
    payload: Annotated[str | None, typer.Option(
        help="Extra JSON object to send with the decision.")] = None,
) -> None:
    """Send a signal (a human decision) to a running instance.

    Use it while `graduate run` waits in another terminal, with services kept up by
    `graduate env up` or given as external services.

    Example: graduate signal partner_approval-20261125T101500-ab12-0001 approval --decision reject
    """
    config = settings(ctx)
    if decision not in ("approve", "reject"):
        raise ConfigError(f"--decision {decision!r} must be approve or reject")
    body: dict[str, Any] = {}
    if payload:
        body = parse_json(payload, "--payload", ConfigError)
        if not isinstance(body, dict):
            raise ConfigError("--payload must be a JSON object, for example '{\"by\": \"ana\"}'")
    body["decision"] = decision
    record = Ledger(config.ledger).instance(instance)
    flow = load_flow(record.flow_source)
    if name not in {w.signal for w in flow.waits}:
        raise ConfigError(f"flow {flow.name!r} waits for no signal {name!r}; its waits take: "
                          f"{', '.join(w.signal for w in flow.waits) or 'none'}")
    if not (kept_services(config.state_dir) or config.temporal_address or config.broker_url):
        raise ConfigError("no running services to signal through: start them with "
                          "`graduate env up` before `graduate run`, or configure external ones")
    with open_services(config, needs([record.engine])) as services:
        # The run's own folder: engines route to that run's queues by its name.
        engine = open_engine(record.engine, flow, services,
                             config.state_dir / "runs" / record.run_id)
        try:
            engine.signal(instance, name, body)
        finally:
            engine.close()
    console.print(f"sent {name}={decision} to {instance} on {record.engine}")
