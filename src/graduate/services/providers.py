"""Where a test suite's services come from: local processes, external URLs, or Docker.

A provider hands out a Temporal frontend and a broker, each started at most once per
suite (on first use) and stopped at the end, and says which faults it cannot perform:
graduate cannot kill a broker it did not start.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from graduate.config import Settings
from graduate.errors import ServiceError
from graduate.services.local import LocalRedis, LocalTemporal
from graduate.services.model import TemporalTarget

if TYPE_CHECKING:
    from graduate.chaos.faults import Fault

PROVIDERS = ("local", "external", "docker")

DOCKER_TIMEOUT = 10  # seconds to reach a Docker engine before saying there is none


class Provider(Protocol):
    name: str

    def temporal(self) -> TemporalTarget: ...

    def broker(self) -> str: ...

    def result_backend(self) -> str: ...

    def cannot(self, fault: Fault) -> str | None:
        """Why this provider cannot perform `fault`, or None if it can."""
        ...

    def revive(self) -> list[str]:
        """Start again each server of its own that died; one line per server, saying
        what died and how (nothing when all are up, or when the servers are not ours)."""
        ...

    def close(self) -> None: ...


class LocalProvider:
    """A Temporal dev server and a Redis from the virtual environment, on free ports,
    for whatever the settings do not name: `broker_url = "amqp://..."` gives Celery
    RabbitMQ, with a local Redis as its result backend.

    Faults that restart a server get servers of their own from the harness, so the
    suite's shared ones are never disturbed."""

    name = "local"

    def __init__(self, folder: Path, settings: Settings) -> None:
        self.folder = folder
        self.settings = settings
        self._temporal: LocalTemporal | None = None
        self._redis: LocalRedis | None = None

    def temporal(self) -> TemporalTarget:
        if self.settings.temporal_address:
            return ExternalProvider(self.settings).temporal()
        if self._temporal is None:
            server = LocalTemporal.create(self.folder, cli=self.settings.temporal_cli)
            server.start()
            self._temporal = server
        return TemporalTarget(address=self._temporal.address)

    def broker(self) -> str:
        return self.settings.broker_url or self._local_redis()

    def result_backend(self) -> str:
        return self.settings.result_backend_url or (
            self.broker() if self.broker().startswith(("redis://", "rediss://"))
            else self._local_redis())

    def _local_redis(self) -> str:
        if self._redis is None:
            server = LocalRedis.create(self.folder)
            server.start()
            self._redis = server
        return self._redis.url

    def cannot(self, fault: Fault) -> str | None:
        # What the settings name is someone else's to restart, as on the external provider.
        configured = {"broker": self.settings.broker_url,
                      "server": self.settings.temporal_address}
        if fault.restarts is not None and configured[fault.restarts]:
            return ExternalProvider(self.settings).cannot(fault)
        return None

    def revive(self) -> list[str]:
        notes = []
        for server in (self._temporal, self._redis):
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
        for server in (self._redis, self._temporal):
            if server is not None:
                server.stop()


class ExternalProvider:
    """Services someone else runs: a Temporal cluster or Temporal Cloud, a Redis or
    RabbitMQ, given by settings (flags, GRADUATE_* variables or [tool.graduate])."""

    name = "external"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def temporal(self) -> TemporalTarget:
        s = self.settings
        if not s.temporal_address:
            raise ServiceError("the external provider needs a Temporal address: set "
                               "GRADUATE_TEMPORAL_ADDRESS or --graduate-temporal-address "
                               "(with namespace, TLS or API key as the cluster needs)")
        return TemporalTarget(address=s.temporal_address, namespace=s.temporal_namespace,
                              tls_cert=s.temporal_tls_cert, tls_key=s.temporal_tls_key,
                              tls_ca=s.temporal_tls_ca, api_key=s.temporal_api_key)

    def broker(self) -> str:
        if not self.settings.broker_url:
            raise ServiceError("the external provider needs a broker: set GRADUATE_BROKER_URL "
                               "or --graduate-broker-url (redis://... or amqp://...)")
        return self.settings.broker_url

    def result_backend(self) -> str:
        backend = self.settings.result_backend_url or self.broker()
        if not backend.startswith(("redis://", "rediss://")):
            raise ServiceError("with a RabbitMQ broker, set a Redis result backend: "
                               "GRADUATE_RESULT_BACKEND_URL or --graduate-result-backend-url")
        return backend

    def cannot(self, fault: Fault) -> str | None:
        if fault.restarts is not None:
            return fault.external()
        return None

    def revive(self) -> list[str]:
        return []  # not our servers: whoever runs them restarts them

    def close(self) -> None:
        return None


class DockerProvider:
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

    def temporal(self) -> TemporalTarget:
        from testcontainers.core.container import DockerContainer

        container = (DockerContainer(self.temporal_image)
                     .with_command("server start-dev --ip 0.0.0.0 --headless")
                     .with_exposed_ports(7233))
        address = self._start("temporal", container, lambda c: (
            f"{c.get_container_host_ip()}:{c.get_exposed_port(7233)}"))
        return TemporalTarget(address=address)

    def broker(self) -> str:
        if "rabbitmq" not in self.services:
            return self.result_backend()
        from testcontainers.community.rabbitmq import RabbitMqContainer

        return self._start("rabbitmq", RabbitMqContainer(self.rabbitmq_image), lambda c: (
            f"amqp://guest:guest@{c.get_container_host_ip()}:{c.get_exposed_port(5672)}//"))

    def result_backend(self) -> str:
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

    def cannot(self, fault: Fault) -> str | None:
        if fault.restarts is not None:
            return ("the docker provider does not restart its containers; use the local "
                    "provider for restart faults")
        return None

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


def make_provider(kind: str, settings: Settings, folder: Path,
                  docker_services: tuple[str, ...] = ("redis",)) -> Provider:
    if kind == "local":
        return LocalProvider(folder, settings)
    if kind == "external":
        return ExternalProvider(settings)
    if kind == "docker":
        return DockerProvider(docker_services)
    raise ServiceError(f"unknown provider {kind!r}; choose one of: {', '.join(PROVIDERS)}")
