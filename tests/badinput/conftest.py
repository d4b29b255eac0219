"""The bad-input suite's harness: a user's project, one bad input, and what must hold.

Every case runs `graduate` in-process (`main()`, as the console script does) in a project
with a spike, evidence and an ADR, and checks what a user is promised: the exit code
(2 for bad input), no traceback, a message that names the fix, and nothing written:
every file that was there before is byte for byte as it was, and no evidence or ADR
appeared.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.adr.conftest import Project, project  # noqa: F401 (the fixture, reused)

Snapshot = dict[str, tuple[int, str]]


@dataclass(frozen=True)
class Case:
    """One bad input. `args` and `files` may say {project} and {closed_port}."""

    name: str
    args: tuple[str, ...]
    fix: tuple[str, ...]  # fragments of the message that say what is wrong and what to do
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    make: Callable[[Path], None] | None = None  # what text cannot say: links, FIFOs, folders
    code: int = 2
    absent: tuple[str, ...] = ()  # what the output must not show (a password)

    def __str__(self) -> str:
        return self.name


@pytest.fixture
def closed_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def ready(project: Project) -> Project:  # noqa: F811 (the fixture imported above)
    """The project with one ADR (0003, planned) and one stored run."""
    project.ok("adr", "new", "partner_approval", "--by", "ann")
    project.run()
    return project


def snapshot(root: Path) -> Snapshot:
    """Every entry under `root`: its mode and, for regular files, its content's hash.
    FIFOs and links are recorded, never opened."""
    found: Snapshot = {}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            info = path.lstat()
            digest = (hashlib.sha256(path.read_bytes()).hexdigest()
                      if stat.S_ISREG(info.st_mode) else "")
            found[str(path.relative_to(root))] = (info.st_mode, digest)
    return found


def fill(text: str, root: Path, port: int) -> str:
    return text.replace("{project}", str(root)).replace("{closed_port}", str(port))


def check_case(case: Case, user: Project, port: int) -> None:
    """Set up `case` in the project of `user`, run it, and check every promise."""
    root = user.root
    for relative, content in case.files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(fill(content, root, port), encoding="utf-8")
    if case.make is not None:
        case.make(root)
    before = snapshot(root)
    try:
        result = user.cli(*(fill(arg, root, port) for arg in case.args))
    except Exception as error:  # what a user would have seen as a traceback
        pytest.fail(f"traceback: {type(error).__name__}: {error}")
    output = result.text
    assert result.code == case.code, output
    assert "Traceback" not in output
    for fragment in case.fix:
        assert fill(fragment, root, port) in output, output
    for fragment in case.absent:
        assert fragment not in output, output
    after = snapshot(root)
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"changed or removed: {changed}"
    # Nothing new either, but the ledger a command may open: no evidence, no ADR, and no
    # service's files (nothing was started).
    new = sorted(k for k in after.keys() - before.keys()
                 if k.startswith(("docs", ".graduate")) and not k.startswith(
                     ".graduate/ledger.sqlite3"))
    assert not new, f"written: {new}"
