"""Fixtures shared by every suite; the servers come from graduate's pytest plugin.

Each test gets its own ledger and its own copy of a flow under a unique name, so the
Temporal task queue and the Celery queue of one test never see another test's work.
"""

from __future__ import annotations

import itertools
import os
import re
import resource
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import NoReturn
from urllib.parse import unquote, urlsplit

import pytest

from graduate import adapters
from graduate.chaos.matrix import default_point
from graduate.config import STATE_DIR_NAME, Settings
from graduate.errors import FlowError
from graduate.flow import Flow, Parallel, Step, load_flow
from graduate.services.model import TemporalTarget

pytest_plugins = ["pytester", "tests.alone"]
FLOWS = Path(__file__).parent / "flows"
REQUIRE_SERVICES = os.environ.get("GRADUATE_REQUIRE_SERVICES") == "1"
_names = itertools.count(1)
# The suite runs on four pytest-xdist workers (pyproject's addopts, --dist loadgroup):
# its tests mostly wait for engines. Crash tests whose verdicts hang on how far each
# instance got when the fault fired run in two lanes, each one test at a time on one
# worker: never more than two beside each other on two cores, so that an engine's
# recovery (a visibility timeout's redelivery, a lease) is not starved of CPU; the
# other two workers keep the cores busy. A third lane at once (five workers) made the
# chain's late-ack redeliveries miss their run's deadline in CI rehearsal; each lane
# starts first on its worker, as the largest groups.
# Which tests go in which lane is a matter of balance: the lanes should end together,
# as the later one is the suite's critical path. By the per-test times of the CI
# rehearsal of 30 November 2026 at 03:07 (its JUnit file: 4,225 s of tests in 1,088 s),
# the first lane held 930 s and the second 998 s, beside 2,270 s of other tests. Since,
# the second lost two single-instance tests of registered workers (56 s, off the lanes)
# and the spikes' single-hit runs (151 s, which their every-instance runs cover), runs
# the registered workers' two matrices at once (about 65 s less), and took the
# branches' crash tests from the first (67 s): about 865 s and 790 s, below the 985 s
# each worker then runs in all. By the rehearsal of 05:15 the lanes held 907 s and 764 s;
# since, the first lost the time-scale runs without a fault (tests/chaos/test_time.py,
# 51 s) and the second gained the example app's held-up tests; on 30 November (14:00)
# the first lost two runs whose verdicts its multi-instance runs of the same fault now
# give (Temporal's resume at the step in flight, Celery's warm shutdown on each broker:
# about 16 s and twice 8 s here, alone). Re-balance from a new
# rehearsal's JUnit file when a lane outgrows that: it says, for each test, the worker
# that ran it and when it began (pytest_runtest_setup below), which
# `python .ci/timeline.py JUNIT` sums per worker and lane. A test whose verdict does
# not hang on timing belongs off the lanes: four tests run at once either way, and a
# lane is a floor under the suite's time.
# The first lane: the faults on the contract flows (tests/chaos), with the matrix run
# side by side and the deploys on Temporal.
CRASH_TIMING = pytest.mark.xdist_group("crash-timing")
# The second: the spikes (their crash-resume suite), the scaffolded packages, and the
# crash tests of the parallel branches (tests/chaos/test_branches.py).
CRASH_TIMING_SPIKES = pytest.mark.xdist_group("crash-timing-spikes")
# In the second lane too: the team's example app, the workers registered by `graduate
# worker`, and the committed verdicts run again on real engines.
CRASH_TIMING_APPS = CRASH_TIMING_SPIKES


def lone_point(flow: Flow) -> str:
    """Where a crash test that must give the same verdict every time kills the worker:
    the first step after the first wait that runs alone, paused before its effect (the
    matrix's default point, unless that step is one of several at once). A worker killed
    while a parallel group or a `for_each` step's items are in flight also cuts short
    the siblings, and whether a sibling's effect had landed then (and so runs twice) is
    timing, not the engine: a verdict there is one draw, not a property to reproduce."""
    after_wait = False
    for node in flow.nodes:
        if isinstance(node, Step) and node.for_each is None and (
                after_wait or not flow.waits):
            return f"{node.name}:before-effect"
        if node in flow.waits:
            after_wait = True
    return default_point(flow)


def timing_doubled_steps(flow: Flow) -> frozenset[str]:
    """The steps whose system takes no key and that run beside others (a parallel
    group, a `for_each` step's items). A worker killed anywhere may catch another
    instance amid them, just after one of their effects landed, and the engine runs it
    again: whether that happens is timing (CI saw dd_room's grants doubled on one run
    and not on the next), so a test that must give the same verdict every time
    tolerates their duplicates (`ChaosOutcome.assert_ok(tolerate_duplicates_of=...)`)
    and a committed kill of such a flow is one draw, not a verdict to reproduce."""
    beside = [s for n in flow.nodes if isinstance(n, Parallel) for s in n.steps]
    beside += [s for s in flow.steps if s.for_each is not None]
    return frozenset(s.name for s in beside
                     if not flow.system(s.system).honours_idempotency)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Make `--dist loadgroup` group again on pytest 9.2, and fail if it does not.

    pytest-xdist (3.8) tells its scheduler an item's group by appending `@GROUP` to the
    item's node id on the worker, through a field pytest 9.2 no longer reads: the mark
    is then silently ignored and grouped tests run side by side (pytest-xdist#1386).
    Until xdist sets it itself, the worker's items get the suffix here; an item still
    without it stops the run rather than run its group beside itself.
    """
    if not getattr(config.option, "loadgroup", False):
        return  # not an xdist worker distributing by group
    for item in items:
        names = {str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                 for mark in item.iter_markers("xdist_group")}
        if not names:
            continue
        suffix = "@" + "_".join(sorted(names))
        if not item.nodeid.endswith(suffix):
            from _pytest.nodeid import NodeId  # pytest 9.2's structured node ids

            item._id = NodeId.parse(item.nodeid + suffix)  # what xdist means to set
        if not item.nodeid.endswith(suffix):
            raise pytest.UsageError(f"{item.nodeid}: its xdist_group {suffix[1:]!r} cannot "
                                    "be given to pytest-xdist's scheduler")


_CPU_AT_SETUP = pytest.StashKey[float]()


def _cpu_seconds() -> float:
    """CPU time of this process and of the children it has reaped (a run's workers,
    a CLI): not the session's servers, which outlive the tests."""
    own, reaped = (resource.getrusage(who) for who in
                   (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Which xdist worker ran each test and when it began (after the `alone` gate),
    kept in the JUnit file: with the durations there, the run's timeline per worker,
    to see where workers idled, when each lane ended and what started last."""
    item.user_properties += [("worker", os.environ.get("PYTEST_XDIST_WORKER", "-")),
                             ("started", f"{time.time():.1f}")]
    item.stash[_CPU_AT_SETUP] = _cpu_seconds()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    """And the CPU-seconds it took, in the JUnit file beside its duration: their sums
    over a run say how many of the cores the suite's workers kept busy, which decides
    whether more workers would end it sooner or only slow each test."""
    try:
        yield
    finally:
        if (began := item.stash.get(_CPU_AT_SETUP, None)) is not None:
            item.user_properties.append(("cpu", f"{_cpu_seconds() - began:.2f}"))


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings that point at the session's servers (from graduate's own pytest plugin),
    with a ledger of the test's own.

    A test parametrised with an `engine` that needs only some of the servers gets only
    those (`engine` names a registered engine): the toy engine's contract run, a pytest
    process of its own, would otherwise start a Temporal server and Redis it never uses.
    """
    needs = adapters.needs([engine]) if (engine := _engine_of(request)) else None
    temporal: TemporalTarget | None = (request.getfixturevalue("temporal_server")
                                       if needs is None or needs.temporal else None)
    broker: str | None = (request.getfixturevalue("broker")
                          if needs is None or needs.broker else None)
    return Settings(
        project_dir=tmp_path, temporal_address=temporal.address if temporal else None,
        broker_url=broker, ledger_url=str(tmp_path / "ledger.sqlite3"),
        app_db_url=str(tmp_path / "app.sqlite3"),
    )


def _engine_of(request: pytest.FixtureRequest) -> str | None:
    """The registered engine a test is parametrised with, if any."""
    callspec = getattr(request.node, "callspec", None)
    engine = callspec.params.get("engine") if callspec is not None else None
    return engine if isinstance(engine, str) and engine in adapters.engine_names() else None


FlowFactory = Callable[..., Path]


@pytest.fixture
def flow_file(tmp_path: Path) -> FlowFactory:
    """Write a copy of a test flow under a unique name; `replace` edits its text first."""

    def write(source: str = "approval", **replace: str) -> Path:
        text = (FLOWS / f"{source}.toml").read_text()
        name = f"{source}_{next(_names)}_{os.getpid()}"
        text = re.sub(r'^name = ".*"$', f'name = "{name}"', text, count=1, flags=re.M)
        for old, new in replace.items():
            assert old in text, f"{old!r} is not in {source}.toml"
            text = text.replace(old, new)
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        return path

    return write


def processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line contains `text` (a test's own temp folder)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(f"{entry}: {cmdline[:200]}")
    return found


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    import psycopg

    url = service_url("GRADUATE_TEST_POSTGRES_URL", "PostgreSQL")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in url else "?"
    yield f"{url}{separator}options=-csearch_path%3D{schema}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def rabbitmq_url(tmp_path: Path) -> Iterator[str]:
    """RabbitMQ's URL (GRADUATE_TEST_RABBITMQ_URL; skip without it, fail in CI). The
    queues that the test's runs under `tmp_path` declared there go afterwards."""
    url = service_url("GRADUATE_TEST_RABBITMQ_URL", "RabbitMQ")
    yield url
    delete_run_queues(url, tmp_path)


def delete_run_queues(url: str, folder: Path) -> None:
    """Delete from the broker at `url` each run's queue (and its exchange, of the same
    name) of the runs under `folder`. Celery declares them durable, and the suite's runs
    on the one RabbitMQ of CI left 930 after a few rehearsals, which RabbitMQ then took
    minutes to recover at its start. A run's queue is named by its flow, strategy and
    run (`queue_name`): the flows are the flow files under `folder`, the runs its run
    folders (a state folder's `runs`, or an engine's folder of its own in `folder`),
    and a registered worker's queue has no run."""
    import amqp  # imported here: most tests never need RabbitMQ's client
    from amqp.exceptions import NotFound

    if not (names := run_queue_names(folder)):
        return
    parts = urlsplit(url)
    with amqp.Connection(host=parts.netloc.rpartition("@")[2],
                         userid=unquote(parts.username or ""),
                         password=unquote(parts.password or ""),
                         virtual_host=unquote(parts.path[1:]) or "/") as conn:
        for name in names:
            # Deleting what is not there may close the channel (the protocol's 404):
            # one channel per deletion.
            for delete in ("queue_delete", "exchange_delete"):
                channel = conn.channel()
                try:
                    getattr(channel, delete)(name)
                except NotFound:
                    continue
                channel.close()


def run_queue_names(folder: Path) -> list[str]:
    """The names that the Celery queues of the runs under `folder` may have."""
    from graduate.adapters.celery.app import STRATEGIES, queue_name

    flows = []
    for path in folder.rglob("*.toml"):
        try:
            flows.append(load_flow(path))
        except FlowError:
            continue  # a project's pyproject.toml, say
    runs = {"", *(run.name for state in [folder, *folder.rglob(f"{STATE_DIR_NAME}/runs")]
                  for run in state.iterdir() if run.is_dir())}
    return sorted({queue_name(flow, strategy, run) for flow in flows
                   for strategy in STRATEGIES for run in runs})


def service_url(variable: str, what: str) -> str:
    """The URL of an optional system service; skip without it, fail in CI."""
    url = os.environ.get(variable)
    if url:
        return url
    unavailable(f"{what} is not configured: set {variable} (`.ci/run` starts one and sets it)")


def unavailable(message: str) -> NoReturn:
    """Something a test needs from outside is missing: skip, but fail in CI
    (GRADUATE_REQUIRE_SERVICES=1), where everything must be there."""
    if REQUIRE_SERVICES:
        pytest.fail(f"GRADUATE_REQUIRE_SERVICES=1 but {message}")
    pytest.skip(message)
