"""`graduate replay` runs the SDK's replayer in a process of its own: one that panics in
a thread and then waits forever (SDK core does, on some histories) is stopped after its
silence, with what it said, and leaves no process behind."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from graduate.errors import ConfigError
from graduate.migrate.replay import in_child


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
