"""A worker of a team's own Celery app, run by graduate:
`python -m graduate.adapters.celery.app_worker MODULE:APP READY_FILE [CELERY WORKER ARGS]`.

It imports the application as it is, applies a profile's settings over the app's own
(GRADUATE_APP_CELERY_SETTINGS, JSON), installs graduate's correlation handlers (see
`instrument`) without any change to the application's code, and writes READY_FILE when
Celery says the worker takes work. Under a run its environment carries the variables of
`graduate.instrument.RunContext`, so `graduate.effect` records into the run's ledger.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from celery import Celery
from celery.signals import worker_ready

from graduate.adapters.base import write_ready_file
from graduate.adapters.celery.instrument import install
from graduate.adapters.celery.settings import celery_conf, check_overrides
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
    except ImportError as error:
        raise ConfigError(f"cannot import {module_name!r} for Celery app {reference!r}: "
                          f"{error}") from error
    app = getattr(module, attribute, None)
    if not isinstance(app, Celery):
        raise ConfigError(f"{reference!r} is not a Celery app (found {type(app).__name__}); "
                          "point at the celery.Celery instance")
    return app


def configure(app: Celery, overrides: Mapping[str, Any]) -> None:
    """Apply a profile's overrides over the team's own settings (checked first)."""
    check_overrides("app", overrides)
    app.conf.update(celery_conf(overrides))


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise ConfigError("usage: python -m graduate.adapters.celery.app_worker MODULE:APP "
                          "READY_FILE [celery worker options] (graduate starts these itself)")
    app = load_app(argv[0])
    configure(app, json.loads(os.environ.get(SETTINGS_VARIABLE) or "{}"))
    install()

    def ready(**_: Any) -> None:
        write_ready_file(argv[1], os.getpid())

    worker_ready.connect(ready, weak=False)
    app.worker_main(["worker", *argv[2:]])


if __name__ == "__main__":
    main(sys.argv[1:])
