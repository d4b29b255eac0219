"""The Python files of a codebase, parsed without importing or running them.

libcst parses Python 3.0 to 3.13 syntax whatever interpreter graduate runs on, so code
written for a newer Python (type parameters, `type` aliases, PEP 701 f-strings) is read
on 3.11. A file that does not parse is skipped with the parser's reason, never a crash.
"""

from __future__ import annotations

import ast
import os
import pickle
import subprocess
import sys
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import libcst as cst

import graduate
from graduate.errors import GraduateError
from graduate.migrate.inventory.model import Location, Skipped
from graduate.migrate.inventory.reader import ModuleFacts, read_module

# Reading a file is CPU-bound (libcst visits every node): from this many files on, files
# are read by one process per core. Below it, starting processes costs more than it saves.
PARALLEL_FROM = 60

# Folders that hold no application code of the team's own (environments, caches, VCS).
_SKIPPED_DIRS = frozenset({".git", ".hg", ".venv", "venv", "env", ".tox", ".nox",
                           "node_modules", "__pycache__", "site-packages", "build", "dist",
                           ".mypy_cache", ".ruff_cache", ".pytest_cache"})


def _is_migration(relative: Path) -> bool:
    """A Django migration (`app/migrations/0001_initial.py`) or an Alembic revision
    (`migrations/versions/...`), whose frozen field definitions would read as models. A
    package below them is code (saleor's `migrations/tasks/saleor3_22.py`: Celery tasks
    its app autodiscovers), and is read."""
    parents = relative.parts[:-1]
    return bool(parents) and (parents[-1] == "migrations" or parents[-2:] == (
        "migrations", "versions"))


@dataclass(frozen=True)
class SourceFile:
    path: Path
    relative: str      # POSIX path relative to the inventory's root
    module: str        # dotted module name relative to the root


@dataclass(frozen=True)
class Parsed:
    file: SourceFile
    tree: cst.Module


def files(root: Path, keep: str | tuple[str, ...]) -> list[Path]:
    """Files under `root` whose name ends with `keep` (or one of them), in a stable order;
    environments, caches and VCS folders are not entered at all (a virtualenv can hold
    100 000 files)."""
    found: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.endswith(".egg-info"))
        # Regular files only: a FIFO named like a module would block the read forever.
        found += [path for name in names
                  if name.endswith(keep) and (path := Path(folder, name)).is_file()]
    return sorted(found)


# A codebase's own tests are not what runs in production: they launch tasks on mocks,
# set `CELERY_TASK_ALWAYS_EAGER` and fake brokers, which would read as the app's settings
# and flows; and they are often most of the files (saleor: 1,725 of 2,876).
_TEST_DIRS = frozenset({"tests", "test"})


def _is_test_code(relative: Path) -> bool:
    """Whether a file (relative to the inventory's root) is the codebase's tests."""
    name = relative.name
    return (any(part in _TEST_DIRS for part in relative.parts[:-1]) or name == "conftest.py"
            or name.startswith("test_") or name.endswith("_test.py"))


def python_files(root: Path) -> Iterator[SourceFile]:
    """Every .py file under `root` (or `root` itself), in a stable order; below a folder,
    its tests are left out."""
    if root.is_file():
        yield SourceFile(root, root.name, root.stem)
        return
    for path in files(root, ".py"):
        relative = path.relative_to(root)
        if _is_test_code(relative) or _is_migration(relative):
            continue
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield SourceFile(path, relative.as_posix(), ".".join(parts))


def parse(file: SourceFile) -> Parsed | Skipped:
    """The syntax tree of one file, or why it could not be read."""
    try:
        source = file.path.read_bytes()
    except OSError as error:
        return Skipped(Location(file.relative, 1), f"cannot be read: {error.strerror}")
    if too_deeply_nested(source):
        return Skipped(Location(file.relative, 1), "nests expressions too deeply to parse "
                       "(thousands of levels, as generated code can): the file was not read")
    try:
        return Parsed(file, cst.parse_module(source))
    except cst.ParserSyntaxError as error:
        message = str(error.message).splitlines()[0] if error.message else "invalid syntax"
        return Skipped(Location(file.relative, error.raw_line),
                       f"syntax error ({message}): the file was not read")
    except (UnicodeDecodeError, ValueError, SyntaxError) as error:  # SyntaxError: encoding
        return Skipped(Location(file.relative, 1), f"not Python source text: {error}")


# CPython's tokenizer's word for brackets nested past its limit (200 levels, MAXLEVEL).
TOO_MANY_BRACKETS = "too many nested parentheses"


def too_deeply_nested(source: bytes) -> bool:
    """Whether CPython's parser refuses `source` for its depth.

    libcst's native parser recurses once per level of nesting with no limit of its own:
    a file some 30,000 levels deep (`x = ----...1`) overflows its stack and kills the
    process (a segmentation fault), and its time grows with the square of the depth
    (4,000 levels take ten seconds, 8,000 a minute and a half). CPython's parser
    refuses such files cleanly, with RecursionError or MemoryError, from about 3,000
    levels: far above anything written by hand; and brackets nested over 200 deep with
    a SyntaxError of its tokenizer's (libcst has no such limit, and 30,000 parentheses
    crash it too). It costs a fifth of libcst's own parse. Other syntax that CPython
    3.11 does not know (newer Python) is left for libcst.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes and the like: not ours to say
            ast.parse(source)
    except (RecursionError, MemoryError):
        return True
    except SyntaxError as error:
        return error.msg == TOO_MANY_BRACKETS
    except ValueError:
        return False
    return False


def read(file: SourceFile) -> ModuleFacts | Skipped:
    """The raw facts of one file, or why it could not be read."""
    parsed = parse(file)
    if isinstance(parsed, Skipped):
        return parsed
    try:
        return read_module(parsed.tree, file.module, file.relative,
                           package=file.path.name == "__init__.py")
    except Exception as error:  # one odd file must not stop the inventory
        return Skipped(Location(file.relative, 1),
                       f"could not be read ({type(error).__name__}: {error}); the rest of "
                       "the code was read. Please report this file")


def read_all(sources: list[SourceFile]) -> list[ModuleFacts | Skipped]:
    """Every file read, in the order given; in parallel for a large codebase."""
    workers = min(os.cpu_count() or 1, 8)
    if len(sources) < PARALLEL_FROM or workers < 2:
        return [read(source) for source in sources]
    # Every n-th file to each process: files sorted by path are of similar size nearby.
    shares = [sources[index::workers] for index in range(workers)]
    with ThreadPoolExecutor(max_workers=workers) as waiting:  # threads only wait on pipes
        results = list(waiting.map(_read_in_a_process, shares))
    # Back in the order given: the first file of each share, then the second of each, ...
    return [file for row in zip_longest(*results) for file in row if file is not None]


# A fresh interpreter per process, started as a command: not multiprocessing's fork (a
# fork of a process that holds other threads, a caller's Temporal client or asyncio loop,
# can leave the child waiting forever on a lock one of them held), nor its spawn, which
# runs the caller's main script again in every child (a script without an
# `if __name__ == "__main__":` guard would break the pool and repeat its own work).
# -P: the caller's working folder is not on the child's path, so nothing there shadows a
# module the child needs.
_READER = [sys.executable, "-P", "-m", "graduate.migrate.inventory.read_worker"]


def _read_in_a_process(share: list[SourceFile]) -> list[ModuleFacts | Skipped]:
    """What `read` makes of each file of `share`, read in a process of its own."""
    # The child imports this very graduate, even where the caller put it on sys.path.
    here = str(Path(graduate.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run(_READER, input=pickle.dumps(share), capture_output=True,
                          env={**os.environ, "PYTHONPATH": path}, check=False)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise GraduateError(f"inventory: a process reading {len(share)} files exited with "
                            f"code {done.returncode}: " + "\n".join(tail))
    files: list[ModuleFacts | Skipped] = pickle.loads(done.stdout)
    return files
