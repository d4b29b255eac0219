"""How the chain's holds() tells a dead worker from a silent one: by its node name."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from graduate.adapters.celery.chain import _runs_here


def test_a_worker_named_after_a_live_process_on_this_host_runs_here() -> None:
    assert _runs_here(f"celery-chain-worker-1-{os.getpid()}@{socket.gethostname()}")


def test_a_worker_whose_process_exited_does_not() -> None:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    pid = int(child.stdout)

    assert not _runs_here(f"celery-chain-worker-1-{pid}@{socket.gethostname()}")


def test_a_worker_on_another_host_cannot_be_seen() -> None:
    assert not _runs_here(f"celery-chain-worker-1-{os.getpid()}@not-{socket.gethostname()}")
