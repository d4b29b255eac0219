"""No process outlives the command that started it: not after Ctrl-C while a worker
starts, not after SIGKILL of the command itself (Linux's parent-death signal)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from graduate.processes import running, spawn_until_ready
from tests.hardening.conftest import HELD_FLOW, output, start
from tests.hardening.proc import Seen, alive, descendants, having, survivors, watch

# Long enough for Linux to deliver the parent-death signal and for the killed to exit.
EXIT_WITHIN = 20.0


def _interrupt_once_written(marker: Path) -> None:
    while not marker.exists() or not marker.read_text():
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_while_a_process_starts_stops_it(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    child = (f"import os, pathlib, time; pathlib.Path({str(marker)!r}).write_text("
             "str(os.getpid())); time.sleep(600)")
    threading.Thread(target=_interrupt_once_written, args=(marker,), daemon=True).start()

    with pytest.raises(KeyboardInterrupt):
        spawn_until_ready("slow", [sys.executable, "-c", child], tmp_path / "slow.log",
                          tmp_path / "never.ready", what="a process that never gets ready",
                          timeout=300)

    assert int(marker.read_text()) not in descendants(os.getpid())


@pytest.mark.parametrize("engine", ["celery-chain", "temporal"])
def test_ctrl_c_while_a_worker_starts_leaves_nothing(project: Path, engine: str) -> None:
    (project / "held_start.py").write_text(HELD_FLOW)
    run = start(project, "run", "held_start:FLOW", "-e", engine, "--timeout", "300")

    seen = watch(run, until=lambda _: any(project.glob("worker-starting-*")), timeout=120)
    assert run.poll() is None, output(project)
    started = [*seen, *descendants(run.pid).values()]
    assert having(started, f"graduate.adapters.{engine.split('-', maxsplit=1)[0]}.worker")
    run.send_signal(signal.SIGINT)

    assert run.wait(timeout=60) == 130, output(project)  # the README's code for Ctrl-C
    assert "interrupted; every process graduate started was stopped" in output(project)
    assert survivors(started, within=EXIT_WITHIN) == []


RUNNING = {
    # The command, what it started that must be up, and how to tell it is all up.
    "run on celery-state-machine": (
        ["run", "partner_approval", "-e", "celery-state-machine", "--timeout", "600"],
        ["redis-server", "graduate.adapters.celery.worker RUN worker",
         "graduate.adapters.celery.worker RUN beat"], "ready:2"),
    "run on temporal": (
        ["run", "partner_approval", "-e", "temporal", "--timeout", "600"],
        ["server start-dev", "graduate.adapters.temporal.worker"], "ready:1"),
    "chaos partition on temporal": (
        ["chaos", "partner_approval", "-e", "temporal", "--fault", "partition", "--at",
         "activate:before-effect", "--partition-for", "600", "--timeout", "900"],
        ["server start-dev", "graduate.adapters.temporal.worker", "graduate.chaos.proxy"],
        "output:fault-fired"),
}


def _up(project: Path, signal_of_readiness: str) -> bool:
    kind, _, value = signal_of_readiness.partition(":")
    if kind == "ready":
        return len(list(project.glob(".graduate/runs/*/ready/*.ready"))) >= int(value)
    return value in output(project)


def _matching(seen: list[Seen], pattern: str, project: Path) -> list[Seen]:
    # "RUN" stands for the run's folder, which every worker names on its command line.
    head, _, tail = pattern.partition(" RUN ")
    if not tail:
        return having(seen, pattern)
    return [p for p in having(seen, head, f" {tail}") if str(project) in p.cmdline]


@pytest.mark.parametrize("scenario", RUNNING)
def test_sigkill_of_the_command_takes_everything_it_started(project: Path,
                                                           scenario: str) -> None:
    args, expected, readiness = RUNNING[scenario]
    command = start(project, *args)
    watch(command, until=lambda _: _up(project, readiness), timeout=240)
    assert command.poll() is None, output(project)
    started = list(descendants(command.pid).values())
    for pattern in expected:
        assert _matching(started, pattern, project), f"no {pattern!r} among {started}"

    command.kill()
    command.wait()

    assert survivors(started, within=EXIT_WITHIN) == []
    assert all(not alive(p) for p in started)


def test_a_process_a_test_starts_dies_with_the_test(tmp_path: Path) -> None:
    # A test's own agents and servers run in sessions of their own (to be killed by
    # group): only the launcher ties them to the test, if pytest itself is killed.
    test_process = (
        "import subprocess, sys\n"
        "from graduate.processes import dying_with_this_process\n"
        "server = subprocess.Popen(dying_with_this_process(['sleep', '600']),\n"
        "                          start_new_session=True)\n"
        "print(server.pid, flush=True)\n"
        "sys.stdin.read()\n")
    test = subprocess.Popen([sys.executable, "-c", test_process], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert test.stdout is not None
    server = int(test.stdout.readline())
    assert Path(f"/proc/{server}").exists()

    test.kill()
    test.wait()

    deadline = time.monotonic() + EXIT_WITHIN
    while running(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(server), "the server outlived the test that started it"

