"""Reports: stored evidence rendered for people (HTML, Markdown) and machines (JUnit XML,
JSON). A report reads only the evidence store, so it can be regenerated at any time.

    store = EvidenceStore(Path(".graduate/evidence"))
    report = build_report(store)                      # the latest matrix
    write_reports(report, Path("reports"), ("html", "md"))
"""

from __future__ import annotations

from graduate.reports.build import build_report
from graduate.reports.model import Report
from graduate.reports.render import (
    FORMATS,
    parse_formats,
    render_html,
    render_json,
    render_junit,
    render_markdown,
    write_reports,
)

__all__ = ["FORMATS", "Report", "build_report", "parse_formats", "render_html", "render_json",
           "render_junit", "render_markdown", "write_reports"]
