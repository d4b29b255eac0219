"""A look at a run's Temporal instances asks the server about those instances only, and
keeps what it last read of one while the server does not answer (docs/adr/0019)."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from graduate.adapters.base import InstanceState
from graduate.adapters.temporal.engine import TemporalEngine
from graduate.errors import EngineError
from graduate.flow import load_flow
from graduate.processes import wait_until
from graduate.runs.session import new_request
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


def test_a_look_asks_only_about_its_instances_and_keeps_the_last_read_while_the_server_is_down(
        tmp_path: Path, flow_file: FlowFactory) -> None:
    server = LocalTemporal.create(tmp_path / "state", first_free=True)
    server.start()
    engine: TemporalEngine | None = None
    try:
        services = Services(temporal=TemporalTarget(server.address), broker_url=None,
                            result_backend_url=None, ledger_url="sqlite://",
                            app_db_url="sqlite://")
        flow = load_flow(flow_file())
        engine = TemporalEngine(flow, services, tmp_path / "run")
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
    finally:
        if engine is not None:
            engine.close()
        server.stop()
