"""`graduate scaffold FLOW --out DIR`: the Temporal package for a flow, ready to crash-test."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from graduate.cli.common import console, given_path, settings
from graduate.flow import load_flow
from graduate.migrate.scaffold import scaffold as write_package


def scaffold(
    ctx: typer.Context,
    flow: Annotated[str, typer.Argument(
        help="The flow: a name in the spikes folder, a .toml file (one `graduate inventory "
             "--flow` wrote, say), or module:ATTRIBUTE.")],
    out: Annotated[Path, typer.Option(
        parser=given_path,
        help="The folder to write the package into (created if need be).")],
    force: Annotated[bool, typer.Option(
        help="Overwrite files edited since they were generated.")] = False,
) -> None:
    """Write the Temporal code an expert would write for a flow: workflow, activities (each
    effect in graduate.effect), dataclass inputs, timeouts and retry policies, idempotency
    keys, compensation in reverse, signals with deadlines, parallel branches as concurrent
    tasks joined, heartbeats through a step's work, a worker, an app declaration for
    graduate, and a test.

    Regenerating over files edited since they were generated is refused (exit 2), naming
    them, unless --force.

    Example: graduate scaffold partner_approval --out ../partner-approval-temporal
    """
    loaded = load_flow(flow, spikes_dir=settings(ctx).spikes_dir)
    done = write_package(loaded, out, force=force)
    for name in done.written:
        console.print(f"wrote {out / name}", markup=False, soft_wrap=True)
    if done.unchanged:
        console.print(f"{len(done.unchanged)} file(s) already as generated", markup=False)
    console.print(
        f"next, in {out}: pytest (its test, on a local dev server); graduate chaos {done.app} "
        f"--engine temporal --fault kill-worker --at {loaded.steps[0].name}:before-effect",
        markup=False, soft_wrap=True)
