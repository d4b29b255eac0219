"""A toy worker process: `python -m tests.engines.toy.worker RUN_DIR`, its WorkerSpec on
standard input. It leases due instances from the run's SQLite file and advances each
by one node; SIGTERM lets the move in hand finish, SIGKILL is a crash."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from graduate.adapters.base import WorkerSpec, write_ready_file
from graduate.flow import load_flow
from graduate.ledger import Ledger
from tests.engines.toy.machine import Machine, Store


def main(run_dir: Path) -> None:
    spec = WorkerSpec.from_stdin()
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    store = Store(run_dir / "toy.sqlite3")
    machine = Machine(spec.engine, load_flow(spec.flow_source), store,
                      Ledger(spec.services["ledger_url"]))
    poll = float(spec.settings.get("poll", 0.05))
    write_ready_file(spec.ready_file, os.getpid())
    while not stopping:
        row = store.claim(time.time())
        if row is None:
            time.sleep(poll)  # nothing due: look again
            continue
        machine.advance(row, time.time())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
