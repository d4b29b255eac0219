"""Connecting to a Temporal frontend: local, self-hosted with mTLS, or Temporal Cloud."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from temporalio.client import Client, Interceptor
from temporalio.service import RPCError, TLSConfig

from graduate.errors import ServiceError
from graduate.services.model import TemporalTarget


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ServiceError(f"cannot read the Temporal {what} {path!r}: {error}") from error


async def connect(target: TemporalTarget, interceptors: Sequence[Interceptor] = ()) -> Client:
    """A client for `target`, with a message that says what to check when it fails."""
    tls: TLSConfig | bool = False
    if target.tls_cert or target.tls_ca:
        tls = TLSConfig(
            server_root_ca_cert=_read(target.tls_ca, "CA certificate"),
            client_cert=_read(target.tls_cert, "client certificate"),
            client_private_key=_read(target.tls_key, "client key"),
        )
    elif target.api_key:
        tls = True
    try:
        return await Client.connect(target.address, namespace=target.namespace, tls=tls,
                                    api_key=target.api_key, interceptors=interceptors)
    except (RuntimeError, RPCError) as error:
        raise ServiceError(
            f"cannot connect to Temporal at {target.address} (namespace {target.namespace}): "
            f"{error}. Check the address, TLS and API key, or omit --temporal-address to "
            "let graduate start a local server."
        ) from error
