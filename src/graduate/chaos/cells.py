"""Matrix cells side by side (`graduate matrix --jobs N`), each in a process of its own.

A cell is one chaos run: it starts servers and workers, signals process groups and
restarts what it killed. In a thread it would share the command's signal handlers (only
the main thread hears Ctrl-C), the parent-death signal of every process it starts (tied
to the thread that started it) and the package's module state; in a process of its own
it keeps all three to itself. A cell process is started as graduate starts any process
(its own session, and it dies with the command: `graduate.processes.spawn`), reads its
call from standard input (the settings may hold credentials, which a command line shows
to every user of the machine) and leaves its outcome in a file that only the command
reads: the command alone writes the matrix file.

A cell's start (its servers, workers and instances) is what takes the cores; after it, a
cell mostly waits on an engine's clock. So a cell may say when its start is over (it
creates its `started` file), and no other cell starts before then: the waits overlap,
the starts do not crowd each other, and a start that counts against its run's deadline
is not slowed by two more.

Ctrl-C or SIGTERM of the command sends SIGTERM to each running cell, which stops what its
run started as an interrupted run does; SIGKILL of the command kills each cell by its
parent-death signal, and each cell's servers and workers by theirs.
"""

from __future__ import annotations

import contextlib
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Generic, TypeVar

from graduate.errors import GraduateError
from graduate.evidence import write_bytes
from graduate.processes import POLL_INTERVAL, ManagedProcess, spawn

__all__ = ["Cell", "run_side_by_side"]
T = TypeVar("T")
# A cell told to stop (Ctrl-C of the command) stops its workers and servers first; one
# that has not after this long is killed, and its processes die with it.
STOP_GRACE = 60.0


@dataclass(frozen=True)
class Cell(Generic[T]):
    """One call to run in a cell process: `call(*args)`, both picklable (a module-level
    function, and values)."""

    name: str  # names the cell's log and outcome files
    call: Callable[..., T]
    args: tuple[Any, ...]
    started: Path | None = None  # created by the call once its start is over, if given


@dataclass
class _Running(Generic[T]):
    cell: Cell[T]
    process: ManagedProcess
    outcome_path: Path

    def starting(self) -> bool:
        """Whether the cell's start is not over yet (it did not say so, and runs)."""
        started = self.cell.started
        return started is not None and not started.exists() and self.process.alive()

    def outcome(self) -> T:
        """What the call returned; what it raised is raised here, as it was raised."""
        try:
            kind, value = pickle.loads(self.outcome_path.read_bytes())
        except FileNotFoundError:
            raise GraduateError(
                f"matrix cell {self.cell.name} ended (exit code {self.process.popen.returncode}) "
                f"without an outcome; its log ({self.process.log_path}) ends with:\n"
                f"{self.process.log_tail()}") from None
        finally:
            self.outcome_path.unlink(missing_ok=True)
            if self.cell.started is not None:
                self.cell.started.unlink(missing_ok=True)
        if kind == "raised":
            raise value
        result: T = value
        return result


def run_side_by_side(cells: Sequence[Cell[T]], *, at_once: int, folder: Path,
                     on_done: Callable[[Cell[T], T], None]) -> None:
    """Run `cells`, `at_once` at a time, each in a process of its own with its log in
    `folder`, and none while another's start is not over; `on_done` is told each outcome
    in the order they end. The first cell that raises stops the others (each stops what it
    started) and is raised here."""
    waiting = list(cells)
    running: list[_Running[T]] = []
    with _stopped_on_exit(running):
        while waiting or running:
            while waiting and len(running) < at_once and not any(
                    item.starting() for item in running):
                running.append(_start(waiting.pop(0), folder))
            ended = [item for item in running if not item.process.alive()]
            if not ended:
                time.sleep(POLL_INTERVAL)
                continue
            failed: BaseException | None = None
            for item in ended:  # every cell that ended is told, before a failure is raised
                running.remove(item)
                try:
                    on_done(item.cell, item.outcome())
                except Exception as error:
                    failed = failed or error
            if failed is not None:
                raise failed


def _start(cell: Cell[T], folder: Path) -> _Running[T]:
    outcome = folder / f"{cell.name}.outcome"
    outcome.unlink(missing_ok=True)
    if cell.started is not None:
        cell.started.unlink(missing_ok=True)
    process = spawn(f"matrix cell {cell.name}",
                    [sys.executable, "-m", __name__, str(outcome)],
                    folder / f"{cell.name}.log",
                    stdin=pickle.dumps((cell.call, cell.args)))
    return _Running(cell, process, outcome)


@contextlib.contextmanager
def _stopped_on_exit(running: list[_Running[T]]) -> Iterator[None]:
    try:
        yield
    finally:
        # Told all at once, so that the cells stop side by side as they ran.
        for item in running:
            item.process.signal_group(signal.SIGTERM)
        for item in running:
            item.process.stop(STOP_GRACE)
            item.outcome_path.unlink(missing_ok=True)


class _Stopped(BaseException):
    """SIGTERM in a cell process, raised like Ctrl-C so that the run's cleanup runs."""


def _stop(signum: int, frame: FrameType | None) -> None:
    # Once: a second SIGTERM (the parent's stop follows its signal) must not cut short
    # the clean-up the first one started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Stopped


def main(argv: Sequence[str]) -> int:
    """`python -m graduate.chaos.cells OUTCOME_FILE`, the call pickled on standard input."""
    signal.signal(signal.SIGTERM, _stop)
    outcome = Path(argv[0])
    try:
        call, args = pickle.loads(sys.stdin.buffer.read())
        value: tuple[str, Any] = ("returned", call(*args))
    except _Stopped:
        return 143
    except Exception as error:  # handed to the command, which raises it
        traceback.print_exc()  # into the cell's log
        value = ("raised", error)
    try:
        data = pickle.dumps(value)
    except Exception as error:  # an error that does not pickle: as text
        data = pickle.dumps(("raised", GraduateError(f"{value[1]!r} ({error})")))
    write_bytes(outcome, data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
