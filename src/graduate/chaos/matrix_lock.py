"""One process at a time runs a matrix.

Two `graduate matrix --resume` of one matrix (or a resume beside the run that started
it) would each run its pending cells: every such cell twice, each run firing its faults,
and whichever process saves last overwrites the other's outcome. The process running a
matrix holds an OS lock (`flock`) on a file beside the matrix record,
`matrices/MATRIX_ID.lock`, which names its pid; the kernel lets go of the lock when that
process ends, however it ends, so a matrix killed midway can be resumed at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from graduate.errors import InUse
from graduate.evidence import EvidenceStore


@contextlib.contextmanager
def matrix_lock(store: EvidenceStore, matrix_id: str) -> Iterator[None]:
    """Hold matrix `matrix_id` of `store` for this process until the block ends; InUse,
    at once, if another process holds it."""
    path = store.matrix_path(matrix_id).with_suffix(".lock")
    created = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = _take(path, matrix_id)
        try:
            handle.truncate(0)
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield
        finally:
            # Removed while still held: no one takes a lock on a file on its way out.
            path.unlink(missing_ok=True)
            handle.close()
    finally:
        # A matrix refused before its first save (bad input) leaves no folder behind.
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only while empty


def _take(path: Path, matrix_id: str) -> TextIO:
    """The lock file at `path`, locked by this process."""
    while True:
        handle = path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise InUse(f"matrix {matrix_id} is being run by another process (pid {holder}); "
                        "wait for it to end, or stop it, then `graduate matrix --resume "
                        f"--matrix-id {matrix_id}` runs what it left") from None
        # A holder letting go removes the file, maybe between our open and our lock: ours
        # is the lock only if it is still the file at the path.
        with contextlib.suppress(FileNotFoundError):
            at_path, ours = os.stat(path), os.fstat(handle.fileno())
            if (at_path.st_dev, at_path.st_ino) == (ours.st_dev, ours.st_ino):
                return handle
        handle.close()
