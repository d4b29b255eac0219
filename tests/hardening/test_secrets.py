"""No password or API key in any command line graduate starts, nor in its messages.

A command line is readable by every user of the machine (`ps`, /proc/PID/cmdline);
workers get their services, secrets included, on their standard input.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from graduate.adapters.base import WorkerSpec, services_for_worker, start_worker_process
from graduate.processes import dying_with_this_process, free_port
from graduate.services.local import REDIS_HOW_TO, find_binary
from graduate.services.model import Services, TemporalTarget
from tests.hardening.conftest import environment, in_a_url, output, start
from tests.hardening.proc import having, watch

PASSWORD = "pw-7c1e5b0a"
API_KEY = "key-4f9d2e81"


def test_a_worker_gets_its_secrets_on_stdin_not_on_its_command_line(tmp_path: Path) -> None:
    services = Services(
        temporal=TemporalTarget("127.0.0.1:7233", api_key=API_KEY),
        broker_url=f"redis://:{PASSWORD}@127.0.0.1:6379/0",
        result_backend_url=f"redis://:{PASSWORD}@127.0.0.1:6379/1",
        ledger_url=f"postgresql://ledger:{PASSWORD}@db.example/ledger",
        app_db_url=f"postgresql://db.example/app?password={PASSWORD}",
    )
    received = tmp_path / "received.json"
    spec = WorkerSpec(engine="temporal", flow_source="unused.toml",
                      services=services_for_worker(services),
                      ready_file=str(tmp_path / "ready" / "echo.ready"),
                      settings={"received": str(received)}, run_id="r1")

    worker = start_worker_process("echo", "tests.hardening.echo_worker", spec, tmp_path)
    try:
        cmdline = Path(f"/proc/{worker.pid}/cmdline").read_bytes().decode()
        assert PASSWORD not in cmdline
        assert API_KEY not in cmdline
        assert str(tmp_path) in cmdline, "ps should still tell which run a worker serves"
        assert json.loads(received.read_text()) == services_for_worker(services)
    finally:
        worker.stop()


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[str]:
    """A Redis that refuses clients without the password: a broker URL that carries one."""
    port = free_port()
    binary = find_binary("redis-server", None, REDIS_HOW_TO)
    server = subprocess.Popen(
        dying_with_this_process([str(binary), "-"]), stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        text=True)
    assert server.stdin is not None
    with server.stdin as config:
        config.write(f"port {port}\nbind 127.0.0.1\nrequirepass {PASSWORD}\nsave \"\"\n"
                     f"dir {tmp_path}\n")
    try:
        wait_for_redis(port, server)
        yield f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    finally:
        server.kill()
        server.wait()


def wait_for_redis(port: int, server: subprocess.Popen[str]) -> None:
    # An unauthenticated PING is refused (-NOAUTH), which says the server listens.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, "redis-server exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"-NOAUTH"):
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("redis-server did not answer")


def test_no_child_of_a_run_shows_a_password_on_its_command_line(
        project: Path, redis_with_password: str) -> None:
    secrets = [PASSWORD]
    env = {"GRADUATE_BROKER_URL": redis_with_password}
    postgres = os.environ.get("GRADUATE_TEST_POSTGRES_URL")
    if postgres:  # the ledger on PostgreSQL: its password reaches every worker too
        env["GRADUATE_LEDGER_URL"] = postgres
        secrets.extend(in_a_url(urllib.parse.urlsplit(postgres).password or ""))
    run = start(project, "run", "partner_approval", "-e", "temporal", "-e", "celery-chain",
                "-e", "celery-state-machine", "--signal", "approval=approve",
                env=environment(**env))

    seen = watch(run, until=lambda _: False, timeout=300)

    assert run.wait() == 0, output(project)
    roles = {
        "Temporal server": having(seen, "server start-dev"),
        "Temporal worker": having(seen, "graduate.adapters.temporal.worker"),
        "Celery worker": having(seen, "graduate.adapters.celery.worker", " worker "),
        "Celery beat": having(seen, "graduate.adapters.celery.worker", " beat "),
    }
    assert all(roles.values()), f"not every kind of process was seen: {roles}"
    leaks = [p.cmdline for p in seen for secret in secrets if secret and secret in p.cmdline]
    assert leaks == []
