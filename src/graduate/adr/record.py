"""The machine-readable record at the top of an ADR: status, history and pinned evidence.

The record is TOML between two `+++` lines (the front-matter convention for TOML, so
that Markdown tools that expect YAML between `---` lines leave it alone). graduate
reads it with `tomllib` and writes it itself: the layout is small and fixed, and a
writer of its own keeps the file stable from one promotion to the next, so that a
review sees only the lines that changed.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal, TypeAlias, get_args

from graduate.errors import GraduateError

RECORD_VERSION = 1
FENCE = "+++"
# The front block's first comment: how a file whose fence was damaged is still known.
WRITTEN_BY = "# Written by `graduate adr`"


class AdrError(GraduateError):
    """An ADR is missing, malformed, or asked to do what its lifecycle does not allow."""


class Status(StrEnum):
    """Where a flow stands. It stays planned until an approved spike ships with tests."""

    PLANNED = "planned"
    SPIKING = "spiking"
    APPROVED = "approved"
    SHIPPED = "shipped"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"

    @property
    def terminal(self) -> bool:
        return self in (Status.REJECTED, Status.SUPERSEDED)

    @property
    def next(self) -> Status | None:
        """The one status a promotion may move to (rejected and superseded aside)."""
        if self not in LADDER or self is LADDER[-1]:
            return None
        return LADDER[LADDER.index(self) + 1]


LADDER = (Status.PLANNED, Status.SPIKING, Status.APPROVED, Status.SHIPPED)
# Statuses that end the lifecycle; they need a reason instead of a gate.
CLOSING = (Status.REJECTED, Status.SUPERSEDED)

EvidenceKind: TypeAlias = Literal["run", "matrix", "junit"]
EVIDENCE_KINDS: tuple[str, ...] = get_args(EvidenceKind)
CLASS_KEYS = ("approval_class", "reversibility_class", "sensitivity_class")


@dataclass(frozen=True)
class Attachment:
    """One evidence file attached to an ADR and pinned by its sha256."""

    kind: EvidenceKind
    id: str
    path: str  # relative to the project folder when inside it
    sha256: str
    attached_at: str
    via: str = ""  # the matrix a run was attached with

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.id


@dataclass(frozen=True)
class Pinned:
    """An evidence file as a promotion saw it."""

    kind: EvidenceKind
    id: str
    sha256: str


@dataclass(frozen=True)
class Transition:
    """One move of the status, with who made it, when, why, and on which evidence."""

    source: Status | None  # None when the ADR was created
    target: Status
    who: str
    when: str  # ISO-8601, UTC
    evidence: tuple[Pinned, ...] = ()
    reason: str = ""
    gate: str = ""  # the gate policy the move passed, in words ("" for closing moves)


@dataclass(frozen=True)
class Classes:
    approval_class: str
    reversibility_class: str
    sensitivity_class: str

    def items(self) -> tuple[tuple[str, str], ...]:
        return tuple((key, getattr(self, key)) for key in CLASS_KEYS)


@dataclass(frozen=True)
class AdrRecord:
    """The front block of an ADR file."""

    number: int
    flow: str
    flow_source: str  # a path relative to the project folder, or module:ATTRIBUTE
    status: Status
    classes: Classes
    history: tuple[Transition, ...] = ()
    evidence: tuple[Attachment, ...] = field(default_factory=tuple)

    def attachment(self, kind: str, ident: str) -> Attachment | None:
        return next((a for a in self.evidence if a.kind == kind and a.id == ident), None)


# ---------------------------------------------------------------------------- writing


def render_record(record: AdrRecord) -> str:
    """The front block, fences included, in a fixed key order."""
    lines = [
        FENCE,
        f"{WRITTEN_BY}; `graduate adr check` verifies it.",
        "# Edit the Markdown below, not this block.",
        f"record_version = {RECORD_VERSION}",
        f"adr = {record.number}",
        f"flow = {_string(record.flow)}",
        f"flow_source = {_string(record.flow_source)}",
        f"status = {_string(record.status.value)}",
        "",
        "[classes]",
        *(f"{key} = {_string(value)}" for key, value in record.classes.items()),
    ]
    for move in record.history:
        lines += _history_table(move)
    for item in record.evidence:
        lines += _evidence_table(item)
    return "\n".join([*lines, FENCE, ""])


def _history_table(move: Transition) -> list[str]:
    lines = ["", "[[history]]",
             f"from = {_string(move.source.value if move.source else '')}",
             f"to = {_string(move.target.value)}",
             f"who = {_string(move.who)}",
             f"when = {_string(move.when)}"]
    if move.reason:
        lines.append(f"reason = {_string(move.reason)}")
    if move.gate:
        lines.append(f"gate = {_string(move.gate)}")
    pins = [_inline({"kind": p.kind, "id": p.id, "sha256": p.sha256}) for p in move.evidence]
    lines.append("evidence = [" + "".join(f"\n  {p}," for p in pins) + ("\n]" if pins
                                                                        else "]"))
    return lines


def _evidence_table(item: Attachment) -> list[str]:
    lines = ["", "[[evidence]]",
             f"kind = {_string(item.kind)}",
             f"id = {_string(item.id)}",
             f"path = {_string(item.path)}",
             f"sha256 = {_string(item.sha256)}",
             f"attached_at = {_string(item.attached_at)}"]
    if item.via:
        lines.append(f"via = {_string(item.via)}")
    return lines


_STATUS_LINE = re.compile(r"^(\s*status\s*=\s*)(\"[^\"\\]*\"|'[^']*')(.*)$")
_HEADER = re.compile(r"^\s*\[")


def updated_front(front: str, old: AdrRecord, new: AdrRecord) -> str:
    """The front block (fences included) that takes `old` to `new`, edited in place so
    that what a person wrote there (comments, spacing) stays: the status line changed,
    new [[history]] tables after the last one, new [[evidence]] tables at the end.
    graduate changes nothing else; anything else falls back to a fresh render."""
    if (replace(new, status=old.status, history=old.history, evidence=old.evidence) != old
            or new.history[:len(old.history)] != old.history
            or new.evidence[:len(old.evidence)] != old.evidence):
        return render_record(new)
    lines = front.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if new.status is not old.status:
        top = next((n for n, line in enumerate(lines) if _HEADER.match(line)), len(lines))
        found = [n for n in range(top) if _STATUS_LINE.match(lines[n])]
        if len(found) != 1:
            return render_record(new)
        lines[found[0]] = _STATUS_LINE.sub(
            lambda m: f"{m.group(1)}{_string(new.status.value)}{m.group(3)}", lines[found[0]])
    added_moves = [line for move in new.history[len(old.history):]
                   for line in _history_table(move)]
    if added_moves:
        at = next((n for n, line in enumerate(lines)
                   if line.strip().replace(" ", "") == "[[evidence]]"), len(lines))
        while at > 0 and not lines[at - 1].strip():
            at -= 1  # before the blank line that precedes the first [[evidence]]
        lines[at:at] = added_moves
    lines += [line for item in new.evidence[len(old.evidence):]
              for line in _evidence_table(item)]
    text = "\n".join([FENCE, *lines, FENCE, ""])
    try:
        same = parse_record(text[len(FENCE) + 1:-len(FENCE) - 1], "edited front block") == new
    except AdrError:
        same = False
    return text if same else render_record(new)


def _string(value: str) -> str:
    # A JSON string is a TOML basic string, but for DEL, which TOML wants escaped.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _inline(values: Mapping[str, str]) -> str:
    return "{ " + ", ".join(f"{k} = {_string(v)}" for k, v in values.items()) + " }"


# ---------------------------------------------------------------------------- reading


def split_front(text: str, origin: str) -> tuple[str, str] | None:
    """(front block, body) of an ADR file's text, or None when it has no front block."""
    if not text.startswith(FENCE + "\n"):
        if damage := _damaged_fence(text):
            # Taken for a hand-written ADR, it would leave `adr check` silent about it.
            raise AdrError(f"{origin}: graduate's front block must open with {FENCE} alone "
                           f"on the first line, but {damage}; or restore the file from git")
        return None
    end = text.find(f"\n{FENCE}\n", len(FENCE))
    if end < 0:
        raise AdrError(f"{origin}: the front block opened by {FENCE} on the first line is "
                       f"never closed; restore the closing {FENCE} line")
    return text[len(FENCE) + 1:end + 1], text[end + len(FENCE) + 2:]


def _damaged_fence(text: str) -> str | None:
    """What hides the front block of a file graduate wrote (None: it never had one)."""
    first = text.split("\n", 1)[0]
    if text.startswith("\ufeff"):
        return "a byte-order mark comes first: save the file as UTF-8 without one"
    if first == FENCE + "\r":
        return ("its lines end in CRLF: save it with LF line endings (git config "
                "core.autocrlf input)")
    if first.strip() == FENCE:
        return f"the first line is {first!r}: remove the spaces around {FENCE}"
    head = text.lstrip()
    if head.startswith(FENCE + "\n"):
        return "blank lines come before it: remove them"
    if WRITTEN_BY in "\n".join(head.splitlines()[:3]):
        return f"the first line is {first!r}: make it {FENCE}"
    return None


def parse_record(block: str, origin: str) -> AdrRecord:
    """The record in a front block; AdrError names the file and the key that is wrong."""
    try:
        data = tomllib.loads(block)
    except tomllib.TOMLDecodeError as error:
        raise AdrError(f"{origin}: the front block is not valid TOML ({error}); restore it "
                       "from git: graduate writes it, people edit the Markdown") from error
    reader = _Reader(data, f"{origin} front block")
    version = reader.get("record_version", int)
    if version != RECORD_VERSION:
        raise AdrError(f"{origin}: record_version {version} is not {RECORD_VERSION}, the "
                       "version this graduate reads; upgrade graduate")
    classes = _Reader(reader.get("classes", dict), f"{reader.origin} [classes]")
    record = AdrRecord(
        number=reader.get("adr", int),
        flow=reader.get("flow", str),
        flow_source=reader.get("flow_source", str),
        status=reader.status("status"),
        classes=Classes(**{key: classes.get(key, str) for key in CLASS_KEYS}),
        history=tuple(_transition(_Reader(item, f"{reader.origin} [[history]] #{n}"))
                      for n, item in enumerate(reader.tables("history"), start=1)),
        evidence=tuple(_attachment(_Reader(item, f"{reader.origin} [[evidence]] #{n}"))
                       for n, item in enumerate(reader.tables("evidence"), start=1)),
    )
    classes.reject_unknown(set(CLASS_KEYS))
    reader.reject_unknown({"record_version", "adr", "flow", "flow_source", "status",
                           "classes", "history", "evidence"})
    return record


def _transition(item: _Reader) -> Transition:
    pins = []
    for n, pin in enumerate(item.get("evidence", list), start=1):
        if not isinstance(pin, dict):
            raise AdrError(f"{item.origin}: evidence entry #{n} must be an inline table "
                           "{ kind = ..., id = ..., sha256 = ... }")
        entry = _Reader(pin, f"{item.origin} evidence #{n}")
        pins.append(Pinned(kind=entry.kind(), id=entry.get("id", str),
                           sha256=entry.get("sha256", str)))
        entry.reject_unknown({"kind", "id", "sha256"})
    move = Transition(
        source=None if item.get("from", str) == "" else item.status("from"),
        target=item.status("to"),
        who=item.get("who", str), when=item.get("when", str), evidence=tuple(pins),
        reason=item.get("reason", str, required=False) or "",
        gate=item.get("gate", str, required=False) or "",
    )
    item.reject_unknown({"from", "to", "who", "when", "reason", "gate", "evidence"})
    return move


def _attachment(item: _Reader) -> Attachment:
    attachment = Attachment(
        kind=item.kind(), id=item.get("id", str), path=item.get("path", str),
        sha256=item.get("sha256", str), attached_at=item.get("attached_at", str),
        via=item.get("via", str, required=False) or "",
    )
    item.reject_unknown({"kind", "id", "path", "sha256", "attached_at", "via"})
    return attachment


class _Reader:
    """Typed access to one table of the front block, with errors that say where."""

    def __init__(self, data: Mapping[str, Any], origin: str) -> None:
        self.data = data
        self.origin = origin

    def get(self, key: str, kind: type, *, required: bool = True) -> Any:
        if key not in self.data:
            if required:
                raise AdrError(f"{self.origin}: {key} is missing; restore the front block "
                               "from git")
            return None
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise AdrError(f"{self.origin}: {key} = {value!r} must be {kind.__name__}")
        return value

    def status(self, key: str) -> Status:
        value = self.get(key, str)
        try:
            return Status(value)
        except ValueError:
            raise AdrError(f"{self.origin}: {key} = {value!r} is not a status; one of "
                           f"{', '.join(s.value for s in Status)}") from None

    def kind(self) -> EvidenceKind:
        value = self.get("kind", str)
        if value not in EVIDENCE_KINDS:
            raise AdrError(f"{self.origin}: kind = {value!r} must be one of "
                           f"{', '.join(EVIDENCE_KINDS)}")
        return value  # type: ignore[no-any-return]

    def tables(self, key: str) -> list[dict[str, Any]]:
        value = self.get(key, list, required=False) or []
        if not all(isinstance(item, dict) for item in value):
            raise AdrError(f"{self.origin}: every {key} entry must be a [[{key}]] table")
        return value

    def reject_unknown(self, known: set[str]) -> None:
        if unknown := sorted(set(self.data) - known):
            raise AdrError(f"{self.origin}: unknown key(s) {unknown}; allowed: "
                           f"{sorted(known)}")
