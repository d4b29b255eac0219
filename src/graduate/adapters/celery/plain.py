"""The flow written directly as Celery chains: one task per step, linked with `chain`,
Celery's defaults (no started tracking, no extended results), and each wait answered by
sending the rest of the flow as a new chain, as an approval handler would. Nothing of
graduate's in between. The baseline of `graduate bench` (see `graduate.adapters.plain`).

A wait has a deadline, and Celery has no timer inside a wait: the step before it sends
an expiry task with the deadline as its countdown (Celery's own way to run something
later), and the approval handler and the expiry each claim the decision in Redis first
(`SET NX`), so that only one of them acts. An expiry that wins records that the wait
expired; the rejection and expiry paths of the flow are not part of the bench.

    python -m graduate.adapters.celery.plain RUN_DIR   (a PlainSpec on standard input)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import redis
from celery import Celery, chain
from celery.signals import worker_process_init, worker_ready

from graduate._launch import die_with_parent
from graduate.adapters.base import write_ready_file
from graduate.adapters.celery.app import close_app
from graduate.adapters.plain import PlainSpec, record_effect, start_plain_worker
from graduate.processes import ManagedProcess

STEP = "plain.step"
EXPIRE = "plain.expire"
# The decisions outlive the longest wait by a day, as Celery's results do.
DECISION_LIFETIME = 86400


def decision_key(instance_id: str, wait: str) -> str:
    return f"plain:{instance_id}:decided:{wait}"


def create_plain_app(spec: PlainSpec) -> Celery:
    app = Celery("graduate-plain", broker=spec.services["broker_url"],
                 backend=spec.services["result_backend_url"])
    app.conf.task_default_queue = spec.queue

    def record_step(instance_id: str, name: str, database: str,
                    opens: str | None = None) -> None:
        """The step's effect; the step before a wait then starts the wait's expiry."""
        record_effect(database, instance_id, name)
        if opens is not None:
            app.signature(EXPIRE, args=(instance_id, opens, database),
                          countdown=spec.deadlines[opens]).apply_async()

    def expire(instance_id: str, wait: str, database: str) -> None:
        client = redis.Redis.from_url(spec.services["result_backend_url"])
        try:
            if claim_decision(client, spec, instance_id, wait):
                record_effect(database, instance_id, f"{wait}:expired")
        finally:
            client.close()

    app.task(name=STEP, shared=False)(record_step)
    app.task(name=EXPIRE, shared=False)(expire)
    return app


def claim_decision(client: redis.Redis, spec: PlainSpec, instance_id: str, wait: str) -> bool:
    """Whether this caller decides the wait (its approval, or its expiry), first."""
    lifetime = int(spec.deadlines.get(wait, 0)) + DECISION_LIFETIME
    return bool(client.set(decision_key(instance_id, wait), "1", nx=True, ex=lifetime))


def start_worker(spec: PlainSpec, run_dir: Path) -> ManagedProcess:
    return start_plain_worker(spec, run_dir, __name__, "Celery")


class PlainCeleryClient:
    """Sends each stretch of steps between waits as one chain
    (`graduate.adapters.plain.PlainClient`)."""

    def __init__(self, spec: PlainSpec) -> None:
        self._spec = spec
        self._app = create_plain_app(spec)
        self._redis = redis.Redis.from_url(spec.services["result_backend_url"])
        # The steps before the first wait, and after each wait up to the next.
        self._stretches: dict[str | None, list[str]] = {None: []}
        # The step right before each wait, which starts the wait's expiry.
        self._opens: dict[str, str] = {}
        current: str | None = None
        for kind, name in spec.nodes:
            if kind == "wait":
                if self._stretches[current] and name in spec.deadlines:
                    self._opens[self._stretches[current][-1]] = name
                current = name
                self._stretches[current] = []
            else:
                self._stretches[current].append(name)

    def _send(self, instance_id: str, after: str | None) -> None:
        steps = self._stretches[after]
        if steps:
            chain(*(self._app.signature(
                STEP, args=(instance_id, name, self._spec.database),
                kwargs={"opens": self._opens[name]} if name in self._opens else {},
                immutable=True) for name in steps)).apply_async()

    def start(self, instance_id: str) -> None:
        self._send(instance_id, None)

    def signal(self, instance_id: str, wait: str) -> None:
        """The approval handler: claim the decision, then send the rest of the flow."""
        if claim_decision(self._redis, self._spec, instance_id, wait):
            self._send(instance_id, wait)

    def close(self) -> None:
        self._redis.close()
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
