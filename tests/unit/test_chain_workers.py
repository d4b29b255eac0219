"""How the chain's holds() tells a dead worker from a silent one: by its node name; and
which worker took a message: a received mark written before the message was taken is an
earlier taker's (a worker stopped warm gives its prefetched messages back, and its marks
stay behind)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid

import redis

from graduate.adapters.celery.receipts import RECEIPT_LIFETIME, marked_before, runs_here


def test_a_worker_named_after_a_live_process_on_this_hostruns_here() -> None:
    assert runs_here(f"celery-chain-worker-1-{os.getpid()}@{socket.gethostname()}")


def test_a_worker_whose_process_exited_does_not() -> None:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    pid = int(child.stdout)

    assert not runs_here(f"celery-chain-worker-1-{pid}@{socket.gethostname()}")


def test_a_worker_on_another_host_cannot_be_seen() -> None:
    assert not runs_here(f"celery-chain-worker-1-{os.getpid()}@not-{socket.gethostname()}")


def test_a_mark_written_before_its_message_was_taken_again_is_an_earlier_takers(
        broker: str) -> None:
    client = redis.Redis.from_url(broker)
    key = f"test:received:{uuid.uuid4().hex}"
    client.set(key, "stopped-worker-1@host", ex=RECEIPT_LIFETIME)
    try:
        assert marked_before(client, key, taken=time.time() + 5)  # taken again later
        assert not marked_before(client, key, taken=time.time())  # its taker's own mark
        client.persist(key)
        assert not marked_before(client, key, taken=time.time() + 5)  # age unknown
    finally:
        client.delete(key)
        client.close()
