"""`graduate compare APP`: an app's Temporal and Celery implementations, run on the same
inputs, decisions and fault, and what each did to the outside world compared."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from graduate.chaos.faults import none
from graduate.chaos.profiles import PROFILES
from graduate.cli.common import console, err_console, given_path, settings
from graduate.cli.run import _decisions
from graduate.errors import ConfigError
from graduate.migrate.compare import Comparison, run_comparison
from graduate.reports.render import (
    render_comparison_html,
    render_comparison_json,
    render_comparison_markdown,
)


def compare(
    ctx: typer.Context,
    app: Annotated[str, typer.Argument(
        help="An app declared in \\[tool.graduate.apps.NAME] with a temporal and a celery "
             "table.")],
    fault: Annotated[str, typer.Option(
        help="The fault both implementations run under (FAULT or FAULT+FLAG, as `graduate "
             "chaos` takes it); none by default.")] = none.NAME,
    at: Annotated[str | None, typer.Option(
        help="Where the fault fires: STEP:before-effect, STEP:after-effect, "
             "WAIT:during-wait or +SECONDS.")] = None,
    instances: Annotated[int, typer.Option(help="Instances, the same on each engine.")] = 1,
    signal: Annotated[list[str] | None, typer.Option(
        "--signal", "-s", help="Answer a wait on both: SIGNAL=approve|reject; repeatable. "
                               "Every wait is approved unless said otherwise.")] = None,
    allow_order: Annotated[list[str] | None, typer.Option(
        help="Steps whose relative order may differ (parallel branches), comma-separated: "
             "send_esign,send_confirmation; repeatable.")] = None,
    profile: Annotated[str, typer.Option(
        help="; ".join(f"{k}: {v}" for k, v in PROFILES.items())
        + "; or one of the project's own")] = "defaults",
    timeout: Annotated[float, typer.Option(help="Each run's deadline, seconds.")] = 90.0,
    report: Annotated[Path | None, typer.Option(
        parser=given_path,
        help="Write the comparison as Markdown, HTML and JSON into this folder.")] = None,
    evidence: Annotated[Path | None, typer.Option(
        parser=given_path,
        help="Evidence folder of the two runs (default: the project's).")] = None,
) -> None:
    """Run an app's Temporal and Celery implementations on the same instances, decisions
    and fault, and list, per instance and step, where what they did to the outside world
    differs: effects and how often, their order, idempotency keys, compensations, and
    whether each kept the commitment.

    Exits 0 when they are equivalent (allowed differences aside), 1 on an unexpected
    difference (a CI gate before the cut-over), 2 on bad input.

    Example: graduate compare partner_approval_app --fault kill-worker
    --at send_esign:after-effect --instances 3
    """
    decisions = _decisions(signal) if signal else None  # None: every wait approved
    result = run_comparison(app, fault=fault, at=at, instances=instances, profile=profile,
                            timeout=timeout, decisions=decisions,
                            allow_order=allow_order or [], settings=settings(ctx),
                            evidence=evidence)
    left, right = result.titles
    console.print(f"{app}: {left} (run {result.runs[0]}) and {right} (run {result.runs[1]})"
                  f"{f' under {fault}' if result.faulted else ''}", markup=False)
    for pair in result.pairs:
        console.print(f"instance {pair.number}: {left} {pair.left.verdict.verdict.value}, "
                      f"{right} {pair.right.verdict.verdict.value}", markup=False)
        for difference in pair.differences:
            where = f"{difference.step}: " if difference.step else ""
            note = " (allowed)" if difference.allowed else ""
            console.print(f"  {where}{difference.sentence}{note}", markup=False,
                          soft_wrap=True)
    if result.unpaired:
        console.print(f"without a counterpart: {result.unpaired}", markup=False)
    if report is not None:
        _write(report, result)
    if not result.equivalent:
        err_console.print(f"not equivalent: {len(result.unexpected)} unexpected "
                          "difference(s)", markup=False)
        raise typer.Exit(1)
    console.print("equivalent" + (f" ({len(result.differences)} allowed difference(s))"
                                  if result.differences else ""), markup=False)


def _write(folder: Path, result: Comparison) -> None:
    stem = f"compare-{result.app}-{result.runs[0]}-{result.runs[1]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.md").write_text(render_comparison_markdown(result), "utf-8")
        (folder / f"{stem}.html").write_text(render_comparison_html(result), "utf-8")
        (folder / f"{stem}.json").write_text(render_comparison_json(result), "utf-8")
    except OSError as error:
        raise ConfigError(f"--report {folder} cannot be written ({error.strerror}); give a "
                          "folder you can write to") from error
    console.print(f"report: {folder / stem}.md, .html, .json", markup=False)
