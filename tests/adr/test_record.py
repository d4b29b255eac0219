"""The front block and the body of an ADR file, and JUnit counting, on their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.adr.attached import read_junit
from graduate.adr.document import AdrDocument
from graduate.adr.record import (
    AdrError,
    AdrRecord,
    Attachment,
    Classes,
    Pinned,
    Status,
    Transition,
    parse_record,
    render_record,
    split_front,
)

RECORD = AdrRecord(
    number=7, flow="partner_approval", flow_source="spikes/partner_approval.toml",
    status=Status.SPIKING, classes=Classes("A2", "R2", "S2"),
    history=(
        Transition(None, Status.PLANNED, "ann", "2026-11-25T04:00:00Z"),
        Transition(Status.PLANNED, Status.SPIKING, 'Zoë "Z" \\', "2026-11-25T05:00:00Z",
                   (Pinned("run", "c12f1a", "ab" * 32),), reason="first\nsecond",
                   gate="spiking: the classes declared, some evidence attached"),
    ),
    evidence=(Attachment("run", "c12f1a", ".graduate/evidence/runs/c12f1a.json", "ab" * 32,
                         "2026-11-25T04:30:00Z", via="m1"),),
)


def test_a_record_survives_rendering_and_parsing() -> None:
    text = render_record(RECORD)
    parts = split_front(text + "# body\n", "x.md")

    assert parts is not None
    assert parts[1] == "# body\n"
    assert parse_record(parts[0], "x.md") == RECORD


def test_a_file_without_a_front_block_is_not_managed() -> None:
    assert split_front("# 0001: a decision\n", "0001.md") is None


@pytest.mark.parametrize(("edit", "words"), [
    (('status = "spiking"', 'status = "done"'), "status = 'done' is not a status"),
    (('adr = 7', 'adr = "7"'), "adr = '7' must be int"),
    (('kind = "run"', 'kind = "log"'), "kind = 'log' must be one of run, matrix, junit"),
    (('flow = "partner_approval"', 'flow = "partner_approval"\nowner = "x"'),
     "unknown key(s) ['owner']"),
    (('record_version = 1', 'record_version = 2'), "record_version 2 is not 1"),
])
def test_a_damaged_record_names_what_is_wrong(edit: tuple[str, str], words: str) -> None:
    text = render_record(RECORD).replace(*edit)
    parts = split_front(text, "0007.md")
    assert parts is not None

    with pytest.raises(AdrError) as caught:
        parse_record(parts[0], "0007.md")

    assert words in str(caught.value)
    assert "0007.md" in str(caught.value)


def test_an_unclosed_front_block_is_an_error() -> None:
    with pytest.raises(AdrError, match="never closed"):
        split_front("+++\nadr = 1\n# body\n", "x.md")


def test_appending_keeps_the_sections_apart(tmp_path: Path) -> None:
    body = "# T\n\n## Evidence\n\nWhat it rests on.\n\n## Status history\n\n- one\n"
    document = AdrDocument(tmp_path / "x.md", RECORD, body)

    document = document.appending("Evidence", ["- run a"]).appending("Evidence", ["- run b"])
    document = document.appending("Status history", ["- two"])

    assert document.body == ("# T\n\n## Evidence\n\nWhat it rests on.\n\n- run a\n- run b\n\n"
                             "## Status history\n\n- one\n- two\n")


def test_appending_to_a_deleted_section_puts_it_back(tmp_path: Path) -> None:
    document = AdrDocument(tmp_path / "x.md", RECORD, "# T\n\nText.\n")

    assert document.appending("Status history", ["- one"]).body == (
        "# T\n\nText.\n\n## Status history\n\n- one\n")


def test_tasks_are_read_with_their_labels(tmp_path: Path) -> None:
    body = ("## Security gate\n\n- [x] **Secrets boundary reviewed**: yes\n"
            "* [ ] Plain item\n- [X] **Network**\n### Detail\n- [ ] **Still here**\n"
            "## Next\n- [ ] **Elsewhere**\n")
    tasks = AdrDocument(tmp_path / "x.md", RECORD, body).tasks("Security gate")

    assert tasks is not None
    assert [(t.label, t.done) for t in tasks] == [
        ("Secrets boundary reviewed", True), ("Plain item", False), ("Network", True),
        ("Still here", False)]


@pytest.mark.parametrize(("xml", "counts", "passed"), [
    ("<testsuite tests='2' failures='0' errors='0' skipped='0'><testcase name='a'/>"
     "<testcase name='b'/></testsuite>", (2, 0, 0, 0), True),
    ("<testsuites><testsuite tests='1' errors='1'/></testsuites>", (1, 0, 1, 0), False),
    ("<testsuites><testsuite><testcase name='a'><failure/></testcase></testsuite>"
     "</testsuites>", (1, 1, 0, 0), False),
    ("<testsuites/>", (0, 0, 0, 0), False),
])
def test_junit_counts(tmp_path: Path, xml: str, counts: tuple[int, int, int, int],
                      passed: bool) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(xml)

    summary = read_junit(path)

    assert (summary.tests, summary.failures, summary.errors, summary.skipped) == counts
    assert summary.passed is passed


def test_junit_that_is_not_xml_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text("not xml")

    with pytest.raises(AdrError, match="not a readable JUnit XML report"):
        read_junit(path)
