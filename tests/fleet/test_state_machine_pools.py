"""The state machine's tick on registered workers: every registered worker's agent runs
a beat beside it, and the harness starts instances under its own run ID while the
workers serve a pool. The tick of a pool must look after exactly the rows started on
that pool, and the beats of one pool, however many, must nudge each due row once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from graduate.adapters.celery.app import create_app
from graduate.adapters.celery.broker import BrokerView
from graduate.adapters.celery.resources import ProcessResources
from graduate.adapters.celery.settings import STATE_MACHINE
from graduate.adapters.celery.state_machine import Machine, Row, StateMachineStrategy
from graduate.db import Database
from graduate.flow import Flow, load_flow
from graduate.runs.session import new_request
from tests.conftest import FlowFactory
from tests.unit.test_state_machine_rows import (
    check_a_folded_move_writes_both_moves_only_while_no_signal_is_stored,
    check_a_move_uses_up_its_signal_and_writes_its_transition_only_when_it_wins,
)

HARNESS_RUN = "h1"  # the harness's run ID: the rows' request.run_id, never a pool


class Ticker:
    """One beat's tick, on a pool, with the advance messages it sent recorded."""

    def __init__(self, flow: Flow, url: str, pool: str) -> None:
        services = {"broker_url": "memory://", "app_db_url": url}
        self.resources = ProcessResources(services)
        app = create_app(flow, services, STATE_MACHINE, strategy="state-machine",
                         run_id=pool, resources=self.resources)
        self.machine = Machine(app, flow, self.resources, STATE_MACHINE)
        self.machine.pool = pool
        self.sent: list[str] = []
        self.machine.send_advance = lambda row, countdown=None: self.sent.append(  # type: ignore[method-assign]
            row.instance_id)


@pytest.fixture
def flow(flow_file: FlowFactory) -> Flow:
    return load_flow(str(flow_file("approval")))


@pytest.fixture
def tickers(flow: Flow, postgres_url: str) -> Iterator[dict[str, Ticker]]:
    made = {name: Ticker(flow, postgres_url, pool)
            for name, pool in (("a1", "pool-a"), ("a2", "pool-a"), ("b", "pool-b"))}
    yield made
    for ticker in made.values():
        ticker.resources.close()


def start_on(flow: Flow, url: str, pool: str, number: int) -> str:
    """An instance started by a harness whose engine client sends to `pool`, left idle
    for longer than the idle grace, as if its advance message was lost."""
    services = {"broker_url": "memory://", "app_db_url": url}
    resources = ProcessResources(services)
    app = create_app(flow, services, STATE_MACHINE, strategy="state-machine", run_id=pool,
                     resources=resources)
    strategy = StateMachineStrategy(app, flow, resources, STATE_MACHINE, pool=pool,
                                    broker=BrokerView("memory://", {}))
    request = new_request(flow, HARNESS_RUN, number, "tenant")
    strategy.start(request)
    resources.app_db().execute("UPDATE sm_instances SET updated_at = updated_at - 3600 "
                               "WHERE instance_id = ?", [request.instance_id])
    resources.close()
    return request.instance_id


@pytest.mark.postgres
def test_a_pools_tick_looks_after_the_rows_started_on_it_not_the_harness_run(
        flow: Flow, postgres_url: str, tickers: dict[str, Ticker]) -> None:
    on_a = start_on(flow, postgres_url, "pool-a", 1)
    on_b = start_on(flow, postgres_url, "pool-b", 2)
    assert tickers["a1"].machine.tick() == 1
    assert tickers["b"].machine.tick() == 1
    assert tickers["a1"].sent == [on_a]
    assert tickers["b"].sent == [on_b]


@pytest.mark.postgres
def test_the_beats_of_one_pool_nudge_each_due_row_once(
        flow: Flow, postgres_url: str, tickers: dict[str, Ticker]) -> None:
    instance = start_on(flow, postgres_url, "pool-a", 1)
    first, second = tickers["a1"], tickers["a2"]
    assert first.machine.tick() == 1
    assert second.machine.tick() == 0  # nudged within the idle grace by the other beat
    assert (first.sent, second.sent) == ([instance], [])

    # Two beats ticking at the same moment: one claims the row, the other leaves it.
    first.resources.app_db().execute("UPDATE sm_instances SET nudged_at = NULL")
    first.sent.clear()
    together = threading.Barrier(2)

    def tick(ticker: Ticker) -> None:
        together.wait()
        ticker.machine.tick()

    threads = [threading.Thread(target=tick, args=(t,)) for t in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [*first.sent, *second.sent] == [instance]


@pytest.mark.postgres
def test_a_row_from_before_pools_were_recorded_is_its_runs(
        flow: Flow, postgres_url: str) -> None:
    own_run = Ticker(flow, postgres_url, HARNESS_RUN)
    instance = start_on(flow, postgres_url, HARNESS_RUN, 1)
    own_run.resources.app_db().execute("UPDATE sm_instances SET pool = ''")
    row = own_run.machine.store.load(instance)
    assert isinstance(row, Row)
    assert row.pool == ""
    assert own_run.machine.tick() == 1
    assert own_run.sent == [instance]
    own_run.resources.close()


@pytest.mark.postgres
def test_reminders_are_sent_by_one_tick_of_a_pool_at_a_time(
        tickers: dict[str, Ticker]) -> None:
    first, second = (tickers[name].machine.store for name in ("a1", "a2"))
    with first.only_one("graduate.sm.remind.f.pool-a") as held:
        assert held
        with second.only_one("graduate.sm.remind.f.pool-a") as also:
            assert not also
        with second.only_one("graduate.sm.remind.f.pool-b") as other_pool:
            assert other_pool
    with second.only_one("graduate.sm.remind.f.pool-a") as after:
        assert after


def test_a_move_in_one_statement_uses_up_its_signal_and_writes_its_transition_only_when_it_wins(
        postgres_url: str) -> None:
    """PostgreSQL's `Store.update` is one statement (a WITH of the move, the signal it uses
    up and its transition): it must commit what SQLite's transaction does."""
    check_a_move_uses_up_its_signal_and_writes_its_transition_only_when_it_wins(
        Database(postgres_url))


def test_a_folded_move_in_one_statement_writes_both_moves_only_while_no_signal_is_stored(
        postgres_url: str) -> None:
    """PostgreSQL's folded move is one statement (the guarded move and both transitions,
    in order): it must commit what SQLite's transaction does."""
    check_a_folded_move_writes_both_moves_only_while_no_signal_is_stored(
        Database(postgres_url))
