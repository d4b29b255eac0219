"""`graduate demo`: the main job of the README, on the sample spike."""

from __future__ import annotations

from typing import Annotated

import typer

from graduate.adapters import ENGINES
from graduate.cli.common import console, settings
from graduate.cli.run import run_all
from graduate.runner import RunOptions

SAMPLE_FLOW = "partner_approval"


def demo(
    ctx: typer.Context,
    instances: Annotated[int, typer.Option(help="Instances per engine.")] = 3,
) -> None:
    """Run the sample spike (partner_approval) on Temporal and on both Celery strategies.

    Starts a local Temporal server and Redis once, runs the flow's instances on each
    engine with the approval granted, prints what became of each instance and a
    comparison, and stops everything it started.

    Example: graduate demo --instances 5
    """
    console.print(f"[bold]graduate demo[/]: {SAMPLE_FLOW} on {', '.join(ENGINES)}")
    run_all(settings(ctx), [
        RunOptions(flow=SAMPLE_FLOW, engine=engine, instances=instances,
                   decisions={"approval": "approve"})
        for engine in ENGINES
    ])
