"""How graduate describes Celery's two strategies (no Celery import: read before any run)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graduate.adapters.base import Capabilities, Engine
from graduate.adapters.celery import settings
from graduate.adapters.registry import EngineDescription, Opener
from graduate.errors import ConfigError
from graduate.flow import Flow
from graduate.services.model import Services

if TYPE_CHECKING:
    from graduate.apps import App

# What a team would set for production (see the "tuned" profile): late acknowledgement,
# redelivery of tasks whose worker died, prefetch 1, a short visibility timeout swept
# every second. Short for fast runs: Celery's Redis caveats ask production for one above
# the farthest ETA or countdown too, since Redis gives back any message unacknowledged
# that long, a live worker's held countdown included, and every copy runs at its ETA
# (a wait's reminder delivered twice, sent once by its lease, docs/adr/0034:
# tests/chaos/test_engine_documented.py).
_TUNED: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "visibility_timeout": 10,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}

# The process each worker (and beat) of graduate's Celery engines runs as.
WORKER_MODULE = "graduate.adapters.celery.worker"


def _opener(strategy: str) -> Opener:
    def open_celery(flow: Flow, services: Services, run_dir: Path, *,
                    settings: dict[str, Any] | None = None,
                    worker_services: Services | None = None, app: App | None = None,
                    queue: str | None = None) -> Engine:
        from graduate.adapters.celery.engine import CeleryEngine

        return CeleryEngine(flow, services, run_dir, strategy=strategy, settings=settings,
                            worker_services=worker_services, queue=queue)

    return open_celery


def _checker(strategy: str) -> Callable[[Mapping[str, Any]], None]:
    def check(overrides: Mapping[str, Any]) -> None:
        settings.check_overrides(strategy, overrides)

    return check


def _capabilities(*, durable_progress: bool) -> Capabilities:
    return Capabilities(durable_progress=durable_progress, signals=True, timers=True,
                        compensation=True, versioning=False, pool_children=True,
                        broker=True)


CHAIN = EngineDescription(
    name="celery-chain", title="a Celery chain", product="Celery", side="celery",
    summary="Celery chain: tasks linked one after another, as most Celery code is written",
    # A wait that finds its signal stored takes it (`ChainTasks.wait`).
    capabilities=replace(_capabilities(durable_progress=False), early_signals=True),
    needs_server=False, needs_broker=True, open=_opener("chain"),
    check_settings=_checker("chain"), tuned=_TUNED,
    example_setting="task_acks_late = true", plain_module="graduate.adapters.celery.plain",
    worker_modules=(WORKER_MODULE,),
)
STATE_MACHINE = EngineDescription(
    name="celery-state-machine", title="a Celery state machine", product="Celery",
    side="celery",
    summary="Celery state machine: step state kept in a database and advanced by tasks and "
            "a periodic tick",
    # A decision is stored in the instance's row; the wait takes it when reached.
    capabilities=replace(_capabilities(durable_progress=True), early_signals=True),
    needs_server=False, needs_broker=True, open=_opener("state-machine"),
    check_settings=_checker("state-machine"),
    # The state machine's own recovery: a step's lease outlives its time limit by 1 s,
    # and an idle row is nudged after 2 s.
    tuned={**_TUNED, "lease_margin": 1.0, "idle_grace": 2.0},
    # Benched against the same state machine written by hand (a row and a task per
    # step): a chain keeps no progress to write, so it would bench the strategy, not
    # graduate (docs/adr/0010).
    example_setting="task_acks_late = true",
    plain_module="graduate.adapters.celery.plain_state_machine",
    worker_modules=(WORKER_MODULE, WORKER_MODULE),  # its worker and its beat
)


def _open_app(flow: Flow, services: Services, run_dir: Path, *,
              settings: dict[str, Any] | None = None,
              worker_services: Services | None = None, app: App | None = None,
              queue: str | None = None) -> Engine:
    # A team's app names its own queues, whoever starts its workers.
    del queue
    from graduate.adapters.celery.app_engine import CeleryAppEngine

    if app is None:
        raise ConfigError(f"engine {APP.name!r} runs a team's declared app: graduate chaos APP "
                          "--engine celery")
    return CeleryAppEngine(app, flow, services, run_dir, settings=settings,
                           worker_services=worker_services)


APP = EngineDescription(
    name="celery-app", title="the team's Celery app", product="Celery", side="celery",
    summary="the team's own Celery app and tasks, run by graduate with its own settings "
            "(a profile overrides them)",
    # The team's app declares no cancel: nothing graduate can ask it to roll back with.
    capabilities=replace(_capabilities(durable_progress=False), cancellation=False),
    needs_server=False, needs_broker=True, open=_open_app, check_settings=_checker("app"),
    tuned=_TUNED,
    example_setting="task_acks_late = true", runs_app="celery",
    app_module="graduate.adapters.celery.application",
)
DESCRIPTIONS = (CHAIN, STATE_MACHINE, APP)
