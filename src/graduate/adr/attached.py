"""Evidence an ADR rests on: runs and matrices from the evidence store, and JUnit reports.

Attaching pins each file by its sha256 (`graduate.evidence.content_hash`). A matrix
brings the runs of its cells with it, each pinned on its own, because the gates judge
runs; the matrix file itself is pinned so that its list of cells cannot change either.
Everything read back later is checked against its pin first: evidence edited after it
was attached is reported, never judged.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from graduate.adr.record import AdrError, AdrRecord, Attachment
from graduate.errors import GraduateError
from graduate.evidence import EvidenceStore, content_hash, read_record, read_run
from graduate.runs.record import MatrixRecord, Record, RunRecord


@dataclass(frozen=True)
class JunitSummary:
    """The counts of a JUnit XML report."""

    tests: int
    failures: int
    errors: int
    skipped: int

    @property
    def passed(self) -> bool:
        """Tests ran, and none failed, errored or was skipped: a skipped crash test did
        not show that the flow survives its fault."""
        return self.tests > 0 and not (self.failures or self.errors or self.skipped)

    def describe(self) -> str:
        counts = (f"{self.tests} test(s), {self.failures} failure(s), {self.errors} "
                  f"error(s), {self.skipped} skipped")
        if self.skipped and self.tests > self.skipped:
            counts += (": a skipped test proves nothing; run it where its services are "
                       "(GRADUATE_REQUIRE_SERVICES=1 turns such skips into failures)")
        return counts


@dataclass(frozen=True)
class Loaded:
    """The attached evidence of an ADR, read back and checked against its pins."""

    runs: tuple[tuple[Attachment, RunRecord], ...]
    junits: tuple[tuple[Attachment, JunitSummary], ...]
    problems: tuple[str, ...]  # files missing, changed or unreadable


def read_junit(path: Path) -> JunitSummary:
    """Count tests, failures, errors and skips, from the test cases and the suites' own
    totals (whichever is higher, so an error outside any test case still counts)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as error:
        raise AdrError(f"{path} is not a readable JUnit XML report ({error}); attach the "
                       "file `pytest --junitxml=FILE` wrote") from error
    if root.tag not in ("testsuites", "testsuite"):
        raise AdrError(f"{path} is XML but not a JUnit report (its root is <{root.tag}>, "
                       "not <testsuites> or <testsuite>)")
    cases = list(root.iter("testcase"))
    counted = JunitSummary(
        tests=len(cases),
        failures=sum(1 for c in cases if c.find("failure") is not None),
        errors=sum(1 for c in cases if c.find("error") is not None),
        skipped=sum(1 for c in cases if c.find("skipped") is not None),
    )
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    totals = {key: sum(_count(s, key) for s in suites)
              for key in ("tests", "failures", "errors", "skipped")}
    return JunitSummary(
        tests=max(counted.tests, totals["tests"]),
        failures=max(counted.failures, totals["failures"]),
        errors=max(counted.errors, totals["errors"]),
        skipped=max(counted.skipped, totals["skipped"]),
    )


def _count(suite: ET.Element, key: str) -> int:
    try:
        return int(suite.get(key, "0"))
    except ValueError:
        return 0


def stored_path(path: Path, project_dir: Path) -> str:
    """How a path is written into the record: relative to the project when inside it, so
    the record holds in a clone and in CI."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(project_dir.resolve()).as_posix()
    except ValueError:
        return str(resolved)


def file_of(attachment: Attachment, project_dir: Path) -> Path:
    path = Path(attachment.path)
    return path if path.is_absolute() else project_dir / path


def resolve(ref: str, store: EvidenceStore, project_dir: Path, flow: str,
            when: str) -> list[Attachment]:
    """The attachments for one EVIDENCE argument: a run id, a matrix id, a run or matrix
    JSON file, or a JUnit XML file."""
    path = Path(ref)
    if not path.is_file() and (project_dir / ref).is_file():
        path = project_dir / ref
    if path.is_file() and path.suffix.lower() == ".xml":
        read_junit(path)  # refuse a file that is not a report now, not at promotion
        where = stored_path(path, project_dir)
        return [Attachment("junit", where, where, content_hash(path), when)]
    if path.is_file() and path.suffix.lower() == ".json":
        record = _read(path)
        if isinstance(record, RunRecord):
            return [_run(path, record, project_dir, flow, when)]
        return _matrix(path, record, EvidenceStore(path.parent.parent), project_dir, flow,
                       when)
    if store.run_path(ref).is_file():
        path = store.run_path(ref)
        return [_run(path, _read_run(path), project_dir, flow, when)]
    if store.matrix_path(ref).is_file():
        path = store.matrix_path(ref)
        matrix = _read(path)
        if not isinstance(matrix, MatrixRecord):
            raise AdrError(f"{path} holds a run, not a matrix; restore the matrix file")
        return _matrix(path, matrix, store, project_dir, flow, when)
    raise AdrError(f"no run, matrix or JUnit file {ref!r}: not a file, and not an id in "
                   f"{store.root} (runs/ or matrices/). Give a run id (`graduate chaos` "
                   "prints it), a matrix id (`graduate matrix`), or a path to a JUnit XML "
                   "file; use --evidence DIR for another evidence folder")


def _read(path: Path) -> Record:
    try:
        return read_record(path)
    except GraduateError as error:
        raise AdrError(str(error)) from error


def _read_run(path: Path) -> RunRecord:
    try:
        return read_run(path)
    except GraduateError as error:
        raise AdrError(f"run {path.stem} cannot be attached: {error}") from error


def _run(path: Path, run: RunRecord, project_dir: Path, flow: str, when: str,
         via: str = "") -> Attachment:
    if run.flow.name != flow:
        raise AdrError(f"run {path.stem} is evidence for flow {run.flow.name!r}, not "
                       f"{flow!r}; attach it to that flow's ADR")
    return Attachment("run", run.run_id or path.stem, stored_path(path, project_dir),
                      content_hash(path), when, via)


def _matrix(path: Path, matrix: MatrixRecord, store: EvidenceStore, project_dir: Path,
            flow: str, when: str) -> list[Attachment]:
    matrix_id = matrix.matrix_id or path.stem
    if matrix.flow != flow:
        raise AdrError(f"matrix {matrix_id} is evidence for flow {matrix.flow!r}, not "
                       f"{flow!r}; attach it to that flow's ADR")
    pending = [c.key for c in matrix.cells if c.status == "pending" or not c.run_id]
    if pending:
        raise AdrError(f"matrix {matrix_id} is unfinished ({len(pending)} cell(s) without a "
                       f"run, e.g. {pending[0]}) and its file will still change; finish it "
                       f"with `graduate matrix --resume {matrix_id}`, then attach it")
    runs = []
    for cell in matrix.cells:
        run_path = store.run_path(str(cell.run_id))
        if not run_path.is_file():
            raise AdrError(f"matrix {matrix_id} names run {cell.run_id} for cell "
                           f"{cell.key}, but {run_path} is missing; restore it")
        runs.append(_run(run_path, _read_run(run_path), project_dir, flow, when,
                         via=matrix_id))
    attachment = Attachment("matrix", matrix_id, stored_path(path, project_dir),
                            content_hash(path), when)
    return [attachment, *runs]


def verify(attachment: Attachment, project_dir: Path) -> str | None:
    """Why an attached file can no longer be trusted, or None when it matches its pin."""
    path = file_of(attachment, project_dir)
    if not path.is_file():
        return (f"{attachment.kind} {attachment.id}: {attachment.path} is missing; restore "
                "it (evidence an ADR rests on must be kept, e.g. committed)")
    actual = content_hash(path)
    if actual != attachment.sha256:
        return (f"{attachment.kind} {attachment.id}: {attachment.path} changed since it was "
                f"attached (sha256 {attachment.sha256[:12]}... now {actual[:12]}...); "
                "evidence is immutable: restore the file from git or the run's copy")
    return None


def load(record: AdrRecord, project_dir: Path) -> Loaded:
    """Read every attached run and JUnit report that still matches its pin."""
    runs: list[tuple[Attachment, RunRecord]] = []
    junits: list[tuple[Attachment, JunitSummary]] = []
    problems: list[str] = []
    for attachment in record.evidence:
        problem = verify(attachment, project_dir)
        if problem is not None:
            problems.append(problem)
            continue
        path = file_of(attachment, project_dir)
        try:
            if attachment.kind == "run":
                run = read_run(path)
                if run.flow.name != record.flow:
                    problems.append(f"run {attachment.id} is evidence for flow "
                                    f"{run.flow.name!r}, not {record.flow!r}")
                    continue
                runs.append((attachment, run))
            elif attachment.kind == "junit":
                junits.append((attachment, read_junit(path)))
        except GraduateError as error:
            problems.append(f"{attachment.kind} {attachment.id}: {error}")
    return Loaded(tuple(runs), tuple(junits), tuple(problems))
