"""`python -m tests.hardening.spares_command FOLDER`: a command that started a worker and
keeps a spare for the next one (as a matrix lane does), then waits to be killed. It
writes the pids of both to FOLDER/pids once both are up."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from graduate.processes import Spares, await_ready, spawn_module
from tests.hardening.test_spares import MODULE, spare_pids, spec


def main(folder: Path) -> None:
    with Spares(folder / "spares") as spares:
        with spares.offered():
            worker = spawn_module("worker", MODULE, [], folder / "worker.log",
                                  folder / "worker.ready", stdin=spec(folder, "worker"))
            await_ready(worker, folder / "worker.ready", what="the worker")
        (folder / "pids").write_text(json.dumps({"worker": worker.pid,
                                                 "spares": spare_pids(spares)}))
        signal.pause()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
