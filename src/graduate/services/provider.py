"""The services of one command: kept up by `env up`, or resolved for the command alone.

A command that starts local services stops them when it ends, on error and on Ctrl-C
too. `graduate env up` starts them once and records them in `.graduate/env.json`, so
that later commands (`run`, `signal`) share them until `graduate env down`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graduate.config import Settings
from graduate.errors import ServiceError
from graduate.files import parse_json, read_text
from graduate.ledger import Ledger
from graduate.processes import group_alive, stop_group
from graduate.services.local import LocalRedis, LocalTemporal
from graduate.services.model import Services
from graduate.services.probe import (
    check_temporal_access,
    probe_address,
    probe_celery_services,
)
from graduate.services.resolver import LocalStrategy, Needs, Resolver

__all__ = ["KeptService", "Needs", "Stack", "env_down", "env_up", "kept_services",
           "open_services", "open_stack", "own_servers"]
ENV_FILE = "env.json"


@dataclass(frozen=True)
class KeptService:
    """A local service started by `graduate env up`, as recorded in env.json."""

    name: str
    pid: int
    address: str
    log: str

    def alive(self) -> bool:
        return group_alive(self.pid)


def kept_services(state_dir: Path) -> dict[str, KeptService]:
    """The services `graduate env up` recorded (empty when none)."""
    path = state_dir / ENV_FILE
    damaged = (f"{path} is damaged; stop any graduate servers by hand and delete the "
               "file")
    try:
        data = parse_json(read_text(path, "the services file", ServiceError), str(path),
                          ServiceError)
    except FileNotFoundError:
        return {}
    except ServiceError as error:
        raise ServiceError(f"{error}: {damaged}") from error
    try:
        kept = {name: KeptService(name=name, **entry) for name, entry in data.items()}
    except (AttributeError, TypeError) as error:
        raise ServiceError(f"{damaged} ({error})") from error
    for service in kept.values():
        # A process group of 0 is graduate's own, and 1 is init's: `env down` stops it.
        if (isinstance(service.pid, bool) or not isinstance(service.pid, int)
                or service.pid <= 1 or not isinstance(service.address, str)
                or not isinstance(service.log, str)):
            raise ServiceError(f"{damaged} ({service.name}: pid {service.pid!r}, address "
                               f"{service.address!r}, log {service.log!r})")
    return kept


def env_up(settings: Settings, *, temporal_port: int | None = None,
           redis_port: int | None = None) -> dict[str, KeptService]:
    """Start the local services that are not configured as external, and keep them up."""
    kept = {name: svc for name, svc in kept_services(settings.state_dir).items() if svc.alive()}
    started: list[LocalTemporal | LocalRedis] = []
    try:
        if "temporal" not in kept and not settings.temporal_address:
            temporal = LocalTemporal.create(settings.state_dir, cli=settings.temporal_cli,
                                            port=temporal_port, kept=True)
            started.append(temporal)
            process = temporal.start()
            kept["temporal"] = KeptService("temporal", process.pid, temporal.address,
                                           str(temporal.log_path))
        if "redis" not in kept and not settings.broker_url:
            redis = LocalRedis.create(settings.state_dir, port=redis_port, kept=True)
            started.append(redis)
            process = redis.start()
            kept["redis"] = KeptService("redis", process.pid, redis.url, str(redis.log_path))
    except BaseException:
        for service in started:
            service.stop()
        raise
    _write_env(settings.state_dir, kept)
    return kept


def env_down(settings: Settings) -> list[KeptService]:
    """Stop what `env up` started; return what was stopped."""
    kept = kept_services(settings.state_dir)
    for service in kept.values():
        stop_group(service.pid, grace=10.0)
    (settings.state_dir / ENV_FILE).unlink(missing_ok=True)
    return list(kept.values())


def _write_env(state_dir: Path, kept: dict[str, KeptService]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / ENV_FILE
    temporary = path.with_suffix(".tmp")
    data: dict[str, Any] = {
        name: {"pid": s.pid, "address": s.address, "log": s.log} for name, s in kept.items()
    }
    temporary.write_text(json.dumps(data, indent=2), encoding="utf-8")
    temporary.replace(path)


@dataclass
class Stack:
    """The services of one command, with handles on the local servers it started
    itself as broker and Temporal server: those, and only those, a fault may kill and
    restart."""

    services: Services
    temporal: LocalTemporal | None = None
    redis: LocalRedis | None = None


def own_servers(settings: Settings, needs: Needs) -> Needs:
    """The servers a stack opened with `use_kept=False` starts itself, and a fault may
    therefore kill and restart: those `needs` asks for that the settings do not name.
    Known before anything starts."""
    return Needs(temporal=needs.temporal and not settings.temporal_address,
                 broker=needs.broker and not settings.broker_url)


@contextlib.contextmanager
def open_stack(settings: Settings, needs: Needs, *, temporal_port: int | None = None,
               redis_port: int | None = None, use_kept: bool = True) -> Iterator[Stack]:
    """The services `needs` asks for, from the local strategy of the one resolver
    (`graduate.services.resolver`); local servers started here are stopped on exit.

    With `use_kept=False`, services kept up by `graduate env up` are not used: the
    command starts its own, so that it may kill and restart them.
    """
    kept = {name: svc.address for name, svc in kept_services(settings.state_dir).items()
            if use_kept and svc.alive()}
    # Refused before anything starts: a ledger that cannot be written, and an external
    # service that is down (named in seconds, not after a worker's minute of retries).
    Ledger(settings.ledger).close()
    if needs.temporal:
        check_temporal_access(settings)
    if needs.temporal and settings.temporal_address:
        probe_address(settings.temporal_address, "the Temporal server")
    if needs.broker:
        probe_celery_services(settings.broker_url, settings.result_backend_url)
    local = LocalStrategy(settings.state_dir, temporal_cli=settings.temporal_cli,
                          temporal_port=temporal_port, redis_port=redis_port, kept=kept)
    with Resolver(settings, local) as resolver:
        services = resolver.services(needs)
        redis = local.redis_server
        yield Stack(services=services, temporal=local.temporal_server,
                    # A Redis started only as the result backend is not the broker.
                    redis=redis if redis is not None and redis.url == services.broker_url
                    else None)


@contextlib.contextmanager
def open_services(settings: Settings, needs: Needs, *, temporal_port: int | None = None,
                  redis_port: int | None = None) -> Iterator[Services]:
    """The services `needs` asks for; local ones started here are stopped on exit."""
    with open_stack(settings, needs, temporal_port=temporal_port,
                    redis_port=redis_port) as stack:
        yield stack.services
