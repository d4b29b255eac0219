"""Which worker received a Celery task, and whether it can still run it: what both
Celery strategies and a team's own app read to prove that a message can reach no worker
(the chain's `held_until` and judging, the state machine's lost decisions, the app
engine's `held_until`).

A worker marks each task it receives (`mark_received`, on Celery's `task_received`)
before an early acknowledgement takes the message out of the broker; from then on the
mark, not the broker, shows who has it. A mark's age is read from its time to live, on
the Redis server's clock (`marked_before`); whether its worker still runs, from its
node name (`runs_here`); on a broker that shows its messages only to their consumers
(RabbitMQ), the workers are asked (`consumers_holding`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any

import redis
from celery import Celery

from graduate.processes import running

# How long a look waits for workers to answer a ping or an inspect.
PING_TIMEOUT = 1.0
# kombu's Redis transport takes a message from its queue (BRPOP) and then, in a second
# command, files it in the unacked hash: between the two it is in neither, and nothing
# in Redis or Celery marks that moment (a worker's `task_received` comes after both).
# A look that found nothing is repeated once after this bound before "nothing holds it":
# the two commands follow each other in one worker callback, so the bound only has to
# outlast a worker process descheduled between them on a busy machine. (The later gap,
# from an early acknowledgement to STARTED, is closed by an event: `mark_received`.)
REDIS_HANDOVER = 0.5
# A received mark written this long before its message was taken is an earlier taker's
# (the clocks of the worker that took it and of Redis may differ by a little).
MARK_SLACK = 1.0
# A mark lives as long as Celery's default result lifetime (one day), as the chain's
# wait keys do.
RECEIPT_LIFETIME = 86400


def received_key(tid: str) -> str:
    """Which worker received task `tid` (its node name), written before it acknowledges."""
    return f"graduate:chain:received:{tid}"


def instance_tasks_key(instance_id: str) -> str:
    """The IDs of the tasks of instance `instance_id` that a worker received (a set), for
    a worker that marks them by instance (a team's own app: its task IDs are Celery's)."""
    return f"graduate:app:received:{instance_id}"


def worker_node(name: str, pid: int) -> str:
    """A worker's node name as `runs_here` reads it, NAME-PID@HOST (Celery puts the host
    for `%h`): the PID keeps names unique among the workers of several runs on a broker."""
    return f"{name}-{pid}@%h"


def mark_received(client: Callable[[], redis.Redis], tasks: tuple[str, ...],
                  instance_of: Callable[[Any], str | None] | None = None,
                  ) -> Callable[..., None]:
    """A receiver of Celery's `task_received` for a worker process: it records (in the
    Redis of `client`) which worker received each task whose name starts with one of
    `tasks`, and, with `instance_of` (a request's instance, if any), files the task's ID
    under its instance. Celery sends it in the worker's main process before the request
    goes to the pool, and so before an early acknowledgement takes the message out of the
    broker: from then on the record, not the broker, shows that a worker has it (see
    `ChainStrategy._in_live_hands`, the state machine's decisions, and
    `CeleryAppEngine.held_until`)."""

    def receive(sender: Any = None, request: Any = None, **_: Any) -> None:
        if request is None or not str(request.name).startswith(tasks):
            return
        tid = str(request.id)
        instance = instance_of(request) if instance_of is not None else None
        with client().pipeline(transaction=False) as pipe:
            pipe.set(received_key(tid), str(request.hostname), ex=RECEIPT_LIFETIME)
            if instance:
                pipe.sadd(instance_tasks_key(instance), tid)
                pipe.expire(instance_tasks_key(instance), RECEIPT_LIFETIME)
            pipe.execute()

    return receive


def taker_of(client: redis.Redis, tid: str, taken: float) -> str | None:
    """The worker (its node name) that marked task `tid` when it took its message at
    `taken` (epoch seconds, the unacked index's score); None when the mark is missing
    (taken a moment ago, not yet marked) or an earlier taker's (a worker stopped warm
    gives its prefetched messages back, and its marks stay until the next taker's
    overwrite them)."""
    mark = client.get(received_key(tid))
    if mark is None or marked_before(client, received_key(tid), taken):
        return None
    return mark.decode() if isinstance(mark, bytes) else str(mark)


def marked_before(client: redis.Redis, key: str, taken: float) -> bool:
    """Whether the mark at `key` (written with RECEIPT_LIFETIME) was written before
    `taken` (epoch seconds, the taking worker's clock), by more than MARK_SLACK: its age
    is read from its time to live, on the Redis server's clock."""
    left = client.pttl(key)
    if not isinstance(left, int) or left < 0:
        return False  # no lifetime to tell its age by
    seconds, micros = client.time()
    marked = seconds + micros / 1e6 - (RECEIPT_LIFETIME * 1000 - left) / 1000
    return marked < taken - MARK_SLACK


def runs_here(worker: str) -> bool:
    """Whether the worker named `worker` (`NAME-PID@HOST`, as the worker module names
    it) is a process that still runs on this host. One on another host cannot be seen."""
    node, _, host = worker.rpartition("@")
    pid = node.rpartition("-")[2]
    return host == socket.gethostname() and pid.isdigit() and running(int(pid))


def proven_dead(worker: str) -> bool:
    """Whether the worker named `worker` is proven gone: a worker of this host whose
    process no longer runs. One on another host is never proven so."""
    return worker.rpartition("@")[2] == socket.gethostname() and not runs_here(worker)


def unacknowledged(messages: str, taker: str, visibility_timeout: float) -> str:
    """Why `messages` ("a message", "3 message(s)") hold an instance up: worker `taker`
    (with what became of it: "w1@host, now dead,") took them and never acknowledged,
    and Redis gives a message back only a visibility timeout after it was taken."""
    one = messages == "a message"
    return (f"{messages} that worker {taker} took and never acknowledged; Redis gives "
            f"{'it' if one else 'them'} back no sooner than the visibility timeout "
            f"({visibility_timeout:g} s) after {'it was' if one else 'they were'} taken")


def still_holds(app: Celery, worker: str, ids: Sequence[str]) -> bool | None:
    """Whether the live worker named `worker` holds any of the tasks `ids` (reserved,
    held for an ETA, or running), by its own word; None when it does not answer within
    PING_TIMEOUT. Celery answers an inspect from the worker's main loop, the one that
    received the task and filed it among its requests: no answer falls between the two."""
    replies = app.control.inspect(destination=[worker], timeout=PING_TIMEOUT,
                                  limit=1).query_task(*ids) or {}
    return bool(replies[worker]) if worker in replies else None


def consumers_holding(app: Celery, ids: Sequence[str], consumers: int,
                      ) -> tuple[set[str], int]:
    """Which of the task `ids` the workers hold (reserved, scheduled for an ETA, or
    running), and how many of the queue's `consumers` answered Celery's inspect: what a
    broker that shows its messages only to their consumers (RabbitMQ) leaves to ask."""
    if not consumers:
        return set(), 0
    inspector = app.control.inspect(timeout=PING_TIMEOUT, limit=consumers)
    # The ETA timer first: a task leaves it for the worker's requests, never back.
    scheduled = inspector.scheduled() or {}
    known = inspector.query_task(*ids) or {}
    held = {tid for tasks in known.values() for tid in tasks}
    held |= {str(entry.get("request", {}).get("id", "")) for entries in scheduled.values()
             for entry in entries}
    return held & set(ids), len(set(known) | set(scheduled))
