"""The supervisor's record of a replacement worker: the moment it started is the moment
it could first take work, not the later moment the harness saw it say it was ready (a
run judges an instance held up by a fault when its work waited for that moment)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import cast

from graduate.adapters.base import Engine
from graduate.processes import ManagedProcess, spawn, wait_until
from graduate.runs.supervisor import WORKER_STARTED, Supervisor
from graduate.runs.timeline import Timeline

# A worker that takes work at once and says it is ready only afterwards, as a Celery
# worker may run a task before the harness reads its ready file.
_WORKER = """
import pathlib, sys, time
out = pathlib.Path(sys.argv[1])
(out / "first-task").write_text(repr(time.time()))
(out / "ready").write_text("")
time.sleep(600)
"""


class _SlowToSeeEngine:
    """Starts the worker above and returns once its ready file is there."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def start_worker(self) -> ManagedProcess:
        worker = spawn("worker-2", [sys.executable, "-c", _WORKER, str(self.run_dir)],
                       self.run_dir / "worker-2.log")
        wait_until((self.run_dir / "ready").exists, timeout=30, what="the worker's ready file")
        return worker


def test_a_replacement_counts_as_started_before_any_work_it_took(tmp_path: Path) -> None:
    timeline = Timeline()
    supervisor = Supervisor(cast(Engine, _SlowToSeeEngine(tmp_path)), timeline)
    victim = spawn("worker-1", [sys.executable, "-c", "import time; time.sleep(600)"],
                   tmp_path / "worker-1.log")
    supervisor.processes.append(victim)
    victim.kill()
    replacement = supervisor.replace(victim, 0.0)
    try:
        seen_ready = time.time()
        first_task = float((tmp_path / "first-task").read_text())
        started = timeline.first(WORKER_STARTED)
        assert started is not None
        assert started <= first_task < seen_ready
        assert supervisor.processes == [replacement]
    finally:
        replacement.kill()
    assert not replacement.group_alive()
