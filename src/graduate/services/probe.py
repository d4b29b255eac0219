"""Is an external service there at all? One TCP connection, before anything waits on it.

A closed port or an unknown host is found in seconds and named as such, instead of a
worker that retries the broker for a minute and then reports only that it was not ready.
The probe says nothing about credentials or protocol: the engine's own client does.
"""

from __future__ import annotations

import os
import socket
import stat
from urllib.parse import urlsplit

from graduate.config import Settings
from graduate.errors import ConfigError, ServiceUnavailable
from graduate.redaction import redact_url

PROBE_TIMEOUT = 3.0
# Schemes whose host and port a probe can reach, with their default ports.
DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "amqp": 5672, "amqps": 5671,
                 "pyamqp": 5672, "postgresql": 5432, "postgres": 5432}
# What graduate can run Celery on. The harness, the workers and beat are processes of
# their own, so an in-process transport (memory://) would leave every task unseen; and
# what a broker still holds is read from Redis (adapters.celery.broker.BrokerView) or
# asked of AMQP only; a result backend is read from Redis only.
REDIS_SCHEMES = ("redis", "rediss")
BROKER_SCHEMES = (*REDIS_SCHEMES, "amqp", "amqps", "pyamqp")
RESULT_BACKEND_SCHEMES = REDIS_SCHEMES


def probe_url(url: str, what: str, schemes: tuple[str, ...]) -> None:
    """Refuse `url` (a broker or a backend) unless its scheme is one of `schemes` and
    its host answers on its port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if "://" not in url or scheme not in schemes:
        raise ConfigError(f"{what} URL {redact_url(url)!r} is not one graduate can use: "
                          f"use a {', '.join(f'{s}://' for s in schemes)} URL, such as "
                          f"{schemes[0]}://HOST:{DEFAULT_PORTS[schemes[0]]}/0")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ServiceUnavailable(f"{what} URL {redact_url(url)} has no valid port; write "
                                 f"{scheme}://HOST:PORT/...") from None
    _connect(parts.hostname or "localhost", port, f"{what} at {redact_url(url)}")


def probe_celery_services(broker_url: str | None, result_backend_url: str | None) -> None:
    """Probe the external broker and result backend given (None: a local one is started)."""
    if broker_url:
        probe_url(broker_url, "the broker", BROKER_SCHEMES)
    if result_backend_url:
        probe_url(result_backend_url, "the result backend", RESULT_BACKEND_SCHEMES)


def probe_address(address: str, what: str) -> None:
    """Refuse `address` (HOST:PORT, as Temporal takes it) unless it answers."""
    if "://" in address or "@" in address:
        # gRPC takes no scheme, and a password here would be sent nowhere but shown.
        shown = redact_url(address if "://" in address else f"x://{address}")
        raise ConfigError(f"{what} address {shown.removeprefix('x://')!r} must read "
                          "HOST:PORT, with no scheme and no user or password, for example "
                          "localhost:7233; give an API key with --temporal-api-key (or "
                          "GRADUATE_TEMPORAL_API_KEY) and TLS with --temporal-tls-*")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ServiceUnavailable(f"{what} address {address!r} must read HOST:PORT, for "
                                 "example localhost:7233")
    _connect(host.strip("[]") or "localhost", int(port), f"{what} at {address}")


def check_temporal_access(settings: Settings) -> None:
    """Refuse TLS and API key settings that would not be used as given, before anything
    starts: given without an external server (the local one takes neither), a client key
    without its certificate or the reverse (TLS would be off), or a file not there."""
    files = {"--temporal-tls-cert": settings.temporal_tls_cert,
             "--temporal-tls-key": settings.temporal_tls_key,
             "--temporal-tls-ca": settings.temporal_tls_ca}
    given = [flag for flag, value in files.items() if value]
    if settings.temporal_api_key:
        given.append("--temporal-api-key")  # named, never shown
    if not given:
        return
    if not settings.temporal_address:
        raise ConfigError(f"{', '.join(given)} appl{'y' if len(given) > 1 else 'ies'} only "
                          "to an external Temporal server: "
                          "give its --temporal-address HOST:PORT (or "
                          "GRADUATE_TEMPORAL_ADDRESS), or leave them out for the local "
                          "server graduate starts")
    cert, key = settings.temporal_tls_cert, settings.temporal_tls_key
    if bool(cert) != bool(key):
        flag, other = (("--temporal-tls-key", "--temporal-tls-cert") if key else
                       ("--temporal-tls-cert", "--temporal-tls-key"))
        raise ConfigError(f"{flag} goes with {other} (a client certificate and its key): "
                          "give both, or neither")
    for flag, value in files.items():
        if value:
            _check_readable(value, flag)


def _check_readable(path: str, flag: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        reason = "it does not exist"
    except OSError as error:
        reason = error.strerror or type(error).__name__
    else:
        if stat.S_ISREG(mode) and os.access(path, os.R_OK):
            return
        reason = ("it is a directory" if stat.S_ISDIR(mode) else "permission denied"
                  if stat.S_ISREG(mode) else "it is not a regular file")
    raise ConfigError(f"{flag} {path} cannot be read ({reason}); give the path of a PEM "
                      "file")


def _connect(host: str, port: int, named: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            return
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise ServiceUnavailable(
            f"{named} does not answer ({reason}); check that it runs and that the address "
            "is right, or leave it unset to let graduate start a local one") from None
