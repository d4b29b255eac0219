"""The typed run and matrix records: the committed demo evidence reads back whole, and a
file of another schema version, or with a field missing or of the wrong type, is refused
with the name of the file and of the field."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.sample import SAMPLE_MATRIX, sample_run_files

from graduate.errors import EvidenceError, GraduateError
from graduate.evidence import EvidenceStore, read_record, read_run, reading_once
from graduate.runs.record import CellOutcome, MatrixRecord, RunRecord

# The demo evidence of the sample flow, of schema version 1, pinned by the history of
# docs/adr/0003-graduate-partner_approval.md (the pilot's newer evidence sits beside it).
RUN_FILES = sample_run_files()
MATRIX_FILES = [SAMPLE_MATRIX]


def raw(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def kept(written: Any, read: Any, where: str = "") -> list[str]:
    """Where `read` lost or changed something `written` holds (each key and value)."""
    if isinstance(written, dict):
        if not isinstance(read, dict):
            return [f"{where}: an object became {read!r}"]
        return [problem for key, value in written.items()
                for problem in ([f"{where}.{key}: dropped"] if key not in read else
                                kept(value, read[key], f"{where}.{key}"))]
    if isinstance(written, list):
        if not isinstance(read, list) or len(read) != len(written):
            return [f"{where}: a list of {len(written)} became {read!r}"]
        return [p for n, (a, b) in enumerate(zip(written, read, strict=True))
                for p in kept(a, b, f"{where}[{n}]")]
    if written != read or isinstance(written, bool) is not isinstance(read, bool):
        return [f"{where}: {written!r} became {read!r}"]
    return []


def test_the_demo_evidence_is_there_to_test() -> None:
    assert len(RUN_FILES) == 24
    assert len(MATRIX_FILES) == 1
    assert {raw(p)["schema_version"] for p in [*RUN_FILES, *MATRIX_FILES]} == {1}


@pytest.mark.parametrize("path", RUN_FILES, ids=lambda p: p.stem)
def test_every_demo_run_reads_back_whole(path: Path) -> None:
    written = raw(path)

    record = RunRecord.from_dict(written)

    assert RunRecord.from_dict(record.to_dict()) == record
    assert kept(written, record.to_dict()) == []
    assert record.run_id == path.stem
    assert len(record.instances) == len(written["instances"])
    assert len(record.ledger) == len(written["ledger"])


@pytest.mark.parametrize("path", RUN_FILES, ids=lambda p: p.stem)
def test_a_run_is_stored_in_pieces_as_the_same_text_as_its_whole_dict(path: Path,
                                                                     tmp_path: Path) -> None:
    """The store writes a run instance by instance (`RunRecord.json_chunks`), so that a
    run of thousands is never held twice in the harness's memory: same file, byte for
    byte, as dumping the record's dict whole."""
    record = RunRecord.from_dict(raw(path))
    store = EvidenceStore(tmp_path)

    stored = store.save_run(record)

    assert stored.read_text(encoding="utf-8") == json.dumps(
        record.to_dict(), indent=2, sort_keys=True, default=str) + "\n"
    assert store.load_run(record.run_id) == record


@pytest.mark.parametrize("path", MATRIX_FILES, ids=lambda p: p.stem)
def test_the_demo_matrix_reads_back_whole(path: Path) -> None:
    """The demo matrix is of version 1, whose cells kept a fault's `versioned` and `cold`
    flags as fields; it is written back as version 2, with them as the cell's options."""
    written = raw(path)

    record = MatrixRecord.from_dict(written)
    rewritten = record.to_dict()

    assert MatrixRecord.from_dict(rewritten) == record
    assert rewritten["schema_version"] == MatrixRecord.SCHEMA_VERSION == 2
    legacy = ("versioned", "cold")
    as_version_2 = {**written, "schema_version": 2,
                    "cells": [{k: v for k, v in c.items() if k not in legacy}
                              for c in written["cells"]]}
    assert kept(as_version_2, rewritten) == []
    for cell, stored in zip(record.cells, written["cells"], strict=True):
        assert cell.options == {k: True for k in legacy if stored.get(k)}
        assert cell.key.split("|")[1].split("@")[0] == cell.label
    assert {c.run_id for c in record.cells} == {p.stem for p in RUN_FILES}


def test_a_cell_reads_the_same_in_either_version() -> None:
    summary = raw(MATRIX_FILES[0])["cells"][0]["summary"]
    old = {"key": "temporal|deploy-change+versioned@approval:during-wait|defaults",
           "engine": "temporal", "fault": "deploy-change", "at": "approval:during-wait",
           "profile": "defaults", "versioned": True, "cold": False, "status": "done",
           "run_id": "abc123", "summary": summary}
    new = {k: v for k, v in old.items() if k not in ("versioned", "cold")}

    cell = CellOutcome.from_dict(old)

    assert cell.options == {"versioned": True}
    assert cell.label == "deploy-change+versioned"
    assert CellOutcome.from_dict({**new, "options": {"versioned": True}}) == cell
    assert CellOutcome.from_dict(new).options == {}


def test_a_record_reads_back_from_the_store_as_it_was_saved(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path)
    run = RunRecord.from_dict(raw(RUN_FILES[0]))
    matrix = MatrixRecord.from_dict(raw(MATRIX_FILES[0]))

    store.save_run(run)
    store.save_matrix(matrix)

    assert store.load_run(run.run_id) == run
    assert store.load_matrix(matrix.matrix_id) == matrix
    assert read_record(store.run_path(run.run_id)) == run
    assert (raw(store.run_path(run.run_id))["schema_version"],
            raw(store.run_path(run.run_id))["kind"]) == (RunRecord.SCHEMA_VERSION, "run")


def test_inside_reading_once_a_run_is_read_once_and_again_once_its_file_changes(
        tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path)
    path = store.save_run(RunRecord.from_dict(raw(RUN_FILES[0])))
    run_id = path.stem

    with reading_once():
        first = store.load_run(run_id)
        assert read_run(path) is first
        assert store.load_run(run_id) is first
        data = raw(path)
        data["profile"] = 7
        path.write_text(json.dumps(data), encoding="utf-8")
        with pytest.raises(EvidenceError, match=rf"{re.escape(str(path))}: field profile"):
            store.load_run(run_id)

    with pytest.raises(EvidenceError, match="field profile should be a string"):
        store.load_run(run_id)


# ---------------------------------------------------------------------------- refused


@pytest.fixture
def damaged(tmp_path: Path) -> Callable[[Callable[[dict[str, Any]], object]], Path]:
    """A copy of a demo run (one with a fault caught in flight), edited by `change`."""
    [source] = [p for p in RUN_FILES
                if any(i["resume"] for i in raw(p)["instances"]) and raw(p)["ledger"]][:1]

    def write(change: Callable[[dict[str, Any]], object]) -> Path:
        data = copy.deepcopy(raw(source))
        change(data)
        path = tmp_path / "evidence" / "runs" / f"{data.get('run_id', 'x')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data), encoding="utf-8")
        return path

    return write


@pytest.mark.parametrize("version", [2, 0, None, "1"])
def test_a_file_of_another_schema_version_is_refused(damaged: Callable[..., Path],
                                                     version: object) -> None:
    assert version not in RunRecord.READABLE_VERSIONS
    path = damaged(lambda d: d.update(schema_version=version))

    with pytest.raises(EvidenceError) as refused:
        read_record(path)

    assert str(path) in str(refused.value)
    assert f"schema version {version!r}" in str(refused.value)
    assert "this graduate reads a run of version 1" in str(refused.value)


def _drop(*keys: str | int) -> Callable[[dict[str, Any]], object]:
    def change(data: dict[str, Any]) -> object:
        *path, last = keys
        for key in path:
            data = data[key]  # type: ignore[index]
        return data.pop(last)  # type: ignore[arg-type]
    return change


def _set(value: object, *keys: str | int) -> Callable[[dict[str, Any]], object]:
    def change(data: dict[str, Any]) -> object:
        *path, last = keys
        for key in path:
            data = data[key]  # type: ignore[index]
        data[last] = value  # type: ignore[index]
        return None
    return change


@pytest.mark.parametrize(("change", "field", "problem"), [
    (_drop("fault", "reason"), "fault.reason", "is missing"),
    (_drop("verdict", "passed"), "verdict.passed", "is missing"),
    (_drop("instances", 0, "history"), "instances[0].history", "is missing"),
    (_drop("ledger", 0, "trace_id"), "ledger[0].trace_id", "is missing"),
    (_set("two", "instances", 0, "effects", 0, "applied"), "instances[0].effects[0].applied",
     "should be a whole number, not str 'two'"),
    (_set(True, "options", "instances"), "options.instances",
     "should be a whole number, not bool True"),
    (_set("maybe", "ledger", 0, "outcome"), "ledger[0].outcome", "is 'maybe', not one of"),
    (_set("gone", "instances", 0, "verdict"), "instances[0].verdict", "is 'gone', not one of"),
    (_set({"exact": True}, "instances", 0, "resume"), "instances[0].resume.in_flight",
     "is missing"),
    (_set("soon", "started_at"), "started_at", "should be a number, not str 'soon'"),
    (_set([], "fault"), "fault", "should be an object, not list []"),
    (_set(3, "fault", "cold"), "fault.cold", "is int 3, which none of its types accepts"),
    (_set("x", "options", "colour"), "options.colour", "is not part of schema version 1"),
], ids=lambda v: v if isinstance(v, str) and "." in v else None)
def test_a_missing_or_mistyped_field_is_named_with_its_file(
        damaged: Callable[..., Path], change: Callable[[dict[str, Any]], object], field: str,
        problem: str) -> None:
    path = damaged(change)

    with pytest.raises(EvidenceError) as refused:
        EvidenceStore(path.parents[1]).load_run(path.stem)

    message = str(refused.value)
    assert str(path) in message
    assert f"field {field} {problem}" in message


@pytest.mark.parametrize(("change", "field", "problem"), [
    (_set("maybe", "cells", 0, "status"), "cells[0].status", "is 'maybe', not one of"),
    (_drop("cells", 0, "summary", "passed"), "cells[0].summary.passed", "is missing"),
    (_set("temporal", "spec", "engines"), "spec.engines", "should be a list, not str"),
    (_drop("matrix_id"), "matrix_id", "is missing"),
])
def test_a_damaged_matrix_is_named_with_its_file_and_field(
        tmp_path: Path, change: Callable[[dict[str, Any]], object], field: str,
        problem: str) -> None:
    data = raw(MATRIX_FILES[0])
    change(data)
    path = tmp_path / "matrices" / "m1.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data), encoding="utf-8")

    with pytest.raises(EvidenceError) as refused:
        EvidenceStore(tmp_path).load_matrix("m1")

    assert str(path) in str(refused.value)
    assert f"field {field} {problem}" in str(refused.value)


def test_a_file_that_is_not_json_is_evidence_damaged(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "broken.json"
    path.parent.mkdir()
    path.write_text('{"schema_version": 1, "kind": "run", ', encoding="utf-8")

    with pytest.raises(EvidenceError, match="is not valid JSON"):
        EvidenceStore(tmp_path).load_run("broken")


def test_a_matrix_is_not_read_as_a_run(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "m.json"
    path.parent.mkdir()
    path.write_text(MATRIX_FILES[0].read_text(encoding="utf-8"), encoding="utf-8")

    with pytest.raises(EvidenceError, match="holds a 'matrix' record, not a run"):
        EvidenceStore(tmp_path).load_run("m")
    assert issubclass(EvidenceError, GraduateError)


def test_the_cli_says_which_file_and_field_and_exits_2(damaged: Callable[..., Path],
                                                       tmp_path: Path) -> None:
    path = damaged(_set("two", "instances", 0, "effects", 0, "applied"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADUATE_")}

    done = subprocess.run(
        [sys.executable, "-m", "graduate", "report", "--evidence", str(path.parents[1]),
         "--run", path.stem, "--out", str(tmp_path / "out")],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=60,
        env={**env, "COLUMNS": "400"})

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "instances[0].effects[0].applied" in done.stderr
    assert path.name in done.stderr


PILOT_MATRIX = SAMPLE_MATRIX.with_name("m71bd4b.json")  # pinned by ADR 0003 now


def test_the_pilots_evidence_reads_back_whole_and_shows_its_notices() -> None:
    written = raw(PILOT_MATRIX)
    matrix = MatrixRecord.from_dict(written)
    assert kept(written, matrix.to_dict()) == []
    runs = [PILOT_MATRIX.parents[1] / "runs" / f"{c.run_id}.json" for c in matrix.cells]
    records = [RunRecord.from_dict(raw(path)) for path in runs]
    assert all(kept(raw(p), r.to_dict()) == [] for p, r in zip(runs, records, strict=True))
    # Every wait that ran past its deadline ended expired: voided, then one expiry notice.
    lapsed = [r for r in records if r.fault.fault == "wait-timeout"]
    assert len(lapsed) == 6
    for record in lapsed:
        [verdict] = record.verdicts
        assert [(n.step, n.expected, n.applied) for n in verdict.notices] == [
            ("approval.expired_notice", True, 1)], record.run_id
        assert [n.owner for n in verdict.notices] == ["approval"]  # stored as `wait`
