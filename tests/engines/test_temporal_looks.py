"""A look at a run's Temporal instances asks the server about those instances only, and
keeps what it last read of one while the server does not answer (docs/adr/0019)."""

from __future__ import annotations

import math
import re
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from graduate.adapters.base import Engine, InstanceState, InstanceStatus
from graduate.adapters.temporal.engine import TemporalEngine
from graduate.errors import EngineError
from graduate.flow import load_flow
from graduate.ledger import Ledger
from graduate.processes import wait_until
from graduate.runner import RunOptions
from graduate.runs.session import (
    REVISIT_AT_MOST,
    REVISITS_PER_SECOND,
    RunSession,
    new_request,
)
from graduate.runs.timeline import Timeline
from graduate.services.local import LocalTemporal
from graduate.services.model import Services, TemporalTarget
from tests.conftest import FlowFactory


def _served(server: LocalTemporal, operation: str) -> int:
    """How many calls of `operation` the server's frontend has taken (its own metrics)."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    pattern = (rf'^service_requests{{[^}}]*operation="{operation}"'
               rf'[^}}]*service_name="frontend"[^}}]*}} (\S+)$')
    return sum(int(float(m.group(1))) for m in re.finditer(pattern, text, re.MULTILINE))


@pytest.fixture
def on_own_server(tmp_path: Path,
                  flow_file: FlowFactory) -> Iterator[tuple[LocalTemporal, TemporalEngine]]:
    """A Temporal server of the test's own (its counts are the test's alone) and the
    engine of a test flow on it; no worker polls, so no instance moves."""
    server = LocalTemporal.create(tmp_path / "state", first_free=True)
    server.start()
    try:
        services = Services(temporal=TemporalTarget(server.address), broker_url=None,
                            result_backend_url=None, ledger_url="sqlite://",
                            app_db_url="sqlite://")
        engine = TemporalEngine(load_flow(flow_file()), services, tmp_path / "run")
        try:
            yield server, engine
        finally:
            engine.close()
    finally:
        server.stop()


def test_a_look_asks_only_about_its_instances_and_keeps_the_last_read_while_the_server_is_down(
        on_own_server: tuple[LocalTemporal, TemporalEngine]) -> None:
    server, engine = on_own_server
    flow = engine.flow
    requests = [new_request(flow, "looks", n, "acme") for n in (1, 2, 3)]
    # No worker polls: each stays running, its first workflow task pending.
    engine.start_all(requests)
    first, second = requests[0].instance_id, requests[1].instance_id

    assert engine.statuses([first])[first].state is InstanceState.RUNNING
    # The server publishes its counts every second or so: once the read shows, the
    # look asked about that instance alone, with no list of every running workflow.
    wait_until(lambda: _served(server, "DescribeWorkflowExecution") > 0,
               timeout=30, what="the server's count of the describe", process=server.process)
    assert _served(server, "DescribeWorkflowExecution") == 1
    assert _served(server, "ListWorkflowExecutions") == 0

    server.stop()
    # The server does not answer: the instance read before stays as it was read...
    assert engine.statuses([first])[first].state is InstanceState.RUNNING
    # ...and one never read has no status to give: the look fails.
    with pytest.raises(EngineError, match=f"cannot read the status of {second}"):
        engine.statuses([second])


def test_a_watch_of_many_idle_instances_asks_the_server_within_its_budget(
        tmp_path: Path, on_own_server: tuple[LocalTemporal, TemporalEngine]) -> None:
    """Many instances in flight that do not move (no worker polls): after the first
    look, the watch asks the server about at most REVISITS_PER_SECOND of them a second,
    not each every REVISIT_AT_MOST (docs/adr/0024), and still about every one again."""
    server, engine = on_own_server
    flow = engine.flow
    ledger = Ledger(str(tmp_path / "ledger.sqlite3"))
    count = int(3 * REVISITS_PER_SECOND * REVISIT_AT_MOST)
    requests = [new_request(flow, "idle", n, "acme") for n in range(1, count + 1)]
    ledger.register_all(flow, requests, engine.name)
    engine.start_all(requests)
    asked: Counter[str] = Counter()
    idle_asks: list[float] = []  # when each ask came, once every one backed off
    looked: list[float] = []  # when each look ended
    read = engine.statuses

    def counted(instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        asked.update(instance_ids)
        # After the first look, each backs off (0.1, 0.2 ... 1.6 s, due whatever
        # the budget) to REVISIT_AT_MOST within 4 s; from then on it is idle.
        if looked and time.monotonic() > looked[0] + 4:
            idle_asks.extend([time.monotonic()] * len(instance_ids))
        found = read(instance_ids)
        looked.append(time.monotonic())
        return found

    engine.statuses = counted  # type: ignore[method-assign]
    nothing = cast(Any, None)
    session = RunSession(flow=flow, options=RunOptions(flow=str(flow.source),
                                                       engine=engine.name,
                                                       instances=count),
                         run_id="idle", run_dir=tmp_path, ledger=ledger, stack=nothing,
                         engine=cast(Engine, engine), workers=nothing,
                         timeline=Timeline(), deadline=math.inf, requests=requests)
    # Four rounds of the budget: each one revisited even when slow looks are paced.
    watched = 4 * count / REVISITS_PER_SECOND
    statuses = session.watch(time.monotonic() + watched)
    idle_for = time.monotonic() - (looked[0] + 4)

    assert {s.state for s in statuses.values()} == {InstanceState.RUNNING}
    assert set(statuses) == {r.instance_id for r in requests}
    # Idle, they are asked about within the budget (up to a second's worth saved),
    # not each every REVISIT_AT_MOST (which here is three times as many).
    assert idle_for > 2 * count / REVISITS_PER_SECOND
    assert len(idle_asks) <= REVISITS_PER_SECOND * (idle_for + 1)
    assert min(asked.values()) >= 2  # none starved
    assert _served(server, "ListWorkflowExecutions") == 0
