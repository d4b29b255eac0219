"""A chain's `holds()` reads the task IDs the Redis broker holds for one instance; it
decodes only the messages whose stored text names the instance (issue 16: judging 5,000
instances decoded every queued message once per instance), and still finds each of the
instance's tasks, queued or taken, and none of another's."""

from __future__ import annotations

import uuid

import pytest
import redis
from celery import Celery

from graduate.adapters.celery.broker import BrokerView


@pytest.mark.timeout(60)
def test_the_ids_of_one_instance_among_many(broker: str) -> None:
    if not broker.startswith("redis"):
        pytest.skip("the broker's queues are read directly on Redis only")
    queue = f"q-{uuid.uuid4().hex[:8]}"
    app = Celery(broker=broker)
    mine = [f"scale-r1-16:apply_0{n}" for n in (1, 2)]
    others = ["scale-r1-1601:apply_01", "scale-r1-160:apply_01"]
    try:
        for task_id in [*mine, *others]:
            app.send_task("graduate.step", task_id=task_id, queue=queue)
        client = redis.Redis.from_url(broker)
        # A worker took one of them: kombu moves it to the unacked hash.
        taken = client.rpop(queue)
        assert taken is not None
        client.hset("unacked", "tag-1", b'[' + taken + b', "", "' + queue.encode() + b'"]')

        view = BrokerView(broker, {})

        assert view.task_ids(queue, "scale-r1-16:") == set(mine)
        assert view.task_ids(queue, "scale-r1-1601:") == {others[0]}
        assert view.task_ids(queue, "nobody:") == set()
    finally:
        client.delete(queue)
        client.hdel("unacked", "tag-1")
        app.close()
