"""A Celery app graduate sent tasks with leaves nothing behind that talks to the result
backend once the app is closed: a result collected after the backend is gone raises
nothing (Python would report it through sys.unraisablehook, and pytest's hook, parsing
the traceback inside another parse, failed a CI run with "SystemError: AST constructor
recursion depth mismatch")."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from graduate.adapters.celery.app import close_app, create_app
from graduate.flow import load_flow
from graduate.processes import ManagedProcess, free_port, spawn, wait_until
from graduate.services.local import REDIS_HOW_TO, find_binary
from tests.conftest import FLOWS


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, ManagedProcess]]:
    """A Redis of the test's own, which the test stops."""
    port = free_port()
    server = spawn("redis-results", [str(find_binary("redis-server", None, REDIS_HOW_TO)),
                                     "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                     "--dir", str(tmp_path)], tmp_path / "redis.log",
                   stdin=b"")
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        wait_until(lambda: _answers(client), timeout=20, what="redis-server", process=server)
        client.close()
        yield url, server
    finally:
        server.stop()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.mark.timeout(60)
def test_a_result_collected_after_the_backend_is_gone_raises_nothing(
        own_redis: tuple[str, ManagedProcess], monkeypatch: pytest.MonkeyPatch) -> None:
    url, server = own_redis
    flow = load_flow(FLOWS / "approval.toml")
    app = create_app(flow, {"broker_url": url, "result_backend_url": url}, {},
                     strategy="chain", run_id="subscriptions")
    # Sending subscribes this process to each task's result; the results are kept alive
    # in a cycle, as an exception's traceback keeps them, so only the collector frees
    # them. Three: the first unsubscribe to a closed server may still be written, the
    # next ones meet the broken connection and retry the dead server (for ~20s), then raise.
    held: list[Any] = [app.signature("graduate.nothing").apply_async() for _ in range(3)]
    held.append(held)
    unraisable: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook",
                        lambda u: unraisable.append(f"{u.exc_type.__name__}: {u.exc_value}"))

    close_app(app)
    server.stop()
    del held
    began = time.monotonic()
    gc.collect()

    assert unraisable == []
    assert time.monotonic() - began < 2  # no retries against the stopped server
