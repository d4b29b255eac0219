"""Is an external service there at all? One TCP connection, before anything waits on it.

A closed port or an unknown host is found in seconds and named as such, instead of a
worker that retries the broker for a minute and then reports only that it was not ready.
The probe says nothing about credentials or protocol: the engine's own client does.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from graduate.errors import ServiceUnavailable
from graduate.redaction import redact_url

PROBE_TIMEOUT = 3.0
# Schemes whose host and port a probe can reach; any other (memory://, a socket path)
# is left to its client.
DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "amqp": 5672, "amqps": 5671,
                 "pyamqp": 5672, "postgresql": 5432, "postgres": 5432}


def probe_url(url: str, what: str) -> None:
    """Refuse `url` (a broker or a backend) unless its host answers on its port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        return
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ServiceUnavailable(f"{what} URL {redact_url(url)} has no valid port; write "
                                 f"{scheme}://HOST:PORT/...") from None
    _connect(parts.hostname or "localhost", port, f"{what} at {redact_url(url)}")


def probe_address(address: str, what: str) -> None:
    """Refuse `address` (HOST:PORT, as Temporal takes it) unless it answers."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ServiceUnavailable(f"{what} address {address!r} must read HOST:PORT, for "
                                 "example localhost:7233")
    _connect(host.strip("[]") or "localhost", int(port), f"{what} at {address}")


def _connect(host: str, port: int, named: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            return
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise ServiceUnavailable(
            f"{named} does not answer ({reason}); check that it runs and that the address "
            "is right, or leave it unset to let graduate start a local one") from None
