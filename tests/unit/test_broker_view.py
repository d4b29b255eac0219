"""A chain's `holds()` reads the task IDs the Redis broker holds for one instance; it
decodes only the messages whose stored text names the instance (issue 16: judging 5,000
instances decoded every queued message once per instance), and still finds each of the
instance's tasks, queued or taken, and none of another's."""

from __future__ import annotations

import json
import uuid

import pytest
import redis

from graduate.adapters.celery.broker import BrokerView


def message(task_id: str) -> dict[str, object]:
    """A task message as kombu stores it on Redis (task protocol 2: the ID in the
    headers), its body encoded."""
    return {"body": "W1tdLCB7fSwge31d", "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"lang": "py", "task": "graduate.step", "id": task_id},
            "properties": {"correlation_id": task_id, "delivery_tag": uuid.uuid4().hex}}


@pytest.mark.timeout(60)
def test_the_ids_of_one_instance_among_many(broker: str) -> None:
    if not broker.startswith("redis"):
        pytest.skip("the broker's queues are read directly on Redis only")
    queue = f"q-{uuid.uuid4().hex[:8]}"
    mine = [f"scale-r1-16:apply_0{n}" for n in (1, 2)]
    others = ["scale-r1-1601:apply_01", "scale-r1-160:apply_01"]
    client = redis.Redis.from_url(broker)
    try:
        for task_id in [mine[1], *others]:
            client.lpush(queue, json.dumps(message(task_id)))
        # A worker took the other: kombu keeps [message, exchange, routing key] in the
        # unacked hash until it is acknowledged.
        client.hset("unacked", "tag-1", json.dumps([message(mine[0]), "", queue]))

        view = BrokerView(broker, {})

        assert view.task_ids(queue, "scale-r1-16:") == set(mine)
        assert view.task_ids(queue, "scale-r1-1601:") == {others[0]}
        assert view.task_ids(queue, "nobody:") == set()
    finally:
        client.delete(queue)
        client.hdel("unacked", "tag-1")
