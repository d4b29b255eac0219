"""Reading the user's files: regular files only, UTF-8 text, parsed without tracebacks.

A path a user gives (a flow, pyproject.toml, evidence, an ADR) can be anything: a
directory named like a file, a FIFO that never ends, a symlink loop, bytes that are
not UTF-8, or TOML and JSON nested thousands deep. Each becomes the caller's own error
(FlowError, ConfigError, EvidenceError, AdrError) naming the file and what to do.
A missing file stays FileNotFoundError: every caller says something of its own then.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from graduate.errors import GraduateError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def read_text(path: Path, what: str, error: type[GraduateError]) -> str:
    """The UTF-8 text of the regular file at `path`; `what` names it in messages
    ("flow file", "evidence file")."""
    try:
        # Non-blocking, so that opening a FIFO returns at once instead of waiting for a
        # writer; what was opened is then checked, not the name (no race with a swap).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as problem:
        raise error(f"{what} {path} cannot be read ({problem.strerror}); check that it is "
                    "a readable file (a symlink loop or missing permission stops it)"
                    ) from problem
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise error(f"{what} {path} is {kind}, not a file; give the path of a file, or move "
                    "what is there out of the way")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read()
        except OSError as problem:
            raise error(f"{what} {path} cannot be read ({problem.strerror})") from problem
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as problem:
        line = data.count(b"\n", 0, problem.start) + 1
        raise error(f"{what} {path} is not UTF-8 text (byte {data[problem.start]:#04x} on "
                    f"line {line}); save it as UTF-8") from None


def parse_toml(text: str, where: str, error: type[GraduateError]) -> dict[str, Any]:
    """TOML `text` from `where` (a path, or a path and a block)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as problem:
        raise error(f"{where} is not valid TOML: {problem}") from problem
    except RecursionError:
        raise error(f"{where} nests arrays or tables too deeply to read; flatten it") from None


def parse_json(text: str, where: str, error: type[GraduateError]) -> Any:
    """JSON `text` from `where`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as problem:
        raise error(f"{where} is not valid JSON ({problem})") from problem
    except RecursionError:
        raise error(f"{where} nests arrays or objects too deeply to read") from None


def unwritable(folder: Path) -> str | None:
    """Why `folder` could not be created or written, or None when it could: checked
    before hours of running, whose results would otherwise be lost at the end. Leaves
    nothing behind.

    Asked of the file system itself, by creating and removing a probe (a file in an
    existing folder, a folder in the nearest existing parent of a missing one): as root,
    `os.access` says yes to everything, /proc and /sys and read-only mounts included."""
    nearest = folder
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        return f"{nearest} is not a folder"
    try:
        if nearest == folder:
            fd, probe = tempfile.mkstemp(prefix=".graduate-probe-", dir=nearest)
            os.close(fd)
            os.unlink(probe)
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".graduate-probe-", dir=nearest))
    except OSError as problem:
        return f"{nearest} lets nothing be created in it ({problem.strerror or problem})"
    return None
