"""The supervisor's record of a replacement worker: the moment it started is the moment
it could first take work, not the later moment the harness saw it say it was ready (a
run judges an instance held up by a fault when its work waited for that moment)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import cast

from graduate.adapters.base import Engine, WorkerGroup
from graduate.chaos.faults import FaultContext, FaultPlan
from graduate.chaos.faults.deploy_change import FAULT as DEPLOY_CHANGE
from graduate.flow import Flow
from graduate.processes import ManagedProcess, spawn, wait_until
from graduate.runs.session import RunSession
from graduate.runs.supervisor import WORKER_STARTED, Supervisor
from graduate.runs.timeline import Timeline
from graduate.runs.workers import LocalWorkers

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

    def start_workers(self, count: int) -> WorkerGroup:
        return WorkerGroup.start([self.start_worker] * count)


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


def test_a_pinned_deploys_new_worker_counts_as_started_before_any_work_it_took(
        tmp_path: Path) -> None:
    """deploy-change --pinned starts the new version's workers beside the old: each is
    in the timeline from its spawn, as a replacement is, not from its readiness seen."""
    timeline = Timeline()
    supervisor = Supervisor(cast(Engine, _SlowToSeeEngine(tmp_path)), timeline)
    old_worker = spawn("worker-1", [sys.executable, "-c", "import time; time.sleep(600)"],
                       tmp_path / "worker-1.log")
    supervisor.processes.append(old_worker)
    session = SimpleNamespace(workers=LocalWorkers(supervisor), timeline=timeline,
                              start_instance=lambda: SimpleNamespace(instance_id="f-2"))
    context = FaultContext(session=cast(RunSession, session), plan=cast(FaultPlan, None),
                           reached=None, proxies=(), release=lambda: None)
    old, new = (cast(Flow, SimpleNamespace(name="f", version=v)) for v in (1, 2))
    try:
        DEPLOY_CHANGE._deploy_beside(context, old, new, "reorder")
        seen_ready = time.time()
        first_task = float((tmp_path / "first-task").read_text())
        started = timeline.first(WORKER_STARTED)
        assert started is not None
        assert started <= first_task < seen_ready
        assert len(supervisor.workers) == 2
    finally:
        supervisor.stop_all()
    assert not any(p.group_alive() for p in supervisor.processes)
