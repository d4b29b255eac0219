"""Where a test suite's services come from: local processes, external URLs, or Docker.

A provider hands out a Temporal frontend and a broker, each started at most once per
suite (on first use) and stopped at the end, and says which faults it cannot perform:
graduate cannot kill a broker it did not start.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from graduate.config import Settings
from graduate.errors import ServiceError
from graduate.services.local import LocalRedis, LocalTemporal
from graduate.services.model import TemporalTarget

PROVIDERS = ("local", "external", "docker")
DOCKER_TIMEOUT = 10  # seconds to reach a Docker engine before saying there is none


class Provider(Protocol):
    name: str

    def temporal(self) -> TemporalTarget: ...

    def broker(self) -> str: ...

    def result_backend(self) -> str: ...

    def cannot(self, fault: str) -> str | None:
        """Why this provider cannot perform `fault`, or None if it can."""
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

    def cannot(self, fault: str) -> str | None:
        # What the settings name is someone else's to restart, as on the external provider.
        configured = ExternalProvider(self.settings).cannot(fault)
        if fault == "restart-broker" and self.settings.broker_url:
            return configured
        if fault == "restart-server" and self.settings.temporal_address:
            return configured
        return None

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

    def cannot(self, fault: str) -> str | None:
        if fault == "restart-broker":
            return "the broker is external: graduate cannot kill and restart it"
        if fault == "restart-server":
            return "the Temporal server is external: graduate cannot kill and restart it"
        return None

    def close(self) -> None:
        return None


class DockerProvider:
    """Redis and a Temporal dev server in containers, through testcontainers."""

    name = "docker"
    temporal_image = "temporalio/temporal:1.4.1"
    redis_image = "redis:7"

    def __init__(self) -> None:
        self.client = docker_client()
        self._containers: list[object] = []
        self._temporal: str | None = None
        self._redis: str | None = None

    def temporal(self) -> TemporalTarget:
        if self._temporal is None:
            from testcontainers.core.container import DockerContainer

            container = (DockerContainer(self.temporal_image)
                         .with_command("server start-dev --ip 0.0.0.0 --headless")
                         .with_exposed_ports(7233))
            container.start()
            self._containers.append(container)
            self._temporal = (f"{container.get_container_host_ip()}:"
                              f"{container.get_exposed_port(7233)}")
        return TemporalTarget(address=self._temporal)

    def broker(self) -> str:
        if self._redis is None:
            from testcontainers.redis import RedisContainer

            container = RedisContainer(self.redis_image)
            container.start()
            self._containers.append(container)
            self._redis = (f"redis://{container.get_container_host_ip()}:"
                           f"{container.get_exposed_port(6379)}/0")
        return self._redis

    def result_backend(self) -> str:
        return self.broker()

    def cannot(self, fault: str) -> str | None:
        if fault in ("restart-broker", "restart-server"):
            return ("the docker provider does not restart its containers; use the local "
                    "provider for restart faults")
        return None

    def close(self) -> None:
        for container in reversed(self._containers):
            container.stop()  # type: ignore[attr-defined]


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


def make_provider(kind: str, settings: Settings, folder: Path) -> Provider:
    if kind == "local":
        return LocalProvider(folder, settings)
    if kind == "external":
        return ExternalProvider(settings)
    if kind == "docker":
        return DockerProvider()
    raise ServiceError(f"unknown provider {kind!r}; choose one of: {', '.join(PROVIDERS)}")
