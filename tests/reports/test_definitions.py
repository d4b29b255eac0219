"""A report speaks for one definition of its flow: the runs of the flow as its spikes
folder holds it now, the runs of older definitions named as left out (or, when asked
for, included and each marked). Two definitions of the sample flow: the older without
its last step (`notify`), the current as `spikes/partner_approval.toml` holds it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from graduate.config import Settings
from graduate.errors import ConfigError
from graduate.reports import build_report, render_markdown
from graduate.reports.model import Report
from tests.reports.conftest import CellSpec, EvidenceBuilder
from tests.reports.test_cli import graduate
from tests.sample import SAMPLE_FLOW

FLOW = "partner_approval"


@pytest.fixture
def project(tmp_path: Path) -> Settings:
    (tmp_path / "pyproject.toml").write_text('[tool.graduate]\nspikes = "spikes"\n')
    (tmp_path / "spikes").mkdir()
    shutil.copy(SAMPLE_FLOW, tmp_path / "spikes" / f"{FLOW}.toml")
    return Settings(project_dir=tmp_path)


@pytest.fixture
def two_definitions(builder: EvidenceBuilder) -> EvidenceBuilder:
    """old1, old2 ran the flow before it gained `notify`; new1, new2 ran it as it is."""
    current = builder.definition
    builder.definition = {**current, "nodes": [n for n in current["nodes"]
                                               if n.get("step") != "notify"]}
    builder.run("old1", started_at=1.0)
    builder.run("old2", engine="celery-chain", started_at=2.0)
    builder.definition = current
    builder.run("new1", started_at=3.0)
    builder.run("new2", engine="celery-chain", started_at=4.0)
    return builder


def definitions_of(report: Report) -> dict[str, str]:
    return {run.run_id: run.definition for run in report.runs}


def test_a_flow_report_holds_the_runs_of_the_current_definition_and_names_the_rest(
        two_definitions: EvidenceBuilder, project: Settings) -> None:
    report = build_report(two_definitions.store, flow=FLOW, settings=project)

    assert report.run_ids == ("new1", "new2")
    assert definitions_of(report) == {"new1": "", "new2": ""}  # one definition: no marks
    assert [(d.label, d.runs) for d in report.left_out] == [
        ("older definition 1", ("old1", "old2"))]
    assert "notify" in report.left_out[0].change
    note, = report.definition_notes
    assert "2 run(s) of 1 older definition(s) are left out" in note
    assert f"graduate report --flow {FLOW} --all-definitions includes them" in note
    markdown = render_markdown(report)
    assert "left out, older definition 1: 2 run(s) (old1, old2)" in markdown
    assert "run old1" not in markdown


def test_all_definitions_includes_every_run_each_marked_with_its_definition(
        two_definitions: EvidenceBuilder, project: Settings) -> None:
    report = build_report(two_definitions.store, flow=FLOW, all_definitions=True,
                          settings=project)

    assert report.run_ids == ("old1", "old2", "new1", "new2")
    assert definitions_of(report) == {
        "old1": "older definition 1", "old2": "older definition 1",
        "new1": "current definition", "new2": "current definition"}
    assert {c.run_id: c.definition for c in report.cells} == definitions_of(report)
    assert [(d.label, d.runs) for d in report.definitions] == [
        ("current definition", ("new1", "new2")), ("older definition 1", ("old1", "old2"))]
    assert report.left_out == ()
    assert "These runs ran 2 definitions of partner_approval" in report.definition_notes[0]
    assert f"spikes/{FLOW}.toml" in report.definition_notes[0]
    markdown = render_markdown(report)
    assert "· run old1 (older definition 1)" in markdown
    assert "· run new1 (current definition)" in markdown


def test_a_named_run_or_matrix_is_reported_whatever_definition_it_ran_and_marked(
        two_definitions: EvidenceBuilder, project: Settings) -> None:
    named = build_report(two_definitions.store, run_ids=["old1", "new1"], settings=project)
    matrix = two_definitions.matrix("m0ld", [
        CellSpec("temporal", "kill-worker", "activate:before-effect", run_id="old1"),
        CellSpec("celery-chain", "kill-worker", "activate:before-effect", run_id="old2")])
    old_matrix = build_report(two_definitions.store, matrix_id=matrix, settings=project)
    current = build_report(two_definitions.store, run_ids=["new1", "new2"], settings=project)

    assert definitions_of(named) == {"old1": "older definition 1",
                                     "new1": "current definition"}
    assert old_matrix.run_ids == ("old1", "old2")
    assert definitions_of(old_matrix) == {"old1": "older definition 1",
                                          "old2": "older definition 1"}
    assert [d.label for d in old_matrix.definitions] == ["older definition 1"]
    assert "These runs ran an older definition of partner_approval" in (
        old_matrix.definition_notes[0])
    assert (current.definition_notes, current.definitions) == ((), ())


def test_a_flow_whose_file_is_gone_is_counted_by_the_newest_definition_among_its_runs(
        two_definitions: EvidenceBuilder, project: Settings) -> None:
    (project.spikes_dir / f"{FLOW}.toml").unlink()

    report = build_report(two_definitions.store, flow=FLOW, settings=project)

    assert report.run_ids == ("new1", "new2")
    assert [d.runs for d in report.left_out] == [("old1", "old2")]
    gone, left_out = report.definition_notes
    assert gone.startswith(f"{FLOW} no longer loads (")
    assert "the newest definition among them, that of run new2" in gone
    assert "left out" in left_out


def test_a_flow_changed_since_its_last_run_has_no_current_run_to_report(
        two_definitions: EvidenceBuilder, project: Settings) -> None:
    spike = project.spikes_dir / f"{FLOW}.toml"
    spike.write_text(spike.read_text().replace('timeout = "10s"', 'timeout = "20s"', 1))

    with pytest.raises(ConfigError) as refused:
        build_report(two_definitions.store, flow=FLOW, settings=project)

    assert "no run of the current definition of partner_approval" in str(refused.value)
    assert "--all-definitions" in str(refused.value)
    every = build_report(two_definitions.store, flow=FLOW, all_definitions=True,
                         settings=project)
    assert set(definitions_of(every).values()) == {"older definition 1",
                                                   "older definition 2"}


def test_the_cli_leaves_older_definitions_out_says_so_and_takes_all_definitions(
        two_definitions: EvidenceBuilder, project: Settings) -> None:
    root, evidence = project.project_dir, str(two_definitions.root)

    done = graduate(root, "report", "--flow", FLOW, "--evidence", evidence, "--format", "md")
    every = graduate(root, "report", "--flow", FLOW, "--all-definitions", "--evidence",
                     evidence, "--format", "md", "--out", str(root / "all"))
    alone = graduate(root, "report", "--all-definitions", "--evidence", evidence)

    assert done.returncode == 0, done.stderr
    assert "note: Only the runs of partner_approval's current definition are here: 2 " \
           "run(s) of 1 older definition(s) are left out" in done.stdout
    text = (root / ".graduate" / "reports" / f"report-{FLOW}.md").read_text()
    assert "Evidence: 2 run(s): new1, new2." in text
    assert every.returncode == 0, every.stderr
    assert "· run old2 (older definition 1)" in (root / "all" / f"report-{FLOW}.md").read_text()
    assert alone.returncode == 2
    assert "--all-definitions goes with --flow NAME" in alone.stderr
