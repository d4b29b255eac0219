"""The evidence store: every run and matrix as versioned JSON, written atomically.

What a file holds is `graduate.runs.record`: a `RunRecord` or a `MatrixRecord`, read
back through its typed class, never by raw keys.

A file is written to a temporary name, flushed to disk and renamed over the target,
so a run killed or interrupted while writing leaves either the old file or the new
one, never half of one. A matrix file lists its cells and the run that settled each,
so `graduate matrix --resume` runs only the cells that have none.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from graduate.errors import EvidenceError
from graduate.files import parse_json, read_text, unwritable
from graduate.runs.record import MatrixRecord, Record, RunRecord, record_from_dict


def write_json(path: Path, data: Any) -> None:
    """Write `data` to `path` atomically (temporary file, fsync, rename)."""
    write_json_text(path, json.JSONEncoder(indent=2, sort_keys=True,
                                           default=str).iterencode(data))


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically: a reader sees the old file or the new, whole."""
    _write_atomically(path, lambda handle: handle.write(data))


def write_json_text(path: Path, chunks: Iterable[str]) -> None:
    """Write JSON text, given in pieces, to `path` atomically, as `write_json` does."""
    def write(handle: BinaryIO) -> None:
        for chunk in chunks:
            handle.write(chunk.encode("utf-8"))
        handle.write(b"\n")
    _write_atomically(path, write)


def _write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a temporary file beside `path`, fsync it, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with temporary.open("wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in an evidence file, unchecked: `read_record` checks it."""
    try:
        text = read_text(path, "evidence file", EvidenceError)
    except FileNotFoundError as error:
        raise EvidenceError(f"no evidence file {path}") from error
    try:
        data = parse_json(text, f"evidence file {path}", EvidenceError)
    except EvidenceError as error:
        raise EvidenceError(f"{error}; it was edited or damaged: restore it or run again"
                            ) from error
    if not isinstance(data, dict):
        raise EvidenceError(f"evidence file {path} holds a JSON {type(data).__name__}, not "
                            "a run or a matrix; restore it or run again")
    return data


def read_record(path: Path) -> Record:
    """The run or matrix in `path`, checked field by field against its schema version."""
    return record_from_dict(read_json(path), source=f"evidence file {path}")


def read_run(path: Path) -> RunRecord:
    """The run in `path`; inside `reading_once`, a file already read is not read again."""
    cache = _RUNS_READ.get()
    if cache is None:
        return _read_run(path)
    try:
        stat = path.stat()
    except OSError:
        return _read_run(path)  # missing or unreadable: read_json says why
    # The same file under any name, unchanged since it was read.
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in cache:
        cache[key] = _read_run(path)
    return cache[key]


def _read_run(path: Path) -> RunRecord:
    return RunRecord.from_dict(read_json(path), source=f"evidence file {path}")


_RUNS_READ: ContextVar[dict[tuple[int, int, int, int], RunRecord] | None] = ContextVar(
    "_RUNS_READ", default=None)


@contextmanager
def reading_once() -> Iterator[None]:
    """Within it, each run file is read and checked once, however many times it is asked
    for: the reports index reads every ADR's runs for its gate, for its row and for its
    report. A file that changes meanwhile (size, mtime or inode) is read again. Records
    are frozen and shared: a reader must not change the dicts they hold."""
    token = _RUNS_READ.set({})
    try:
        yield
    finally:
        _RUNS_READ.reset(token)


def read_matrix(path: Path) -> MatrixRecord:
    return MatrixRecord.from_dict(read_json(path), source=f"evidence file {path}")


def known_ids(ids: Sequence[str]) -> str:
    """Stored IDs as a message lists them: the first ten, and how many more."""
    shown = ", ".join(ids[:10]) if ids else "none"
    return f"{shown}{f' and {len(ids) - 10} more' if len(ids) > 10 else ''}"


def content_hash(path: Path) -> str:
    """sha256 of a file's bytes: how an ADR pins the evidence it was promoted on."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class EvidenceStore:
    """A folder of evidence: `runs/RUN_ID.json` and `matrices/MATRIX_ID.json`."""

    root: Path

    def ensure_writable(self) -> None:
        """Refuse, before a run starts, a folder that could not take its record (a run
        whose evidence cannot be written is a run lost). Leaves nothing behind."""
        for folder in (self.root / "runs", self.root / "matrices"):
            if problem := unwritable(folder):
                raise EvidenceError(f"the evidence folder {folder} cannot be written "
                                    f"({problem}); give a folder you can write with "
                                    "--evidence, or `evidence` in [tool.graduate]")

    def run_path(self, run_id: str) -> Path:
        return self.root / "runs" / f"{run_id}.json"

    def matrix_path(self, matrix_id: str) -> Path:
        return self.root / "matrices" / f"{matrix_id}.json"

    def save_run(self, record: RunRecord) -> Path:
        path = self.run_path(record.run_id)
        write_json_text(path, record.json_chunks())
        return path

    def histories_path(self, run_id: str) -> Path:
        """The engine's exported histories of a run's instances (one JSON file each, as
        `graduate replay` reads them), where the engine exports them."""
        return self.root / "histories" / run_id

    def save_histories(self, run_id: str, exported: Path) -> None:
        """Keep the histories an engine exported into `exported` with the run."""
        files = sorted(exported.glob("*.json")) if exported.is_dir() else []
        for file in files:
            target = self.histories_path(run_id) / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)

    def load_run(self, run_id: str) -> RunRecord:
        return read_run(self.run_path(run_id))

    def runs(self) -> list[str]:
        folder = self.root / "runs"
        return sorted(p.stem for p in folder.glob("*.json")) if folder.exists() else []

    def save_matrix(self, record: MatrixRecord) -> Path:
        path = self.matrix_path(record.matrix_id)
        write_json(path, record.to_dict())
        return path

    def load_matrix(self, matrix_id: str) -> MatrixRecord:
        return read_matrix(self.matrix_path(matrix_id))

    def matrices(self) -> list[str]:
        folder = self.root / "matrices"
        return sorted(p.stem for p in folder.glob("*.json")) if folder.exists() else []

    def latest_matrix(self) -> str | None:
        """The most recently written matrix, for `--resume` without an id."""
        folder = self.root / "matrices"
        files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if (
            folder.exists()) else []
        return files[-1].stem if files else None
