"""A worker of a team's own Celery app, run by graduate:
`python -m graduate.adapters.celery.app_worker MODULE:APP READY_FILE [CELERY WORKER ARGS]`,
or its beat: `... MODULE:APP READY_FILE beat SCHEDULE_FILE`.

It imports the application as it is, connects it to the broker and result backend the
run gives (GRADUATE_BROKER_URL, GRADUATE_RESULT_BACKEND_URL, over the app's own), applies
a profile's settings over the app's own (GRADUATE_APP_CELERY_SETTINGS, JSON), installs
graduate's correlation handlers (see `instrument`) without any change to the application's
code, and writes READY_FILE when Celery says the worker (or beat) takes work. A worker's
node name gets its PID (`-n NAME@%h` becomes NAME-PID@HOST), and on a Redis broker it
marks every task it receives, by instance, before acknowledging it (see `receipts`):
what `CeleryAppEngine.held_until` reads to prove that a message's taker is dead. Under a run
its environment carries the variables of `graduate.instrument.RunContext`, so
`graduate.effect` records into the run's ledger.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import beat_init, task_received, worker_ready

from graduate.adapters.base import write_ready_file
from graduate.adapters.celery.broker import BrokerView
from graduate.adapters.celery.instrument import install, instance_of
from graduate.adapters.celery.receipts import mark_received, worker_node
from graduate.adapters.celery.settings import celery_conf, check_overrides
from graduate.config import load_settings
from graduate.errors import ConfigError

# A profile's Celery settings for the team's workers, as JSON: they override the app's own.
SETTINGS_VARIABLE = "GRADUATE_APP_CELERY_SETTINGS"


def load_app(reference: str) -> Celery:
    """The Celery app at `module:attribute`, or a ConfigError that says what to fix."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"Celery app {reference!r} must read module:attribute, for example "
                          "myproject.celery:app")
    try:
        module = importlib.import_module(module_name)
    # The team's module may fail in any way as it imports: a syntax error, an exception,
    # a sys.exit() that would otherwise end graduate with the module's own code.
    except (Exception, SystemExit) as error:
        raise ConfigError(f"cannot import {module_name!r} for Celery app {reference!r}: "
                          f"{type(error).__name__}: {error}; fix the module, or point "
                          "app at the module that defines the app") from error
    if not hasattr(module, attribute):
        raise ConfigError(f"module {module_name!r} has no {attribute!r} (for Celery app "
                          f"{reference!r}); point at the celery.Celery instance")
    app = getattr(module, attribute)
    if not isinstance(app, Celery):
        raise ConfigError(f"{reference!r} is not a Celery app (found {type(app).__name__}); "
                          "point at the celery.Celery instance")
    return app


def configure(app: Celery, overrides: Mapping[str, Any]) -> None:
    """Apply a profile's overrides over the team's own settings (checked first)."""
    check_overrides("app", overrides)
    app.conf.update(celery_conf(overrides))


def connect_services(app: Celery, broker_url: str | None,
                     result_backend_url: str | None) -> None:
    """Point the team's app at the run's broker and result backend (when given).

    The harness process keeps one app object (the team's module) from run to run, and
    Celery caches on first use the connection pool, the producer pool and the result
    backend: each is dropped here, so nothing goes to an earlier run's broker."""
    if broker_url:
        app.conf.broker_url = broker_url
    if result_backend_url:
        app.conf.result_backend = result_backend_url
    app.close()  # the connection pool
    app.__dict__.pop("amqp", None)  # a cached property, holding the producer pool
    app._backend_cache = None
    app._local = threading.local()  # where a backend that is not thread-safe is kept


def with_pid(arguments: Sequence[str], pid: int) -> list[str]:
    """Celery worker `arguments` whose node name (`-n NAME@%h`, `--hostname NAME@%h`;
    Celery's own `celery@%h` when none is given) carries the worker's `pid`."""
    found = list(arguments)
    for at, option in enumerate(found[:-1]):
        if option in ("-n", "--hostname"):
            found[at + 1] = worker_node(found[at + 1].partition("@")[0], pid)
            return found
    return [*found, "-n", worker_node("celery", pid)]


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise ConfigError("usage: python -m graduate.adapters.celery.app_worker MODULE:APP "
                          "READY_FILE [celery worker options | beat SCHEDULE_FILE] (graduate "
                          "starts these itself)")
    app = load_app(argv[0])
    services = load_settings(project_dir=Path.cwd())
    connect_services(app, services.broker_url, services.result_backend_url)
    configure(app, json.loads(os.environ.get(SETTINGS_VARIABLE) or "{}"))
    install()

    def ready(**_: Any) -> None:
        write_ready_file(argv[1], os.getpid())

    if argv[2:3] == ["beat"]:
        beat_init.connect(ready, weak=False)
        app.Beat(schedule=argv[3], loglevel="INFO").run()
        return
    worker_ready.connect(ready, weak=False)
    broker = BrokerView(str(app.conf.broker_url or ""), {})
    if broker.peekable:
        # Every task it receives (it consumes only the queues the app declares), marked in
        # the broker's Redis: its client opens on first use, in the main process, which
        # alone receives tasks.
        task_received.connect(mark_received(broker.redis_client, ("",), instance_of),
                              weak=False)
    app.worker_main(["worker", *with_pid(argv[2:], os.getpid())])


if __name__ == "__main__":
    main(sys.argv[1:])
