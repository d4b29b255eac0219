"""ADR files in `docs/adr/`: finding them, reading them, and writing them back.

An ADR graduate manages is Markdown with a front block (see `graduate.adr.record`).
Files without one (a project's own hand-written decisions) are left alone. The body
is edited by people; graduate only appends lines to two of its sections (Evidence and
Status history), rewrites one it owns (Runbooks, from the evidence) and reads the task
lists of two others (the checklists). Sections are
found by the Markdown's structure: a heading inside a fenced code block is text.

The file is the user's: graduate edits its front block in place (comments and layout
kept), and writes only if the file is still as it was read, so that an edit made
meanwhile, in an editor or by another command, is never overwritten.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

from graduate.adr.record import (
    AdrError,
    AdrRecord,
    parse_record,
    render_record,
    split_front,
    updated_front,
)
from graduate.files import read_text

ADR_DIR = Path("docs") / "adr"
EVIDENCE_HEADING = "Evidence"
HISTORY_HEADING = "Status history"

_NUMBERED = re.compile(r"^(\d{4})-.+\.md$")
_TASK = re.compile(r"^\s*[-*+]\s+\[([ xX])\]\s+(.*?)\s*$")
_LABEL = re.compile(r"^\*\*(.+?)\*\*")
# The spike ADR's three outcomes (ADR 0001 of the source: "an explicit outcome").
OUTCOMES = ("Approved", "Rejected", "Extend pilot")
DECISION_HEADING = "Decision outcome"
# How a filled-in decision states it: "Outcome: **Extend pilot**" at the start of a line
# (the template's "Outcome (to fill): **Approved**, **Rejected** or ..." is not one).
_OUTCOME = re.compile(r"^Outcome:\s*\*\*(" + "|".join(OUTCOMES) + r")\*\*", re.M)
_ITEM = re.compile(r"^\s*[-*+]\s")
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*(?:#+[ \t]*)?$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


@dataclass(frozen=True)
class Task:
    """One `- [ ]` or `- [x]` line of a checklist section."""

    text: str
    done: bool

    @property
    def label(self) -> str:
        """The bold label at its start, or its whole text."""
        match = _LABEL.match(self.text)
        return (match.group(1) if match else self.text).strip()


@dataclass(frozen=True)
class AdrDocument:
    """An ADR file: where it is, its record, its Markdown body, and the text it had when
    read (None for an ADR not yet written)."""

    path: Path
    record: AdrRecord
    body: str
    original: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def title(self) -> str:
        return f"{self.record.number:04d} {self.record.flow}"

    def section(self, heading: str) -> str | None:
        """The text under `## heading` up to the next `## ` heading, or None."""
        span = _section_span(self.body, heading)
        return None if span is None else self.body[span[0]:span[1]]

    def tasks(self, heading: str) -> list[Task] | None:
        """The task-list items of a section, or None when the section is missing."""
        text = self.section(heading)
        if text is None:
            return None
        return [Task(m.group(2), m.group(1) != " ")
                for m in (_TASK.match(line) for line in text.splitlines()) if m]

    def with_record(self, record: AdrRecord) -> AdrDocument:
        return replace(self, record=record)

    def appending(self, heading: str, lines: list[str]) -> AdrDocument:
        """The document with `lines` added at the end of a section (which is created at
        the end of the body if someone deleted it)."""
        body = self.body
        span = _section_span(body, heading)
        if span is None:
            body = body.rstrip("\n") + f"\n\n## {heading}\n"
            span = (len(body), len(body))
        start, end = span
        section = body[start:end].rstrip("\n")
        joined = "\n".join(lines)
        if not section.strip():
            section = f"\n{joined}\n"
        else:  # a list goes on a list, or after a blank line below a paragraph
            gap = "\n" if _ITEM.match(section.splitlines()[-1]) else "\n\n"
            section = f"{section}{gap}{joined}\n"
        tail = body[end:]
        return replace(self, body=body[:start] + section + ("\n" + tail if tail else ""))

    def replacing(self, heading: str, lines: list[str], *, before: str) -> AdrDocument:
        """The document with the text under `## heading` replaced by `lines`; a missing
        section is put in front of `## before` (or at the end when that is missing too)."""
        body = self.body
        text = "\n" + "\n".join(lines) + "\n\n"
        span = _section_span(body, heading)
        if span is None:
            where = _section_span(body, before)
            if where is None:
                return replace(self, body=f"{body.rstrip()}\n\n## {heading}\n{text}".rstrip()
                               + "\n")
            start = body.rfind("\n## ", 0, where[0]) + 1
            return replace(self, body=f"{body[:start]}## {heading}\n{text}{body[start:]}")
        start, end = span
        return replace(self, body=body[:start] + text + body[end:].lstrip("\n"))

    def text(self) -> str:
        if self.original is None:
            return render_record(self.record) + self.body
        parts = split_front(self.original, str(self.path))
        if parts is None:  # read_document returns None for such a file: never reached
            raise AdrError(f"{self.path} has no front block")
        front = parts[0]
        return updated_front(front, parse_record(front, str(self.path)), self.record,
                             ) + self.body

    def save(self) -> None:
        write_text(self.path, self.text(), expected=self.original)


def decision_outcome(document: AdrDocument) -> str | None:
    """The outcome the ADR records under "Decision outcome" (`Outcome: **Approved**`),
    or None while it is still to fill."""
    match = _OUTCOME.search(document.section(DECISION_HEADING) or "")
    return match.group(1) if match else None


def _section_span(body: str, heading: str) -> tuple[int, int] | None:
    """Where the text under `## heading` starts and ends (at the next heading of level 1
    or 2), by the Markdown's structure: lines inside fenced code blocks are not headings."""
    start: int | None = None
    offset = 0
    fence = ""
    for line in body.splitlines(keepends=True):
        here, offset = offset, offset + len(line)
        text = line.rstrip("\r\n")
        if fence:
            # A fence closes with at least as many of the same character, nothing after.
            if text.strip() and set(text.strip()) == {fence[0]} and (
                    len(text.strip()) >= len(fence)) and _FENCE.match(text):
                fence = ""
            continue
        if opened := _FENCE.match(text):
            fence = opened.group(1)
            continue
        match = _HEADING.match(text)
        if match is None or len(match.group(1)) > 2:
            continue
        if start is not None:
            return start, here
        if len(match.group(1)) == 2 and (match.group(2) or "").strip().lower() == (
                heading.lower()):
            start = offset
    return None if start is None else (start, len(body))


def write_text(path: Path, text: str, *, expected: str | None) -> None:
    """Write atomically (a half-written ADR would lose its record), and only if the file
    still holds `expected` (None: only if there is no file yet)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # Compared as late as possible, just before the rename, to leave an edit made
        # meanwhile the smallest window.
        if expected is None:
            if path.exists() or path.is_symlink():
                raise AdrError(f"{path} appeared while graduate was writing it; nothing was "
                               "written. Look at it, then run the command again")
        else:
            try:
                current = read_text(path, "ADR file", AdrError)
            except FileNotFoundError:
                current = None
            if current != expected:
                raise AdrError(f"{path} changed while graduate was working on it (an edit "
                               "made meanwhile); nothing was written, so that edit is kept. "
                               "Run the command again")
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def read_document(path: Path) -> AdrDocument | None:
    """The ADR at `path`, or None when it has no front block (not one graduate manages)."""
    try:
        text = read_text(path, "ADR file", AdrError)
    except FileNotFoundError as error:
        raise AdrError(f"cannot read {path}: it does not exist") from error
    parts = split_front(text, str(path))
    if parts is None:
        return None
    front, body = parts
    return AdrDocument(path=path, record=parse_record(front, str(path)), body=body,
                       original=text)


def adr_dir(project_dir: Path) -> Path:
    return project_dir / ADR_DIR


def numbered_files(project_dir: Path) -> list[Path]:
    """Every `NNNN-*.md` file in docs/adr, managed by graduate or not, by number."""
    folder = adr_dir(project_dir)
    if not folder.is_dir():
        return []
    # Every name that looks like an ADR counts, a directory or a broken link too: one
    # that cannot be read is a problem for `adr check` to report, not a file to skip.
    return sorted(p for p in folder.iterdir() if _NUMBERED.match(p.name))


def next_number(project_dir: Path) -> int:
    numbers = [int(_NUMBERED.match(p.name).group(1))  # type: ignore[union-attr]
               for p in numbered_files(project_dir)]
    return max(numbers, default=0) + 1


def file_number(path: Path) -> int | None:
    """The number an ADR's file name starts with (`0003-...md`: 3), if it has one."""
    numbered = _NUMBERED.match(path.name)
    return int(numbered.group(1)) if numbered else None


def discover(project_dir: Path) -> list[tuple[Path, AdrDocument | AdrError]]:
    """Every ADR graduate manages, in number order; a malformed one with its error."""
    found: list[tuple[Path, AdrDocument | AdrError]] = []
    for path in numbered_files(project_dir):
        try:
            document = read_document(path)
        except AdrError as error:
            found.append((path, error))
            continue
        if document is not None:
            found.append((path, document))
    return found


def find_document(project_dir: Path, ref: str) -> AdrDocument:
    """An ADR by number (`3`, `0003`), file name, or path."""
    path = _resolve(project_dir, ref)
    document = read_document(path)
    if document is None:
        raise AdrError(f"{path} has no graduate front block ({'+++'} lines at the top), so "
                       "graduate does not manage it; `graduate adr new FLOW` writes one that "
                       "it does")
    return document


def _resolve(project_dir: Path, ref: str) -> Path:
    files = numbered_files(project_dir)
    if ref.isdigit():
        number = int(ref)
        matches = [p for p in files if int(p.name[:4]) == number]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise AdrError(f"more than one ADR is numbered {number:04d} "
                           f"({', '.join(p.name for p in matches)}); give the file name")
    else:
        for candidate in (Path(ref), project_dir / ref, adr_dir(project_dir) / ref):
            if candidate.is_file():
                return candidate
    known = ", ".join(p.name for p in files) or "none yet"
    raise AdrError(f"no ADR {ref!r} in {adr_dir(project_dir)}: give its number (3), its file "
                   f"name or its path. ADRs there: {known}")
