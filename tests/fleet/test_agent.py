"""`graduate worker` as a user runs it, on real engines and a real PostgreSQL ledger:
each fault command is carried out once, on the real worker process, even across a
restart of the agent itself; a command to a dead worker expires with the reason; and
nothing is left running afterwards."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from graduate.chaos.changes import changed_flow
from graduate.fleet.ledger import (
    COMMAND_EXPIRED,
    DEAD_AFTER,
    CommandKind,
    CommandResult,
    CommandState,
    FleetLedger,
    RegisteredWorker,
)
from graduate.flow import flow_to_dict, load_flow
from graduate.processes import children, dying_with_this_process, group_alive, running
from graduate.services.model import TemporalTarget
from tests.conftest import FlowFactory, processes_mentioning
from tests.hardening.conftest import REPO, environment, in_a_url
from tests.hardening.proc import Seen, descendants, survivors

# A worker's start on a loaded two-core machine, and a command's round trip with it.
REGISTERED_WITHIN = 120.0
ANSWERED_WITHIN = 120.0
EXIT_WITHIN = 30.0
pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@dataclass
class Fleet:
    """A project whose workers run under `graduate worker`, and the ledger they share."""

    project: Path
    flow: Path
    env: dict[str, str]
    ledger: FleetLedger
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    agents: list[subprocess.Popen[str]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def start(self, engine: str, name: str = "w1",
              target: str | None = None) -> subprocess.Popen[str]:
        out = (self.project / f"agent-{len(self.agents)}.out").open("w")
        with out:
            agent = subprocess.Popen(
                dying_with_this_process([sys.executable, "-m", "graduate", "worker",
                                         target or str(self.flow), "-e", engine, "--name",
                                         name]), cwd=self.project, env=self.env, stdout=out,
                stderr=subprocess.STDOUT, text=True)
        self.agents.append(agent)
        return agent

    def output(self) -> str:
        return "\n".join(path.read_text() for path in sorted(self.project.glob("agent-*.out")))

    def registered(self, agent: subprocess.Popen[str], name: str = "w1") -> RegisteredWorker:
        """The worker `agent` registered, once it did (with its worker up)."""
        deadline = time.monotonic() + REGISTERED_WITHIN
        while time.monotonic() < deadline:
            worker = self.ledger.worker(name)
            if worker is not None and worker.agent_pid == agent.pid:
                self.seen.extend(descendants(agent.pid).values())
                return worker
            assert agent.poll() is None, f"the agent exited:\n{self.output()}"
            time.sleep(0.1)
        raise AssertionError(f"no worker registered in {REGISTERED_WITHIN}s:\n{self.output()}")

    def command(self, kind: CommandKind, sequence: int = 0, name: str = "w1",
                **args: object) -> CommandResult:
        """Issue a command and wait for its outcome."""
        command = self.ledger.issue(name, kind, run_id=self.run_id, args=args,
                                    expires_in=ANSWERED_WITHIN, sequence=sequence)
        result = self.ledger.await_command(command.command_id,
                                           time.monotonic() + ANSWERED_WITHIN)
        assert result.state.finished, (result, self.output())
        return result

    def taken(self, command_id: str) -> None:
        deadline = time.monotonic() + ANSWERED_WITHIN
        while self.ledger.command(command_id).state is CommandState.PENDING:
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.05)

    def kill(self, agent: subprocess.Popen[str]) -> None:
        """SIGKILL to the agent alone: its worker must die with it (parent-death signal)."""
        below = list(descendants(agent.pid).values())
        agent.kill()
        agent.wait()
        assert survivors(below, within=EXIT_WITHIN) == []


@pytest.fixture
def fleet(tmp_path: Path, flow_file: FlowFactory, postgres_url: str, broker: str,
          request: pytest.FixtureRequest) -> Iterator[Fleet]:
    """Agents started in a project of their own; every one is gone afterwards."""
    (tmp_path / "pyproject.toml").write_text("[tool.graduate]\n")
    services = {"GRADUATE_LEDGER_URL": postgres_url, "GRADUATE_BROKER_URL": broker}
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("engine") == "temporal":
        target: TemporalTarget = request.getfixturevalue("temporal_server")
        services["GRADUATE_TEMPORAL_ADDRESS"] = target.address
    ledger = FleetLedger(postgres_url)
    made = Fleet(tmp_path, flow_file(), environment(**services), ledger)
    yield made
    for agent in made.agents:
        if agent.poll() is None:
            made.kill(agent)
    ledger.close()
    assert survivors(made.seen, within=EXIT_WITHIN) == []
    assert processes_mentioning(str(tmp_path)) == []


@pytest.mark.parametrize("engine", ["celery-chain", "temporal"])
def test_each_command_is_carried_out_on_the_real_worker(fleet: Fleet, engine: str) -> None:
    agent = fleet.start(engine)
    first = fleet.registered(agent)
    assert (first.engine, first.epoch, first.pool) == (engine, 1, "fleet")
    assert first.group_pid == first.pid
    assert running(first.pid)

    killed = fleet.command(CommandKind.KILL_GROUP)
    assert killed.state is CommandState.DONE
    assert killed.observed["pid"] == first.pid
    assert killed.observed["exit_code"] == -signal.SIGKILL
    assert not group_alive(first.pid)

    restarted = fleet.command(CommandKind.RESTART_AFTER, seconds=0)
    second = int(str(restarted.observed["pid"]))
    assert restarted.observed["old_pid"] == first.pid
    assert second != first.pid
    assert running(second)
    current = fleet.ledger.worker("w1")
    assert current is not None
    assert (current.pid, current.group_pid, current.epoch) == (second, second, 1)

    stopped = fleet.command(CommandKind.STOP_WARM)
    assert stopped.observed == {"signal": "SIGTERM", "pid": second}
    restarted = fleet.command(CommandKind.RESTART_AFTER, 1, seconds=0)
    assert (restarted.observed["old_pid"], restarted.observed["exit_code"],
            restarted.observed["forced"]) == (second, 0, False)
    assert not group_alive(second)
    third = int(str(restarted.observed["pid"]))

    pool = children(third)
    child = fleet.command(CommandKind.KILL_POOL_CHILD)
    if pool:  # a Celery prefork worker runs each task in a pool child
        assert child.state is CommandState.DONE
        assert child.observed == {"signal": "SIGKILL", "pid": pool[0], "worker_pid": third,
                                  "killed": True}
        assert running(third)
    else:  # a Temporal worker runs activities in threads of its own process
        assert child.state is CommandState.FAILED
        assert "has no pool child" in child.detail
        assert running(third)

    stopped = fleet.command(CommandKind.STOP_COLD)
    assert stopped.observed == {"signal": "SIGQUIT", "pid": third}
    restarted = fleet.command(CommandKind.RESTART_AFTER, 2, seconds=0)
    assert restarted.observed["old_pid"] == third
    assert not group_alive(third)
    fourth = int(str(restarted.observed["pid"]))

    current = deploys_a_changed_flow(fleet, fourth)

    shows_no_secret(fleet, agent)

    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=EXIT_WITHIN) == 143
    assert fleet.ledger.workers() == []  # it left the registry
    assert not group_alive(current.pid)


def deploys_a_changed_flow(fleet: Fleet, worker_pid: int) -> RegisteredWorker:
    """A deploy: the worker is stopped warm and replaced by one that loads the new flow."""
    flow = load_flow(fleet.flow)
    changed = flow_to_dict(changed_flow(flow, "add-step"))
    deployed = fleet.command(CommandKind.DEPLOY, flow=json.dumps(changed), seconds=0)
    assert deployed.state is CommandState.DONE, deployed.detail
    assert (deployed.observed["old_pid"], deployed.observed["exit_code"],
            deployed.observed["version"]) == (worker_pid, 0, flow.version + 1)
    current = fleet.ledger.worker("w1")
    assert current is not None
    assert (current.pid, current.flow_version) == (deployed.observed["pid"], flow.version + 1)
    assert f"v{flow.version + 1}" in current.code_version
    assert running(current.pid)
    return current


def shows_no_secret(fleet: Fleet, agent: subprocess.Popen[str]) -> None:
    """No password reached a command line, the registry or the agent's output."""
    password = in_a_url(urlsplit(os.environ["GRADUATE_TEST_POSTGRES_URL"]).password or "")
    lines = [p.cmdline for p in [*fleet.seen, *descendants(agent.pid).values()]]
    assert not [line for line in lines for secret in password if secret in line]
    assert not [line for line in lines if "postgresql://" in line]
    assert not [s for s in password if s in fleet.output()]
    registered = json.dumps([w.settings for w in fleet.ledger.workers()])
    assert not [s for s in password if s in registered]


APP = "partner_approval_app"


def test_a_teams_own_worker_takes_its_faults_and_refuses_a_deploy(fleet: Fleet) -> None:
    (fleet.project / "pyproject.toml").write_text(f"""
[tool.graduate.apps.{APP}]
flow = "{REPO / 'examples' / APP / 'flow.toml'}"

[tool.graduate.apps.{APP}.celery]
app = "examples.{APP}.celery_app:app"
queues = ["partner-approval"]
beat = false
start = "examples.{APP}.celery_app:start"
signal = "examples.{APP}.celery_app:signal"
outcome = "examples.{APP}.celery_app:outcome"
""")
    fleet.env.update(PYTHONPATH=str(REPO),
                     PARTNER_APPROVAL_DB=str(fleet.project / "approvals.sqlite3"),
                     PARTNER_APPROVAL_AUDIT_DB=str(fleet.project / "audit.sqlite3"))
    agent = fleet.start("celery", target=APP)
    first = fleet.registered(agent)
    assert (first.target, first.engine) == (APP, "celery-app")
    assert fleet.command(CommandKind.KILL_GROUP).observed["pid"] == first.pid
    assert not group_alive(first.pid)
    restarted = fleet.command(CommandKind.RESTART_AFTER, seconds=0)
    assert running(int(str(restarted.observed["pid"])))
    # A pid that is not one of the worker's pool children is never signalled.
    outsider = fleet.command(CommandKind.KILL_POOL_CHILD, pid=os.getpid())
    assert outsider.state is CommandState.FAILED
    assert f"process {os.getpid()} is not a pool child" in outsider.detail
    refused = fleet.command(CommandKind.DEPLOY, flow="{}")
    assert refused.state is CommandState.FAILED
    assert "roll out the new version yourself" in refused.detail
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=EXIT_WITHIN) == 143, fleet.output()


def test_a_restarted_agent_never_runs_an_old_command_again(fleet: Fleet) -> None:
    first_agent = fleet.start("celery-chain")
    first = fleet.registered(first_agent)
    assert fleet.command(CommandKind.KILL_GROUP).observed["pid"] == first.pid
    fleet.command(CommandKind.RESTART_AFTER, seconds=0)
    # The agent takes a long restart, and dies while it carries it out.
    long = fleet.ledger.issue("w1", CommandKind.RESTART_AFTER, run_id=fleet.run_id,
                              args={"seconds": 600}, sequence=1)
    fleet.taken(long.command_id)
    fleet.kill(first_agent)

    second_agent = fleet.start("celery-chain")
    second = fleet.registered(second_agent)
    assert second.epoch == first.epoch + 1
    interrupted = fleet.ledger.command(long.command_id)
    assert interrupted.state is CommandState.FAILED
    assert f"agent pid {first_agent.pid} epoch 1" in interrupted.detail
    assert "not run again" in interrupted.detail

    # Commands are taken in the order issued: once this one is done, the new agent has
    # passed every older command. Its worker was still up, untouched until now: neither
    # the kill nor the restarts of the first agent ran again on it.
    marker = fleet.command(CommandKind.RESTART_AFTER, 2, seconds=0)
    assert marker.state is CommandState.DONE
    assert (marker.observed["old_pid"], marker.observed["stopped_by_restart"],
            marker.observed["exit_code"]) == (second.pid, True, 0)
    assert [(r.kind, r.state, r.taken_by.rsplit(" ", 1)[-1])
            for r in fleet.ledger.results(fleet.run_id)] == [
        (CommandKind.KILL_GROUP, CommandState.DONE, "1"),
        (CommandKind.RESTART_AFTER, CommandState.DONE, "1"),
        (CommandKind.RESTART_AFTER, CommandState.FAILED, "1"),
        (CommandKind.RESTART_AFTER, CommandState.DONE, "2"),
    ]

    # A third agent under the same name, the second still up: the second is fenced off
    # and stops with its worker, so that two agents never serve one name.
    third_agent = fleet.start("celery-chain")
    third = fleet.registered(third_agent)
    assert second_agent.wait(timeout=EXIT_WITHIN) == 2, fleet.output()
    assert f"epoch {third.epoch}" in fleet.output()
    assert not group_alive(int(str(marker.observed["pid"])))
    third_agent.send_signal(signal.SIGINT)
    assert third_agent.wait(timeout=EXIT_WITHIN) != 0


def test_a_command_to_a_dead_worker_expires_with_the_reason(fleet: Fleet) -> None:
    agent = fleet.start("celery-chain")
    worker = fleet.registered(agent)
    fleet.kill(agent)
    assert not group_alive(worker.pid)

    command = fleet.ledger.issue("w1", CommandKind.KILL_GROUP, run_id=fleet.run_id,
                                 expires_in=DEAD_AFTER + 1)
    result = fleet.ledger.await_command(command.command_id, time.monotonic() + 60)
    assert result.state is CommandState.EXPIRED
    assert "its worker was dead" in result.detail
    last = fleet.ledger.events(fleet.run_id)[-1]
    assert last.kind == COMMAND_EXPIRED
    assert "kill-group to worker w1: not taken within its expiry" in last.detail
    assert fleet.ledger.workers(alive_within=DEAD_AFTER) == []


def test_an_unreachable_temporal_server_is_named_before_any_worker_starts(
        fleet: Fleet) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    fleet.env["GRADUATE_TEMPORAL_ADDRESS"] = f"127.0.0.1:{closed}"
    agent = fleet.start("temporal")
    assert agent.wait(timeout=60) == 2
    assert f"the Temporal server at 127.0.0.1:{closed}" in fleet.output()
    assert "Traceback" not in fleet.output()
    assert fleet.ledger.workers() == []


def test_the_agent_carries_on_when_the_database_drops_its_connections(
        fleet: Fleet, postgres_url: str) -> None:
    name = f"fleet-test-{fleet.run_id}"
    fleet.env["GRADUATE_LEDGER_URL"] = f"{postgres_url}&application_name={name}"
    agent = fleet.start("celery-chain")
    worker = fleet.registered(agent)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        dropped = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE application_name = %s", [name]).fetchall()
    assert dropped  # the agent's connections (its loop's and its heartbeat's) are cut

    killed = fleet.command(CommandKind.KILL_GROUP)
    assert killed.state is CommandState.DONE, (killed, fleet.output())
    assert killed.observed["pid"] == worker.pid
    assert "the ledger does not answer" in fleet.output()
    assert agent.poll() is None
    current = fleet.ledger.worker("w1")
    assert current is not None
    assert current.epoch == worker.epoch
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=EXIT_WITHIN) == 143, fleet.output()
