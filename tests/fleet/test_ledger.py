"""The fleet's registry and commands on a real PostgreSQL ledger: each command is taken
once, an agent registered again fences the one before it, and a command nobody takes
expires with the reason."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from graduate.adapters.celery.state_machine import Store
from graduate.db import Database
from graduate.errors import ConfigError
from graduate.fleet.ledger import (
    COMMAND_DONE,
    COMMAND_EXPIRED,
    COMMAND_FAILED,
    COMMAND_ISSUED,
    COMMAND_TAKEN,
    CommandKind,
    CommandState,
    Fenced,
    FleetLedger,
    RegisteredWorker,
)
from graduate.ledger import Ledger

pytestmark = pytest.mark.postgres


@pytest.fixture
def fleet(postgres_url: str) -> FleetLedger:
    return FleetLedger(postgres_url)


def register(fleet: FleetLedger, name: str = "w1", engine: str = "temporal",
             target: str = "approval") -> RegisteredWorker:
    return fleet.register(engine, target, "host-a", 1000, "flow v1", 1000, worker_id=name,
                          agent_pid=999, pool="q1", flow_version=1,
                          settings={"acks_late": True, "broker_password": "secret"})


def test_a_sqlite_ledger_is_refused_with_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"PostgreSQL.*--ledger-url postgresql://"):
        FleetLedger(str(tmp_path / "ledger.sqlite3"))


def test_registered_workers_are_listed_while_they_send_heartbeats(fleet: FleetLedger) -> None:
    first = register(fleet, "w1")
    register(fleet, "w2", engine="celery-chain")
    assert (first.epoch, first.host, first.pid, first.pool) == (1, "host-a", 1000, "q1")
    assert first.settings == {"acks_late": True, "broker_password": "***"}
    assert [w.worker_id for w in fleet.workers()] == ["w1", "w2"]
    assert [w.worker_id for w in fleet.workers(engine="celery-chain")] == ["w2"]
    assert fleet.workers(target="other") == []
    time.sleep(0.05)
    fleet.heartbeat("w1")
    assert [w.worker_id for w in fleet.workers(alive_within=0.04)] == ["w1"]
    fleet.deregister(first)
    assert [w.worker_id for w in fleet.workers()] == ["w2"]


def test_a_command_is_issued_once_and_taken_once(fleet: FleetLedger) -> None:
    worker = register(fleet)
    command = fleet.issue("w1", CommandKind.KILL_GROUP, run_id="r1")
    again = fleet.issue("w1", CommandKind.KILL_GROUP, run_id="r1")
    other = fleet.issue("w1", CommandKind.KILL_GROUP, run_id="r1", sequence=1)
    assert again.command_id == command.command_id
    assert other.command_id != command.command_id

    taken = fleet.take(worker)
    assert taken is not None
    assert taken.command_id == command.command_id
    assert fleet.command(command.command_id).state is CommandState.TAKEN
    fleet.finish(worker, taken, CommandState.DONE, {"signal": "SIGKILL", "new_pid": 42},
                 "SIGKILL to process group 1000")
    # The agent's retry after a connection dropped under its first report changes nothing.
    fleet.finish(worker, taken, CommandState.DONE, {"signal": "SIGKILL", "new_pid": 42},
                 "SIGKILL to process group 1000")
    following = fleet.take(worker)
    assert following is not None
    assert following.command_id == other.command_id
    result = fleet.await_command(command.command_id, time.monotonic() + 5)
    assert result.state is CommandState.DONE
    assert result.observed == {"signal": "SIGKILL", "new_pid": 42}
    assert "epoch 1" in result.taken_by


def test_each_pending_command_goes_to_one_agent_only(fleet: FleetLedger) -> None:
    worker = register(fleet)
    fleet.issue("w1", CommandKind.STOP_WARM, run_id="r1")
    assert fleet.take(worker) is not None
    assert fleet.take(worker) is None


def test_a_new_epoch_fences_the_old_agent_and_fails_what_it_left_half_done(
        fleet: FleetLedger) -> None:
    old = register(fleet)
    command = fleet.issue("w1", CommandKind.RESTART_AFTER, run_id="r1", args={"seconds": 1})
    taken = fleet.take(old)
    assert taken is not None
    new = register(fleet)  # the agent was restarted before it reported
    assert new.epoch == old.epoch + 1

    result = fleet.command(command.command_id)
    assert result.state is CommandState.FAILED
    assert "not run again" in result.detail
    assert fleet.take(new) is None  # the new agent does not run it again
    with pytest.raises(Fenced, match="registered again"):
        fleet.finish(old, taken, CommandState.DONE, {}, "too late")
    with pytest.raises(Fenced):
        fleet.take(old)
    with pytest.raises(Fenced):
        fleet.heartbeat("w1", epoch=old.epoch)
    assert fleet.command(command.command_id).state is CommandState.FAILED


def test_a_command_nobody_takes_expires_with_the_reason(fleet: FleetLedger) -> None:
    register(fleet)
    command = fleet.issue("w1", CommandKind.KILL_GROUP, run_id="r1", expires_in=0.2)
    result = fleet.await_command(command.command_id, time.monotonic() + 10)
    assert result.state is CommandState.EXPIRED
    assert "not taken within its expiry" in result.detail
    worker = fleet.worker("w1")
    assert worker is not None
    assert fleet.take(worker) is None  # an expired command is never run


def test_a_command_for_a_dead_worker_says_it_was_dead(fleet: FleetLedger) -> None:
    worker = register(fleet)
    # The agent's last heartbeat was a minute ago: its host went away.
    fleet.db.execute("UPDATE graduate_fleet_workers SET heartbeat_at = heartbeat_at - 60 "
                     "WHERE worker_id = ?", [worker.worker_id])
    command = fleet.issue("w1", CommandKind.KILL_GROUP, run_id="r1", expires_in=0.1)
    result = fleet.await_command(command.command_id, time.monotonic() + 10)
    assert result.state is CommandState.EXPIRED
    assert "its worker was dead" in result.detail


def test_the_harness_deadline_expires_a_pending_command(fleet: FleetLedger) -> None:
    worker = register(fleet)
    command = fleet.issue("w1", CommandKind.STOP_COLD, run_id="r1", expires_in=60)
    result = fleet.await_command(command.command_id, time.monotonic() + 0.2)
    assert result.state is CommandState.EXPIRED
    assert "harness stopped waiting" in result.detail
    assert fleet.take(worker) is None


def test_a_command_to_an_unknown_worker_is_refused(fleet: FleetLedger) -> None:
    with pytest.raises(ConfigError, match="no worker 'nobody' is registered"):
        fleet.issue("nobody", CommandKind.KILL_GROUP, run_id="r1")


def test_a_runs_commands_read_as_timeline_events(fleet: FleetLedger) -> None:
    worker = register(fleet)
    done = fleet.issue("w1", CommandKind.KILL_GROUP, run_id="r1")
    taken = fleet.take(worker)
    assert taken is not None
    fleet.finish(worker, taken, CommandState.DONE, {"exit_signal": "SIGKILL"}, "killed")
    failed = fleet.issue("w1", CommandKind.KILL_POOL_CHILD, run_id="r1")
    taken = fleet.take(worker)
    assert taken is not None
    fleet.finish(worker, taken, CommandState.FAILED, {}, "no pool child")
    fleet.issue("w1", CommandKind.STOP_WARM, run_id="r1", expires_in=0.1)
    fleet.issue("w1", CommandKind.STOP_WARM, run_id="another-run")
    time.sleep(0.2)
    fleet.expire_due("w1")

    events = fleet.events("r1")
    assert [e.kind for e in events] == [
        COMMAND_ISSUED, COMMAND_TAKEN, COMMAND_DONE, COMMAND_ISSUED, COMMAND_TAKEN,
        COMMAND_FAILED, COMMAND_ISSUED, COMMAND_EXPIRED]
    assert events == sorted(events, key=lambda e: e.at)
    assert "kill-group to worker w1: killed (observed: exit_signal SIGKILL)" in events[2].detail
    assert "host-a agent pid 999 epoch 1" in events[1].detail
    assert [r.command_id for r in fleet.results("r1")][:2] == [done.command_id,
                                                               failed.command_id]


def test_workers_that_start_together_create_the_tables_each_once(postgres_url: str) -> None:
    # Registered workers start at once on a fresh PostgreSQL: each creates the ledger's
    # and the state machine's tables, and one that loses a race on the catalog would
    # exit before it registers.
    starters = 8
    together = threading.Barrier(starters)
    failures: list[BaseException] = []

    def start() -> None:
        together.wait()
        try:
            FleetLedger(postgres_url).close()
            Ledger(postgres_url).close()
            db = Database(postgres_url)
            Store(db).create_tables()
            db.close()
        except BaseException as error:  # recorded, and the test fails on it below
            failures.append(error)

    threads = [threading.Thread(target=start) for _ in range(starters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert FleetLedger(postgres_url).workers() == []
