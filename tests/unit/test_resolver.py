"""The one service resolver: what the settings name is used as given, the rest comes
from the strategy, and the result backend follows one rule for the CLI and the plugin."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from tests.conftest import processes_mentioning

from graduate.chaos.faults import get_fault
from graduate.config import Settings
from graduate.errors import ServiceError
from graduate.services.local import redis_ping
from graduate.services.provider import open_stack
from graduate.services.resolver import (
    ExternalStrategy,
    LocalStrategy,
    Needs,
    Resolver,
    make_resolver,
    result_backend_for,
)

RABBIT = "amqp://user:secret@rabbit.example:5672//"
BOTH = Needs(temporal=True, broker=True)


def _never() -> str:
    raise AssertionError("the strategy's own Redis was asked for")


def test_the_configured_result_backend_wins() -> None:
    assert result_backend_for("redis://cache:6379/1", RABBIT, _never) == "redis://cache:6379/1"


@pytest.mark.parametrize("broker", ["redis://broker:6379/0", "rediss://broker:6380/0"])
def test_a_redis_broker_is_its_own_result_backend(broker: str) -> None:
    assert result_backend_for(None, broker, _never) == broker


def test_beside_a_rabbitmq_broker_the_result_backend_is_the_strategys_own_redis() -> None:
    assert result_backend_for(None, RABBIT, lambda: "redis://own:1/0") == "redis://own:1/0"


def test_the_local_strategy_starts_only_what_the_settings_do_not_name(tmp_path: Path) -> None:
    settings = Settings(project_dir=tmp_path, temporal_address="temporal.example:7233",
                        temporal_namespace="team")
    with Resolver(settings, LocalStrategy(tmp_path)) as resolver:
        services = resolver.services(BOTH)

        assert services.temporal is not None
        assert (services.temporal.address, services.temporal.namespace) == (
            "temporal.example:7233", "team")
        assert services.local == ("redis",)
        assert services.broker_url is not None
        assert services.broker_url.startswith("redis://127.0.0.1:")
        assert services.result_backend_url == services.broker_url
        port = int(services.broker_url.rsplit(":", 1)[1].split("/")[0])
        assert redis_ping("127.0.0.1", port)
        assert resolver.broker() == services.broker_url  # started once, not per question
    assert not redis_ping("127.0.0.1", port)
    assert processes_mentioning(str(tmp_path)) == []


def test_the_external_strategy_uses_the_urls_as_given_and_starts_nothing(
        tmp_path: Path) -> None:
    settings = Settings(project_dir=tmp_path, temporal_address="tenant.tmprl.cloud:7233",
                        temporal_namespace="tenant", temporal_api_key="key-1",
                        broker_url=RABBIT, result_backend_url="redis://cache:6379/1",
                        ledger_url="postgresql://db/ledger")
    with make_resolver("external", settings, tmp_path) as resolver:
        services = resolver.services(BOTH)

    assert services.temporal is not None
    assert (services.temporal.address, services.temporal.namespace,
            services.temporal.api_key) == ("tenant.tmprl.cloud:7233", "tenant", "key-1")
    assert (services.broker_url, services.result_backend_url, services.ledger_url) == (
        RABBIT, "redis://cache:6379/1", "postgresql://db/ledger")
    assert services.local == ()
    assert processes_mentioning(str(tmp_path)) == []


@pytest.mark.parametrize(("settings", "needs", "expected"), [
    ({}, Needs(temporal=True), "GRADUATE_TEMPORAL_ADDRESS"),
    ({}, Needs(broker=True), "GRADUATE_BROKER_URL"),
    ({"broker_url": RABBIT}, Needs(broker=True), "set a Redis result backend"),
])
def test_the_external_strategy_says_which_setting_is_missing(
        tmp_path: Path, settings: dict[str, str], needs: Needs, expected: str) -> None:
    resolver = Resolver(Settings(project_dir=tmp_path, **settings), ExternalStrategy())

    with pytest.raises(ServiceError, match=expected):
        resolver.services(needs)


def test_the_cli_and_the_plugin_resolve_a_rabbitmq_broker_alike(tmp_path: Path) -> None:
    """A RabbitMQ broker without a result backend: the CLI's stack and the plugin's local
    provider both start a Redis for the results, and the broker stays as given. The
    Redis is not the broker, so a restart-broker fault may not kill it."""
    with socket.create_server(("127.0.0.1", 0)) as listening:  # answers the CLI's probe
        port = listening.getsockname()[1]
        _resolve_a_rabbitmq_broker_alike(tmp_path, f"amqp://user:secret@127.0.0.1:{port}//")


def _resolve_a_rabbitmq_broker_alike(tmp_path: Path, rabbit: str) -> None:
    settings = Settings(project_dir=tmp_path / "cli", broker_url=rabbit)
    with open_stack(settings, Needs(broker=True)) as stack:
        cli = stack.services
        assert stack.redis is None
    with make_resolver("local", settings, tmp_path / "plugin") as resolver:
        plugin = resolver.services(Needs(broker=True))
        assert resolver.cannot(get_fault("restart-broker")) == (
            "the broker is external: graduate cannot kill and restart it")

    for services in (cli, plugin):
        assert services.broker_url == rabbit
        assert services.result_backend_url is not None
        assert services.result_backend_url.startswith("redis://127.0.0.1:")
        assert services.local == ("redis",)
    assert processes_mentioning(str(tmp_path)) == []


@pytest.mark.parametrize(("kind", "settings", "expected"), [
    ("local", {}, None),
    ("local", {"temporal_address": "t:7233"},
     "the Temporal server is external: graduate cannot kill and restart it"),
    ("external", {"temporal_address": "t:7233"},
     "the Temporal server is external: graduate cannot kill and restart it"),
])
def test_only_servers_graduate_started_may_be_restarted(
        tmp_path: Path, kind: str, settings: dict[str, str], expected: str | None) -> None:
    resolver = make_resolver(kind, Settings(project_dir=tmp_path, **settings), tmp_path)

    assert resolver.cannot(get_fault("restart-server")) == expected
    assert resolver.cannot(get_fault("kill-worker")) is None
