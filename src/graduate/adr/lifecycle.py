"""The ADR lifecycle: write an ADR for a flow, attach evidence, promote, check.

A flow's ADR moves planned → spiking → approved → shipped, one step at a time, each
step only when its gate (`graduate.adr.gates`) passes on the attached evidence; it
may be closed as rejected or superseded at any point with a reason. Every move is
recorded twice: in the front block (who, when, and every evidence file's hash) for
`graduate adr check`, and as a line under "Status history" for people.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from graduate.adapters import describe
from graduate.adr.attached import file_of, load, read_junit, resolve, stored_path
from graduate.adr.checklists import (
    RELEASE_CHECKLIST,
    RELEASE_CHECKLIST_HEADING,
    SECURITY_GATE,
    SECURITY_GATE_HEADING,
)
from graduate.adr.document import (
    EVIDENCE_HEADING,
    HISTORY_HEADING,
    AdrDocument,
    adr_dir,
    discover,
    file_number,
    find_document,
    next_number,
)
from graduate.adr.gates import GatePolicy, GateResult, evaluate, load_adr_flow
from graduate.adr.record import (
    CLOSING,
    LADDER,
    AdrError,
    AdrRecord,
    Attachment,
    Classes,
    Pinned,
    Status,
    Transition,
)
from graduate.adr.runbook import RUNBOOKS_HEADING, build_runbook, render_runbook
from graduate.evidence import EvidenceStore, read_record
from graduate.flow import CLASS_MEANINGS, Flow, load_flow
from graduate.runs.record import MatrixRecord

# How graduate writes a move's time: ISO-8601 in UTC, to the second.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def now_utc() -> str:
    """ISO-8601 in UTC, to the second: when a move was made."""
    return datetime.now(UTC).strftime(TIME_FORMAT)


def default_actor(project_dir: Path) -> str | None:
    """Who is acting when `--by` is not given: $USER, else git's user.name."""
    if user := os.environ.get("USER", "").strip():
        return user
    try:
        done = subprocess.run(["git", "config", "user.name"], cwd=project_dir,
                              capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


# ---------------------------------------------------------------------------- new


def new_adr(project_dir: Path, flow_ref: str, *, spikes_dir: Path, who: str,
            policy: GatePolicy, when: str | None = None) -> AdrDocument:
    """Write `docs/adr/NNNN-graduate-FLOW.md` for a flow, with status planned."""
    flow = load_flow(flow_ref, spikes_dir=spikes_dir)
    for path, found in discover(project_dir):
        if isinstance(found, AdrError):
            if path.name.endswith(f"-graduate-{flow.name}.md"):
                raise found
            continue
        if found.record.flow == flow.name and not found.record.status.terminal:
            raise AdrError(
                f"{found.path} is already the ADR of flow {flow.name!r} "
                f"({found.record.status}); work on it, or close it with `graduate adr "
                f"promote {found.record.number} --to superseded --reason ...` before "
                "writing a new one")
    when = when or now_utc()
    number = next_number(project_dir)
    source = Path(flow.source)
    record = AdrRecord(
        number=number, flow=flow.name,
        flow_source=stored_path(source, project_dir) if source.is_file() else flow.source,
        status=Status.PLANNED,
        classes=Classes(flow.approval_class.value, flow.reversibility_class.value,
                        flow.sensitivity_class.value),
        history=(Transition(None, Status.PLANNED, who, when),),
    )
    body = _render_body(number, flow, record.flow_source, policy,
                        created=f"- {when}: written as planned by {who}")
    document = AdrDocument(adr_dir(project_dir) / f"{number:04d}-graduate-{flow.name}.md",
                           record, body)
    document = _with_runbooks(document, policy, project_dir, flow)
    document.save()
    return document


def _render_body(number: int, flow: Flow, flow_source: str, policy: GatePolicy,
                 created: str) -> str:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("graduate.adr", "templates"),
        autoescape=False,  # Markdown, not HTML
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    engine = describe(policy.target_engine).title
    return environment.get_template("adr.md.j2").render(
        number_text=f"{number:04d}", flow=flow, flow_source=flow_source,
        target_engine=engine,
        classes=[{"key": key, "value": getattr(flow, key).value,
                  "meaning": CLASS_MEANINGS[key][getattr(flow, key).value]}
                 for key in ("approval_class", "reversibility_class", "sensitivity_class")],
        criteria=_criteria(flow),
        required_faults=", ".join(r.describe() for r in policy.required_faults),
        security_heading=SECURITY_GATE_HEADING, security=SECURITY_GATE,
        release_heading=RELEASE_CHECKLIST_HEADING, release=RELEASE_CHECKLIST,
        created=created,
    )


def _criteria(flow: Flow) -> list[dict[str, str]]:
    """The source document's table, with what the flow definition itself says."""
    waits = flow.waits
    longest = max((w.deadline for w in waits), default=0.0)
    duration = (f"{len(flow.steps)} steps; waits up to {_duration(longest)} for a human"
                if waits else f"{len(flow.steps)} steps, no human wait")
    compensations = [f"{s.name} → {s.compensation}" for s in flow.steps if s.compensation]
    unkeyed = [s.name for s in flow.systems if not s.honours_idempotency]
    return [
        {"signal": "Duration", "celery": "Minutes, single service",
         "workflow": "Hours to days, multi-step state machine", "fact": duration},
        {"signal": "State", "celery": "Task idempotency sufficient",
         "workflow": "Long-lived state + human waits + versioning",
         "fact": f"{len(waits)} human wait(s); key `{flow.idempotency_key}`"},
        {"signal": "Compensation", "celery": "Rare, manual acceptable",
         "workflow": "Required, audited, replayable",
         "fact": "; ".join(compensations) or "none declared"},
        {"signal": "Failure domain", "celery": "Retry and DLQ enough",
         "workflow": "Must resume exact step after deploy",
         "fact": f"{len(flow.systems)} external system(s)"
                 + (f"; not honouring keys: {', '.join(unkeyed)}" if unkeyed else "")},
    ]


def _duration(seconds: float) -> str:
    # Hours up to a week, as deadlines are usually written ("72h"), then days.
    if seconds >= 7 * 86400 and seconds % 86400 == 0:
        return f"{seconds / 86400:g}d"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


# ---------------------------------------------------------------------------- attach


@dataclass(frozen=True)
class Attached:
    document: AdrDocument
    added: tuple[Attachment, ...]
    already: tuple[Attachment, ...]  # attached before, with the same hash


def attach(project_dir: Path, adr: str, refs: list[str], store: EvidenceStore, *,
           policy: GatePolicy | None = None, when: str | None = None) -> Attached:
    """Pin evidence files to an ADR: run ids, matrix ids (with their runs), JUnit files;
    then rewrite its runbooks from all its evidence (for `policy`'s target engine)."""
    document = find_document(project_dir, adr)
    record = document.record
    if record.status.terminal:
        raise AdrError(f"{document.name} is {record.status}; a closed ADR takes no more "
                       "evidence")
    when = when or now_utc()
    found = [a for ref in refs for a in resolve(ref, store, project_dir, record.flow, when)]
    added: list[Attachment] = []
    already: list[Attachment] = []
    for attachment in found:
        known = record.attachment(attachment.kind, attachment.id) or next(
            (a for a in added if a.key == attachment.key), None)
        if known is None:
            added.append(attachment)
        elif known.sha256 == attachment.sha256:
            already.append(attachment)
        else:
            raise AdrError(
                f"{attachment.kind} {attachment.id} is already attached to {document.name} "
                f"with sha256 {known.sha256[:12]}..., but {attachment.path} now hashes to "
                f"{attachment.sha256[:12]}...: evidence is immutable once attached. Restore "
                "the file, or attach the new result under a new run or file name")
    if added:
        record = replace(record, evidence=(*record.evidence, *added))
        lines = [_evidence_line(a, project_dir) for a in added]
        document = document.with_record(record).appending(EVIDENCE_HEADING, lines)
        document = _with_runbooks(document, policy or GatePolicy(), project_dir)
        document.save()
    return Attached(document, tuple(added), tuple(already))


def _evidence_line(attachment: Attachment, project_dir: Path) -> str:
    indent = "  " if attachment.via else ""
    what = _describe(attachment, project_dir)
    return (f"{indent}- {attachment.kind} `{attachment.id}`{': ' + what if what else ''} "
            f"(`{attachment.path}`, sha256 `{attachment.sha256[:12]}`, attached "
            f"{attachment.attached_at})")


def _describe(attachment: Attachment, project_dir: Path) -> str:
    path = file_of(attachment, project_dir)
    if attachment.kind == "junit":
        return read_junit(path).describe()
    record = read_record(path)
    if isinstance(record, MatrixRecord):
        return f"{len(record.cells)} cell(s)"
    fault = record.fault
    outcome = ("not applicable" if not fault.applicable else
               "passed" if record.verdict.passed else "failed")
    return (f"{record.engine}, {fault.description}, profile {record.profile}, "
            f"{len(record.instances)} instance(s), {outcome}")


# ---------------------------------------------------------------------------- runbooks


def write_runbooks(project_dir: Path, document: AdrDocument,
                   policy: GatePolicy) -> AdrDocument:
    """Rewrite the ADR's Runbooks section from its flow and the runs attached to it
    (`graduate.adr.runbook`); the document as saved."""
    updated = _with_runbooks(document, policy, project_dir)
    if updated.body == document.body:
        return document
    updated.save()
    return find_document(project_dir, str(document.path))


def _with_runbooks(document: AdrDocument, policy: GatePolicy, project_dir: Path,
                   flow: Flow | None = None) -> AdrDocument:
    """The document with its Runbooks section drawn from its flow and its attached runs
    (those whose file still matches its pin, as the gates read them)."""
    flow = flow or load_adr_flow(document.record.flow_source, project_dir)
    runs = [run for _, run in load(document.record, project_dir).runs]
    runbook = build_runbook(flow, runs, target_engine=policy.target_engine,
                            flow_ref=document.record.flow)
    return document.replacing(RUNBOOKS_HEADING, render_runbook(runbook),
                              before=SECURITY_GATE_HEADING)


# ---------------------------------------------------------------------------- promote


@dataclass(frozen=True)
class Promotion:
    """The outcome of a promotion: moved, or refused with the gate's unmet items."""

    document: AdrDocument
    gate: GateResult
    moved: bool


def parse_status(value: str) -> Status:
    try:
        return Status(value.lower())
    except ValueError:
        raise AdrError(f"--to {value!r} is not a status; use one of "
                       f"{', '.join(s.value for s in Status if s is not Status.PLANNED)}"
                       ) from None


def promote(project_dir: Path, adr: str, target: Status, *, who: str, reason: str = "",
            policy: GatePolicy, when: str | None = None) -> Promotion:
    """Move an ADR's status one step forward if the gate passes, or close it."""
    document = find_document(project_dir, adr)
    current = document.record.status
    if current.terminal:
        raise AdrError(f"{document.name} is {current}; a closed ADR does not move. Write a "
                       "new ADR for the flow with `graduate adr new`")
    if target in CLOSING:
        if not reason.strip():
            raise AdrError(f"--to {target} needs --reason: say why the decision is {target}"
                           + (" and which ADR replaces it" if target is Status.SUPERSEDED
                              else ""))
        gate = GateResult(target, ())
    else:
        expected = current.next
        if target is not expected:
            order = " → ".join(s.value for s in LADDER)
            step = (f"it can move only to {expected} next" if expected else
                    "it is as far as the lifecycle goes")
            raise AdrError(f"{document.name} is {current}; {step} ({order}, one step at a "
                           f"time), or to rejected or superseded with --reason. "
                           f"{target} is not allowed")
        gate = evaluate(document, target, policy, project_dir)
        if not gate.passed:
            return Promotion(document, gate, moved=False)
    when = when or now_utc()
    record = document.record
    move = Transition(current, target, who, when,
                      tuple(Pinned(a.kind, a.id, a.sha256) for a in record.evidence),
                      reason.strip(),
                      gate="" if target in CLOSING else policy.describe(target))
    record = replace(record, status=target, history=(*record.history, move))
    document = document.with_record(record).appending(HISTORY_HEADING,
                                                      [_history_line(move, record)])
    document.save()
    return Promotion(document, gate, moved=True)


def _history_line(move: Transition, record: AdrRecord) -> str:
    source = move.source.value if move.source else "new"
    because = f" ({move.reason})" if move.reason else ""
    shown = []
    for a in record.evidence:
        if a.via:
            continue
        runs = sum(1 for b in record.evidence if b.via == a.id)
        extra = f", with its {runs} run(s)" if a.kind == "matrix" else ""
        shown.append(f"{a.kind} `{a.id}` (sha256 `{a.sha256[:12]}`{extra})")
    evidence = ", ".join(shown) or "no evidence"
    gate = f"; gate: {move.gate}" if move.gate else ""
    return (f"- {move.when}: {source} → {move.target} by {move.who}{because}; on "
            f"{evidence}{gate}")


# ---------------------------------------------------------------------------- status, check


@dataclass(frozen=True)
class Standing:
    """An ADR in the status table: where it is, and what it lacks for its next status."""

    name: str
    number: int | None
    flow: str
    status: Status | None  # None when the ADR cannot be read
    next: Status | None
    gate: GateResult | None
    error: str = ""


def standings(project_dir: Path, policy: GatePolicy) -> list[Standing]:
    rows = []
    for path, found in discover(project_dir):
        if isinstance(found, AdrError):
            rows.append(Standing(path.name, None, "", None, None, None, str(found)))
            continue
        record = found.record
        following = record.status.next
        gate = (evaluate(found, following, policy, project_dir)
                if following is not None else None)
        rows.append(Standing(found.name, record.number, record.flow, record.status,
                             following, gate))
    return rows


@dataclass(frozen=True)
class Finding:
    """A reason an ADR's claimed status is not supported by its evidence."""

    adr: str
    problem: str


def check(project_dir: Path, policy: GatePolicy) -> tuple[int, list[Finding]]:
    """Check every ADR: record consistent, evidence intact, and the gate of its current
    status passing on its evidence. Returns (ADRs checked, findings)."""
    findings: list[Finding] = []
    found = discover(project_dir)
    for path, item in found:
        if isinstance(item, AdrError):
            findings.append(Finding(path.name, str(item)))
            continue
        findings += [Finding(item.name, p) for p in [*_number_problems(item),
                                                     *_record_problems(item.record)]]
        gate = evaluate(item, item.record.status, policy, project_dir)
        findings += [Finding(item.name, f"{unmet.title}: {problem}")
                     for unmet in gate.unmet for problem in unmet.problems]
    return len(found), findings


def _number_problems(document: AdrDocument) -> list[str]:
    """The number the front block gives, unless it is its file's: commands find an ADR
    by its file's number, and an index lists it by its own."""
    number = file_number(document.path)
    if number is None or number == document.record.number:
        return []
    return [f"the front block says adr = {document.record.number}, but its file is numbered "
            f"{number}; set adr = {number} (or restore the front block from git)"]


def _record_problems(record: AdrRecord) -> list[str]:
    """A status the history does not explain, or pins that no longer match: the signs of
    a front block edited by hand."""
    problems = []
    previous: Status | None = None
    for number, move in enumerate(record.history, start=1):
        if not _written_time(move.when):
            problems.append(f"history entry {number}: when = {move.when!r} is not a time "
                            "graduate writes (UTC, such as 2026-11-30T18:08:22Z); restore it "
                            "from git")
        legal = (move.target is Status.PLANNED if previous is None else
                 move.target in CLOSING or move.target is previous.next)
        if move.source is not previous or not legal or (previous and previous.terminal):
            problems.append(f"history entry {number} moves {move.source or 'new'} → "
                            f"{move.target}, which the lifecycle does not allow after "
                            f"{previous or 'nothing'}; the front block was edited by hand")
        previous = move.target
    if previous is not record.status:
        problems.append(f"status is {record.status} but the last move in its history is to "
                        f"{previous or 'nothing'}; statuses change only with `graduate adr "
                        "promote`")
    if record.history:
        problems += _pin_problems(record, record.history[-1])
    return problems


def _written_time(text: str) -> bool:
    try:
        datetime.strptime(text, TIME_FORMAT)
    except ValueError:
        return False
    return True


def _pin_problems(record: AdrRecord, move: Transition) -> list[str]:
    """The evidence the last move was made on must still be attached, with its hash."""
    problems = []
    for pin in move.evidence:
        attachment = record.attachment(pin.kind, pin.id)
        if attachment is None:
            problems.append(f"{pin.kind} {pin.id}, on which the ADR became {move.target}, is "
                            "no longer attached; restore its [[evidence]] entry")
        elif attachment.sha256 != pin.sha256:
            problems.append(f"{pin.kind} {pin.id} was pinned as sha256 {pin.sha256[:12]}... "
                            f"when the ADR became {move.target}, but its [[evidence]] entry "
                            f"now says {attachment.sha256[:12]}...")
    return problems
