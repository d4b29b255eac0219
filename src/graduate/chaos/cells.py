"""Matrix cells side by side (`graduate matrix --jobs N`), in lanes: each lane a process
of its own that runs its cells one after another.

A cell is one chaos run: it starts workers, signals process groups and restarts what it
killed. In a thread it would share the command's signal handlers (only the main thread
hears Ctrl-C), the parent-death signal of every process it starts (tied to the thread that
started it) and the package's module state; in a process of its own it keeps all three to
itself. A lane process is started as graduate starts any process (its own session, and it
dies with the command: `graduate.processes.spawn`), reads its cells from standard input
(the settings may hold credentials, which a command line shows to every user of the
machine) and leaves each cell's outcome in a file of its own as the cell ends, which only
the command reads: the command alone writes the matrix file, after every cell.

A lane opens what its cells share once (`Lane.opens`: the matrix's lanes share their
servers) and hands it to each cell's call, so that a cell does not pay for starting and
stopping a Temporal server or a Redis of its own, nor for a fresh interpreter.

A cell's start (its workers and instances) is what takes the cores; after it, a cell
mostly waits on an engine's clock. So a cell starts only while no other lane's cell is
starting: a lane holds the folder's start lock (`START_LOCK`) from a cell's call until the
cell says its start is over (`started`, handed to the call) or ends. The waits overlap,
the starts do not crowd each other, and a start that counts against its run's deadline is
not slowed by two more.

Ctrl-C or SIGTERM of the command sends SIGTERM to each running lane, which stops what its
cell started as an interrupted run does; SIGKILL of the command kills each lane by its
parent-death signal, and each lane's servers and workers by theirs.
"""

from __future__ import annotations

import contextlib
import fcntl
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Generic, TypeVar

from graduate.errors import GraduateError
from graduate.evidence import write_bytes
from graduate.processes import POLL_INTERVAL, ManagedProcess, spawn

__all__ = ["Cell", "Lane", "run_side_by_side"]
T = TypeVar("T")
# A lane told to stop (Ctrl-C of the command) stops its cell's workers and its servers
# first; one that has not after this long is killed, and its processes die with it.
STOP_GRACE = 60.0
START_LOCK = "start.lock"  # in the lanes' folder: held by the one cell that is starting


@dataclass(frozen=True)
class Cell(Generic[T]):
    """One call to run in a lane: `call(*args, shared, started)`, picklable (a module-level
    function, and values). `shared` is what the lane opened for its cells; `started` is
    to be called once the cell's start is over (it may never be: the cell's end does)."""

    name: str  # names the cell's outcome file
    call: Callable[..., T]
    args: tuple[Any, ...]


def _nothing() -> AbstractContextManager[None]:
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Lane(Generic[T]):
    """Cells run one after another in one process, inside what `opens(*open_args)` opened
    once for all of them (picklable, as a cell's call)."""

    name: str  # names the lane's log
    cells: tuple[Cell[T], ...]
    opens: Callable[..., AbstractContextManager[Any]] = _nothing
    open_args: tuple[Any, ...] = ()


@dataclass
class _Running(Generic[T]):
    lane: Lane[T]
    process: ManagedProcess
    folder: Path
    pending: list[Cell[T]] = field(default_factory=list)

    def ended(self) -> list[Cell[T]]:
        """The pending cells that left an outcome, in their order (a lane that exited
        leaves no more: then every pending cell)."""
        exited = not self.process.alive()
        done = [c for c in self.pending if exited or _outcome_path(self.folder, c).exists()]
        for cell in done:
            self.pending.remove(cell)
        return done

    def outcome(self, cell: Cell[T]) -> T:
        """What the cell's call returned; what it raised is raised here, as it was raised."""
        path = _outcome_path(self.folder, cell)
        try:
            kind, value = pickle.loads(path.read_bytes())
        except FileNotFoundError:
            raise GraduateError(
                f"matrix cell {cell.name} ended (its lane's exit code "
                f"{self.process.popen.returncode}) without an outcome; its lane's log "
                f"({self.process.log_path}) ends with:\n{self.process.log_tail()}") from None
        finally:
            path.unlink(missing_ok=True)
        if kind == "raised":
            raise value
        result: T = value
        return result


def _outcome_path(folder: Path, cell: Cell[Any]) -> Path:
    return folder / f"{cell.name}.outcome"


def run_side_by_side(lanes: Sequence[Lane[T]], *, at_once: int, folder: Path,
                     on_done: Callable[[Cell[T], T], None]) -> None:
    """Run `lanes`, `at_once` at a time, each in a process of its own with its log in
    `folder`, no cell starting while another is; `on_done` is told each cell's outcome in
    the order they end. The first cell that raises stops the others (each stops what it
    started) and is raised here."""
    waiting = list(lanes)
    running: list[_Running[T]] = []
    with _stopped_on_exit(running):
        while waiting or running:
            while waiting and len(running) < at_once:
                running.append(_start(waiting.pop(0), folder))
            failed: BaseException | None = None
            told = False
            for item in list(running):
                exited = not item.process.alive()
                for cell in item.ended():  # every cell that ended is told, before a failure
                    told = True
                    try:
                        on_done(cell, item.outcome(cell))
                    except Exception as error:
                        failed = failed or error
                if exited and not item.pending:
                    running.remove(item)
                    told = True
            if failed is not None:
                raise failed
            if not told:
                time.sleep(POLL_INTERVAL)


def _start(lane: Lane[T], folder: Path) -> _Running[T]:
    folder.mkdir(parents=True, exist_ok=True)
    for cell in lane.cells:
        _outcome_path(folder, cell).unlink(missing_ok=True)
    process = spawn(f"matrix lane {lane.name}",
                    [sys.executable, "-m", __name__, str(folder)],
                    folder / f"lane-{lane.name}.log", stdin=pickle.dumps(lane))
    return _Running(lane, process, folder, list(lane.cells))


@contextlib.contextmanager
def _stopped_on_exit(running: list[_Running[T]]) -> Iterator[None]:
    try:
        yield
    finally:
        # Told all at once, so that the lanes stop side by side as they ran.
        for item in running:
            item.process.signal_group(signal.SIGTERM)
        for item in running:
            item.process.stop(STOP_GRACE)
            for cell in item.lane.cells:
                _outcome_path(item.folder, cell).unlink(missing_ok=True)


class _StartLock:
    """The folder's start lock, held by this lane from `take` until `release` (either
    may come more than once)."""

    def __init__(self, folder: Path) -> None:
        self._file = (folder / START_LOCK).open("a")
        self._held = False

    def take(self) -> None:
        if not self._held:
            fcntl.flock(self._file, fcntl.LOCK_EX)
            self._held = True

    def release(self) -> None:
        if self._held:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._held = False


class _Stopped(BaseException):
    """SIGTERM in a lane process, raised like Ctrl-C so that the run's cleanup runs."""


def _stop(signum: int, frame: FrameType | None) -> None:
    # Once: a second SIGTERM (the parent's stop follows its signal) must not cut short
    # the clean-up the first one started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Stopped


def main(argv: Sequence[str]) -> int:
    """`python -m graduate.chaos.cells FOLDER`, the lane pickled on standard input; each
    cell's outcome goes to FOLDER/CELL.outcome as it ends."""
    signal.signal(signal.SIGTERM, _stop)
    folder = Path(argv[0])
    lock = _StartLock(folder)
    try:
        lane: Lane[Any] = pickle.loads(sys.stdin.buffer.read())
        with contextlib.ExitStack() as resources:
            lock.take()  # what the lane opens (its servers) is part of its first start
            try:
                shared = resources.enter_context(lane.opens(*lane.open_args))
            except Exception as error:  # told as its first cell's outcome
                traceback.print_exc()
                _leave(_outcome_path(folder, lane.cells[0]), ("raised", error))
                return 0
            for cell in lane.cells:
                lock.take()
                try:
                    value: tuple[str, Any] = ("returned",
                                              cell.call(*cell.args, shared, lock.release))
                except Exception as error:  # handed to the command, which raises it
                    traceback.print_exc()  # into the lane's log
                    value = ("raised", error)
                finally:
                    lock.release()
                _leave(_outcome_path(folder, cell), value)
                if value[0] == "raised":
                    return 0  # the command stops the other lanes
    except _Stopped:
        return 143
    return 0


def _leave(path: Path, value: tuple[str, Any]) -> None:
    try:
        data = pickle.dumps(value)
    except Exception as error:  # an error that does not pickle: as text
        data = pickle.dumps(("raised", GraduateError(f"{value[1]!r} ({error})")))
    write_bytes(path, data)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
