"""Every format, from stored evidence: valid, self-contained, escaped, and free of secrets."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from graduate.redaction import redact_text, redact_value
from graduate.reports import (
    FORMATS,
    build_report,
    parse_formats,
    render_html,
    render_json,
    render_junit,
    render_markdown,
    write_reports,
)
from graduate.reports.model import Report
from graduate.runs.record import RunRecord
from tests.reports.conftest import BASE, BEFORE, CellSpec, EvidenceBuilder, Instance

EVIL = "<script>alert(1)</script>"
SECRET = "s3cret-pass"
RENDER = {"html": render_html, "md": render_markdown, "junit": render_junit,
          "json": render_json}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def check_html(text: str, report: Report) -> None:
    """One page that needs nothing from anywhere else."""
    assert text.startswith("<!DOCTYPE html>")
    assert text.rstrip().endswith("</html>")
    parser = _Tags()
    parser.feed(text)
    names = [tag for tag, _ in parser.tags]
    assert not {"script", "link", "img", "iframe", "object", "embed"} & set(names)
    assert all((attrs.get("href") or "#").startswith("#") for _, attrs in parser.tags)
    assert not any("src" in attrs for _, attrs in parser.tags)
    style = text[text.index("<style>"):text.index("</style>")]
    assert "url(" not in style
    assert "@import" not in style
    assert "http://" not in text
    assert "https://" not in text
    for section in ("engines", "matrix", "problems", "decision", "resume", "timelines",
                    "settings", "legend"):
        assert f'id="{section}"' in text
    applicable = [r for r in report.runs if r.fault.applicable]
    assert names.count("svg") == sum(len(r.instances) for r in applicable) + (
        1 if any(s.points for s in report.resume) else 0)


def check_markdown(text: str, report: Report) -> None:
    """Tables whose every row has as many cells as its header, and no chart."""
    assert "<svg" not in text
    table: list[int] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            table.append(len(re.findall(r"(?<!\\)\|", line)))
        elif table:
            assert len(set(table)) == 1, f"a table row has a different width: {table}"
            table = []
    assert text.count("\n## ") == 9


def check_junit(text: str, report: Report) -> None:
    root = ET.fromstring(text)
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == len(report.cells)
    assert root.get("tests") == str(len(report.cells))
    assert root.get("failures") == str(sum(1 for c in report.cells if c.status == "fail"))


def check_json(text: str, report: Report) -> None:
    data = json.loads(text)
    assert (data["schema_version"], data["kind"]) == (1, "report")
    assert len(data["cells"]) == len(report.cells)
    assert data["recommendation"]["decision"] == report.recommendation.decision


CHECKS = {"html": check_html, "md": check_markdown, "junit": check_junit,
          "json": check_json}


@pytest.mark.parametrize("scenario", ["full_matrix", "partial_matrix", "interrupted_matrix",
                                      "fresh_matrix"])
@pytest.mark.parametrize("form", FORMATS)
def test_every_format_renders_every_kind_of_matrix(builder: EvidenceBuilder,
                                                   request: pytest.FixtureRequest,
                                                   scenario: str, form: str) -> None:
    matrix_id = request.getfixturevalue(scenario)
    report = build_report(builder.store, matrix_id=matrix_id)

    CHECKS[form](RENDER[form](report), report)


@pytest.mark.parametrize("form", FORMATS)
def test_every_format_renders_a_list_of_runs(builder: EvidenceBuilder, form: str) -> None:
    builder.run("one")
    builder.run("two", engine="celery-chain", fault="none", at=None)
    report = build_report(builder.store, run_ids=["one", "two"])

    CHECKS[form](RENDER[form](report), report)


def test_junit_has_one_testcase_per_cell(builder: EvidenceBuilder,
                                         partial_matrix: str) -> None:
    report = build_report(builder.store, matrix_id=partial_matrix)

    root = ET.fromstring(render_junit(report))

    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    ok = cases[("partner_approval.temporal", "kill-worker@activate:before-effect[defaults]")]
    assert ok.find("failure") is None
    assert ok.find("skipped") is None
    na = cases[("partner_approval.temporal", "kill-pool-child@activate:before-effect[defaults]")]
    skipped = na.find("skipped")
    assert skipped is not None
    assert "no pool child" in str(skipped.get("message"))
    pending = cases[("partner_approval.celery-state-machine", "none@-[defaults]")].find("skipped")
    assert pending is not None
    assert pending.get("message") == "not run"


def test_junit_failures_name_the_instance_and_its_ids(builder: EvidenceBuilder,
                                                      full_matrix: str) -> None:
    root = ET.fromstring(render_junit(build_report(builder.store)))

    failed = {str(c.get("name")): c.find("failure") for c in root.iter("testcase")
              if c.find("failure") is not None}
    assert sorted(failed) == ["kill-pool-child@activate:before-effect[defaults]",
                              "kill-worker@activate:before-effect[defaults]",
                              "stop-worker@activate:after-effect[defaults]"]
    lost = failed["kill-worker@activate:before-effect[defaults]"]
    assert lost is not None
    message = str(lost.get("message"))
    assert "partner_approval-r11-01" in message
    assert "correlation ID corr-r11-1" in message
    assert "trace ID tracer1101" in message
    assert "commitment lost" in message
    duplicate = failed["stop-worker@activate:after-effect[defaults]"]
    assert duplicate is not None
    assert "activate was applied 2 times" in str(duplicate.get("message"))


@pytest.fixture
def hostile(builder: EvidenceBuilder) -> Report:
    """A flow whose step is named like markup, with secrets in every place they hide."""
    for node in builder.definition["nodes"]:
        if node.get("step") == "activate":
            node["step"] = EVIL
    rows = (*BEFORE, (EVIL, "effect", "applied", 1, 0.65))
    services = {**BASE["environment"]["services"],
                "broker_url": f"redis://:{SECRET}@127.0.0.1:6379/0",
                "result_backend_url": f"redis://worker:{SECRET}@127.0.0.1:6379/1",
                "ledger_url": f"postgresql://graduate@db/ledger?password={SECRET}",
                "temporal": {**BASE["environment"]["services"]["temporal"],
                             "api_key": SECRET}}
    settings = {"broker_password": SECRET, "api_token": SECRET, "Client-Secret": SECRET,
                "broker_url": f"amqp://guest:{SECRET}@rabbit:5672//",
                "transport": {"sentinel_token": SECRET}, "visibility_timeout": 3600}
    reason = (f"step {EVIL} failed | could not reach amqp://guest:{SECRET}@rabbit:5672// "
              "& gave up")
    builder.run("evil", engine="celery-chain", at=f"{EVIL}:before-effect",
                instances=(Instance("failed", rows, reason=reason),), settings=settings,
                services=services)
    builder.matrix("mevil", [CellSpec("celery-chain", "kill-worker", f"{EVIL}:before-effect",
                                      run_id="evil")])
    return build_report(builder.store)


def test_html_keeps_markup_from_evidence_as_text(hostile: Report) -> None:
    html = render_html(hostile)

    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html
    check_html(html, hostile)


def test_markdown_escapes_markup_and_pipes(hostile: Report) -> None:
    markdown = render_markdown(hostile)

    assert EVIL not in markdown
    # A tag opens with `<` only: a `>` is no markup there.
    assert "&lt;script>alert(1)&lt;/script>" in markdown
    assert "<script" not in markdown
    assert r"failed \| could not reach" in markdown
    assert "&amp; gave up" in markdown
    check_markdown(markdown, hostile)


def test_markdown_shows_quotes_and_arrows_as_written(builder: EvidenceBuilder) -> None:
    """Markdown is no HTML: an apostrophe or an arrow in the evidence (a reason, the
    label of the human's answer) is written as it is, not as `&#39;` or `-&gt;`, while
    the HTML report escapes the same markup for HTML."""
    reason = "step activate failed: the partner's CRM said no -> compensate"
    record = builder.run("quotes", instances=(Instance("failed", BEFORE, reason=reason),))
    record["timeline"].append({"at": 0.7, "kind": "signal-sent", "detail": "approval=approve",
                               "instance": record["instances"][0]["instance_id"]})
    builder.store.save_run(RunRecord.from_dict(record))
    report = build_report(builder.store, run_ids=["quotes"])

    markdown = render_markdown(report)
    html = render_html(report)

    assert "partner's CRM said no -> compensate" in markdown
    assert "decision signalled (the human's answer): approval=approve" in markdown
    assert "&#39;" not in markdown
    assert "&gt;" not in markdown
    assert "partner&#39;s CRM said no -&gt; compensate" in html


@pytest.mark.parametrize("form", FORMATS)
def test_no_secret_reaches_any_format(hostile: Report, form: str) -> None:
    text = RENDER[form](hostile)

    assert SECRET not in text
    assert (r"\*\*\*" if form == "md" else "***") in text
    CHECKS[form](text, hostile)


def test_junit_and_json_carry_the_markup_as_data(hostile: Report) -> None:
    root = ET.fromstring(render_junit(hostile))
    data = json.loads(render_json(hostile))

    assert EVIL in str(next(root.iter("failure")).get("message"))
    assert data["runs"][0]["instances"][0]["rows"][2]["step"] == EVIL


@pytest.mark.parametrize(("text", "expected"), [
    ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
    ("amqp://guest:pw@rabbit//", "amqp://guest:***@rabbit//"),
    ("https://ghp_token123@github.com/x", "https://***@github.com/x"),
    # A user-info part without a password may be a token: hidden too.
    ("postgresql://u@h/db?sslmode=require&password=pw", "postgresql://***@h/db?"
                                                        "sslmode=require&password=***"),
    ("http://h/api?api_key=pw&x=1", "http://h/api?api_key=***&x=1"),
    ("error at redis://:pw@h:1/0, retrying", "error at redis://:***@h:1/0, retrying"),
    ("no url here: a:b@c", "no url here: a:b@c"),
])
def test_redaction_of_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_redaction_of_settings_by_name() -> None:
    settings = {"password": "pw", "API_KEY": "k", "tls_key": "/path/key.pem",
                "token_ttl": None, "secret_name": "", "nested": {"auth_token": 5}}

    assert redact_value(settings) == {
        "password": "***", "API_KEY": "***", "tls_key": "/path/key.pem", "token_ttl": None,
        "secret_name": "", "nested": {"auth_token": "***"}}


def test_write_reports_writes_each_format(builder: EvidenceBuilder, full_matrix: str,
                                          tmp_path: Path) -> None:
    report = build_report(builder.store)

    written = write_reports(report, tmp_path / "out", parse_formats("md, junit"))

    assert [p.name for p in written] == ["report-mfull.md", "report-mfull.junit.xml"]
    assert all(p.stat().st_size > 1000 for p in written)


@pytest.mark.parametrize("text", ["pdf", "html,docx", ", ,"])
def test_unknown_formats_are_refused(text: str) -> None:
    with pytest.raises(Exception, match="choose from html, md, junit, json"):
        parse_formats(text)


def test_a_signalled_decision_is_drawn_on_its_instances_timeline(
        builder: EvidenceBuilder) -> None:
    """The human's answer to a wait is one of the run's events: numbered in the list,
    and a badge of its own colour on the timeline of the instance it went to, and
    only there."""
    record = builder.run("human", fault="kill-worker", instances=(Instance(), Instance()))
    [first, second] = [i["instance_id"] for i in record["instances"]]
    for event in record["timeline"]:
        if event["kind"] == "signal-sent":
            event["instance"] = first
    builder.store.save_run(RunRecord.from_dict(record))

    html = render_html(build_report(builder.store, run_ids=["human"]))

    badge = (r'<circle class="badge signal"[^>]*>\s*<title>2\. 0\.620 s decision '
             r"signalled \(the human(&#39;|&#x27;|')s answer\): approval=approve to the "
             r"instance</title>")
    charts = {iid: re.search(rf'aria-label="Timeline of {iid} in run human">.*?</svg>',
                             html, re.S) for iid in (first, second)}
    assert all(charts.values())
    assert [len(re.findall(badge, chart.group(0))) for chart in charts.values() if chart] == [
        1, 0]


def test_a_time_scaled_run_says_so_under_the_flow_and_in_its_options(
        builder: EvidenceBuilder) -> None:
    record = builder.run("scaled", save=False)
    record["options"]["time_scale"] = {
        "label": "1h=1s", "factor": 3600.0, "engine_settings": "not scaled: real seconds",
        "durations": [{"item": "wait approval", "name": "deadline", "real": 259200.0,
                       "scaled": 72.0, "floored": False},
                      {"item": "step activate", "name": "timeout", "real": 10.0,
                       "scaled": 10.0, "floored": True}]}
    builder.store.save_run(RunRecord.from_dict(record))
    builder.run("real", fault="none", at=None)

    report = build_report(builder.store, run_ids=["scaled", "real"])

    scaled = ("1h=1s (x3600): 2 flow durations divided by 3600, 1 kept at their floor; "
              "engine settings not scaled")
    assert report.time_scales == (scaled, "real time")
    # A list item of its own, under the steps' line (it once ran on at the line's end).
    assert f"notify\n- time scale: {scaled}; real time" in render_markdown(report)
    assert f"Time scale: {scaled}; real time" in render_html(report)
    [run] = [r for r in report.runs if r.run_id == "scaled"]
    assert ("time_scale", scaled) in run.options
    unscaled = build_report(builder.store, run_ids=["real"])
    assert "time scale" not in render_markdown(unscaled).lower()


def test_an_instances_reminder_is_shown_and_a_missing_one_is_a_problem(
        builder: EvidenceBuilder) -> None:
    record = builder.run("reminded", fault="none", at=None, save=False,
                         instances=(Instance(), Instance()))
    sent, missing = record["instances"]
    common = {"wait": "approval", "step": "approval.reminder", "after": 1800.0}
    sent["reminders"] = [{**common, "waited": 3600.0, "calls": 1, "applied": 1,
                          "absorbed": 0}]
    missing["reminders"] = [{**common, "waited": 3600.0, "calls": 0, "applied": 0,
                             "absorbed": 0}]
    builder.store.save_run(RunRecord.from_dict(record))

    report = build_report(builder.store, run_ids=["reminded"])

    [run] = report.runs
    [ok, lost] = run.instances
    assert [r.summary for r in ok.reminders] == [
        "reminder of approval sent once (the wait lasted 3600.0s)"]
    assert [(p.kind, p.step) for p in ok.problems] == []
    assert [(p.kind, p.step, p.detail) for p in lost.problems] == [
        ("reminder", "approval.reminder", "reminder of approval missing: due 1800s into "
         "the wait, never sent (the wait lasted 3600.0s)")]
    markdown = render_markdown(report)
    assert "✅ reminder of approval sent once (the wait lasted 3600.0s)." in markdown
    assert "❌ reminder missing during a wait: reminder of approval missing" in markdown
    assert "reminder of approval sent once" in render_html(report)
    [cell] = report.cells
    assert cell.status == "fail"
    assert [f for f in cell.failures if "reminder" in f] == [
        f"{lost.instance_id}: reminder of approval missing: due 1800s into the wait, never "
        f"sent (the wait lasted 3600.0s) ({lost.correlation_id})"]


def test_an_escalation_sent_after_its_wait_ended_is_shown_as_a_problem(
        builder: EvidenceBuilder) -> None:
    record = builder.run("escalated", fault="none", at=None, save=False)
    [late] = record["instances"]
    late["reminders"] = [{"wait": "approval", "step": "approval.escalation",
                          "after": 2400.0, "waited": 60.0, "calls": 1, "applied": 1,
                          "absorbed": 0}]
    builder.store.save_run(RunRecord.from_dict(record))

    report = build_report(builder.store, run_ids=["escalated"])

    [run] = report.runs
    [instance] = run.instances
    detail = ("escalation of approval sent though the wait ended before its time: due 2400s "
              "into the wait (the wait lasted 60.0s)")
    assert [(p.kind, p.step, p.detail) for p in instance.problems] == [
        ("reminder", "approval.escalation", detail)]
    assert f"❌ {detail}." in render_markdown(report)
    [cell] = report.cells
    assert cell.status == "fail"


def test_an_instances_notice_is_shown_and_a_missing_one_is_a_problem(
        builder: EvidenceBuilder) -> None:
    record = builder.run("noticed", fault="none", at=None, save=False,
                         instances=(Instance(), Instance()))
    sent, missing = record["instances"]
    common = {"wait": "approval", "end": "rejected", "step": "approval.rejected_notice",
              "expected": True, "early": False}
    sent["notices"] = [{**common, "calls": 1, "applied": 1, "absorbed": 0}]
    missing["notices"] = [{**common, "calls": 0, "applied": 0, "absorbed": 0}]
    builder.store.save_run(RunRecord.from_dict(record))

    report = build_report(builder.store, run_ids=["noticed"])

    [run] = report.runs
    [ok, lost] = run.instances
    assert [n.summary for n in ok.notices] == [
        "rejected notice of approval sent once after the compensations"]
    assert [(p.kind, p.step) for p in ok.problems] == []
    assert [(p.kind, p.step, p.detail) for p in lost.problems] == [
        ("notice", "approval.rejected_notice", "rejected notice of approval missing: the "
         "instance ended rejected and it was never sent")]
    markdown = render_markdown(report)
    assert "✅ rejected notice of approval sent once after the compensations." in markdown
    assert ("❌ notice of how a wait ended missing, early or wrong: rejected notice of "
            "approval missing") in markdown
    assert "rejected notice of approval sent once" in render_html(report)
    [cell] = report.cells
    assert cell.status == "fail"
    assert [f for f in cell.failures if "notice" in f] == [
        f"{lost.instance_id}: rejected notice of approval missing: the instance ended "
        f"rejected and it was never sent ({lost.correlation_id})"]
