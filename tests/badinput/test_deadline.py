"""Issue 11 item 9: the run's --timeout counts its start-up (starting thousands of
instances stops at the deadline, with a message, and every process is stopped), and a
broker that is not there is named as such within seconds."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graduate.config import Settings
from graduate.runner import RunOptions, run_flow
from tests.adr.conftest import REPO
from tests.conftest import FlowFactory, processes_mentioning


@pytest.mark.timeout(120)
def test_the_deadline_stops_an_endless_start(settings: Settings, flow_file: FlowFactory,
                                             tmp_path: Path) -> None:
    options = RunOptions(flow=str(flow_file()), engine="temporal", instances=100_000,
                         timeout=5)
    began = time.monotonic()

    result = run_flow(settings, options)

    # Worker start-up is bounded on its own; the instances then get what is left.
    assert time.monotonic() - began < 5 + 30
    # The run stopped starting at its deadline: a run that did not finish (exit 1), not
    # bad input; what it did start is judged.
    assert 0 < result.not_started < 100_000
    assert len(result.instances) == 100_000 - result.not_started
    assert not result.finished
    assert not result.succeeded
    assert processes_mentioning(str(tmp_path)) == []


@pytest.mark.timeout(60)
def test_a_broker_that_is_not_there_is_named_within_seconds(tmp_path: Path) -> None:
    """As a user runs it: a real `graduate` process, a broker port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "pyproject.toml").write_text('[tool.graduate]\nspikes = "spikes"\n')
    shutil.copytree(REPO / "spikes", tmp_path / "spikes")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADUATE_")}
    began = time.monotonic()

    done = subprocess.run(
        [sys.executable, "-m", "graduate", "--broker-url",
         f"redis://:hunter2@127.0.0.1:{port}/0", "run", "partner_approval", "-e",
         "celery-chain", "--timeout", "5"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=50, check=False)

    assert time.monotonic() - began < 15
    assert done.returncode == 2, done.stderr
    assert f"the broker at redis://:***@127.0.0.1:{port}/0 does not answer" in done.stderr
    assert "hunter2" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert processes_mentioning(str(tmp_path)) == []
