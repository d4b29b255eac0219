"""The state machine's client reads and starts many instances at once: what it reports
and refuses is what it does one at a time (the harness asks every watched instance's
status on every look, and starts instances in batches)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import FlowFactory

from graduate.adapters.base import InstanceState
from graduate.adapters.celery.app import close_app, create_app
from graduate.adapters.celery.broker import BrokerView
from graduate.adapters.celery.resources import ProcessResources
from graduate.adapters.celery.settings import STATE_MACHINE
from graduate.adapters.celery.state_machine import LOAD_CHUNK, StateMachineStrategy
from graduate.errors import EngineError
from graduate.flow import Flow, load_flow
from graduate.runs.session import new_request


@pytest.fixture
def flow(flow_file: FlowFactory) -> Flow:
    return load_flow(str(flow_file("approval")))


@pytest.fixture
def strategy(flow: Flow, tmp_path: Path) -> Iterator[StateMachineStrategy]:
    # An in-memory broker: the advances are sent, and no worker takes them.
    services = {"broker_url": "memory://", "app_db_url": str(tmp_path / "app.sqlite3")}
    resources = ProcessResources(services)
    app = create_app(flow, services, STATE_MACHINE, strategy="state-machine", run_id="q",
                     resources=resources)
    yield StateMachineStrategy(app, flow, resources, STATE_MACHINE, pool="q",
                               broker=BrokerView("memory://", {}))
    close_app(app)
    resources.close()


def test_instances_started_together_each_report_as_one_started_alone(
        flow: Flow, strategy: StateMachineStrategy) -> None:
    alone = new_request(flow, "r1", 1, "tenant")
    together = [new_request(flow, "r1", number, "tenant") for number in (2, 3, 4)]
    strategy.start(alone)

    strategy.start_all(together)

    ids = [r.instance_id for r in (alone, *together)]
    statuses = strategy.statuses(ids)
    assert list(statuses) == ids
    assert {s.state for s in statuses.values()} == {InstanceState.RUNNING}
    assert statuses == {iid: strategy.status(iid) for iid in ids}


def test_statuses_beyond_one_query_include_the_unknown_as_status_does(
        flow: Flow, strategy: StateMachineStrategy) -> None:
    started = new_request(flow, "r1", 1, "tenant")
    strategy.start(started)
    unknown = [f"nobody-{n}" for n in range(LOAD_CHUNK + 1)]

    statuses = strategy.statuses([*unknown, started.instance_id])

    assert statuses[started.instance_id].state is InstanceState.RUNNING
    assert [statuses[iid] for iid in unknown] == [strategy.status(iid) for iid in unknown]
    assert {statuses[iid].state for iid in unknown} == {InstanceState.UNKNOWN}


def test_a_batch_with_an_instance_already_started_is_refused_naming_it(
        flow: Flow, strategy: StateMachineStrategy) -> None:
    first = new_request(flow, "r1", 1, "tenant")
    strategy.start(first)
    fresh = new_request(flow, "r1", 2, "tenant")

    with pytest.raises(EngineError, match=first.instance_id):
        strategy.start_all([fresh, first])

    assert strategy.status(fresh.instance_id).state is InstanceState.UNKNOWN
