"""Fixtures of the instrumentation tests: a run context of the test's own, its ledger,
instances registered in it, and a team's worker processes started under the run."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from graduate.flow import Flow, InstanceRequest, load_flow
from graduate.instrument import Correlation, RunContext
from graduate.ledger import EffectRecord, Ledger
from graduate.processes import ManagedProcess, spawn, wait_until

ROOT = Path(__file__).resolve().parents[2]
ORDERS = Path(__file__).parent / "apps" / "orders.toml"
WAIT = 60.0


@pytest.fixture
def orders() -> Flow:
    return load_flow(ORDERS)


@pytest.fixture
def run_context(tmp_path: Path) -> RunContext:
    return RunContext(ledger_url=str(tmp_path / "ledger.sqlite3"),
                      run_id=f"run-{uuid.uuid4().hex[:8]}", flow_source=str(ORDERS))


@pytest.fixture
def run_ledger(run_context: RunContext) -> Iterator[Ledger]:
    ledger = Ledger(run_context.ledger_url)
    yield ledger
    ledger.close()


Register = Callable[[str], Correlation]


@pytest.fixture
def register(run_ledger: Ledger, run_context: RunContext, orders: Flow) -> Register:
    """Register an instance in the run's ledger, as the harness does before starting it,
    and return the correlation graduate propagates with it."""

    def make(instance_id: str) -> Correlation:
        record = run_ledger.register(orders, InstanceRequest(
            instance_id=instance_id, run_id=run_context.run_id, tenant_id="acme",
            entity_id=f"order-{instance_id}", date="20261129",
            correlation_id=str(uuid.uuid4()), trace_id=uuid.uuid4().hex), engine="app")
        return Correlation(record.instance_id, record.correlation_id, record.trace_id)

    return make


Spawn = Callable[[str, list[str], Mapping[str, str]], ManagedProcess]


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Spawn]:
    """Start a team's worker (`python -m MODULE ARGS`, READY_FILE last but for Celery's
    options) with `env` added; return once it wrote its ready file. All are stopped."""
    started: list[ManagedProcess] = []

    def start(module: str, args: list[str], env: Mapping[str, str]) -> ManagedProcess:
        ready = tmp_path / f"ready-{len(started)}"
        argv = [sys.executable, "-m", module, *[str(ready) if a == "{ready}" else a
                                                 for a in args]]
        environ = {**os.environ, "PYTHONPATH": str(ROOT), **env}
        process = spawn(module, argv, tmp_path / f"worker-{len(started)}.log", env=environ,
                        cwd=ROOT)
        started.append(process)
        wait_until(ready.exists, timeout=WAIT, what=f"worker {module}", process=process)
        return process

    yield start
    for process in reversed(started):
        process.stop()


def wait_for_rows(ledger: Ledger, count: int, **where: str) -> list[EffectRecord]:
    """The ledger's effect rows once there are `count` of them (filtered by `where`)."""
    found: list[EffectRecord] = []

    def enough() -> bool:
        nonlocal found
        found = ledger.effects(**where)
        return len(found) >= count

    wait_until(enough, timeout=WAIT, what=f"{count} effect rows {where}")
    return found
