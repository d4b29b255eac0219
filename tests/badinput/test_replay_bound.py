"""`graduate replay` runs the SDK's replayer in a process of its own: one that panics in
a thread and then waits forever (SDK core does, on some histories) is stopped after its
silence, with what it said, and leaves no process behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from graduate.errors import ConfigError
from graduate.migrate.replay import in_child
from graduate.processes import running


def _hang_after_a_panic(pid_file: str, alive: Callable[[], None]) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    alive()  # it started, then goes silent
    sys.stderr.write("thread 'tokio-rt-worker' panicked at replay/mod.rs:115:88:\n"
                     "Invalid history! Event 4 should be WFT completed\n")
    sys.stderr.flush()
    while True:
        time.sleep(60)


def _answer(value: int, alive: Callable[[], None]) -> int:
    alive()
    return value * 2


def _refuse(alive: Callable[[], None]) -> None:
    raise ConfigError("that history is not whole")


@pytest.mark.timeout(60)
def test_a_replayer_that_goes_silent_is_stopped_and_named(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    with pytest.raises(ConfigError) as refused:
        in_child(_hang_after_a_panic, (str(pid_file),), silence=3, what="the replayer")

    message = str(refused.value)
    assert "the replayer gave no answer in 3 s, and was stopped" in message
    assert "it said: Invalid history! Event 4 should be WFT completed" in message
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, and reaped


@pytest.mark.timeout(60)
def test_an_answer_and_a_refusal_come_back_as_they_were() -> None:
    assert in_child(_answer, (21,), silence=30, what="x") == 42
    with pytest.raises(ConfigError, match="that history is not whole"):
        in_child(_refuse, (), silence=30, what="x")


@pytest.mark.timeout(120)
def test_a_replayer_dies_with_the_command_killed_by_sigkill(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    command = subprocess.Popen(
        [sys.executable, "-c", "import sys\n"
         "from graduate.migrate.replay import in_child\n"
         "from tests.badinput.test_replay_bound import _hang_after_a_panic\n"
         "in_child(_hang_after_a_panic, (sys.argv[1],), silence=600, what='x')",
         str(pid_file)], cwd=Path(__file__).parents[2])
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and command.poll() is None:
        assert time.monotonic() < deadline, "the replayer never started"
        time.sleep(0.05)
    assert command.poll() is None, "the command ended before it was killed"
    replayer = int(pid_file.read_text())

    command.kill()
    command.wait()

    deadline = time.monotonic() + 20
    while running(replayer) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(replayer), "the replayer outlived the command that started it"
