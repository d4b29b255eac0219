"""`--workers external` on real engines and a PostgreSQL ledger: a matrix on two
registered `graduate worker`s per engine judges kill-worker and stop-worker exactly as
the run's own workers do, through fault commands their agents carry out; and a run
that cannot reach registered workers says what to give, before anything starts or
within its deadline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import graduate
from graduate.chaos.faults import FAULT_FIRED, NOT_FIRED
from graduate.check import Verdict
from graduate.cli.app import app
from graduate.config import Settings
from graduate.errors import ConfigError, ServiceError
from graduate.evidence import EvidenceStore
from graduate.fleet import FleetLedger
from graduate.fleet.ledger import COMMAND_DONE, COMMAND_EXPIRED, COMMAND_ISSUED
from graduate.processes import dying_with_this_process
from graduate.runs import remote
from graduate.runs.supervisor import WORKER_EXITED, WORKER_STARTED
from graduate.runs.timeline import INSTANCES_STARTED, TimelineEvent
from tests.conftest import CRASH_TIMING_APPS, FlowFactory, processes_mentioning

ENGINES = ("temporal", "celery-chain", "celery-state-machine")
FAULTS = ("kill-worker", "stop-worker")
PER_ENGINE = 2
REGISTERED_WITHIN = 120.0
ACTIVATE_TIMEOUT = 'effect = "crm.activate"\ntimeout = "10s"'
LOG_LINES = 40  # of a worker that exited, in the failure message
# What a cell's verdict is made of: equal numbers mean the same verdict.
VERDICT = ("applicable", "fired", "completed", "compensated", "failed", "lost", "stuck",
           "unabsorbed_duplicates", "hit_by_fault", "resumed_exactly", "passed")


def _judged(key: str, verdict: dict[str, Any]) -> dict[str, Any]:
    """A cell's verdict as both sides must agree on it. Celery acknowledges a message
    early from the worker's main process, once a pool child has taken its task: a worker
    group killed while the child runs the step leaves the message acknowledged (the
    instance lost) or, when the kill beats the acknowledgement, unacknowledged in Redis
    until its visibility timeout (held back past the deadline: stuck). Either is Celery
    under its defaults, and which one is a race no harness decides (a rehearsal saw one
    of each side by side): on a Celery kill-worker cell, the two count as one."""
    if key.startswith("celery-") and "|kill-worker" in key and key.endswith("|defaults"):
        verdict = {**verdict, "lost": verdict["lost"] + verdict["stuck"], "stuck": None}
    return verdict


@pytest.fixture
def external(settings: Settings, postgres_url: str) -> Settings:
    """The suite's Temporal server and broker, and a PostgreSQL ledger of the test's own
    (with the state machine's tables beside it): what the harness and the registered
    workers share."""
    return replace(settings, ledger_url=postgres_url, app_db_url=postgres_url)


@pytest.fixture
def fleet(external: Settings) -> Iterator[FleetLedger]:
    ledger = FleetLedger(external.ledger)
    yield ledger
    ledger.close()


def worker_environment(settings: Settings) -> dict[str, str]:
    """The services by environment, as a deployment gives them (never on a command line)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GRADUATE_")}
    assert settings.temporal_address
    assert settings.broker_url
    assert settings.app_db_url
    environ.update(GRADUATE_LEDGER_URL=settings.ledger, GRADUATE_APP_DB_URL=settings.app_db_url,
                   GRADUATE_TEMPORAL_ADDRESS=settings.temporal_address,
                   GRADUATE_BROKER_URL=settings.broker_url)
    return environ


@dataclass
class Agents:
    """The `graduate worker` processes a test started, and the folders they run in."""

    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    folders: set[Path] = field(default_factory=set)
    logs: dict[int, Path] = field(default_factory=dict)  # each one's output, by pid

    def exited(self) -> str:
        """Each process that exited, with the end of its log ("" when none did): pytest
        keeps only a few runs' folders, so a failure carries the log with it."""
        return "".join(
            f"\n{a.args!r} exited with {a.returncode}; its log ends:\n"
            + "\n".join(self.logs[a.pid].read_text(errors="replace").splitlines()[-LOG_LINES:])
            for a in self.processes if a.poll() is not None)


@pytest.fixture
def start_workers(external: Settings, fleet: FleetLedger, tmp_path: Path) -> Iterator[Agents]:
    """Start `graduate worker` processes as a team's hosts would (each in its own
    session); every one is stopped at the end, and nothing of theirs may outlive it."""
    agents = Agents(folders={tmp_path})
    yield agents
    started = agents.processes
    for agent in started:
        if agent.poll() is None:
            os.kill(agent.pid, signal.SIGCONT)  # one a test froze
            os.killpg(agent.pid, signal.SIGTERM)
    for agent in started:
        try:
            agent.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait(timeout=10)
    assert all(agent.returncode is not None for agent in started)
    # Each worker runs in its agent's folder (the project it was started in).
    for folder in agents.folders:
        assert processes_mentioning(str(folder)) == []


def launch(agents: Agents, settings: Settings, flow: Path, engine: str, name: str,
           pool: str) -> None:
    log = flow.parent / f"{name}.log"
    agents.folders.add(flow.parent)
    with log.open("wb") as out:
        agent = subprocess.Popen(
            dying_with_this_process([sys.executable, "-m", "graduate", "worker", str(flow),
                                     "--engine", engine, "--name", name, "--pool", pool]),
            cwd=flow.parent, env=worker_environment(settings), stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    agents.processes.append(agent)
    agents.logs[agent.pid] = log


def await_registered(fleet: FleetLedger, flow: str, count: int, agents: Agents) -> None:
    deadline = time.monotonic() + REGISTERED_WITHIN
    while len(fleet.workers(target=flow)) < count:
        dead = agents.exited()
        assert not dead, f"a `graduate worker` exited before it registered:{dead}"
        assert time.monotonic() < deadline, "the workers did not register in time"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.postgres
@CRASH_TIMING_APPS
def test_a_matrix_on_registered_workers_judges_as_the_runs_own_workers(
        external: Settings, fleet: FleetLedger, flow_file: FlowFactory, tmp_path: Path,
        start_workers: Agents) -> None:
    # The killed step's timeout is short: the engines give it up and run it again sooner
    # (Temporal after its start-to-close, the state machine after its lease), in both
    # matrices alike. Its system takes keys, so a slow attempt run again is absorbed.
    flow = flow_file("approval", **{ACTIVATE_TIMEOUT: ACTIVATE_TIMEOUT.replace("10s", "3s")})
    name = flow.stem
    for engine in ENGINES:
        for number in range(1, PER_ENGINE + 1):
            launch(start_workers, external, flow, engine, f"{engine}-{number}",
                   pool=f"p{os.getpid()}")
    await_registered(fleet, name, PER_ENGINE * len(ENGINES), start_workers)
    before = {w.worker_id: w.pid for w in fleet.workers(target=name)}

    # Both matrices at once, as two teams' would: the run's own workers from a `graduate
    # matrix` process of its own (the services by environment), the registered ones from
    # this one. Each cell has task and Celery queues of its own run, and one instance,
    # whose verdict hangs on no timing but the engines' recovery, well within its
    # deadline; one after the other they took 160 s of the crash lane (CI rehearsal).
    own = subprocess.Popen(
        dying_with_this_process([
            sys.executable, "-m", "graduate", "matrix", str(flow), "--engines",
            ",".join(ENGINES), "--faults", ",".join(FAULTS), "--instances", "1", "--timeout",
            "90", "--restart-delay", "0.5", "--workers", "local", "--evidence",
            str(tmp_path / "evidence-local"), "--json"]),
        cwd=tmp_path, env=worker_environment(external), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        registered = graduate.matrix(
            flow, engines=ENGINES, faults=FAULTS, instances=1, timeout=90,
            restart_delay=0.5, workers="external", settings=external,
            evidence=tmp_path / "evidence-external")
        out, err = own.communicate(timeout=600)
    finally:
        if own.poll() is None:  # this side failed: the other stops, and nothing stays
            os.killpg(own.pid, signal.SIGINT)
            own.communicate(timeout=120)
    assert own.returncode == 0, err

    local = {c["key"]: c["summary"] for c in json.loads(out)["cells"]}
    remote = {c.key: c for c in registered.cells}
    assert sorted(local) == sorted(remote)
    assert len(local) == len(ENGINES) * len(FAULTS)
    for key, summary in local.items():
        assert summary is not None
        assert remote[key].summary is not None
        assert summary["applicable"], key
        assert summary["fired"], key
        assert (_judged(key, {f: getattr(remote[key].summary, f) for f in VERDICT})
                == _judged(key, {f: summary[f] for f in VERDICT})), key
    # The faults reached the registered workers through their agents: each cell's fault
    # is in its timeline as a command done, and each hit worker runs again, a new pid.
    store = EvidenceStore(tmp_path / "evidence-external")
    for cell in remote.values():
        record = store.load_run(str(cell.run_id))
        assert record.options.workers_from == "external"
        kinds = [e.kind for e in record.timeline]
        assert COMMAND_ISSUED.kind in kinds, cell.key
        assert COMMAND_DONE.kind in kinds, cell.key
        assert WORKER_STARTED.kind in kinds, cell.key
        if cell.fault == "stop-worker":
            assert WORKER_EXITED.kind in kinds, cell.key
        commands = fleet.results(record.run_id)
        assert commands, cell.key
        assert all(c.state == "done" for c in commands), cell.key
    after = {w.worker_id: w.pid for w in fleet.workers(target=name)}
    assert sorted(after) == sorted(before)
    assert any(after[w] != before[w] for w in before), "no registered worker was restarted"


def test_registered_workers_need_the_shared_postgresql_ledger(
        settings: Settings, flow_file: FlowFactory) -> None:
    with pytest.raises(ConfigError, match=r"--workers external needs the ledger on the "
                                          r"PostgreSQL.*--ledger-url postgresql://"):
        graduate.chaos(flow_file("approval"), engine="temporal", fault="kill-worker",
                       at="activate:before-effect", workers="external", settings=settings)


@pytest.mark.postgres
def test_registered_workers_need_the_services_they_use_named(
        external: Settings, flow_file: FlowFactory) -> None:
    with pytest.raises(ConfigError, match=r"name the Temporal address"):
        graduate.chaos(flow_file("approval"), engine="temporal", fault="kill-worker",
                       at="activate:before-effect", workers="external",
                       settings=replace(external, temporal_address=None))


@pytest.mark.postgres
def test_registered_state_machine_workers_need_its_tables_on_postgresql(
        external: Settings, flow_file: FlowFactory, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"name the PostgreSQL database of "
                                          r"celery-state-machine's own tables.*--app-db-url"):
        graduate.chaos(flow_file("approval"), engine="celery-state-machine",
                       fault="kill-worker", at="activate:before-effect", workers="external",
                       settings=replace(external, app_db_url=str(tmp_path / "app.sqlite3")))


@pytest.mark.postgres
def test_too_few_registered_workers_end_the_run_at_its_deadline(
        external: Settings, fleet: FleetLedger, flow_file: FlowFactory) -> None:
    began = time.monotonic()
    with pytest.raises(ServiceError, match=r"0 registered worker\(s\) of temporal for "
                                           r"'approval_.*the run needs 1; start more with "
                                           r"`graduate worker"):
        graduate.chaos(flow_file("approval"), engine="temporal", fault="kill-worker",
                       at="activate:before-effect", workers="external", timeout=3,
                       settings=external)
    assert time.monotonic() - began < 3 + 15


def test_the_command_line_exits_2_with_what_to_give(
        tmp_path: Path, flow_file: FlowFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("GRADUATE_")]:
        monkeypatch.delenv(key)
    flow = str(flow_file("approval"))
    runner = CliRunner()

    wrong = runner.invoke(app, ["chaos", flow, "-e", "temporal", "--fault", "kill-worker",
                                "--at", "activate:before-effect", "--workers", "elsewhere"])
    sqlite = runner.invoke(app, ["chaos", flow, "-e", "temporal", "--fault", "kill-worker",
                                 "--at", "activate:before-effect", "--workers", "external"])
    matrix = runner.invoke(app, ["matrix", flow, "--engines", "temporal", "--faults",
                                 "kill-worker", "--workers", "external"])

    assert wrong.exit_code == 2
    assert "choose local" in wrong.output
    assert sqlite.exit_code == 2
    assert "PostgreSQL" in sqlite.output
    assert matrix.exit_code == 2
    assert "PostgreSQL" in matrix.output


# Off the crash lanes (as the next test): one instance, and a fault that never fires;
# its verdict cannot hang on how far other instances got, nor on the cores being free.
@pytest.mark.slow
@pytest.mark.postgres
def test_a_command_no_agent_takes_expires_in_the_timeline_and_the_fault_never_fired(
        external: Settings, fleet: FleetLedger, flow_file: FlowFactory, tmp_path: Path,
        start_workers: Agents, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent is frozen (SIGSTOP) once the instance started; its worker runs on to
    the fault point, and the kill written for it is never taken: it expires, the timeline
    says why, and the run is judged as one whose fault did not fire."""
    # A frozen agent never takes the command, however long it is given: 5 s, not the
    # product's 30 s (graduate.runs.remote.COMMAND_EXPIRY), ends the same way 25 s sooner.
    monkeypatch.setattr(remote, "COMMAND_EXPIRY", 5.0)
    flow = flow_file("approval")
    launch(start_workers, external, flow, "temporal", "frozen-1", pool=f"f{os.getpid()}")
    await_registered(fleet, flow.stem, 1, start_workers)
    agent = start_workers.processes[0]

    def freeze(event: TimelineEvent) -> None:
        if event.kind == INSTANCES_STARTED.kind:
            os.kill(agent.pid, signal.SIGSTOP)

    result = graduate.chaos(flow, engine="temporal", fault="kill-worker",
                            at="activate:before-effect", timeout=90, workers="external",
                            settings=external, evidence=tmp_path / "evidence",
                            on_event=freeze)

    assert not result.fired
    assert not result.verdict.passed
    assert "did not carry out kill-group (expired)" in result.reason
    record = EvidenceStore(tmp_path / "evidence").load_run(result.run_id)
    expired = [e for e in record.timeline if e.kind == COMMAND_EXPIRED.kind]
    assert len(expired) == 1
    assert "kill-group to worker frozen-1" in expired[0].detail
    assert "its agent's last heartbeat came" in expired[0].detail
    assert NOT_FIRED.kind in [e.kind for e in record.timeline]
    assert FAULT_FIRED.kind not in [e.kind for e in record.timeline]
    assert [c.state for c in fleet.results(result.run_id)] == ["expired"]
    # Let go at the point, the frozen agent's worker finishes the instance.
    assert [i.verdict for i in result.instances] == [Verdict.COMPLETED]


# One instance on Temporal, killed and resumed: the same verdict however slow the cores.
@pytest.mark.slow
@pytest.mark.postgres
def test_the_pytest_plugin_runs_on_registered_workers(
        pytester: pytest.Pytester, external: Settings, fleet: FleetLedger,
        start_workers: Agents, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--graduate-workers external`: the `chaos` fixture drives a worker `graduate
    worker` registered, and skips, with the reason, what needs graduate's own workers."""
    pytester.makefile(".toml", pyproject='[tool.graduate]\nspikes = "spikes"\n')
    (pytester.path / "spikes").mkdir()
    flow = pytester.path / "spikes" / "approval.toml"
    flow.write_text((Path(__file__).resolve().parents[1] / "flows" / "chaos.toml").read_text())
    launch(start_workers, external, flow, "temporal", "plugin-1", pool=f"plugin{os.getpid()}")
    await_registered(fleet, "approval", 1, start_workers)
    pytester.makepyfile(test_registered='''
def test_a_registered_worker_is_killed_and_the_flow_resumes(chaos):
    outcome = chaos("approval", engine="temporal", fault="kill-worker",
                    at="activate:before-effect", timeout=60)
    outcome.assert_ok()
    assert outcome.result.fired


def test_a_partition_needs_graduates_own_workers(chaos):
    chaos("approval", engine="temporal", fault="partition", at="activate:before-effect")
''')
    assert external.temporal_address
    assert external.broker_url
    monkeypatch.setenv("GRADUATE_LEDGER_URL", external.ledger)  # a password: not in argv
    result = pytester.runpytest_subprocess(
        "-rs", "--graduate-provider", "external", "--graduate-workers", "external",
        "--graduate-temporal-address", external.temporal_address,
        "--graduate-broker-url", external.broker_url)

    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*partition on temporal: the workers are registered, not "
                                 "started by graduate*"])
    assert [c.state for c in fleet.results(_only_run(fleet))] == ["done", "done"]


def _only_run(fleet: FleetLedger) -> str:
    rows = fleet.db.query("SELECT DISTINCT run_id FROM graduate_fleet_commands")
    assert len(rows) == 1, rows
    return str(rows[0][0])
