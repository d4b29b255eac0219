"""The Celery settings a strategy runs with: Celery's own defaults, recorded, and overridable.

Recovery after a fault depends on these settings more than on the code (acks_late,
reject_on_worker_lost, prefetch, the Redis visibility timeout, time limits), so the
engine exposes the effective values as one plain dict that evidence can store and a
run can vary. Defaults are read from the installed Celery and kombu, not copied.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from graduate.errors import ConfigError

# Settings that decide what a fault does to a task; recorded even when left at default.
RECORDED = (
    "task_acks_late",
    "task_reject_on_worker_lost",
    "task_acks_on_failure_or_timeout",
    "worker_prefetch_multiplier",
    "task_time_limit",
    "task_soft_time_limit",
)

# The only departures from Celery's defaults: JSON, so that what crosses the broker can
# be read by people and other tools, and retrying the broker at start-up. Started tasks
# are not tracked nor results extended (Celery's defaults): each costs the worker two
# more round trips to the result backend per task, a third of a chain step's own
# (graduate bench), and the chain learns which worker took a task from its received
# mark instead (`receipts.mark_received`), written before the task is acknowledged.
CHOSEN: Mapping[str, Any] = {
    "broker_connection_retry_on_startup": True,
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
}

# The Redis transport's options that decide when an unacknowledged task comes back:
# after `visibility_timeout`, at the next restore sweep, which scans every
# `unacked_restore_interval` x `unacked_restore_throttle` seconds.
TRANSPORT_OPTIONS = ("visibility_timeout", "unacked_restore_interval",
                     "unacked_restore_throttle")

# graduate's own knobs of the state machine (seconds): how often beat ticks, how long a
# step's lease outlives its hard time limit, and how long a row may sit untouched with
# no lease before the tick assumes its advance task was lost.
STATE_MACHINE: Mapping[str, float] = {
    "tick_interval": 1.0,
    "lease_margin": 10.0,
    "idle_grace": 10.0,
}


def celery_defaults() -> dict[str, Any]:
    """Every Celery setting name with its default, as the installed Celery defines them."""
    from celery.app.defaults import DEFAULTS

    return dict(DEFAULTS)


def effective_settings(strategy: str, broker_url: str,
                       overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The settings a strategy runs with: defaults, graduate's few choices, then overrides."""
    settings = recorded_settings(celery_defaults(), broker_url)
    settings.update(CHOSEN)
    settings.update(STATE_MACHINE if strategy == "state-machine" else {})
    check_overrides(strategy, overrides or {})
    settings.update(overrides or {})
    return settings


def recorded_settings(conf: Mapping[str, Any], broker_url: str) -> dict[str, Any]:
    """The values in `conf` (Celery's defaults, or a team's app.conf) of the settings that
    decide what a fault does, with the Redis transport's options where Redis is the broker."""
    settings: dict[str, Any] = {key: _plain(conf.get(key)) for key in RECORDED}
    if broker_url.startswith(("redis://", "rediss://", "unix://")):
        from kombu.transport.redis import Channel

        transport = conf.get("broker_transport_options") or {}
        for option in TRANSPORT_OPTIONS:
            settings[option] = transport.get(option, getattr(Channel, option))
    return settings


def check_overrides(strategy: str, overrides: Mapping[str, Any]) -> None:
    """Every key a Celery setting (or one of graduate's), every value plain JSON."""
    types = _option_types()  # every Celery setting, with the type Celery declares
    own = STATE_MACHINE if strategy == "state-machine" else {}
    for key, value in overrides.items():
        if key not in types and key not in own and key not in TRANSPORT_OPTIONS:
            known = ", ".join([*TRANSPORT_OPTIONS, *own])
            raise ConfigError(
                f"{key!r} is not a Celery setting nor one of graduate's ({known}); use a "
                "lower-case Celery setting name such as task_acks_late or "
                "worker_prefetch_multiplier"
            )
        # graduate's knobs and the transport's are seconds; Celery's own have the type
        # Celery declares, so a typo fails here and not inside a worker.
        kind = "float" if key in own or key in TRANSPORT_OPTIONS else types[key]
        if value is not None and not _of_kind(value, kind):
            raise ConfigError(f"Celery setting {key} = {value!r} must be "
                              f"{_KIND_NAMES.get(kind, kind)}")
    try:
        json.dumps(dict(overrides), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"Celery settings must be plain JSON values (numbers, strings, "
                          f"lists, dicts) so workers and evidence can carry them: {error}"
                          ) from error


_KIND_NAMES = {"bool": "true or false", "int": "a whole number, 0 or more",
               "float": "a number of seconds, 0 or more", "string": "a string",
               "dict": "a table", "list": "a list"}


def _option_types() -> dict[str, str]:
    """Each Celery setting's declared type: bool, int, float, string, dict, list, ..."""
    from celery.app.defaults import NAMESPACES, flatten

    aliases = {"str": "string", "tuple": "list"}
    return {name: aliases.get(str(option.type), str(option.type))
            for name, option in flatten(NAMESPACES)}


def _of_kind(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return kind not in ("int", "float", "string", "dict", "list")
    if kind in ("int", "float"):
        whole = isinstance(value, int) or kind == "float"
        return (isinstance(value, int | float) and whole and math.isfinite(value)
                and value >= 0)
    if kind == "string":
        return isinstance(value, str)
    if kind == "dict":
        return isinstance(value, dict)
    if kind == "list":
        return isinstance(value, list | tuple)
    return True  # "any" and the like: Celery takes what it is given


def celery_conf(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The part of `settings` that goes into `app.conf`, the transport options included."""
    defaults = celery_defaults()
    conf = {key: value for key, value in settings.items() if key in defaults}
    transport = {key: settings[key] for key in TRANSPORT_OPTIONS if key in settings}
    if transport:
        conf["broker_transport_options"] = {
            **conf.get("broker_transport_options", {}), **transport,
        }
    return conf


def _plain(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, tuple):
        return list(value)
    return value
