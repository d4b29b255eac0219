"""The pytest plugin as a user meets it, tested with pytester in a throwaway project."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from graduate.config import Settings
from graduate.errors import ServiceError
from graduate.services.model import TemporalTarget
from graduate.services.resolver import make_resolver
from tests.adr.conftest import REPO
from tests.conftest import delete_run_queues, processes_mentioning, service_url

FLOW = (Path(__file__).resolve().parents[1] / "flows" / "chaos.toml").read_text()
DOCS = REPO / "docs" / "testing.md"


def docs_example() -> str:
    """The test docs/testing.md tells a user to write, as it stands there: the first
    Python block after "Then `tests/test_crash.py`:"."""
    text = DOCS.read_text()
    after = text.split("Then `tests/test_crash.py`:", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]

RESTART_TEST = '''
def test_restart(chaos):
    chaos("approval", engine="temporal", fault="restart-server", at="activate:before-effect")
'''
NEEDS_TEMPORAL = '''
def test_needs_temporal(temporal_server):
    pass
'''


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makefile(".toml", pyproject='[tool.graduate]\nspikes = "spikes"\n')
    (pytester.path / "spikes").mkdir()
    (pytester.path / "spikes" / "approval.toml").write_text(FLOW)
    return pytester


def test_the_marker_runs_a_test_per_engine_and_fault(project: pytest.Pytester) -> None:
    project.makepyfile(test_marker='''
import pytest

@pytest.mark.graduate(engines=["temporal", "celery-chain"], faults=["none", "kill-worker"])
def test_flow(graduate_engine, graduate_fault):
    assert graduate_engine in ("temporal", "celery-chain")
''')
    result = project.runpytest("-v")

    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*test_flow?temporal-none?*PASSED*",
                                 "*test_flow?celery-chain-kill-worker?*PASSED*"])


def test_the_marker_takes_faults_with_their_flags(project: pytest.Pytester) -> None:
    project.makepyfile(test_marker='''
import pytest

@pytest.mark.graduate(engines=["temporal"],
                      faults=["double-start+crash", "rollback-rehearsal+all"])
def test_flow(graduate_engine, graduate_fault):
    pass
''')
    result = project.runpytest("-v")

    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_flow?temporal-double-start+crash?*PASSED*",
                                 "*test_flow?temporal-rollback-rehearsal+all?*PASSED*"])
    project.makepyfile(test_marker='''
import pytest

@pytest.mark.graduate(engines=["temporal"], faults=["rollback-rehearsal+crash"])
def test_wrong_flag(graduate_engine, graduate_fault):
    pass
''')
    wrong = project.runpytest()
    assert wrong.ret != 0
    wrong.stdout.fnmatch_lines(["*fault 'rollback-rehearsal' has no option 'crash'*"])


def test_options_narrow_the_engines_and_faults(project: pytest.Pytester) -> None:
    project.makepyfile(test_marker='''
import pytest

@pytest.mark.graduate(engines=["temporal", "celery-chain"], faults=["none", "kill-worker"])
def test_flow(graduate_engine, graduate_fault):
    pass
''')
    result = project.runpytest("-v", "--graduate-engines", "celery-chain",
                               "--graduate-faults", "kill-worker")

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_flow?celery-chain-kill-worker?*PASSED*"])


def test_an_unknown_engine_in_the_marker_is_a_usage_error(project: pytest.Pytester) -> None:
    project.makepyfile(test_marker='''
import pytest

@pytest.mark.graduate(engines=["airflow"])
def test_flow(graduate_engine):
    pass
''')
    result = project.runpytest()

    assert result.ret != 0
    result.stdout.fnmatch_lines(["*@pytest.mark.graduate on test_marker.py::test_flow: "
                                 "unknown engine 'airflow'*"])


def test_help_lists_the_options(project: pytest.Pytester) -> None:
    result = project.runpytest("--help")

    result.stdout.fnmatch_lines(["*--graduate-engines=LIST*", "*--graduate-evidence=DIR*",
                                 "*--graduate-provider*"])


@pytest.mark.slow
def test_a_worker_crash_fails_on_the_engine_that_loses_the_commitment(
        project: pytest.Pytester, temporal_server: TemporalTarget, broker: str,
        tmp_path: Path) -> None:
    """The example of docs/testing.md, as a user copies it, on the pilot's flow
    (spikes/partner_approval.toml): it passes on Temporal and fails on the Celery chain
    with the message the page shows, saying which instance, which step, how often each
    effect ran."""
    shutil.copy(REPO / "spikes" / "partner_approval.toml", project.path / "spikes")
    project.makepyfile(test_crash=docs_example())
    evidence = tmp_path / "evidence"
    result = project.runpytest_subprocess(
        "--graduate-provider", "external", "--graduate-temporal-address",
        temporal_server.address, "--graduate-broker-url", broker,
        "--graduate-evidence", str(evidence))

    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*AssertionError: the flow did not survive the fault*",
        "*partner_approval on celery-chain under kill-worker at update_crm:before-effect*",
        "*- instance partner_approval-*-01 (correlation *): LOST: nothing holds it any "
        "more*",
        "*was in flight at update_crm (paused before effect); resumed at nothing*",
        "*effects: validate_partner ran once, create_packet ran once, update_crm never ran, "
        "send_esign never ran, send_confirmation never ran*",
        "*FAILED test_crash.py::test_partner_approval_survives_a_worker_crash"
        "?celery-chain-kill-worker?*",
    ])
    assert len(list((evidence / "runs").glob("*.json"))) == 2


@pytest.mark.slow
def test_the_chaos_fixture_runs_a_fault_with_its_flags(
        project: pytest.Pytester, temporal_server: TemporalTarget, broker: str) -> None:
    """Every instance parked at the wait is cancelled; Temporal compensates each."""
    project.makepyfile(test_rollback='''
import pytest

@pytest.mark.graduate(engines=["temporal"], faults=["rollback-rehearsal+all"])
def test_rollback(chaos, graduate_engine, graduate_fault):
    outcome = chaos("approval", engine=graduate_engine, fault=graduate_fault,
                    at="approval:during-wait", instances=3, profile="tuned", timeout=30)
    outcome.assert_ok()
    assert outcome.verdicts() == ["compensated"] * 3
    assert all(i.rollback is not None for i in outcome.instances)
''')
    result = project.runpytest_subprocess(
        "--graduate-provider", "external", "--graduate-temporal-address",
        temporal_server.address, "--graduate-broker-url", broker)

    result.assert_outcomes(passed=1)


def test_a_shared_server_that_dies_is_started_again_and_reported(
        project: pytest.Pytester) -> None:
    """One test kills the suite's own Temporal server with SIGKILL; the next test still
    finds it answering at the same address, and the run says what happened."""
    project.makepyfile(test_servers='''
import os
import signal
import socket


def test_kill_the_server(temporal_server, graduate_provider):
    process = graduate_provider.strategy.temporal_server.process
    os.killpg(process.pid, signal.SIGKILL)
    process.popen.wait()


def test_the_server_answers_again(temporal_server):
    host, port = temporal_server.address.rsplit(":", 1)
    socket.create_connection((host, int(port)), timeout=5).close()
''')
    result = project.runpytest_subprocess("-W", "always")

    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*GraduateServerWarning: the suite's temporal server on port * had exited with "
        "code -9 and was started again on the same port and data*"])
    assert processes_mentioning(str(project.path)) == []


def test_a_fault_the_provider_cannot_perform_is_skipped_with_the_reason(
        project: pytest.Pytester, temporal_server: TemporalTarget,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADUATE_REQUIRE_SERVICES", raising=False)
    project.makepyfile(test_restart=RESTART_TEST)
    result = project.runpytest("-rs", "--graduate-provider", "external",
                               "--graduate-temporal-address", temporal_server.address)

    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*restart-server on provider external: the Temporal server "
                                 "is external*"])


def test_where_services_are_required_a_fault_the_provider_cannot_perform_fails(
        project: pytest.Pytester, temporal_server: TemporalTarget,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A skipped crash test would pass unnoticed in CI: there it fails, with the reason."""
    monkeypatch.setenv("GRADUATE_REQUIRE_SERVICES", "1")
    project.makepyfile(test_restart=RESTART_TEST)
    result = project.runpytest("--graduate-provider", "external",
                               "--graduate-temporal-address", temporal_server.address)

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*GRADUATE_REQUIRE_SERVICES=1, but restart-server on "
                                 "provider external: the Temporal server is external*"])


def test_the_docker_provider_says_there_is_no_engine_instead_of_hanging(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    started = time.monotonic()

    with pytest.raises(ServiceError) as caught:
        make_resolver("docker", Settings(project_dir=tmp_path), tmp_path)

    assert "no Docker engine is reachable" in str(caught.value)
    assert "--graduate-provider local" in str(caught.value)
    assert time.monotonic() - started < 30


def test_tests_needing_docker_are_skipped_with_the_reason(project: pytest.Pytester,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.delenv("GRADUATE_REQUIRE_SERVICES", raising=False)
    project.makepyfile(test_docker=NEEDS_TEMPORAL)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    result = project.runpytest("-rs", "--graduate-provider", "docker")

    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*provider 'docker' is not available: no Docker engine*"])


def test_where_services_are_required_tests_needing_docker_fail_without_it(
        project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRADUATE_REQUIRE_SERVICES", "1")
    project.makepyfile(test_docker=NEEDS_TEMPORAL)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    result = project.runpytest("--graduate-provider", "docker")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*GRADUATE_REQUIRE_SERVICES=1, but graduate provider "
                                 "'docker' is not available: no Docker engine*"])


@pytest.mark.slow
@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_the_external_provider_runs_on_a_real_rabbitmq_and_postgres(
        project: pytest.Pytester, broker: str, rabbitmq_url: str) -> None:
    """Celery on RabbitMQ (a Redis result backend), the ledger on PostgreSQL. With late
    acknowledgement RabbitMQ hands a dead worker's task back as soon as its connection
    closes, so a worker kill costs one repeat of the step, absorbed by its key."""
    rabbitmq = rabbitmq_url
    postgres = service_url("GRADUATE_TEST_POSTGRES_URL", "PostgreSQL")
    project.makepyfile(test_cluster='''
from graduate.testing import Verdict


def test_a_worker_kill_on_rabbitmq(chaos, ledger):
    outcome = chaos("approval", engine="celery-chain", fault="kill-worker",
                    at="activate:after-effect", profile="tuned", timeout=40)
    outcome.assert_ok()
    outcome.assert_all(Verdict.COMPLETED)
    assert ledger.url.startswith("postgresql://")
    activate = [e.outcome.value for e in ledger.effects(run_id=outcome.result.run_id)
                if e.step == "activate"]
    assert activate == ["applied", "absorbed"]
''')
    try:
        result = project.runpytest_subprocess(
            "--graduate-provider", "external", "--graduate-broker-url", rabbitmq,
            "--graduate-result-backend-url", broker, "--graduate-ledger-url", postgres)
    finally:
        delete_run_queues(rabbitmq, project.path)  # its runs are in the project's folder

    result.assert_outcomes(passed=1)


def test_the_docker_provider_runs_a_flow_in_containers(project: pytest.Pytester,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a Docker engine is reachable: Temporal, RabbitMQ, Redis and PostgreSQL in
    containers. Elsewhere the test inside is skipped with the provider's reason (Docker
    is not among the services CI requires)."""
    monkeypatch.delenv("GRADUATE_REQUIRE_SERVICES", raising=False)
    project.makepyfile(test_docker='''
def test_in_containers(chaos, ledger):
    for engine in ("temporal", "celery-chain"):
        chaos("approval", engine=engine, timeout=60).assert_all("completed")
    assert ledger.url.startswith("postgresql://")
''')
    result = project.runpytest_subprocess("-rs", "--graduate-provider", "docker",
                                          "--graduate-docker-services",
                                          "redis,rabbitmq,postgres")

    outcomes = result.parseoutcomes()
    if outcomes.get("skipped"):
        result.stdout.fnmatch_lines(["*provider 'docker' is not available: no Docker engine*"])
    else:
        assert outcomes == {"passed": 1}
