"""The sample flow written directly with an engine's SDK, as a team would without
graduate: the baseline `graduate bench` measures each adapter against.

A plain flow runs the same steps and waits in the same order on the same servers, but
its effects are one plain SQLite insert each (what the ledger costs is measured apart),
with no fault points, no memo, no progress record and no harness watching it. This
module is engine-neutral: the driver that starts the instances, answers each wait as
soon as the step before it landed, and reads the times back; each engine's plain module
(`graduate.adapters.<engine>.plain`) brings a worker process and a client.

The baselines live in the package, beside the adapters they are compared with, rather
than in `benchmarks/`: `graduate bench` runs them from an installed graduate, and the
rule that SDK imports stay under `graduate/adapters/<engine>/` covers them too.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from graduate.errors import ConfigError, EngineError
from graduate.flow import Flow, Step, Wait
from graduate.processes import ManagedProcess, spawn_until_ready

POLL_INTERVAL = 0.05
_SCHEMA = ("CREATE TABLE IF NOT EXISTS effects (instance TEXT NOT NULL, step TEXT NOT NULL, "
           "at REAL NOT NULL)")


@dataclass(frozen=True)
class PlainSpec:
    """What a plain worker process needs, as JSON on its standard input (it carries the
    services' secrets, so never on a command line)."""

    nodes: tuple[tuple[str, str], ...]  # ("step" | "wait", name), in order
    services: dict[str, Any]
    database: str  # the SQLite file the effects are inserted into
    queue: str
    ready_file: str
    # Each wait's deadline in seconds, as the flow declares it (`plain_deadlines`): each
    # baseline expires its waits as graduate's adapter for its engine does (a timer, a
    # countdown task, a deadline in the row that a sweep ends).
    deadlines: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> PlainSpec:
        data = json.loads(text)
        return cls(**{**data, "nodes": tuple(tuple(n) for n in data["nodes"])})


def plain_nodes(flow: Flow) -> tuple[tuple[str, str], ...]:
    """The flow as a plain baseline runs it: steps and waits only."""
    nodes = []
    for node in flow.nodes:
        if isinstance(node, Step):
            nodes.append(("step", node.name))
        elif isinstance(node, Wait):
            nodes.append(("wait", node.name))
        else:
            raise ConfigError(f"flow {flow.name!r} has {node.name!r}, which is neither a step "
                              "nor a wait; the plain baselines of `graduate bench` run "
                              "steps and waits only: bench a flow without timers")
    return tuple(nodes)


def plain_deadlines(flow: Flow) -> dict[str, float]:
    """Each wait's deadline in seconds, by the wait's name."""
    return {node.name: node.deadline for node in flow.nodes if isinstance(node, Wait)}


def record_effect(database: str, instance: str, step: str) -> None:
    """The plain effect: one insert, committed."""
    with sqlite3.connect(database, timeout=30) as connection:
        insert_effect(connection, instance, step)
    connection.close()


def insert_effect(connection: sqlite3.Connection, instance: str, step: str) -> None:
    """The plain effect's insert, on a connection the caller keeps (and commits)."""
    connection.execute("INSERT INTO effects VALUES (?, ?, ?)", (instance, step, time.time()))


def create_database(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(_SCHEMA)
    connection.close()


def _landed(path: Path) -> dict[str, dict[str, float]]:
    with sqlite3.connect(path, timeout=30) as connection:
        rows = connection.execute("SELECT instance, step, at FROM effects").fetchall()
    connection.close()
    landed: dict[str, dict[str, float]] = {}
    for instance, step, at in rows:
        landed.setdefault(instance, {}).setdefault(step, at)
    return landed


class PlainClient(Protocol):
    def start(self, instance_id: str) -> None: ...
    def signal(self, instance_id: str, wait: str) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class PlainRun:
    """When each instance started, and when each of its steps' effects landed."""

    started: dict[str, float]
    landed: dict[str, dict[str, float]]


def drive(client: PlainClient, nodes: Sequence[tuple[str, str]], instance_ids: Sequence[str],
          database: Path, timeout: float) -> PlainRun:
    """Start every instance, send each wait's signal once the step before it landed (as
    an approver who answers at once would), and return when every last step landed."""
    steps = [name for kind, name in nodes if kind == "step"]
    # The step whose effect opens each wait, and the wait it opens.
    opens = {nodes[i - 1][1]: name for i, (kind, name) in enumerate(nodes)
             if kind == "wait" and i > 0}
    started = {}
    for instance_id in instance_ids:
        started[instance_id] = time.time()
        client.start(instance_id)
    signalled: set[tuple[str, str]] = set()
    deadline = time.monotonic() + timeout
    while True:
        landed = _landed(database)
        for instance_id in instance_ids:
            for step, wait in opens.items():
                if step in landed.get(instance_id, {}) and (instance_id, wait) not in signalled:
                    client.signal(instance_id, wait)
                    signalled.add((instance_id, wait))
        if all(steps[-1] in landed.get(i, {}) for i in instance_ids):
            return PlainRun(started=started, landed=landed)
        if time.monotonic() > deadline:
            missing = sum(1 for i in instance_ids if steps[-1] not in landed.get(i, {}))
            raise EngineError(f"the plain baseline left {missing} of {len(instance_ids)} "
                              f"instance(s) unfinished after {timeout:g} s; give the bench "
                              "a longer --timeout or fewer instances")
        time.sleep(POLL_INTERVAL)


PLAIN_READY_TIMEOUT = 60.0


def start_plain_worker(spec: PlainSpec, run_dir: Path, module: str,
                       engine: str) -> ManagedProcess:
    """A plain-SDK worker (`python -m module run_dir`, its spec on stdin), once ready."""
    name = f"{engine.lower()}-plain-worker"
    return spawn_until_ready(name, [sys.executable, "-m", module, str(run_dir)],
                             run_dir / "logs" / f"{name}.log", Path(spec.ready_file),
                             what=f"plain {engine} worker", timeout=PLAIN_READY_TIMEOUT,
                             stdin=spec.to_json().encode())
