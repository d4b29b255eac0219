"""The "real cluster" paths: ledger and app tables on PostgreSQL, Celery on RabbitMQ.

These tests skip with a reason when the services are absent; `.ci/run` starts them
and sets GRADUATE_REQUIRE_SERVICES=1, which turns the skips into failures.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from graduate.adapters import open_engine
from graduate.adapters.base import InstanceState
from graduate.config import Settings
from graduate.errors import CannotTell
from graduate.flow import load_flow
from graduate.ledger import Ledger, Outcome
from graduate.runner import RunOptions, run_flow
from graduate.runs.session import new_request
from graduate.services.model import Services
from tests.conftest import FlowFactory

STEPS = ["create_record", "reserve", "activate", "notify"]


@pytest.mark.postgres
@pytest.mark.parametrize("engine", ["temporal", "celery-state-machine"])
def test_ledger_and_app_tables_on_postgres(settings: Settings, flow_file: FlowFactory,
                                           postgres_url: str, engine: str) -> None:
    on_postgres = replace(settings, ledger_url=postgres_url, app_db_url=postgres_url)
    result = run_flow(on_postgres, RunOptions(flow=str(flow_file()), engine=engine,
                                              instances=2, decisions={"approval": "approve"}))

    assert [i.state for i in result.instances] == [InstanceState.COMPLETED] * 2
    ledger = Ledger(postgres_url)
    for item in result.instances:
        rows = ledger.effects(instance_id=item.instance_id)
        assert [(e.step, e.outcome) for e in rows] == [(s, Outcome.APPLIED) for s in STEPS]
    if engine == "celery-state-machine":
        with psycopg.connect(postgres_url) as conn:
            states = conn.execute("SELECT state FROM sm_instances").fetchall()
        assert sorted(s for (s,) in states) == ["completed", "completed"]


@pytest.mark.rabbitmq
@pytest.mark.parametrize("engine", ["celery-chain", "celery-state-machine"])
def test_celery_on_rabbitmq(settings: Settings, flow_file: FlowFactory, rabbitmq_url: str,
                            engine: str) -> None:
    on_rabbit = replace(settings, broker_url=rabbitmq_url, result_backend_url=settings.broker_url)
    result = run_flow(on_rabbit, RunOptions(flow=str(flow_file()), engine=engine, instances=2,
                                            decisions={"approval": "reject"}))

    assert [i.state for i in result.instances] == [InstanceState.COMPENSATED] * 2
    assert result.services["broker_url"] == "amqp://guest:***@127.0.0.1:5672//"
    ledger = Ledger(settings.ledger)
    for item in result.instances:
        undo = [e.step for e in ledger.effects(instance_id=item.instance_id)
                if e.kind == "compensation"]
        assert undo == ["reserve", "create_record"]


@pytest.mark.rabbitmq
def test_chain_on_rabbitmq_cannot_tell_what_a_ready_message_holds(
        settings: Settings, flow_file: FlowFactory, rabbitmq_url: str, tmp_path: Path) -> None:
    """With no worker consuming, the instance's first task waits in RabbitMQ's queue;
    RabbitMQ shows its count, not whose it is: the chain says it cannot tell (and why),
    rather than "held" or "lost"."""
    flow = load_flow(flow_file())
    services = Services(temporal=None, broker_url=rabbitmq_url,
                        result_backend_url=settings.broker_url, ledger_url=settings.ledger,
                        app_db_url=str(tmp_path / "app.sqlite3"))
    run_folder = tmp_path / "run-no-workers"
    run_folder.mkdir(exist_ok=True)  # rabbitmq_url deletes the queues of the runs it finds
    engine = open_engine("celery-chain", flow, services, run_folder)
    request = new_request(flow, "nowork", 1, "tenant")
    try:
        engine.start(request)
        with pytest.raises(CannotTell, match=r"holds 1 ready message"):
            engine.holds(request.instance_id)
    finally:
        engine.close()  # the fixture deletes the queue, with the message no worker took
