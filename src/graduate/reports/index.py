"""The spikes' index: one page comparing every flow that a graduate ADR decides.

Everything on it is read from files when it is written: each ADR in docs/adr (its
status, its recorded outcome, whether that status still holds on its pinned evidence)
and the runs attached to it, rendered through the report model
(`graduate.reports.build`), so a cell's verdict here is the report's. The index answers
the question the ADRs are for: which flows graduate, and which could stay on Celery,
with which settings, and why. Nothing is typed in by hand, so when an ADR's evidence is
run again and re-attached, writing the index again is all it takes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from graduate.adapters import describe
from graduate.adr.attached import file_of, load
from graduate.adr.document import AdrDocument, decision_outcome, discover
from graduate.adr.gates import GatePolicy, evaluate, stale_runs
from graduate.adr.record import AdrError, Attachment
from graduate.errors import ConfigError, GraduateError
from graduate.evidence import EvidenceStore, reading_once
from graduate.reports.build import build_report
from graduate.reports.model import CellReport, Pairs, Report
from graduate.reports.render import template
from graduate.runs.record import RunRecord

INDEX_NAME = "index.md"
BASELINE = "defaults"  # the profile whose settings a hardening is told apart from


@dataclass(frozen=True)
class ProfileResult:
    """One engine under one profile, over every cell of it the ADR's runs hold."""

    engine: str
    profile: str
    passed: int
    failed: int
    not_applicable: int
    failing: tuple[str, ...]  # each failing cell in words, with what it did
    hardening: Pairs  # settings this profile sets apart from the defaults' runs

    @property
    def clean(self) -> bool:
        return self.failed == 0 and self.passed > 0


@dataclass(frozen=True)
class SpikeEntry:
    """One ADR's row: its decision, and the evidence it rests on, engine by engine."""

    flow: str
    adr: str  # the ADR's file name
    adr_link: str  # relative to the index
    status: str
    outcome: str  # Approved, Rejected, Extend pilot, or "not recorded"
    holds: bool  # the gate of its status passes on its evidence now
    problems: tuple[str, ...]  # why it does not, when it does not
    classes: Pairs
    runs: int  # attached runs of the flow as it is now: the ones counted here
    superseded: int  # attached runs of an earlier definition (or profile), left out
    # The source table's signals on the Temporal side (None: no run, so not known).
    needs_temporal: tuple[str, ...] | None
    recommendation: str  # the report's headline on these runs
    target: tuple[ProfileResult, ...]
    celery: tuple[ProfileResult, ...]
    stays_on_celery: str  # the answer, in a sentence
    report_link: str | None  # the flow's committed report, relative to the index


@dataclass(frozen=True)
class SpikeIndex:
    entries: tuple[SpikeEntry, ...]
    unreadable: Pairs  # (ADR file, why it could not be read)


def build_index(project_dir: Path, policy: GatePolicy, reports_dir: Path) -> SpikeIndex:
    """The index of every graduate ADR in the project, as its files stand now;
    `reports_dir` is where the index goes and where the flows' reports are looked for."""
    entries, unreadable = [], []
    # Each ADR's runs are read for its gate, its row and its report: once is enough.
    with reading_once():
        for path, found in discover(project_dir):
            if isinstance(found, AdrError):
                unreadable.append((path.name, str(found)))
                continue
            entries.append(_entry(project_dir, found, policy, reports_dir))
    if not entries and not unreadable:
        raise ConfigError(f"no graduate ADR in {project_dir / 'docs' / 'adr'}; write one with "
                          "`graduate adr new FLOW` and attach its evidence first")
    return SpikeIndex(tuple(entries), tuple(unreadable))


def _entry(project_dir: Path, document: AdrDocument, policy: GatePolicy,
           reports_dir: Path) -> SpikeEntry:
    record = document.record
    gate = evaluate(document, record.status, policy, project_dir)
    problems = tuple(f"{item.title}: {problem}" for item in gate.unmet
                     for problem in item.problems)
    loaded = load(record, project_dir)
    # A run counts only for the definition it ran, as for the gates: an ADR that pins
    # the runs of an earlier definition beside the current ones counts only the latter.
    stale = stale_runs(document, loaded, project_dir)
    current = [(a, run) for a, run in loaded.runs if a.id not in stale]
    report = _report(project_dir, document, current)
    target = policy.target_engine
    results = _results(report) if report is not None else []
    celery = tuple(r for r in results if _side(r.engine) == "celery")
    return SpikeEntry(
        flow=record.flow, adr=document.name,
        adr_link=_relative(document.path, reports_dir), status=record.status.value,
        outcome=decision_outcome(document) or "not recorded", holds=gate.passed,
        problems=problems, classes=record.classes.items(),
        runs=len(report.runs) if report is not None else 0, superseded=len(stale),
        needs_temporal=tuple(c.signal for c in report.criteria if c.points_to == "temporal")
        if report is not None else None,
        recommendation=report.recommendation.headline if report is not None
        else "No run of the flow as it is now is attached." if stale
        else "No run is attached yet.",
        target=tuple(r for r in results if r.engine == target), celery=celery,
        stays_on_celery=_stays_on_celery(
            celery, report is not None,
            max((_cells(r) for r in results if r.engine == target), default=0)),
        report_link=_report_link(reports_dir, record.flow,
                                 [a.id for a in record.evidence if a.kind == "matrix"]))


def _report(project_dir: Path, document: AdrDocument,
            runs: Sequence[tuple[Attachment, RunRecord]]) -> Report | None:
    """The report of `runs`, the ADR's attached runs that count (None when none does);
    runs whose files are missing or changed are the ADR check's to name, and are not
    among them."""
    if not runs:
        return None
    roots = {file_of(a, project_dir).parent.parent for a, _ in runs}
    if len(roots) > 1:
        raise ConfigError(f"{document.name} pins runs from {len(roots)} evidence folders "
                          f"({', '.join(sorted(map(str, roots)))}); the index reads one "
                          "folder per ADR: attach runs from one")
    return build_report(EvidenceStore(roots.pop()), run_ids=[a.id for a, _ in runs])


def _results(report: Report) -> list[ProfileResult]:
    """Each engine under each profile, in the report's order."""
    baseline = {s.engine: dict(s.values) for s in report.settings_sets
                if s.profile == BASELINE}
    results = []
    for row in report.grid:
        cells = [c for slot in row.slots for c in slot]
        values = next((dict(s.values) for s in report.settings_sets
                       if s.engine == row.engine and s.profile == row.profile), {})
        base = baseline.get(row.engine, {})
        hardening = tuple((k, v) for k, v in values.items()
                          if row.profile != BASELINE and base.get(k) != v)
        results.append(ProfileResult(
            engine=row.engine, profile=row.profile,
            passed=sum(1 for c in cells if c.status == "pass"),
            failed=sum(1 for c in cells if c.status == "fail"),
            not_applicable=sum(1 for c in cells if c.status == "not-applicable"),
            failing=tuple(_failing(c) for c in cells if c.status == "fail"),
            hardening=hardening))
    return results


def _failing(cell: CellReport) -> str:
    """A failing cell in words: its fault and point, and what it did to commitments."""
    what = [f"{count} {word}" for count, word in (
        (cell.lost, "lost"), (cell.stuck, "stuck"), (cell.failed, "failed"),
        (cell.unabsorbed_duplicates, "duplicated")) if count]
    missed = cell.hit_by_fault - cell.resumed_exactly
    if missed > 0:
        what.append(f"{missed} not resumed at the step in flight")
    if not what:
        what.append(cell.failures[0] if cell.failures else "a required property failed")
    at = f" at {cell.at}" if cell.at else ""
    return f"{cell.column.split('@', 1)[0]}{at}: {', '.join(what)}"


def _cells(result: ProfileResult) -> int:
    return result.passed + result.failed + result.not_applicable


def _stays_on_celery(celery: Sequence[ProfileResult], has_runs: bool, target_cells: int) -> str:
    """Whether a Celery strategy passed every cell it ran, and under which settings;
    unknown while the ones that passed ran fewer cells than the target engine did."""
    if not has_runs:
        return "Unknown: no run is attached."
    if not celery:
        return "Unknown: no Celery run is attached."
    clean = [r for r in celery if r.clean]
    if clean and all(_cells(r) < target_cells for r in clean):
        return "Unknown: " + "; ".join(
            f"{r.engine} under {r.profile} passed all {r.passed} cell(s) it ran, but ran "
            f"{_cells(r)} of the {target_cells} the target engine ran" for r in clean) + "."
    clean = [r for r in clean if _cells(r) >= target_cells]
    if clean:
        return "Yes, " + "; or ".join(
            f"as {r.engine} under {r.profile}"
            + (f" ({_settings(r.hardening)})" if r.hardening else " (its defaults)")
            + f": it passed all {r.passed} cell(s) it ran" for r in clean) + "."
    best: dict[str, ProfileResult] = {}
    for result in celery:
        if result.engine not in best or result.failed < best[result.engine].failed:
            best[result.engine] = result
    return "No: every Celery strategy lost, duplicated or failed a commitment under some " \
        "fault, even in its best profile: " + "; ".join(
            f"{r.engine} under {r.profile}: {'; '.join(r.failing)}"
            for r in best.values()) + "."


def _settings(pairs: Pairs) -> str:
    return ", ".join(f"{k} = {v}" for k, v in pairs)


def _side(engine: str) -> str | None:
    try:
        return describe(engine).side
    except GraduateError:
        return None


def _report_link(reports_dir: Path, flow: str, matrices: Sequence[str]) -> str | None:
    """The flow's committed report beside the index: report-FLOW.md (`graduate report
    --flow FLOW`), else the report of a matrix the ADR pins, newest first, if one is there."""
    for name in [f"report-{flow}", *(f"report-{m}" for m in reversed(matrices))]:
        if (reports_dir / f"{name}.md").is_file():
            return f"{name}.md"
    return None


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def render_index(index: SpikeIndex) -> str:
    """The index as Markdown: one table, and a paragraph per flow saying why."""
    return template("index.md.j2").render(index=index)


def write_index(index: SpikeIndex, out: Path) -> Path:
    path = out / INDEX_NAME
    try:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(render_index(index), encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot write the index into {out} ({error.strerror}); give "
                          "--out a folder you can write to") from error
    return path
