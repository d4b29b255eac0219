"""`graduate replay FLOW`: would a deploy of the current code break instances in flight?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

import graduate
from graduate.cli.common import console, given_path, settings
from graduate.errors import ConfigError
from graduate.files import unwritable
from graduate.migrate.replay import IN_FLIGHT, replay_histories, to_junit
from graduate.services.model import TemporalTarget
from graduate.services.probe import check_temporal_access


def replay(
    ctx: typer.Context,
    flow: Annotated[str, typer.Argument(
        help="The code about to be deployed: a flow (name, file or module:ATTRIBUTE), run "
             "by graduate's workflow, or an app declared in pyproject.toml "
             "(tool.graduate.apps).")],
    histories: Annotated[list[Path] | None, typer.Argument(
        parser=given_path,
        help="History files or folders of them (JSON: a run's export in "
             ".graduate/evidence/histories/RUN_ID/, or `temporal workflow show --output "
             "json`). Without them, the server's workflows that --query lists.")] = None,
    query: Annotated[str, typer.Option(
        help="Visibility query for the workflows to replay, on the server given by "
             "--temporal-address.")] = IN_FLIGHT,
    junit: Annotated[Path | None, typer.Option(
        parser=given_path,
        help="Also write the result as JUnit XML here, one test case per history.")] = None,
) -> None:
    """Replay recorded workflow histories against the current workflow code, with the
    SDK's replayer: a CI gate before a deploy. Exits 1 when a history breaks (naming the
    instance and the event), 2 on bad input.

    Example: graduate replay spikes/partner_approval.toml .graduate/evidence/histories/

    Example: graduate --temporal-address temporal:7233 replay partner_approval_app
    --junit replay.xml
    """
    config = settings(ctx)
    if junit is not None and (problem := _unwritable_file(junit)):
        raise ConfigError(f"--junit {junit} cannot be written ({problem}); give a file path "
                          "in a folder you can write to")
    target = graduate.resolve(flow, engine="temporal", settings=config)
    app = dict(target.app.engines["temporal"]) if target.app is not None else None
    server = None
    if not histories:
        check_temporal_access(config)
        if not config.temporal_address:
            raise ConfigError("give history files, or --temporal-address for a server whose "
                              "workflows --query lists")
        server = TemporalTarget(
            address=config.temporal_address, namespace=config.temporal_namespace,
            tls_cert=config.temporal_tls_cert, tls_key=config.temporal_tls_key,
            tls_ca=config.temporal_tls_ca, api_key=config.temporal_api_key)
    report = replay_histories(flow, target.flow, paths=histories or (), server=server,
                              query=query, app=app)
    if junit is not None:
        try:
            junit.parent.mkdir(parents=True, exist_ok=True)
            junit.write_text(to_junit(report), encoding="utf-8")
        except OSError as error:  # changed under it since the check
            raise ConfigError(f"--junit {junit} cannot be written ({error.strerror})"
                              ) from error
    table = Table(title=f"replay on the current code of {flow}")
    for column in ("instance", "run", "state", "replay", "event", "reason"):
        table.add_column(column)
    for result in report.results:
        table.add_row(result.instance_id, result.run_id[:8],
                      "in flight" if result.running else "closed",
                      "[red]breaks[/red]" if result.broken else "[green]ok[/green]",
                      str(result.event_id or ""), escape(result.reason))
    console.print(table)
    if report.broken:
        console.print(f"{len(report.broken)} of {len(report.results)} histories break on "
                      "this code: do not deploy it as is (guard the change with "
                      "workflow.patched, or pin the instances in flight to their worker "
                      "version)")
        raise typer.Exit(1)
    console.print(f"all {len(report.results)} histories replay on this code")


def _unwritable_file(path: Path) -> str | None:
    """Why the file `path` could not be written, found before the replay."""
    if path.is_dir():
        return "it is a folder"
    return unwritable(path.parent)
