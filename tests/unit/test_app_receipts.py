"""What a team's app worker and the app engine read to prove a message's taker dead
(ADR 0020): the worker's node name carries its PID, a message's ETA is read as epoch
seconds, and only a worker of this host whose process is gone is proven dead."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime

from graduate.adapters.celery.app_worker import with_pid
from graduate.adapters.celery.broker import message_eta
from graduate.adapters.celery.receipts import proven_dead, runs_here


def test_the_node_name_a_worker_is_given_carries_its_pid() -> None:
    assert with_pid(["-Q", "q", "-n", "shop-worker-1@%h", "-l", "INFO"], 42) == [
        "-Q", "q", "-n", "shop-worker-1-42@%h", "-l", "INFO"]
    assert with_pid(["--hostname", "w@%h"], 7) == ["--hostname", "w-7@%h"]
    assert with_pid(["-Q", "q"], 7) == ["-Q", "q", "-n", "celery-7@%h"]


def test_a_messages_eta_is_read_as_epoch_seconds() -> None:
    moment = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert message_eta({"headers": {"eta": moment.isoformat()}}) == moment.timestamp()
    assert message_eta({"headers": {"eta": "2026-11-30T08:00:00"}}) == moment.timestamp()
    assert message_eta({"headers": {"eta": None}}) is None
    assert message_eta({}) is None


def test_only_a_worker_of_this_host_whose_process_is_gone_is_proven_dead() -> None:
    here = socket.gethostname()
    alive = f"w-{os.getpid()}@{here}"
    assert runs_here(alive)
    assert not proven_dead(alive)
    assert proven_dead(f"w-{2**22 + 12345}@{here}")  # above Linux's largest PID
    assert not proven_dead(f"w-{2**22 + 12345}@another-host")
