"""The supervisor of a run's worker processes: starts them, replaces a worker that a
fault took away, waits for a stopped one to exit, restarts what died, stops them all.

Each act goes into the run's timeline, as an operator's log would have it.
"""

from __future__ import annotations

import contextlib
import os
import time

from graduate.adapters.base import Engine
from graduate.processes import ManagedProcess
from graduate.runs.timeline import EventKind, Timeline

STOP_GRACE = 30.0  # how long a SIGTERMed worker may take to finish its task

WORKER_EXITED = EventKind("worker-exited", "worker exited", "stop")
WORKER_FORCED = EventKind("worker-forced", "worker killed after its grace period", "stop")
PROCESS_DIED = EventKind("process-died", "process died", "stop")
WORKER_STARTED = EventKind("worker-started", "worker started", "recovery")
SUPERVISOR_EVENTS = (WORKER_EXITED, WORKER_FORCED, PROCESS_DIED, WORKER_STARTED)


class Supervisor:
    """The worker processes of one engine in one run (and helpers such as Celery beat)."""

    def __init__(self, engine: Engine, timeline: Timeline) -> None:
        self.engine = engine
        self.timeline = timeline
        self.processes: list[ManagedProcess] = []

    def start(self, count: int) -> None:
        """Start `count` workers (and the engine's helpers); return once each takes work."""
        self.processes.extend(self.engine.start_workers(count).processes)

    @property
    def workers(self) -> list[ManagedProcess]:
        """The live workers, helpers left out."""
        return [p for p in self.processes if "beat" not in p.name and p.alive()]

    def holding(self, pid: int | None) -> ManagedProcess:
        """The worker whose process group holds `pid` (else the first worker)."""
        workers = self.workers
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                group = os.getpgid(pid)
                for worker in workers:
                    if worker.pid == group:
                        return worker
        return workers[0]

    def await_exit(self, victim: ManagedProcess) -> None:
        """Wait for a signalled worker to exit; kill it after STOP_GRACE."""
        deadline = time.monotonic() + STOP_GRACE
        while victim.popen.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if victim.popen.poll() is None:
            victim.kill()
            self.timeline.add(WORKER_FORCED, f"{victim.name} still ran {STOP_GRACE:g}s after "
                                             "SIGTERM: SIGKILL")
        else:
            self.timeline.add(WORKER_EXITED, f"{victim.name} with code "
                                             f"{victim.popen.returncode}")
        victim.stop()  # whatever it left in its process group goes with it

    def replace(self, victim: ManagedProcess, delay: float) -> ManagedProcess:
        """A new worker in place of `victim`, started after the operator's `delay`."""
        self.processes.remove(victim)
        time.sleep(delay)  # the operator's reaction time, part of the scenario
        worker = self.engine.start_worker()
        self.processes.append(worker)
        self.timeline.add(WORKER_STARTED, f"{worker.name} (pid {worker.pid}) replaces "
                                          f"{victim.name}", at=worker.began_at)
        return worker

    def revive(self, delay: float) -> None:
        """A process supervisor's job: a worker or helper that died is started again."""
        for process in [p for p in self.processes if not p.alive()]:
            self.timeline.add(PROCESS_DIED, f"{process.name} exited with code "
                                            f"{process.popen.returncode}; the supervisor "
                                            "restarts it")
            self.processes.remove(process)
            time.sleep(delay)  # the supervisor's back-off, part of the scenario
            replacement = self.engine.replace(process)
            self.processes.append(replacement)
            self.timeline.add(WORKER_STARTED, f"{replacement.name} (pid {replacement.pid}) "
                                              f"replaces {process.name}",
                              at=replacement.began_at)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()
