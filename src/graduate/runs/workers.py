"""The hands a fault acts on a run's workers with: one seam, two kinds of worker.

`LocalWorkers` are the processes the run's supervisor started on this host: a fault
signals them itself. Registered workers on other hosts (`graduate worker`, see
`graduate.runs.remote`) take the same acts as commands from the fleet ledger, carried
out by their agents. A fault module calls only this seam, so it fires the same way, and
writes the same timeline, on both; what only graduate's own workers allow (starting
more beside them, routing their connections through a proxy) each fault module
declares (`Fault.needs_own_workers`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias

from graduate.errors import ConfigError, GraduateError
from graduate.runs.supervisor import Supervisor

if TYPE_CHECKING:
    from graduate.flow import Flow
    from graduate.ledger import PointReached
    from graduate.processes import ManagedProcess

# Where a run's workers come from: started by the run itself, or registered by
# `graduate worker` on any host.
WorkersKind: TypeAlias = Literal["local", "external"]
WORKERS_KINDS: tuple[WorkersKind, ...] = ("local", "external")


def workers_kind(given: str) -> WorkersKind:
    """`local` or `external`, or a ConfigError that says which to choose."""
    for kind in WORKERS_KINDS:
        if given == kind:
            return kind
    raise ConfigError(f"--workers {given!r} is not understood; choose local (each run starts "
                      "its own workers) or external (workers registered by `graduate worker`)")


class ActNotCarriedOut(GraduateError):
    """A worker's agent did not carry out an act of a fault (its command expired or
    failed). `after` counts the acts of the run it had carried out before: with none,
    the fault never happened."""

    def __init__(self, message: str, *, after: int) -> None:
        super().__init__(message)
        self.after = after


@dataclass(frozen=True)
class Worker:
    """One worker of a run, as a fault names it."""

    name: str
    pid: int  # its main process
    group: int  # its process group: a SIGKILL to the worker goes to all of it
    host: str = ""
    # When its process was spawned (epoch seconds), which is when it could first take
    # work: a recovery counts from here, not from when its readiness was seen.
    began_at: float | None = None


class WorkerControl(Protocol):
    """What a fault may do to the run's workers. Each act returns when it was done
    (epoch seconds), for the timeline."""

    owned: bool  # graduate started these workers itself

    def current(self) -> list[Worker]:
        """The live workers (helpers such as Celery beat left out)."""
        ...

    def holding(self, reached: PointReached | None) -> Worker:
        """The worker holding the step paused at `reached` (the first one without it)."""
        ...

    def kill(self, worker: Worker) -> float:
        """SIGKILL to the worker's whole process group."""
        ...

    def stop(self, worker: Worker, *, cold: bool) -> float:
        """SIGTERM (a warm shutdown) or SIGQUIT (Celery's cold one) to its main process."""
        ...

    def kill_child(self, worker: Worker, pid: int) -> float | None:
        """SIGKILL to `pid`, a pool child of `worker`; None when `pid` is not one (the
        worker runs its steps in its main process)."""
        ...

    def await_exit(self, worker: Worker) -> None:
        """Wait until a signalled worker exited (killed after a grace period)."""
        ...

    def replace(self, worker: Worker, delay: float) -> Worker:
        """A new worker in place of `worker`, started after the operator's `delay`."""
        ...

    def redeploy(self, flow: Flow, previous: Flow | None, delay: float) -> None:
        """Stop each worker as a deploy does (SIGTERM) and start it again on `flow` (with
        `previous`: the engine's versioning guard keeps instances on that version). The
        run's own engine has been told already (`Engine.deploy`)."""
        ...

    def start(self, count: int) -> list[Worker]:
        """Start `count` more workers beside the others (only on workers graduate owns)."""
        ...

    def revive(self, delay: float) -> None:
        """A process supervisor's job: start again, after `delay`, whatever died."""
        ...

    def stop_all(self) -> None:
        """Stop every worker the run started (none that it did not start)."""
        ...


class LocalWorkers:
    """The worker processes the run's supervisor started on this host."""

    owned = True

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def current(self) -> list[Worker]:
        return [_worker(p) for p in self.supervisor.workers]

    def holding(self, reached: PointReached | None) -> Worker:
        return _worker(self.supervisor.holding(reached.pid if reached else None))

    def kill(self, worker: Worker) -> float:
        self._process(worker).kill()
        return time.time()

    def stop(self, worker: Worker, *, cold: bool) -> float:
        self._process(worker).popen.send_signal(signal.SIGQUIT if cold else signal.SIGTERM)
        return time.time()

    def kill_child(self, worker: Worker, pid: int) -> float | None:
        if pid == worker.pid:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return time.time()

    def await_exit(self, worker: Worker) -> None:
        self.supervisor.await_exit(self._process(worker))

    def replace(self, worker: Worker, delay: float) -> Worker:
        return _worker(self.supervisor.replace(self._process(worker), delay))

    def redeploy(self, flow: Flow, previous: Flow | None, delay: float) -> None:
        # The fault has told the engine (`Engine.deploy`), which starts every worker
        # from now on with `flow`, guarded by `previous`.
        del flow, previous
        for worker in self.current():
            self.stop(worker, cold=False)
            self.await_exit(worker)
            self.replace(worker, delay)

    def start(self, count: int) -> list[Worker]:
        self.supervisor.start(count)
        return self.current()[-count:]

    def revive(self, delay: float) -> None:
        self.supervisor.revive(delay)

    def stop_all(self) -> None:
        self.supervisor.stop_all()

    def _process(self, worker: Worker) -> ManagedProcess:
        return next(p for p in self.supervisor.processes if p.pid == worker.pid)


def _worker(process: ManagedProcess) -> Worker:
    return Worker(process.name, process.pid, process.pid, socket.gethostname(),
                  began_at=process.began_at)
