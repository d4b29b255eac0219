"""The graduate pytest plugin: crash-resume tests for your own flows, on real engines.

Registered as a `pytest11` entry point, so installing graduate is enough. It offers:

- fixtures `temporal_server` and `broker` (started once per test session by the
  provider), `ledger` (one per test), and `chaos`, which runs a flow under a fault
  and returns its verdicts (`graduate.testing.ChaosOutcome`);
- the marker `@pytest.mark.graduate(engines=[...], faults=[...])`, which runs a test
  once per engine and fault, handed to it as `graduate_engine` and `graduate_fault`;
- options `--graduate-engines`, `--graduate-faults`, `--graduate-evidence DIR`,
  `--graduate-provider local|external|docker`, `--graduate-workers local|external`
  (external: the workers `graduate worker` registered, driven through the PostgreSQL
  ledger given by `--graduate-ledger-url`) and the service URLs.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import pytest

import graduate
from graduate.adapters import check_engine, describe, engine_names
from graduate.chaos.faults import none, parse_label
from graduate.config import Settings, load_settings
from graduate.errors import GraduateError
from graduate.ledger import Ledger
from graduate.runs.workers import WORKERS_KINDS
from graduate.services.model import TemporalTarget
from graduate.services.resolver import STRATEGIES, Resolver, make_resolver
from graduate.testing.outcome import ChaosOutcome

# Set to 1 where the services must be there (CI): a test that would skip for want of
# one fails instead, as a skipped crash test would pass unnoticed.
REQUIRE_SERVICES = "GRADUATE_REQUIRE_SERVICES"
_STARTED = pytest.StashKey[Resolver]()  # the session's services, once a test asked for them
_OPTIONS = {
    "temporal_address": "--graduate-temporal-address",
    "temporal_namespace": "--graduate-temporal-namespace",
    "broker_url": "--graduate-broker-url",
    "result_backend_url": "--graduate-result-backend-url",
    "ledger_url": "--graduate-ledger-url",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("graduate", "graduate: crash-resume tests on real engines")
    group.addoption("--graduate-engines", metavar="LIST",
                    help="run @pytest.mark.graduate tests only on these engines "
                         f"(comma-separated; known: {', '.join(engine_names())})")
    group.addoption("--graduate-faults", metavar="LIST",
                    help="run @pytest.mark.graduate tests only under these faults "
                         "(comma-separated)")
    group.addoption("--graduate-evidence", metavar="DIR",
                    help="keep the evidence of every chaos run in DIR, for `graduate report` "
                         "and `graduate adr attach` (default: a temporary folder per test)")
    group.addoption("--graduate-provider", choices=STRATEGIES, default=None,
                    help="where servers come from: local processes from the virtual "
                         "environment (default), external URLs, or docker (testcontainers)")
    group.addoption("--graduate-docker-services", metavar="LIST", default="redis",
                    help="with --graduate-provider docker: containers to use besides "
                         "Temporal: redis (default), rabbitmq (the broker; Redis stays the "
                         "result backend), postgres (the ledger)")
    group.addoption("--graduate-workers", choices=WORKERS_KINDS, default="local",
                    help="where each chaos run's workers come from: started by the run "
                         "(local, default), or registered by `graduate worker` on any host "
                         "(external: give the services they use and --graduate-ledger-url, "
                         "the PostgreSQL ledger they share)")
    group.addoption("--graduate-time-scale", metavar="SCALE", default=None,
                    help="run every chaos run's flow under this time scale unless the test "
                         "gives one: FLOW_TIME=RUN_TIME such as 1h=1s, or a factor")
    for key, flag in _OPTIONS.items():
        group.addoption(flag, dest=f"graduate_{key}", metavar="VALUE",
                        help=f"the {key.replace('_', ' ')} (else GRADUATE_{key.upper()} "
                             "or [tool.graduate])")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "graduate(engines=None, faults=None): run the test once per engine and fault (a "
        "fault with its flags as FAULT+FLAG, e.g. double-start+crash); it receives them "
        "as the graduate_engine and graduate_fault arguments",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("graduate")
    if marker is None:
        return
    engines = _chosen(metafunc.config.getoption("graduate_engines"),
                      marker.kwargs.get("engines") or engine_names())
    faults = _chosen(metafunc.config.getoption("graduate_faults"),
                     marker.kwargs.get("faults") or [none.NAME])
    try:
        for engine in engines:
            check_engine(engine)
        for fault in faults:
            parse_label(fault)
    except GraduateError as error:
        raise pytest.UsageError(f"@pytest.mark.graduate on {metafunc.definition.nodeid}: "
                                f"{error}") from error
    if "graduate_engine" in metafunc.fixturenames:
        metafunc.parametrize("graduate_engine", engines, ids=list(engines))
    if "graduate_fault" in metafunc.fixturenames:
        metafunc.parametrize("graduate_fault", faults, ids=list(faults))


def _chosen(option: str | None, declared: Any) -> list[str]:
    items = [str(item) for item in declared]
    if not option:
        return items
    wanted = {item.strip() for item in option.split(",") if item.strip()}
    return [item for item in items if item in wanted]


@pytest.fixture(scope="session")
def graduate_settings(pytestconfig: pytest.Config) -> Settings:
    """Settings of the project under test: options beat GRADUATE_* beat pyproject."""
    overrides = {key: pytestconfig.getoption(f"graduate_{key}") for key in _OPTIONS}
    return load_settings(overrides, project_dir=pytestconfig.rootpath)


@pytest.fixture(scope="session")
def graduate_provider(pytestconfig: pytest.Config, graduate_settings: Settings,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[Resolver]:
    """The suite's services: those the settings name, the rest from the provider chosen
    with --graduate-provider (graduate's one resolver, `graduate.services.resolver`)."""
    kind = pytestconfig.getoption("graduate_provider") or "local"
    docker = tuple(item.strip() for item in
                   pytestconfig.getoption("graduate_docker_services").split(",") if item)
    try:
        provider = make_resolver(kind, graduate_settings,
                                 tmp_path_factory.mktemp("graduate"), docker)
    except GraduateError as error:
        _unavailable(f"graduate provider {kind!r} is not available: {error}")
    pytestconfig.stash[_STARTED] = provider
    try:
        yield provider
    finally:
        del pytestconfig.stash[_STARTED]
        provider.close()


def _unavailable(message: str) -> NoReturn:
    """Skip a test that lacks a service or a provider able to fault it, or fail it where
    services are required (GRADUATE_REQUIRE_SERVICES=1)."""
    __tracebackhide__ = True
    if os.environ.get(REQUIRE_SERVICES) == "1":
        pytest.fail(f"{REQUIRE_SERVICES}=1, but {message}", pytrace=False)
    pytest.skip(message)


class GraduateServerWarning(UserWarning):
    """A server the suite shares died between tests and was started again."""


@pytest.fixture(autouse=True)
def _graduate_shared_servers_alive(pytestconfig: pytest.Config) -> None:
    """Before each test, start again any shared server that died, and say so: one dead
    server would otherwise fail every later test with a connection error."""
    provider = pytestconfig.stash.get(_STARTED, None)
    if provider is None:
        return  # no test has asked for a server yet: nothing to check, nothing started
    for note in provider.revive():
        warnings.warn(GraduateServerWarning(note), stacklevel=1)


@pytest.fixture(scope="session")
def temporal_server(graduate_provider: Resolver) -> TemporalTarget:
    """A Temporal frontend for the whole session (started on first use)."""
    return graduate_provider.temporal()


@pytest.fixture(scope="session")
def broker(graduate_provider: Resolver) -> str:
    """A Celery broker URL for the whole session: Redis by default, RabbitMQ by URL."""
    return graduate_provider.broker()


@pytest.fixture
def ledger(graduate_provider: Resolver, tmp_path: Path) -> Iterator[Ledger]:
    """The ledger of one test: --graduate-ledger-url, the docker provider's PostgreSQL,
    or SQLite in its temporary folder."""
    url = graduate_provider.ledger_url() or str(tmp_path / "ledger.sqlite3")
    ledger = Ledger(url)
    yield ledger
    ledger.close()


class ChaosRunner:
    """The `chaos` fixture: `chaos(FLOW, engine=..., fault=..., at=...)` -> ChaosOutcome."""

    def __init__(self, request: pytest.FixtureRequest, settings: Settings,
                 provider: Resolver, ledger: Ledger, folder: Path,
                 evidence: str | None) -> None:
        self.request = request
        self.settings = settings
        self.provider = provider
        self.ledger = ledger
        self.folder = folder
        self.evidence = Path(evidence) if evidence else folder / "evidence"

    def __call__(self, flow: str, *, engine: str, fault: str = none.NAME, at: str | None = None,
                 instances: int = 1, profile: str = "defaults", timeout: float = 60.0,
                 restart_delay: float = 0.5, partition_for: float = 5.0,
                 wait_deadline: float | None = None, versioned: bool = False,
                 pinned: bool = False, change: str = "reorder", hit: str = "one",
                 time_scale: str | float | None = None,
                 workers: str | None = None,
                 inputs: Mapping[str, Sequence[str]] | None = None) -> ChaosOutcome:
        """Run `flow` on `engine` under `fault` at `at` (STEP:POINT) and judge it.
        `fault` may carry its flags as a matrix cell does: `double-start+crash`.

        `flow` may name an app declared in `[tool.graduate.apps.NAME]`: its own workers
        then run on `engine` ("temporal", "celery"), judged against the flow it declares.

        With several `instances` the fault hits the first to reach `at`, or each one
        as it reaches it with `hit="all"`; every instance is judged.

        `time_scale` compresses the flow's durations (`"1h=1s"`, or a factor), as
        `graduate chaos --time-scale` does; without it, `--graduate-time-scale`, else
        real time.

        `inputs` gives every instance the flow's inputs (`{"parties": ["acme", "bidco"]}`
        for a `for_each` step), as `graduate chaos --input` does; without it, the flow's
        defaults.

        `workers="external"` (default: `--graduate-workers`) runs on the workers that
        `graduate worker` registered for `engine` and the flow, in the ledger
        `--graduate-ledger-url` names, instead of starting its own; a fault that needs
        workers graduate started skips, with the reason.

        Skips the test, with the reason, when the fault cannot apply to this engine or
        provider (an external broker cannot be restarted by graduate); with
        GRADUATE_REQUIRE_SERVICES=1, a provider that cannot perform the fault fails it."""
        __tracebackhide__ = True
        # Read once, in the project (a name in its spikes folder, or a team's declared
        # app, whose flow says what to expect): the run's settings are the test's folder.
        target = graduate.resolve(flow, engine=engine, settings=self.settings)
        kind, _ = parse_label(fault)
        chosen = workers or self.request.config.getoption("graduate_workers")
        if (reason := self.provider.cannot(kind)) is not None:
            _unavailable(f"{fault} on provider {self.provider.name}: {reason}")
        result = graduate.chaos(
            target, engine=engine, fault=fault, at=at, instances=instances,
            profile=profile, timeout=timeout, restart_delay=restart_delay,
            partition_for=partition_for, wait_deadline=wait_deadline, versioned=versioned,
            pinned=pinned, change=change, hit=hit, time_scale=self._time_scale(time_scale),
            settings=self._settings_for(target.engine, kind.restarts is not None
                                        and chosen == "local"),
            evidence=self.evidence, project_dir=self.settings.project_dir, workers=chosen,
            inputs=inputs)
        if not result.applicable:
            pytest.skip(f"{fault} on {engine}: {result.reason}")
        return ChaosOutcome(result, target.flow)

    def _time_scale(self, given: str | float | None) -> str | float:
        if given is not None:
            return given
        option: str | None = self.request.config.getoption("graduate_time_scale")
        return option or 1

    def _settings_for(self, engine: str, restarts: bool) -> Settings:
        base = replace(self.settings, project_dir=self.folder, ledger_url=self.ledger.url,
                       app_db_url=self.settings.app_db_url or str(self.folder / "app.sqlite3"))
        if restarts and self.provider.name == "local":
            # The harness starts servers of its own to kill; the suite's stay untouched.
            return replace(base, temporal_address=None, broker_url=None,
                           result_backend_url=None)
        described = describe(engine)
        if described.needs_server:
            target = self.request.getfixturevalue("temporal_server")
            return replace(base, temporal_address=target.address,
                           temporal_namespace=target.namespace)
        if described.needs_broker:
            return replace(base, broker_url=self.request.getfixturevalue("broker"),
                           result_backend_url=self.provider.result_backend())
        return base  # an engine that needs neither server nor broker


@pytest.fixture
def chaos(request: pytest.FixtureRequest, pytestconfig: pytest.Config,
          graduate_settings: Settings, graduate_provider: Resolver, ledger: Ledger,
          tmp_path: Path) -> ChaosRunner:
    """Run a flow under a fault and get its verdicts: `chaos("partner_approval",
    engine="temporal", fault="kill-worker", at="activate:before-effect").assert_ok()`."""
    return ChaosRunner(request, graduate_settings, graduate_provider, ledger, tmp_path,
                       pytestconfig.getoption("graduate_evidence"))
