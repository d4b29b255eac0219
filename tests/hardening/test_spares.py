"""Spare workers (`graduate.processes.Spares`, ADR 0022): a run's first worker may be a
process that imported its code before the run; it then runs as `python -m MODULE` would,
in its own process group, never with a secret on its command line, and nothing of it
outlives the command, not even after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from graduate.adapters.base import WorkerSpec
from graduate.processes import ManagedProcess, Spares, await_ready, spawn_module
from tests.hardening.proc import Seen, descendants, survivors

MODULE = "tests.hardening.spare_worker"
SECRET = "spare-s3cret"
SCHED_IDLE, SCHED_OTHER = 5, 0
EXIT_WITHIN = 20.0


def spec(folder: Path, name: str) -> bytes:
    return WorkerSpec(engine="toy", flow_source="", ready_file=str(folder / f"{name}.ready"),
                      services={"broker_url": f"redis://:{SECRET}@127.0.0.1:1/0"}
                      ).to_json().encode()


def spare_pids(spares: Spares) -> list[int]:
    return [p.pid for p in spares.waiting]


def _start(spares: Spares, folder: Path, name: str, *args: str) -> ManagedProcess:
    worker = spawn_module(name, MODULE, list(args), folder / f"{name}.log",
                          folder / f"{name}.ready", stdin=spec(folder, name))
    await_ready(worker, folder / f"{name}.ready", what=name, timeout=60)
    return worker


def _policy(pid: int) -> int:
    """The scheduling policy of `pid`'s main thread (field 41 of /proc/PID/stat)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[38])


def _await(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.02)


def test_a_runs_first_worker_takes_a_spare_that_runs_as_python_m_would(tmp_path: Path,
                                                                        ) -> None:
    with Spares(tmp_path / "spares") as spares:
        with spares.offered():
            first = _start(spares, tmp_path, "first")
        # The offer is over: one spare for the one worker started under it, waiting at
        # idle priority.
        (spare,) = spares.waiting
        _await(lambda: _policy(spare.pid) == SCHED_IDLE)
        with spares.offered():
            second = _start(spares, tmp_path, "second", "RUN_DIR", "worker", "second")

        assert second.pid == spare.pid  # the spare itself, not a new process
        assert first.pid != second.pid
        said = json.loads((tmp_path / "second.log").read_text().splitlines()[-1])
        assert said == {"name": "__main__", "argv": ["RUN_DIR", "worker", "second"],
                        "services": json.loads(spec(tmp_path, "x"))["services"]}
        assert _policy(second.pid) == SCHED_OTHER
        assert os.getpgid(second.pid) == os.getsid(second.pid) == second.pid
        cmdline = Path(f"/proc/{second.pid}/cmdline").read_bytes().decode()
        assert SECRET not in cmdline
        assert str(tmp_path / "spares") in cmdline
        # A fault's SIGKILL takes it as any worker.
        second.kill()
        assert not second.group_alive()
        first.stop()
        assert len(spares.waiting) == 1  # the refill after the second start
    assert not any(p.alive() for p in (first, second, *spares.waiting))
    assert spares.waiting == []


def test_a_worker_started_after_the_runs_start_never_takes_a_spare(tmp_path: Path) -> None:
    with Spares(tmp_path / "spares") as spares:
        with spares.offered():
            first = _start(spares, tmp_path, "first")
        (spare,) = spares.waiting
        with spares.offered():
            second = _start(spares, tmp_path, "second")
            spares.refill()  # its instances started: what starts now is a replacement
            (fresh,) = spares.waiting
            replacement = _start(spares, tmp_path, "replacement")

        assert second.pid == spare.pid
        assert replacement.pid not in (first.pid, second.pid, fresh.pid)
        assert spare_pids(spares) == [fresh.pid]
        for worker in (first, second, replacement):
            worker.stop()
        waiting = spares.waiting
        assert len(waiting) == 1
        assert all(p.alive() for p in waiting)
    assert not any(p.alive() for p in waiting)  # stopped with their pool


def test_sigkill_of_the_command_takes_its_workers_and_spares(tmp_path: Path) -> None:
    command = subprocess.Popen([sys.executable, "-m", "tests.hardening.spares_command",
                                str(tmp_path)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        _await(lambda: (tmp_path / "pids").exists() or command.poll() is not None, 120)
        assert command.poll() is None
        pids = json.loads((tmp_path / "pids").read_text())
        below = descendants(command.pid)
        started: list[Seen] = list(below.values())
        assert pids["worker"] in below
        assert len(pids["spares"]) == 1
        assert all(pid in below for pid in pids["spares"])
    finally:
        command.send_signal(signal.SIGKILL)
        command.wait()

    assert survivors(started, within=EXIT_WITHIN) == []
