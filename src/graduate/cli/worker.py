"""`graduate worker`: one worker on this host, taking its fault commands from the ledger."""

from __future__ import annotations

import threading
from typing import Annotated

import typer
from rich.markup import escape

from graduate.adapters import engine_names
from graduate.cli.common import TimeScaleOption, console, settings
from graduate.fleet.agent import DEFAULT_POOL, AgentOptions, open_agent
from graduate.redaction import redact_url
from graduate.timescale import TimeScale


def worker(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(
        metavar="FLOW_OR_APP",
        help="A flow name from the spikes folder, a .toml file, or module:ATTRIBUTE; or an "
             "app declared in \\[tool.graduate.apps.NAME] (its own worker runs).")],
    engine: Annotated[str, typer.Option(
        "--engine", "-e",
        help=f"Engine: {', '.join(engine_names())} (for an app: temporal or celery).")],
    pool: Annotated[str, typer.Option(
        help="The run ID the worker's queues are named by; the harness reaches the "
             "worker through the same one.")] = DEFAULT_POOL,
    name: Annotated[str | None, typer.Option(
        help="The worker's name in the registry (default HOST-ENGINE-FLOW). A worker "
             "started again under the same name takes over: the commands the one before "
             "took are never run again.")] = None,
    profile: Annotated[str, typer.Option(
        help="Engine settings profile (as `graduate chaos --profile`).")] = "defaults",
    code_version: Annotated[str | None, typer.Option(
        help="The version of the code to register (an image tag, say). Default: "
             "graduate's version and the flow's.")] = None,
    time_scale: TimeScaleOption = "1",
) -> None:
    """Run one worker against external services and let the harness break it from afar.

    The worker registers in the ledger (PostgreSQL, shared with the harness) with its
    host, pid, engine, flow or app and code version, sends a heartbeat, and carries out
    the fault commands `graduate chaos --workers external` writes there: kill its process
    group or a pool child, stop it warm or cold, restart it, deploy a changed flow.

    Services come from the root options, GRADUATE_* variables or \\[tool.graduate]; keep
    passwords and API keys in the environment or pyproject, not on a command line.

    Example: GRADUATE_LEDGER_URL=postgresql://... GRADUATE_TEMPORAL_ADDRESS=temporal:7233
    graduate worker partner_approval --engine temporal --name worker-1

    Runs until SIGTERM or Ctrl-C, which stop the worker's whole process group. Exits 2 on
    bad input, an unreachable service, or when another agent took over its name.
    """
    config = settings(ctx)
    options = AgentOptions(target=target, engine=engine, pool=pool, worker_id=name,
                           profile=profile, code_version=code_version,
                           time_scale=TimeScale.parse(time_scale))

    def log(line: str) -> None:
        console.print(escape(line))

    with open_agent(config, options, log) as agent:
        registered = agent.worker
        console.print(
            f"worker {escape(registered.worker_id)} (epoch {registered.epoch}): "
            f"{escape(registered.engine)} {escape(registered.target)}, pid {registered.pid}, "
            f"pool {escape(registered.pool)}, {escape(registered.code_version)}; taking "
            f"commands from {escape(redact_url(agent.fleet.url))}")
        agent.serve(threading.Event())
