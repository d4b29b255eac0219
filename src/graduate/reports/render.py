"""Renderers of the report model: HTML and Markdown for people, JUnit XML and JSON for
machines. They lay out what `graduate.reports.build` computed and decide nothing."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from graduate.errors import ConfigError
from graduate.migrate.compare import Comparison
from graduate.reports import svg
from graduate.reports.model import CellReport, Problem, Report
from graduate.reports.units import duration, seconds

FORMATS = ("html", "md", "junit", "json")
SCHEMA_VERSION = 1  # of the JSON report; the stored records have their own
SUFFIXES = {"html": ".html", "md": ".md", "junit": ".junit.xml", "json": ".json"}
PROBLEM_TITLES = {
    "lost": "commitment lost",
    "stuck": "commitment stuck",
    "failed": "commitment failed, neither done nor undone",
    "duplicate": "unabsorbed duplicate",
    "resume": "not resumed at the step in flight",
    "double-start": "duplicate commitment: one business key, two sets of effects",
    "rollback": "rollback incomplete",
    "correlation": "correlation or trace ID lost",
    "audit": "audit trail missing or broken",
    "reminder": "reminder missing during a wait",
    "notice": "notice of how a wait ended missing, early or wrong",
    "interrupt": "interrupt not honoured: a step after it, or one left applied",
}

# In a Markdown table cell a pipe ends the cell and HTML is live: escape both (a tag
# opens with `<`, an entity with `&`), the characters that would start emphasis, code or
# a link, and a `>` that could open a quote (only at the start: `a -> b` stays as written).
_MARKDOWN = re.compile(r"[\\`*\[\]|<&]|^>|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_HTML_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
# Characters XML 1.0 cannot hold at all, even escaped.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def parse_formats(text: str) -> tuple[str, ...]:
    """`html,md` -> ("html", "md"), refusing unknown names."""
    wanted = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown or not wanted:
        raise ConfigError(f"unknown report format {', '.join(unknown) or repr(text)}; choose "
                          f"from {', '.join(FORMATS)} (comma-separated, e.g. html,md)")
    return wanted


def markdown_escape(value: object) -> str:
    """Text from evidence, safe inside a Markdown paragraph or table cell."""
    text = " ".join(str(value).split())
    return _MARKDOWN.sub(lambda m: _HTML_ENTITIES.get(m.group(0), "\\" + m.group(0)), text)


def when(stamp: str | None) -> str:
    """An ISO timestamp from evidence as "2026-11-25 04:36 UTC" (as stored if unreadable)."""
    if not stamp:
        return "-"
    try:
        moment = datetime.fromisoformat(stamp).astimezone(UTC)
    except ValueError:
        return stamp
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def column_title(column: str) -> str:
    """"kill-worker@activate:before-effect" -> "kill-worker"."""
    return column.split("@", 1)[0]


def column_point(column: str) -> str:
    """"kill-worker@activate:before-effect" -> "at activate, before effect"."""
    point = column.split("@", 1)[1] if "@" in column else "-"
    if point == "-":
        return ""
    step, _, where = point.partition(":")
    return f"at {step}, {where.replace('-', ' ')}" if where else f"at {point}"


def _environment() -> jinja2.Environment:
    # HTML and SVG are escaped for HTML. Markdown is not (HTML's escapes would show as
    # `&#39;` and `-&gt;` wherever the file is read as text): its templates put text from
    # evidence through the `md` filter instead. A template of any other kind is escaped.
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("graduate.reports", "templates"),
        autoescape=jinja2.select_autoescape(disabled_extensions=("md.j2",), default=True),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True)
    env.filters.update(md=markdown_escape, seconds=seconds, duration=duration, when=when,
                       column_title=column_title, column_point=column_point)
    env.globals.update(problem_titles=PROBLEM_TITLES)
    return env


def template(name: str) -> jinja2.Template:
    """One of the package's templates, with the reports' filters (the bench's too)."""
    return _environment().get_template(name)


def render_html(report: Report) -> str:
    """One self-contained page: inline CSS and SVG, nothing fetched."""
    timelines = {f"{run.run_id}/{instance.instance_id}": svg.timeline(run, instance, report.flow)
                 for run in report.runs for instance in run.instances}
    return _environment().get_template("report.html.j2").render(
        report=report, timelines=timelines, resume_plot=svg.resume_plot(report.resume))


def render_markdown(report: Report) -> str:
    """The HTML report's content without the charts, for a pull request or an ADR."""
    return _environment().get_template("report.md.j2").render(report=report)


def render_json(report: Report) -> str:
    """The stable machine form of the report model."""
    data: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "kind": "report",
                            **asdict(report)}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def render_junit(report: Report) -> str:
    """One testcase per cell: failing where a required property does not hold."""
    suites = ET.Element("testsuites", name=_xml(report.title))
    for engine in report.engines:
        cells = [c for c in report.cells if c.engine == engine]
        suite = ET.SubElement(suites, "testsuite", name=_xml(f"{report.flow.name}.{engine}"))
        for cell in cells:
            _testcase(suite, report, cell)
        _count(suite, cells)
    _count(suites, list(report.cells))
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _testcase(suite: ET.Element, report: Report, cell: CellReport) -> None:
    run = next((r for r in report.runs if r.run_id == cell.run_id), None)
    case = ET.SubElement(suite, "testcase", classname=_xml(f"{report.flow.name}.{cell.engine}"),
                         name=_xml(cell.label),
                         time=f"{run.span if run and run.fault.applicable else 0.0:.3f}")
    if cell.status == "pending":
        ET.SubElement(case, "skipped", message="not run")
    elif cell.status == "not-applicable":
        ET.SubElement(case, "skipped", message=_xml(f"not applicable: {cell.reason}"))
    elif cell.status == "fail":
        lines = ([_problem_line(p) for p in cell.problems] if cell.problems
                 else list(cell.failures))
        failure = ET.SubElement(case, "failure", type="RequiredPropertyFailed",
                                message=_xml("; ".join(lines)))
        failure.text = _xml("\n".join(lines))
    out = []
    if cell.run_id:
        out.append(f"run {cell.run_id}")
    if cell.evidence_missing:
        out.append("the run file is missing: verdict from the matrix's summary")
    if cell.status in ("pass", "fail") and not cell.fired and cell.reason:
        out.append(f"the fault did not fire: {cell.reason}")
    for instance in run.instances if run else ():
        out.append(f"{instance.instance_id} {instance.verdict} (correlation ID "
                   f"{instance.correlation_id}, trace ID {instance.trace_id}): "
                   f"{instance.reason}")
    if out:
        ET.SubElement(case, "system-out").text = _xml("\n".join(out))


def _problem_line(problem: Problem) -> str:
    return (f"{problem.instance_id} (correlation ID {problem.correlation_id}, trace ID "
            f"{problem.trace_id}): {PROBLEM_TITLES[problem.kind]}: {problem.detail}")


def _count(element: ET.Element, cells: list[CellReport]) -> None:
    element.set("tests", str(len(cells)))
    element.set("failures", str(sum(1 for c in cells if c.status == "fail")))
    element.set("errors", "0")
    element.set("skipped", str(sum(1 for c in cells
                                   if c.status in ("pending", "not-applicable"))))


def _xml(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


RENDERERS = {"html": render_html, "md": render_markdown, "junit": render_junit,
             "json": render_json}


def report_name(report: Report) -> str:
    """The files' common name: report-MATRIX, report-FLOW (the runs of one flow: one
    name per flow, which an index can link to), or report-runs-ID-ID."""
    if report.matrix_id:
        return f"report-{report.matrix_id}"
    if report.source == "flow":
        return f"report-{report.flow.name}"
    ids = list(report.run_ids)
    shown = "-".join(ids[:3]) + (f"-and-{len(ids) - 3}-more" if len(ids) > 3 else "")
    return f"report-runs-{shown}"


def write_reports(report: Report, out: Path, formats: tuple[str, ...]) -> list[Path]:
    """Render `report` in each format into `out`; return the files written."""
    written = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in formats:
            path = out / f"{report_name(report)}{SUFFIXES[name]}"
            path.write_text(RENDERERS[name](report), encoding="utf-8")
            written.append(path)
    except OSError as error:
        raise ConfigError(f"cannot write the report into {out} ({error.strerror}); give "
                          "--out a folder you can write to") from error
    return written


def render_comparison_markdown(comparison: Comparison) -> str:
    """A comparison of two implementations (`graduate compare`), for a pull request."""
    return _environment().get_template("compare.md.j2").render(c=comparison)


def render_comparison_html(comparison: Comparison) -> str:
    """The same comparison as one self-contained page."""
    return _environment().get_template("compare.html.j2").render(c=comparison)


def render_comparison_json(comparison: Comparison) -> str:
    """The comparison for machines: every instance's sides and differences."""
    data = {"schema_version": SCHEMA_VERSION, "kind": "comparison",
            "equivalent": comparison.equivalent, **asdict(comparison)}
    return json.dumps(data, indent=2, sort_keys=True, default=sorted) + "\n"
