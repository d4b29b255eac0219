"""The chain's lease on a wait's reminder (ADR 0034): Redis gives a countdown back while
a live worker holds it, so several deliveries of one reminder task run at its time; the
one that takes the lease sends, a delivery that finds it held is retried when it runs
out, and one that finds it sent skips for good. A holder that died leaves the send to
the delivery after its lease: at least once across a crash."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis

# What a soft time limit raises in a Celery task, as the chain's handler catches it.
from celery.exceptions import SoftTimeLimitExceeded  # noqa: TID251

from graduate.adapters.celery.chain import (
    HARD_LIMIT_SLACK,
    SKIPS_KEPT,
    ChainTasks,
    context_key,
    new_context,
    send_key,
    send_skips,
    send_skips_key,
)
from graduate.errors import PermanentEffectError
from graduate.flow import Flow, InstanceRequest, Step, Wait, load_flow
from graduate.ledger import Outcome

REMINDER = '\nreminder = { at = 0.5, effect = "mail.remind" }'


class Retried(Exception):
    def __init__(self, countdown: float) -> None:
        super().__init__(countdown)
        self.countdown = countdown


class Delivery:
    """One delivery of the reminder task's message, as a bound task sees it."""

    def __init__(self, redelivered: bool = False) -> None:
        self.request = SimpleNamespace(retries=0, id="i:approval:reminder",
                                       delivery_info={"redelivered": redelivered})

    def retry(self, countdown: float) -> Retried:
        return Retried(countdown)


class Resources:
    """What `ChainTasks.reminder` uses of a worker process: Redis, and a ledger whose
    call runs `during` (another delivery at the same moment) before it lands."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.calls: list[tuple[str, int]] = []
        self.during: Callable[[], None] | None = None

    def redis(self) -> redis.Redis:
        return self.client

    def ledger(self) -> Resources:
        return self

    def interruptible(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def call(self, flow: Flow, request: InstanceRequest, step: Step, *, attempt: int,
             engine: str) -> Outcome:
        during, self.during = self.during, None
        if during is not None:
            during()
        self.calls.append((step.name, attempt))
        return Outcome.APPLIED


@pytest.fixture
def flow(write_flow: Callable[..., Path]) -> Flow:
    return load_flow(write_flow([('deadline = "1h"', f'deadline = "1h"{REMINDER}')]))


@pytest.fixture
def client(broker: str) -> Iterator[redis.Redis]:
    if not broker.startswith("redis"):
        pytest.skip("the chain keeps its wait keys in Redis")
    opened = redis.Redis.from_url(broker)
    yield opened
    opened.close()


@pytest.fixture
def parked(client: redis.Redis, make_request: Callable[..., InstanceRequest]) -> Iterator[str]:
    """An instance parked at its wait `approval`, whose keys go with the test."""
    request = make_request(run_id=f"lease{uuid.uuid4().hex[:8]}")
    iid = request.instance_id
    client.set(context_key(iid, "approval"), json.dumps({"context": new_context(request)}))
    yield iid
    client.delete(*client.keys(f"graduate:chain:{iid}:*"))


def tasks(flow: Flow, resources: Resources) -> ChainTasks:
    return ChainTasks(cast(Any, None), flow, cast(Any, resources))


def test_a_delivery_while_another_holds_the_lease_is_retried_when_it_runs_out(
        flow: Flow, client: redis.Redis, parked: str) -> None:
    resources = Resources(client)
    chain = tasks(flow, resources)
    timeout = cast(Wait, flow.node("approval")).while_open[0].step.timeout
    second: list[BaseException] = []

    def another_delivery() -> None:  # Redis's copy runs at the same countdown
        with pytest.raises(Retried) as retried:
            chain.reminder(Delivery(redelivered=True), parked, "approval")
        second.append(retried.value)

    resources.during = another_delivery
    assert chain.reminder(Delivery(), parked, "approval") == {"sent": "applied"}

    [retried] = second
    assert isinstance(retried, Retried)
    # Held for the step's timeout and the hard limit's slack, the longest a holder runs.
    assert timeout + HARD_LIMIT_SLACK - 1 < retried.countdown <= timeout + HARD_LIMIT_SLACK
    # The retry (or any later copy) finds it sent and skips for good.
    assert chain.reminder(Delivery(redelivered=True), parked, "approval") == {
        "skipped": "approval.reminder already sent"}
    assert resources.calls == [("approval.reminder", 1)]
    assert [(s["why"], s["redelivered"]) for s in send_skips(
        client, parked, "approval", "reminder")] == [
        ("approval.reminder in hand elsewhere", True),
        ("approval.reminder already sent", True)]
    # The mark lives as long as the wait's other keys (its deadline and a day).
    assert client.ttl(send_key(parked, "approval", "reminder")) > 3600


def test_after_a_dead_holders_lease_runs_out_the_next_delivery_sends_again(
        flow: Flow, client: redis.Redis, parked: str) -> None:
    resources = Resources(client)
    chain = tasks(flow, resources)
    key = send_key(parked, "approval", "reminder")
    # A delivery took the lease and its worker was killed before it marked the send.
    client.set(key, json.dumps({"state": "sending", "at": 0.0}), ex=35)

    with pytest.raises(Retried):
        chain.reminder(Delivery(redelivered=True), parked, "approval")
    assert resources.calls == []

    client.delete(key)  # the lease ran out
    assert chain.reminder(Delivery(redelivered=True), parked, "approval") == {
        "sent": "applied"}
    assert resources.calls == [("approval.reminder", 1)]


def test_a_send_that_failed_is_not_tried_again_by_a_later_delivery(
        flow: Flow, client: redis.Redis, parked: str) -> None:
    """The reminder has one attempt, on every engine: a copy of its task is no second."""
    resources = Resources(client)
    chain = tasks(flow, resources)

    def refused() -> None:
        raise PermanentEffectError("mail.remind refused")

    resources.during = refused
    assert "failed" in chain.reminder(Delivery(), parked, "approval")
    assert chain.reminder(Delivery(redelivered=True), parked, "approval") == {
        "skipped": "approval.reminder already failed"}


def test_the_skips_kept_are_the_latest_and_bounded(
        flow: Flow, client: redis.Redis, parked: str) -> None:
    """Review: a holder that keeps dying makes every copy skip; the list of skips keeps
    the last SKIPS_KEPT of them, not all."""
    chain = tasks(flow, Resources(client))
    client.set(send_key(parked, "approval", "reminder"), json.dumps({"state": "sent"}))
    for n in range(SKIPS_KEPT + 5):  # the 6th is told apart: the oldest kept
        assert chain.reminder(Delivery(redelivered=n == 5), parked, "approval") == {
            "skipped": "approval.reminder already sent"}
    skips = send_skips(client, parked, "approval", "reminder")
    assert [s["redelivered"] for s in skips] == [True] + [False] * (SKIPS_KEPT - 1)
    assert client.ttl(send_skips_key(parked, "approval", "reminder")) > 3600


class Discarding(Resources):
    """A worker process's resources, whose `interruptible` drops its Redis client when a
    soft time limit cuts the call, as `ProcessResources.discard` does; a discarded
    client refuses every command."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client)
        self.discarded: list[redis.Redis] = []

    def redis(self) -> redis.Redis:
        current = self.client
        discarded = self.discarded

        class Guarded:
            def __getattr__(self, name: str) -> Any:
                assert current not in discarded, f"{name} through a discarded client"
                return getattr(current, name)

        return cast(redis.Redis, Guarded())

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        try:
            yield
        except SoftTimeLimitExceeded:
            self.discarded.append(self.client)
            self.client = redis.Redis(connection_pool=self.client.connection_pool)
            raise


def test_a_soft_time_limit_marks_the_send_failed_through_a_new_client(
        flow: Flow, client: redis.Redis, parked: str) -> None:
    """Review: the time limit's handler discarded the Redis client the task held."""
    resources = Discarding(client)
    chain = tasks(flow, resources)

    def cut() -> None:
        raise SoftTimeLimitExceeded()

    resources.during = cut
    assert "failed" in chain.reminder(Delivery(), parked, "approval")
    assert json.loads(cast(bytes, client.get(send_key(parked, "approval", "reminder"))))[
        "state"] == "failed"
