"""ADR files are the user's (issue 11 item 11): an edit made while graduate works is
kept, comments in the front block stay, and a heading inside a fenced code block is
text, not the section graduate appends to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from graduate.adr.attached import resolve
from graduate.adr.gates import evaluate
from tests.adr.conftest import Project

COLLEAGUE = "\nA paragraph a colleague added while graduate was working.\n"
FENCED = ("\n```markdown\n## Status history\n- an example line, not a record\n```\n\n"
          "~~~\n## Evidence\n~~~\n")


def edits_meanwhile(project: Project, wrapped: Callable[..., Any]) -> Callable[..., Any]:
    """`wrapped`, but the ADR file is edited by someone else while it runs."""

    def edit_then(*args: Any, **kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        path = project.adr_path()
        path.write_text(path.read_text(encoding="utf-8") + COLLEAGUE, encoding="utf-8")
        return result

    return edit_then


def test_promote_keeps_an_edit_made_while_it_worked(
        ready: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    ready.ok("adr", "attach", "3", "r00001")
    monkeypatch.setattr("graduate.adr.lifecycle.evaluate", edits_meanwhile(ready, evaluate))

    result = ready.cli("adr", "promote", "3", "--to", "spiking", "--by", "ann")

    assert result.code == 2, result.text
    assert "changed while graduate was working on it" in result.err
    assert "Run the command again" in result.err
    text = ready.adr_path().read_text(encoding="utf-8")
    assert text.endswith(COLLEAGUE)
    assert ready.adr().record.status == "planned"


def test_attach_keeps_an_edit_made_while_it_worked(
        ready: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("graduate.adr.lifecycle.resolve", edits_meanwhile(ready, resolve))

    result = ready.cli("adr", "attach", "3", "r00001")

    assert result.code == 2, result.text
    assert "changed while graduate was working on it" in result.err
    assert ready.adr_path().read_text(encoding="utf-8").endswith(COLLEAGUE)
    assert ready.adr().record.evidence == ()


def test_comments_in_the_front_block_survive_attach_and_promote(ready: Project) -> None:
    ready.edit_adr('status = "planned"\n',
                   'status = "planned"  # the team reviews it on Mondays\n'
                   "# Legal asked to be told before approval.\n")

    ready.ok("adr", "attach", "3", "r00001")
    ready.ok("adr", "promote", "3", "--to", "spiking", "--by", "ann")

    text = ready.adr_path().read_text(encoding="utf-8")
    assert 'status = "spiking"  # the team reviews it on Mondays\n' in text
    assert "# Legal asked to be told before approval.\n" in text
    document = ready.adr()
    assert [move.target for move in document.record.history] == ["planned", "spiking"]
    assert [a.id for a in document.record.evidence] == ["r00001"]
    ready.ok("adr", "check")


def test_a_heading_inside_fenced_code_is_text_not_a_section(ready: Project) -> None:
    path = ready.adr_path()
    front_end = path.read_text(encoding="utf-8").index("\n+++\n", 4) + 5
    text = path.read_text(encoding="utf-8")
    path.write_text(text[:front_end] + FENCED + text[front_end:], encoding="utf-8")

    ready.ok("adr", "attach", "3", "r00001")
    ready.ok("adr", "promote", "3", "--to", "spiking", "--by", "ann")

    after = path.read_text(encoding="utf-8")
    assert FENCED in after  # the examples are as written
    document = ready.adr()
    history = document.section("Status history")
    evidence = document.section("Evidence")
    assert history is not None
    assert evidence is not None
    assert "planned → spiking by ann" in history
    assert "run `r00001`" in evidence
    assert after.count("planned → spiking by ann") == 1


def test_a_section_runs_past_a_fenced_heading_to_the_next_real_one(ready: Project) -> None:
    body = ("# Title\n\n## Evidence\n\n- one\n\n````\n## Not a heading\n```\nstill code\n"
            "````\n\n- two\n\n## Status history\n\n- created\n")
    document = replace(ready.adr(), body=body)

    evidence = document.section("Evidence")

    assert evidence is not None
    assert "- two" in evidence
    assert "## Not a heading" in evidence
    assert "created" not in evidence


def test_an_index_over_an_adr_that_cannot_be_read_says_so_where_it_is_run(
        ready: Project) -> None:
    """The index lists a damaged ADR as unreadable in the page; the command said only
    '(0 ADR(s))', so a team regenerating the index never heard of it."""
    path = ready.adr_path()
    path.write_text(path.read_text(encoding="utf-8").replace(
        'status = "planned"', "status = 5", 1), encoding="utf-8")

    result = ready.cli("report", "--index", "--out", "reports")

    assert result.code == 0, result.text
    assert f"{path.name} could not be read: " in result.err, result.text
    assert "status = 5 must be str" in result.err
    assert "`graduate adr check` lists what to fix" in result.err
    assert "could not be read" in (ready.root / "reports" / "index.md").read_text(
        encoding="utf-8")
