"""The flow written directly as Celery chains: one task per step, linked with `chain`,
Celery's defaults (no started tracking, no extended results), and each wait answered by
sending the rest of the flow as a new chain, as an approval handler would. Nothing of
graduate's in between. The baseline of `graduate bench` (see `graduate.adapters.plain`).

    python -m graduate.adapters.celery.plain RUN_DIR   (a PlainSpec on standard input)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from celery import Celery, chain
from celery.signals import worker_process_init, worker_ready

from graduate._launch import die_with_parent
from graduate.adapters.base import write_ready_file
from graduate.adapters.celery.app import close_app
from graduate.adapters.plain import PlainSpec, record_effect, start_plain_worker
from graduate.processes import ManagedProcess

STEP = "plain.step"


def create_plain_app(spec: PlainSpec) -> Celery:
    app = Celery("graduate-plain", broker=spec.services["broker_url"],
                 backend=spec.services["result_backend_url"])
    app.conf.task_default_queue = spec.queue

    app.task(name=STEP, shared=False)(record_step)
    return app


def record_step(instance_id: str, name: str, database: str) -> None:
    record_effect(database, instance_id, name)


def start_worker(spec: PlainSpec, run_dir: Path) -> ManagedProcess:
    return start_plain_worker(spec, run_dir, __name__, "Celery")


class PlainCeleryClient:
    """Sends each stretch of steps between waits as one chain
    (`graduate.adapters.plain.PlainClient`)."""

    def __init__(self, spec: PlainSpec) -> None:
        self._spec = spec
        self._app = create_plain_app(spec)
        # The steps before the first wait, and after each wait up to the next.
        self._stretches: dict[str | None, list[str]] = {None: []}
        current: str | None = None
        for kind, name in spec.nodes:
            if kind == "wait":
                current = name
                self._stretches[current] = []
            else:
                self._stretches[current].append(name)

    def _send(self, instance_id: str, after: str | None) -> None:
        steps = self._stretches[after]
        if steps:
            chain(*(self._app.signature(STEP, args=(instance_id, name, self._spec.database),
                                        immutable=True) for name in steps)).apply_async()

    def start(self, instance_id: str) -> None:
        self._send(instance_id, None)

    def signal(self, instance_id: str, wait: str) -> None:
        self._send(instance_id, wait)

    def close(self) -> None:
        close_app(self._app)


def open_client(spec: PlainSpec) -> PlainCeleryClient:
    return PlainCeleryClient(spec)


def main(run_dir: str) -> None:
    del run_dir  # names the run for `ps` readers; the spec carries everything
    spec = PlainSpec.from_json(sys.stdin.read())
    run_plain_worker(create_plain_app(spec), spec)


def run_plain_worker(app: Celery, spec: PlainSpec, *, beat: bool = False) -> None:
    """Run a plain baseline's worker on `app` until it is stopped; with `beat`, the
    worker runs the app's beat schedule too (a baseline that sweeps its table)."""

    def ready(**_: Any) -> None:
        write_ready_file(spec.ready_file, os.getpid())

    def start_pool_child(**_: Any) -> None:
        if sys.platform == "linux":
            die_with_parent(os.getppid())

    worker_process_init.connect(start_pool_child, weak=False)
    worker_ready.connect(ready, weak=False)
    # As graduate's worker runs: one prefork child, no mingle, gossip or heartbeat.
    app.worker_main(["worker", "--pool", "prefork", "--concurrency", "1", "--without-mingle",
                     "--without-gossip", "--without-heartbeat", "-Q", spec.queue,
                     "-n", f"plain-{os.getpid()}@%h", "--loglevel", "WARNING",
                     *(["--beat", "--schedule", str(Path(spec.database).parent / "plain-beat")]
                       if beat else [])])


if __name__ == "__main__":
    main(*sys.argv[1:2])
