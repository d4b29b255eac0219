"""A Celery worker or beat process: `python -m graduate.adapters.celery.worker RUN_DIR ROLE NAME`.

ROLE is `worker` or `beat` (beat takes its schedule file as a fourth argument); the
WorkerSpec arrives as JSON on standard input (see `start_worker_process`). The
process builds the same app as the engine from the WorkerSpec and writes its ready
file when Celery says it takes work (`worker_ready`) or ticks (`beat_init`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from celery.signals import beat_init, task_received, worker_process_init, worker_ready

from graduate._launch import die_with_parent
from graduate.adapters.base import WorkerSpec, write_ready_file
from graduate.adapters.celery.app import create_app
from graduate.adapters.celery.chain import TASK_PREFIX
from graduate.adapters.celery.receipts import mark_received, worker_node
from graduate.adapters.celery.resources import ProcessResources
from graduate.adapters.celery.state_machine import ENGINE as STATE_MACHINE_ENGINE
from graduate.adapters.celery.state_machine import SIGNAL as STATE_MACHINE_SIGNAL
from graduate.errors import ConfigError
from graduate.flow import load_flow

# Celery's own default, as the plain baselines' workers log (docs/adr/0028): at INFO
# each task costs two more log lines, a received and a succeeded, in the main process
# and the pool child. What each task did is recorded elsewhere: the state machine's
# transitions and the chain's task states (each engine's `history`), and every effect
# in the ledger; warnings and errors (a task that failed, a worker lost) still log.
WORKER_LOGLEVEL = "WARNING"


def main(argv: list[str]) -> None:
    wanted = {"worker": 3, "beat": 4}
    if len(argv) < 2 or argv[1] not in wanted or len(argv) < wanted[argv[1]]:
        raise ConfigError("usage: python -m graduate.adapters.celery.worker RUN_DIR worker "
                          "NAME | RUN_DIR beat NAME SCHEDULE_FILE, with the worker spec on "
                          "standard input (the engine starts these itself)")
    spec = WorkerSpec.from_stdin()
    role, name = argv[1], argv[2]
    flow = load_flow(spec.flow_source)
    resources = ProcessResources(spec.services)
    app = create_app(flow, spec.services, spec.settings,
                     strategy=spec.engine.removeprefix("celery-"), run_id=spec.run_id,
                     resources=resources)

    def ready(**_: Any) -> None:
        write_ready_file(spec.ready_file, os.getpid())

    def start_pool_child(**_: Any) -> None:
        # A forked child does not inherit the parent-death signal: without it, pool
        # children would outlive a worker killed with SIGKILL.
        if sys.platform == "linux":
            die_with_parent(os.getppid())
        resources.warm_up()

    if role == "beat":
        beat_init.connect(ready, weak=False)
        app.Beat(schedule=argv[3], loglevel="INFO", quiet=True).run()
        return
    # Each pool child opens its own ledger right after the fork, before any task runs.
    worker_process_init.connect(start_pool_child, weak=False)
    worker_ready.connect(ready, weak=False)
    if spec.engine == "celery-chain":
        task_received.connect(mark_received(resources.redis, (TASK_PREFIX,)), weak=False)
    elif spec.engine == STATE_MACHINE_ENGINE:
        # Which worker took a decision: `StateMachineStrategy.held_until` asks.
        task_received.connect(mark_received(resources.redis, (STATE_MACHINE_SIGNAL,)), weak=False)
    app.worker_main([
        "worker", "--pool", "prefork", "--concurrency", "1", "--without-mingle",
        "--without-gossip", "--without-heartbeat", "-Q", app.conf.task_default_queue,
        "-n", worker_node(name, os.getpid()), "--loglevel", WORKER_LOGLEVEL,
    ])


if __name__ == "__main__":
    main(sys.argv[1:])
