"""`graduate adr new`: the ADR file, its number, its classes and checklists, refusals."""

from __future__ import annotations

import re

from graduate.adr.checklists import RELEASE_CHECKLIST, SECURITY_GATE
from graduate.adr.record import Status
from tests.adr.conftest import FLOW, Project


def test_new_writes_the_next_numbered_adr_with_status_planned(project: Project) -> None:
    result = project.ok("adr", "new", FLOW, "--by", "ann")

    path = project.root / "docs" / "adr" / f"0003-graduate-{FLOW}.md"
    assert path.is_file()
    assert str(path) in result.out
    record = project.adr().record
    assert record.number == 3
    assert record.flow == FLOW
    assert record.flow_source == f"spikes/{FLOW}.toml"
    assert record.status is Status.PLANNED
    assert record.evidence == ()
    (created,) = record.history
    assert (created.source, created.target, created.who) == (None, Status.PLANNED, "ann")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created.when)


def test_new_shows_the_classes_with_their_meanings(project: Project) -> None:
    project.ok("adr", "new", FLOW)

    document = project.adr()
    classes = document.section("Classes") or ""
    assert "| approval_class | A2 | function head (+ legal/finance) |" in classes
    assert "| reversibility_class | R2 | costly or painful to reverse |" in classes
    assert "| sensitivity_class | S2 | confidential or commercial |" in classes
    assert (document.record.classes.approval_class,
            document.record.classes.reversibility_class,
            document.record.classes.sensitivity_class) == ("A2", "R2", "S2")


def test_new_has_criteria_to_fill_checklists_evidence_and_history(project: Project) -> None:
    project.ok("adr", "new", FLOW)

    document = project.adr()
    criteria = document.section("Criteria: keep Celery or graduate") or ""
    for signal in ("Duration", "State", "Compensation", "Failure domain"):
        assert re.search(rf"^\| {signal} \|.*\| _to fill_ \|$", criteria, flags=re.M), signal
    assert "create_record → crm.void_draft" in criteria
    security = document.tasks("Security gate")
    release = document.tasks("Release checklist")
    assert security is not None
    assert release is not None
    assert [t.label for t in security] == [i.label for i in SECURITY_GATE]
    assert [t.label for t in release] == [i.label for i in RELEASE_CHECKLIST]
    assert not any(t.done for t in [*security, *release])
    assert {"Secrets boundary reviewed", "Network boundaries reviewed"} <= {
        t.label for t in security}
    assert {"Runbook: deploy", "Runbook: rollback", "Runbook: double start",
            "Rollback rehearsal", "Product-owner sign-off"} <= {t.label for t in release}
    assert document.section("Evidence") is not None
    assert "written as planned by ci-user" in (document.section("Status history") or "")


def test_new_numbers_after_the_highest_existing_adr(project: Project) -> None:
    (project.root / "docs" / "adr" / "0011-later.md").write_text("# 11\n")

    project.ok("adr", "new", FLOW)

    assert (project.root / "docs" / "adr" / f"0012-graduate-{FLOW}.md").is_file()


def test_new_starts_at_one_without_a_docs_adr_folder(project: Project) -> None:
    for path in (project.root / "docs" / "adr").iterdir():
        path.unlink()
    (project.root / "docs" / "adr").rmdir()

    project.ok("adr", "new", FLOW)

    assert (project.root / "docs" / "adr" / f"0001-graduate-{FLOW}.md").is_file()


def test_new_refuses_a_second_adr_for_the_same_flow(project: Project) -> None:
    project.ok("adr", "new", FLOW)

    again = project.cli("adr", "new", FLOW)

    assert again.code == 2
    assert f"0003-graduate-{FLOW}.md is already the ADR of flow '{FLOW}'" in again.err
    assert not list((project.root / "docs" / "adr").glob("0004-*"))


def test_new_accepts_a_new_adr_once_the_old_one_is_superseded(project: Project) -> None:
    project.ok("adr", "new", FLOW)
    project.ok("adr", "promote", "3", "--to", "superseded", "--reason", "rewritten as 0004")

    project.ok("adr", "new", FLOW)

    assert project.adr(4).record.status is Status.PLANNED


def test_new_refuses_an_unknown_flow(project: Project) -> None:
    result = project.cli("adr", "new", "no_such_flow")

    assert result.code == 2
    assert "no flow 'no_such_flow'" in result.err
    assert not list((project.root / "docs" / "adr").glob("0003-*"))


def test_the_written_record_reads_back_with_awkward_text(project: Project) -> None:
    project.ok("adr", "new", FLOW, "--by", 'Zoë "the \\ reviewer"\x7f')

    (created,) = project.adr().record.history
    assert created.who == 'Zoë "the \\ reviewer"\x7f'
