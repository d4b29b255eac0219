"""What the broker still holds for a queue, read without taking anything from it.

kombu's Redis transport keeps a message in one of two places until a worker
acknowledges it: the queue's lists (one per priority step: `queue`, `queue\\x06\\x163`,
...) while no worker has taken it, and the `unacked` hash once one has (ack emulation:
what the visibility timeout later restores comes from that hash). A worker keeps an
ETA or countdown message unacknowledged in memory until it runs it, so such a message
stays in the hash too. A task acknowledged early (Celery's default) is in neither once
a worker has begun it. Key names, separator and priority steps are kombu's own, with
the app's transport options applied, so a team's custom prefix is read correctly.

AMQP shows a queue's messages only to whoever consumes them. What RabbitMQ does tell,
through a passive declare, is how many messages are ready in the queue (not yet given
to any consumer) and how many consumers it has; the messages a consumer has taken but
not acknowledged are in that consumer's hands, which Celery's workers list themselves
(see `ChainStrategy.holds`). A consumer that dies or loses its connection gives them
back to the queue.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import redis
from kombu.connection import Connection
from kombu.exceptions import KombuError
from kombu.transport.redis import Channel

from graduate.errors import ServiceError, ServiceUnavailable
from graduate.redaction import redact_text, redact_url
from graduate.services.probe import REDIS_SCHEMES

# Long enough for a busy broker, short enough that a dead one fails the check visibly.
SOCKET_TIMEOUT = 10.0
AMQP_NOT_FOUND = 404  # the reply code of a passive declare of a queue that does not exist
AMQP_ACCESS_REFUSED = 403  # the reply code of a login refused


@dataclass(frozen=True)
class QueueCounts:
    """What an AMQP broker says of a queue without giving away its messages."""

    ready: int  # messages no consumer has taken
    consumers: int  # consumers attached (each Celery worker has one)


class BrokerView:
    """Reads the task IDs a Redis broker holds for one queue (and in its unacked hash)."""

    def __init__(self, broker_url: str, transport_options: Mapping[str, Any]) -> None:
        self.url = broker_url
        self.peekable = urlsplit(broker_url).scheme.lower() in REDIS_SCHEMES
        options = dict(transport_options)
        self._prefix = str(options.get("global_keyprefix", Channel.global_keyprefix))
        self._unacked = str(options.get("unacked_key", Channel.unacked_key))
        self._unacked_index = str(options.get("unacked_index_key", Channel.unacked_index_key))
        # A message taken and never acknowledged goes back to its queue only this long
        # after it was taken (kombu's QoS.restore_visible, swept by a live worker).
        self.visibility_timeout = float(options.get("visibility_timeout",
                                                    Channel.visibility_timeout))
        self._steps = [int(step) for step in options.get("priority_steps",
                                                          Channel.priority_steps)]
        self._client: redis.Redis | None = None

    def _queue_keys(self, queue: str) -> list[str]:
        # As kombu's Channel._q_for_pri: the lowest step is the queue's own name.
        return [self._prefix + (f"{queue}{Channel.sep}{step}" if step else queue)
                for step in self._steps]

    def task_ids(self, queue: str, prefix: str) -> set[str] | None:
        """IDs starting with `prefix` of the tasks queued on `queue` or taken but not yet
        acknowledged (on any queue); None when the broker cannot be read without consuming.
        """
        # An ID is stored verbatim in the message's JSON unless JSON escapes it.
        verbatim = prefix.isascii() and prefix.isprintable() and not {'"', "\\"} & set(prefix)
        messages = self.messages([queue], containing=prefix if verbatim else "")
        if messages is None:
            return None
        ids = {message_task_id(message) for message in messages}
        return {tid for tid in ids if tid.startswith(prefix)}

    def task_ids_by_instance(self, queue: str, instance_ids: Sequence[str],
                             ) -> dict[str, set[str]] | None:
        """`task_ids(queue, f"{instance}:")` of each instance, the broker read once for
        all of them (judging thousands of instances read every queued message once per
        instance); None when the broker cannot be read without consuming."""
        messages = self.messages([queue])
        if messages is None:
            return None
        wanted = set(instance_ids)
        found: dict[str, set[str]] = {iid: set() for iid in instance_ids}
        for tid in {message_task_id(message) for message in messages}:
            # An instance's task IDs are its ID, a colon, then the task's parts; an ID
            # may hold colons of its own, so each colon is tried as the end of it.
            for at in (i for i, char in enumerate(tid) if char == ":"):
                if tid[:at] in wanted:
                    found[tid[:at]].add(tid)
        return found

    def messages(self, queues: Sequence[str], *,
                 containing: str = "") -> list[dict[str, Any]] | None:
        """The messages queued on `queues` or taken but not yet acknowledged (on any
        queue), as kombu stored them; None when the broker cannot be read without
        consuming. With `containing`, only those whose stored text contains it: the
        others are never decoded (judging thousands of instances decoded every queued
        message once per instance)."""
        if not self.peekable:
            return None
        try:
            with self._redis().pipeline(transaction=False) as pipe:
                for queue in queues:
                    for key in self._queue_keys(queue):
                        pipe.lrange(key, 0, -1)
                pipe.hvals(self._prefix + self._unacked)
                *queued, unacked = pipe.execute()
        except redis.RedisError as error:
            raise ServiceError(f"cannot read the broker at {redact_url(self.url)} to see which "
                               f"tasks it still holds: {error}; check that it is up and "
                               "reachable from this machine") from error
        wanted = containing.encode()
        messages = [json.loads(raw) for entries in queued for raw in entries
                    if wanted in _raw(raw)]
        # An unacked entry is [message, exchange, routing key].
        messages.extend(json.loads(raw)[0] for raw in unacked if wanted in _raw(raw))
        return messages

    def taken_at(self, prefix: str) -> dict[str, float] | None:
        """IDs starting with `prefix` of the tasks in the unacked hash, with when a worker
        took each (epoch seconds: the score kombu gives the delivery in the unacked index;
        it restores none before that plus `visibility_timeout`); None when the broker
        cannot be read without consuming."""
        if not self.peekable:
            return None
        try:
            with self._redis().pipeline(transaction=False) as pipe:
                pipe.hgetall(self._prefix + self._unacked)
                pipe.zrange(self._prefix + self._unacked_index, 0, -1, withscores=True)
                unacked, index = pipe.execute()
        except redis.RedisError as error:
            raise ServiceError(f"cannot read the broker at {redact_url(self.url)} to see which "
                               f"tasks it still holds: {error}; check that it is up and "
                               "reachable from this machine") from error
        scores = {_text(tag): float(score) for tag, score in index}
        taken = {}
        for tag, raw in unacked.items():
            tid = message_task_id(json.loads(raw)[0])
            if tid.startswith(prefix) and _text(tag) in scores:
                taken[tid] = scores[_text(tag)]
        return taken

    def queue_counts(self, queue: str) -> QueueCounts:
        """Ready messages and consumers of `queue` on an AMQP broker (a passive declare,
        which neither creates the queue nor takes anything from it)."""
        # kombu is untyped: its connection is used as Any.
        connection: Any = Connection(self.url,  # type: ignore[no-untyped-call]
                                     connect_timeout=SOCKET_TIMEOUT)
        failures = (OSError, KombuError, *connection.connection_errors)
        try:
            channel = connection.channel()
            try:
                _, ready, consumers = channel.queue_declare(queue=queue, passive=True)
            except connection.channel_errors as error:
                if getattr(error, "code", None) != AMQP_NOT_FOUND:
                    raise
                return QueueCounts(0, 0)  # never declared, or deleted: it holds nothing
        except failures as error:
            raise ServiceError(f"cannot read the broker at {redact_url(self.url)} to see what it "
                               f"still holds: {error}; check that it is up and reachable "
                               "from this machine") from error
        finally:
            connection.release()
        return QueueCounts(int(ready), int(consumers))

    def check_login(self, timeout: float) -> None:
        """Log in to the broker as the workers will, within `timeout` seconds: a password
        it refuses, or a broker that takes connections and never answers, is named now
        (a ServiceError), not found as a worker that retries it and never gets ready."""
        named = f"the broker at {redact_url(self.url)}"
        failures: tuple[type[BaseException], ...] = (OSError, KombuError, redis.RedisError,
                                                     *_amqp_errors())
        try:
            if self.peekable:
                with redis.Redis.from_url(self.url, socket_timeout=timeout,
                                          socket_connect_timeout=timeout) as client:
                    client.ping()
                return
            connection: Any = Connection(self.url,  # type: ignore[no-untyped-call]
                                         connect_timeout=timeout)
            try:
                connection.connect()
            finally:
                connection.release()
        except redis.AuthenticationError as error:
            raise _refused(named, error) from None
        except failures as error:
            if getattr(error, "code", None) == AMQP_ACCESS_REFUSED:
                raise _refused(named, error) from None
            reason = redact_text(str(error)) or type(error).__name__
            raise ServiceUnavailable(
                f"{named} does not answer a login within {timeout:.0f}s ({reason}); check "
                "that it is a broker of the URL's kind, up and reachable") from None

    def version(self) -> str | None:
        """The broker's name and version as it reports them (None if it does not answer)."""
        try:
            if self.peekable:
                info = self._redis().info("server")
                return f"Redis {info['redis_version']}"
            connection: Any = Connection(self.url,  # type: ignore[no-untyped-call]
                                         connect_timeout=SOCKET_TIMEOUT)
            try:
                connection.connect()
                properties = connection.connection.server_properties
            finally:
                connection.release()
        except (OSError, KombuError, redis.RedisError, KeyError):
            return None
        name, version = properties.get("product"), properties.get("version")
        return f"{name} {version}" if name and version else None

    def server_versions(self) -> dict[str, str]:
        """`Engine.server_versions` of a Celery engine: the broker's, if it answers."""
        version = self.version()
        return {"broker": version} if version else {}

    def redis_client(self) -> redis.Redis:
        """A client of the Redis broker (only when `peekable`): graduate's own keys beside
        kombu's, such as which worker received a task (`receipts.mark_received`)."""
        return self._redis()

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(self.url, socket_timeout=SOCKET_TIMEOUT,
                                                socket_connect_timeout=SOCKET_TIMEOUT)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _refused(named: str, error: BaseException) -> ServiceError:
    return ServiceError(f"{named} refused the credentials ({redact_text(str(error))}); "
                        "check the user name and password in the broker URL")


def _amqp_errors() -> tuple[type[BaseException], ...]:
    # What kombu's AMQP transport raises for a refused login: a channel-level error,
    # which no OSError or KombuError covers.
    connection: Any = Connection("amqp://")  # type: ignore[no-untyped-call]
    return tuple(connection.channel_errors) + tuple(connection.connection_errors)


def _raw(stored: bytes | str) -> bytes:
    """A stored message as bytes (the client may decode responses)."""
    return stored if isinstance(stored, bytes) else stored.encode()


def message_task_id(message: Mapping[str, Any]) -> str:
    """The task ID of a message as kombu stored it (see `BrokerView.messages`)."""
    # Task protocol 2 carries the ID in the headers; Celery also sets it as the
    # correlation ID, which is all protocol 1 offers outside its encoded body.
    headers = message.get("headers") or {}
    properties = message.get("properties") or {}
    return str(headers.get("id") or properties.get("correlation_id") or "")


def message_eta(message: Mapping[str, Any]) -> float | None:
    """When a message's ETA or countdown lets a worker run it (epoch seconds), if it has
    one: a worker that takes it sooner keeps it, unacknowledged, until then."""
    eta = (message.get("headers") or {}).get("eta")
    if not eta:
        return None
    moment = datetime.fromisoformat(str(eta))
    # Celery writes an aware time (UTC unless the app says otherwise); a naive one is UTC.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
