"""`graduate adr attach`: runs, matrices (with their runs) and JUnit reports, pinned."""

from __future__ import annotations

import shutil

import pytest

from graduate.check import Verdict
from graduate.evidence import EvidenceStore, content_hash
from tests.adr.conftest import FLOW, Project


@pytest.fixture
def adr(project: Project) -> Project:
    project.ok("adr", "new", FLOW)
    return project


@pytest.mark.parametrize("ref", ["3", f"0003-graduate-{FLOW}.md",
                                 f"docs/adr/0003-graduate-{FLOW}.md"])
def test_attach_pins_a_run_by_id_path_and_hash(adr: Project, ref: str) -> None:
    run_id = adr.run()

    result = adr.ok("adr", "attach", ref, run_id)

    (attachment,) = adr.adr().record.evidence
    path = adr.store.run_path(run_id)
    assert (attachment.kind, attachment.id) == ("run", run_id)
    assert attachment.path == f".graduate/evidence/runs/{run_id}.json"
    assert attachment.sha256 == content_hash(path)
    assert f"attached run {run_id}" in result.out
    evidence = adr.adr().section("Evidence") or ""
    assert f"- run `{run_id}`: temporal, kill-worker at activate:before-effect" in evidence
    assert f"sha256 `{attachment.sha256[:12]}`" in evidence


def test_attach_a_matrix_pins_the_matrix_and_every_run(adr: Project) -> None:
    runs = [adr.run(), adr.run(engine="celery-chain", verdict=Verdict.LOST)]
    matrix_id = adr.matrix(runs)

    adr.ok("adr", "attach", "3", matrix_id)

    evidence = adr.adr().record.evidence
    assert [(a.kind, a.id, a.via) for a in evidence] == [
        ("matrix", matrix_id, ""), ("run", runs[0], matrix_id), ("run", runs[1], matrix_id)]
    assert evidence[0].sha256 == content_hash(adr.store.matrix_path(matrix_id))
    assert [a.sha256 for a in evidence[1:]] == [content_hash(adr.store.run_path(r))
                                                for r in runs]


def test_attach_a_junit_report(adr: Project) -> None:
    report = adr.junit(tests=4, skipped=1)

    adr.ok("adr", "attach", "3", report)

    (attachment,) = adr.adr().record.evidence
    assert (attachment.kind, attachment.id, attachment.path) == ("junit", report, report)
    assert attachment.sha256 == content_hash(adr.root / report)
    assert "4 test(s), 0 failure(s), 0 error(s), 1 skipped" in (adr.adr().section("Evidence")
                                                               or "")


def test_attach_from_another_evidence_folder(adr: Project) -> None:
    run_id = adr.run()
    elsewhere = adr.root.parent / "elsewhere"
    shutil.move(adr.store.root, elsewhere)

    adr.ok("adr", "attach", "3", run_id, "--evidence", str(elsewhere))

    (attachment,) = adr.adr().record.evidence
    assert attachment.path == str(EvidenceStore(elsewhere).run_path(run_id).resolve())


@pytest.mark.parametrize("ref", ["nope", "reports/missing.xml", "m99999"])
def test_attach_refuses_an_unknown_id_or_file(adr: Project, ref: str) -> None:
    result = adr.cli("adr", "attach", "3", ref)

    assert result.code == 2
    assert f"no run, matrix or JUnit file {ref!r}" in result.err
    assert adr.adr().record.evidence == ()


def test_attach_refuses_an_unknown_adr(adr: Project) -> None:
    result = adr.cli("adr", "attach", "9", adr.run())

    assert result.code == 2
    assert "no ADR '9'" in result.err


def test_attach_refuses_a_hand_written_adr(adr: Project) -> None:
    result = adr.cli("adr", "attach", "1", adr.run())

    assert result.code == 2
    assert "has no graduate front block" in result.err


def test_attach_refuses_evidence_of_another_flow(adr: Project) -> None:
    result = adr.cli("adr", "attach", "3", adr.run(flow="other_flow"))

    assert result.code == 2
    assert "evidence for flow 'other_flow', not 'partner_approval'" in result.err


def test_attach_refuses_an_unfinished_matrix(adr: Project) -> None:
    matrix_id = adr.matrix([adr.run()], pending=True)

    result = adr.cli("adr", "attach", "3", matrix_id)

    assert result.code == 2
    assert f"matrix {matrix_id} is unfinished" in result.err
    assert f"graduate matrix --resume {matrix_id}" in result.err


def test_attach_refuses_a_junit_file_that_is_not_junit(adr: Project) -> None:
    (adr.root / "notes.xml").write_text("<html/>")

    result = adr.cli("adr", "attach", "3", "notes.xml")

    assert result.code == 2
    assert "not a JUnit report" in result.err


def test_attaching_again_is_a_no_op_but_a_changed_file_is_refused(adr: Project) -> None:
    run_id = adr.run()
    adr.ok("adr", "attach", "3", run_id)

    again = adr.ok("adr", "attach", "3", run_id)
    assert f"already attached: run {run_id}" in again.out
    assert len(adr.adr().record.evidence) == 1

    path = adr.store.run_path(run_id)
    path.write_text(path.read_text().replace('"passed": true', '"passed": false'))
    changed = adr.cli("adr", "attach", "3", run_id)
    assert changed.code == 2
    assert "evidence is immutable once attached" in changed.err
