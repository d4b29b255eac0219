"""Where the services of a run come from: one resolver, with three strategies.

A service the settings name (a flag, a GRADUATE_* variable or `[tool.graduate]`) is
used exactly as given. One they do not name comes from the strategy:

- `local`: a Temporal dev server or a Redis from the virtual environment on a free
  port (or the one `graduate env up` keeps), each started at most once;
- `external`: nothing is started; a service the settings do not name is an error that
  says which setting to give;
- `docker`: containers, through testcontainers.

The CLI and the demo resolve once per command (`graduate.services.provider.open_stack`),
the pytest plugin once per test session; both through `Resolver`, whose `close` stops
whatever its strategy started. graduate cannot kill a server it did not start, so the
resolver also says which restart faults it cannot perform.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from graduate.config import Settings
from graduate.errors import ServiceError
from graduate.services.local import LocalRedis, LocalTemporal
from graduate.services.model import Services, TemporalTarget

if TYPE_CHECKING:
    from graduate.chaos.faults import Fault

STRATEGIES = ("local", "external", "docker")
DOCKER_TIMEOUT = 10  # seconds to reach a Docker engine before saying there is none


@dataclass(frozen=True)
class Needs:
    """Which services a command needs."""

    temporal: bool = False
    broker: bool = False


def is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://"))


def result_backend_for(configured: str | None, broker: str,
                       own_redis: Callable[[], str]) -> str:
    """The Celery result backend: the configured one; else the broker when it is Redis;
    else a Redis of the strategy's own, since graduate's Celery strategies keep their
    results in Redis (a RabbitMQ broker cannot hold them)."""
    if configured:
        return configured
    if is_redis(broker):
        return broker
    return own_redis()


class Strategy(Protocol):
    """Where the services the settings do not name come from."""

    name: str

    def temporal(self) -> str:
        """The address of a Temporal frontend of its own."""
        ...

    def broker(self) -> str:
        """The URL of a Celery broker of its own."""
        ...

    def redis(self) -> str:
        """The URL of a Redis of its own (the result backend beside a non-Redis broker)."""
        ...

    def ledger_url(self) -> str | None:
        """A ledger database of its own, or None to use the settings' default."""
        ...

    def cannot_restart(self, fault: Fault) -> str | None:
        """Why `fault` may not kill and restart its own servers, or None when it may."""
        ...

    def started(self) -> tuple[str, ...]:
        """The local servers it started itself (temporal, redis)."""
        ...

    def revive(self) -> list[str]:
        """Start again each server of its own that died; one line per server, saying
        what died and how (nothing when all are up, or when the servers are not ours)."""
        ...

    def close(self) -> None: ...


class LocalStrategy:
    """A Temporal dev server and a Redis from the virtual environment, on free ports
    (or on the ports asked for), or those `graduate env up` keeps (`kept`: name to
    address), which are used only when no port is asked for."""

    name = "local"

    def __init__(self, folder: Path, *, temporal_cli: str | None = None,
                 temporal_port: int | None = None, redis_port: int | None = None,
                 kept: Mapping[str, str] | None = None) -> None:
        self.folder = folder
        self.temporal_cli = temporal_cli
        self.temporal_port = temporal_port
        self.redis_port = redis_port
        self.kept = dict(kept or {})
        self.temporal_server: LocalTemporal | None = None
        self.redis_server: LocalRedis | None = None

    def temporal(self) -> str:
        if self.temporal_server is None:
            if "temporal" in self.kept and self.temporal_port is None:
                return self.kept["temporal"]
            # Held before it starts, so that `close` stops a server that never got ready.
            self.temporal_server = LocalTemporal.create(
                self.folder, cli=self.temporal_cli, port=self.temporal_port,
                name="temporal-run", first_free=True)
            self.temporal_server.start()
        return self.temporal_server.address

    def broker(self) -> str:
        return self.redis()

    def redis(self) -> str:
        if self.redis_server is None:
            if "redis" in self.kept and self.redis_port is None:
                return self.kept["redis"]
            self.redis_server = LocalRedis.create(self.folder, port=self.redis_port,
                                                  name="redis-run", first_free=True)
            self.redis_server.start()
        return self.redis_server.url

    def ledger_url(self) -> str | None:
        return None

    def cannot_restart(self, fault: Fault) -> str | None:
        return None  # its own servers, started for this command or session

    def started(self) -> tuple[str, ...]:
        return tuple(name for name, server in (("temporal", self.temporal_server),
                                               ("redis", self.redis_server)) if server)

    def revive(self) -> list[str]:
        notes = []
        for server in (self.temporal_server, self.redis_server):
            process = server.process if server is not None else None
            if server is None or process is None or process.alive():
                continue
            tail = process.log_tail()
            server.start()  # the same port and data, so addresses already handed out hold
            notes.append(f"the suite's {process.name} on port {server.port} had exited with "
                         f"code {process.popen.returncode} and was started again on the "
                         f"same port and data. Its log ({process.log_path}) ended with:\n"
                         f"{tail}")
        return notes

    def close(self) -> None:
        for server in (self.redis_server, self.temporal_server):
            if server is not None:
                server.stop()


class ExternalStrategy:
    """Services someone else runs: a Temporal cluster or Temporal Cloud, a Redis or
    RabbitMQ, all given by settings (flags, GRADUATE_* variables or [tool.graduate])."""

    name = "external"

    def temporal(self) -> str:
        raise ServiceError("the external provider needs a Temporal address: set "
                           "GRADUATE_TEMPORAL_ADDRESS or --graduate-temporal-address "
                           "(with namespace, TLS or API key as the cluster needs)")

    def broker(self) -> str:
        raise ServiceError("the external provider needs a broker: set GRADUATE_BROKER_URL "
                           "or --graduate-broker-url (redis://... or amqp://...)")

    def redis(self) -> str:
        raise ServiceError("with a RabbitMQ broker, set a Redis result backend: "
                           "GRADUATE_RESULT_BACKEND_URL or --graduate-result-backend-url")

    def ledger_url(self) -> str | None:
        return None

    def cannot_restart(self, fault: Fault) -> str | None:
        return fault.external()

    def started(self) -> tuple[str, ...]:
        return ()

    def revive(self) -> list[str]:
        return []  # not our servers: whoever runs them restarts them

    def close(self) -> None:
        return None


class DockerStrategy:
    """Servers in containers, through testcontainers: a Temporal dev server, and Redis or
    RabbitMQ as the broker (RabbitMQ with a Redis result backend); PostgreSQL for the
    ledger when asked for."""

    name = "docker"
    temporal_image = "temporalio/temporal:1.4.1"
    redis_image = "redis:7"
    rabbitmq_image = "rabbitmq:3.13"
    postgres_image = "postgres:16"

    def __init__(self, services: tuple[str, ...] = ("redis",)) -> None:
        unknown = set(services) - {"redis", "rabbitmq", "postgres"}
        if unknown:
            raise ServiceError(f"unknown docker service(s) {sorted(unknown)}; choose from "
                               "redis, rabbitmq, postgres")
        self.services = services
        self.client = docker_client()
        self._containers: list[Any] = []
        self._started: dict[str, str] = {}

    def _start(self, key: str, container: Any, url: Callable[[Any], str]) -> str:
        if key not in self._started:
            container.start()
            self._containers.append(container)
            self._started[key] = url(container)
        return self._started[key]

    def temporal(self) -> str:
        from testcontainers.core.container import DockerContainer

        container = (DockerContainer(self.temporal_image)
                     .with_command("server start-dev --ip 0.0.0.0 --headless")
                     .with_exposed_ports(7233))
        return self._start("temporal", container, lambda c: (
            f"{c.get_container_host_ip()}:{c.get_exposed_port(7233)}"))

    def broker(self) -> str:
        if "rabbitmq" not in self.services:
            return self.redis()
        from testcontainers.community.rabbitmq import RabbitMqContainer

        return self._start("rabbitmq", RabbitMqContainer(self.rabbitmq_image), lambda c: (
            f"amqp://guest:guest@{c.get_container_host_ip()}:{c.get_exposed_port(5672)}//"))

    def redis(self) -> str:
        from testcontainers.community.redis import RedisContainer

        return self._start("redis", RedisContainer(self.redis_image), lambda c: (
            f"redis://{c.get_container_host_ip()}:{c.get_exposed_port(6379)}/0"))

    def ledger_url(self) -> str | None:
        """A PostgreSQL URL for the ledger, when `postgres` is among the services."""
        if "postgres" not in self.services:
            return None
        from testcontainers.community.postgres import PostgresContainer

        return self._start("postgres", PostgresContainer(self.postgres_image, driver=None),
                           lambda c: str(c.get_connection_url()))

    def cannot_restart(self, fault: Fault) -> str | None:
        return ("the docker provider does not restart its containers; use the local "
                "provider for restart faults")

    def started(self) -> tuple[str, ...]:
        return ()  # containers, not local processes

    def revive(self) -> list[str]:
        return []  # testcontainers does not restart a container; its tests fail loudly

    def close(self) -> None:
        for container in reversed(self._containers):
            container.stop()


def docker_client() -> object:
    """A Docker client that answered a ping, or a ServiceError saying what to do."""
    try:
        import docker
    except ImportError as error:
        raise ServiceError("the docker provider needs testcontainers: "
                           "pip install 'graduate[docker]'") from error
    where = os.environ.get("DOCKER_HOST", "the default socket")
    try:
        client = docker.from_env(timeout=DOCKER_TIMEOUT)
        client.ping()
    except Exception as error:
        raise ServiceError(
            f"no Docker engine is reachable at {where} ({type(error).__name__}): start "
            "Docker or point DOCKER_HOST at one, or choose --graduate-provider local"
        ) from error
    return client


class Resolver:
    """The services of one command or one test session: what the settings name, as
    given; the rest from `strategy`, each asked for at most once. `close` (or leaving
    a `with` block) stops whatever the strategy started."""

    def __init__(self, settings: Settings, strategy: Strategy) -> None:
        self.settings = settings
        self.strategy = strategy

    @property
    def name(self) -> str:
        return self.strategy.name

    def temporal(self) -> TemporalTarget:
        s = self.settings
        if s.temporal_address:
            return TemporalTarget(address=s.temporal_address, namespace=s.temporal_namespace,
                                  tls_cert=s.temporal_tls_cert, tls_key=s.temporal_tls_key,
                                  tls_ca=s.temporal_tls_ca, api_key=s.temporal_api_key)
        # A server of graduate's own has only the dev server's defaults.
        return TemporalTarget(address=self.strategy.temporal())

    def broker(self) -> str:
        return self.settings.broker_url or self.strategy.broker()

    def result_backend(self) -> str:
        return result_backend_for(self.settings.result_backend_url, self.broker(),
                                  self.strategy.redis)

    def ledger_url(self) -> str | None:
        return self.settings.ledger_url or self.strategy.ledger_url()

    def services(self, needs: Needs) -> Services:
        """The services `needs` asks for (None for the others), and the ledger."""
        temporal = self.temporal() if needs.temporal else None
        broker = self.broker() if needs.broker else None
        backend = self.result_backend() if needs.broker else None
        return Services(temporal=temporal, broker_url=broker, result_backend_url=backend,
                        ledger_url=self.ledger_url() or self.settings.ledger,
                        app_db_url=self.settings.app_db, local=self.strategy.started())

    def cannot(self, fault: Fault) -> str | None:
        """Why these services cannot undergo `fault`, or None if they can: graduate
        restarts only servers it started itself, never one the settings name."""
        if fault.restarts is None:
            return None
        named = {"broker": self.settings.broker_url, "server": self.settings.temporal_address}
        if named[fault.restarts]:
            return fault.external()
        return self.strategy.cannot_restart(fault)

    def revive(self) -> list[str]:
        return self.strategy.revive()

    def close(self) -> None:
        self.strategy.close()

    def __enter__(self) -> Resolver:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def make_resolver(kind: str, settings: Settings, folder: Path,
                  docker_services: tuple[str, ...] = ("redis",)) -> Resolver:
    """The resolver of strategy `kind` (local, external, docker) over `settings`; a
    local strategy keeps its servers' files in `folder`."""
    strategy: Strategy
    if kind == "local":
        strategy = LocalStrategy(folder, temporal_cli=settings.temporal_cli)
    elif kind == "external":
        strategy = ExternalStrategy()
    elif kind == "docker":
        strategy = DockerStrategy(docker_services)
    else:
        raise ServiceError(f"unknown provider {kind!r}; choose one of: "
                           f"{', '.join(STRATEGIES)}")
    return Resolver(settings, strategy)
